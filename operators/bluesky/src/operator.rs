//! [`BskyOperator`]: the bus side. Logs in at start (a refused login sets
//! its health to `failed` with the reason, shown by `switchboard status`,
//! and it waits for a reload with other credentials: no retry loop against
//! the login endpoint), subscribes to
//! `send.bluesky.<instance>.*.*`, turns each request into a worker
//! [`Command`] (or refuses it with `{"ok": false, "error": …}`), and maps
//! the lifecycle verbs onto the worker: `reload` without a new login when
//! the account stays, `halt`/`resume` pause reading notifications.

use std::time::Duration;

use switchboard_bus::proto::ChatPattern;
use switchboard_bus::{Context, Delivery, HandlerResult, Operator};

use crate::api::{Api, Counters, MAX_RATE_LIMIT_WAIT};
use crate::config::BskyConfig;
use crate::inbound::{Publisher, PROTOCOL};
use crate::outbound::{request_for, Refusal};
use crate::session::AuthError;
use crate::store::Store;
use crate::worker::{Command, WorkerHandle};
use crate::xrpc::{rate_limit_wait, tls_config, Xrpc, XrpcError};

/// The Bluesky operator. Hand it to [`switchboard_bus::run`].
#[derive(Debug, Default)]
pub struct BskyOperator {
    worker: Option<WorkerHandle>,
    publisher: Option<Publisher>,
    instance: String,
    /// Why it is not logged in, after a refused login.
    refused: Option<String>,
}

impl BskyOperator {
    /// An operator that will log in when started.
    pub fn new() -> BskyOperator {
        BskyOperator::default()
    }

    async fn subscribe(ctx: &mut Context, instance: &str) -> HandlerResult {
        let pattern = ChatPattern::send().protocol(PROTOCOL).instance(instance);
        ctx.subscribe(&pattern).await?;
        Ok(())
    }

    /// Its own id: a configured `instance` must say the same (see
    /// [`switchboard_bus::authentic::own_instance`]).
    fn instance_of(
        ctx: &Context,
        config: &BskyConfig,
    ) -> Result<String, switchboard_bus::authentic::ForeignInstance> {
        switchboard_bus::authentic::own_instance(ctx.id().as_str(), config.instance.as_deref())
    }
}

impl Operator for BskyOperator {
    type Config = BskyConfig;

    fn version(&self) -> Option<String> {
        Some(env!("CARGO_PKG_VERSION").to_string())
    }

    async fn start(&mut self, ctx: &mut Context, config: BskyConfig) -> HandlerResult {
        let instance = Self::instance_of(ctx, &config)?;
        let store = Store::new(ctx.state_dir());
        if !store.persistent() {
            tracing::warn!(
                "no state directory: the session and the marks last only as long as this process"
            );
        }
        let tls = tls_config()?;
        let xrpc = Xrpc::new(&config.service, &tls, config.request_timeout)?;
        let publisher = Publisher::new(ctx.bus().clone(), instance.clone());
        let counters = Counters::new(ctx.bus());
        let mut api = Api::new(xrpc, &config, store.clone(), publisher.clone(), counters);
        let mut login_in = config.retry.initial;
        match api.login().await {
            Ok(tokens) => {
                tracing::info!(handle = %tokens.handle, did = %tokens.did, strategy = ?config.strategy, %instance, "logged in")
            }
            // Retrying cannot help, and restarting would not either: say
            // why in the health status and wait for new credentials.
            Err(e @ AuthError::Refused { .. }) => {
                let reason = format!(
                    "{e}; fix the credentials, then `switchboard ctl reload {}`",
                    ctx.id()
                );
                tracing::error!("{reason}");
                ctx.health()
                    .set(switchboard_bus::proto::Health::Failed, reason.clone());
                self.refused = Some(reason);
                // Requests get the reason instead of no answer.
                Self::subscribe(ctx, &instance).await?;
                self.instance = instance;
                return Ok(());
            }
            Err(e) => {
                if let AuthError::Call {
                    source: XrpcError::RateLimited { reset, .. },
                } = &e
                {
                    login_in = rate_limit_wait(*reset, login_in, MAX_RATE_LIMIT_WAIT);
                    api.counters.rate_limit_waits.inc();
                }
                tracing::warn!(error = %e, retry_in_ms = login_in.as_millis() as u64, "cannot log in yet; retrying in the background");
            }
        }
        self.refused = None;
        ctx.health().ok();
        Self::subscribe(ctx, &instance).await?;
        self.worker = Some(WorkerHandle::spawn(api, config, tls, store, login_in));
        self.publisher = Some(publisher);
        self.instance = instance;
        Ok(())
    }

    async fn message(&mut self, ctx: &mut Context, delivery: Delivery) -> HandlerResult {
        let outcome = match (&self.worker, request_for(&delivery, &self.instance)) {
            (Some(worker), Ok(request)) => {
                worker
                    .send(Command::Send {
                        request,
                        reply: delivery.reply.clone(),
                    })
                    .await
            }
            (None, Ok(_)) => Err(Refusal::NotRunning {
                reason: self
                    .refused
                    .clone()
                    .unwrap_or_else(|| "the Bluesky operator is not running".to_string()),
            }),
            (_, Err(e)) => Err(e),
        };
        if let Err(error) = outcome {
            Counters::new(ctx.bus()).send_failures.inc();
            ctx.refuse(&delivery, &error).await?;
        }
        Ok(())
    }

    async fn reload(&mut self, ctx: &mut Context, config: BskyConfig) -> HandlerResult {
        let (Some(worker), Some(publisher)) = (&self.worker, &self.publisher) else {
            // Not logged in (a refused login): start over with this config.
            ctx.clear_subscriptions();
            return self.start(ctx, config).await;
        };
        let instance = Self::instance_of(ctx, &config)?;
        let publisher = if instance != self.instance {
            ctx.clear_subscriptions();
            Self::subscribe(ctx, &instance).await?;
            self.instance = instance.clone();
            publisher.with_instance(instance)
        } else {
            publisher.clone()
        };
        worker
            .send(Command::Reload(Box::new(config), publisher.clone()))
            .await?;
        self.publisher = Some(publisher);
        Ok(())
    }

    async fn halt(&mut self, _ctx: &mut Context) -> HandlerResult {
        if let Some(w) = &self.worker {
            w.send(Command::Pause(true)).await?;
        }
        Ok(())
    }

    async fn resume(&mut self, _ctx: &mut Context) -> HandlerResult {
        if let Some(w) = &self.worker {
            w.send(Command::Pause(false)).await?;
        }
        Ok(())
    }

    async fn stop(&mut self, _ctx: &mut Context) -> HandlerResult {
        if let Some(w) = self.worker.take() {
            w.shutdown(Duration::from_secs(3)).await;
        }
        self.publisher = None;
        Ok(())
    }
}
