//! [`NostrOperator`]: the bus side. Starts a task per relay and the
//! inbound task, turns send requests into signed events published to the
//! write relays (answering with each relay's `OK`), and applies reloads
//! to the running connections: relays added and removed, filters
//! changed, without a restart.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nostr::prelude::PublicKey;
use serde::Serialize;
use switchboard_bus::proto::{ChatPattern, SendResult};
use switchboard_bus::{Bus, Context, Delivery, HandlerResult, Operator};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{NostrConfig, SubscriptionConfig};
use crate::inbound::{Inbound, Recent};
use crate::outbound::{request_for, Request};
use crate::relay::{OkResult, RelayHandle, RelayStatus, Shared};
use crate::resume::Resume;
use crate::stats::NostrStats;

/// The answer to a publish request: [`SendResult`]'s `ok`/`error`, plus
/// the event id and every write relay's result.
#[derive(Debug, Serialize)]
pub struct PublishResult {
    /// At least one relay accepted the event.
    pub ok: bool,
    /// Why not, when no relay accepted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The event id (hex).
    pub id: String,
    /// Each write relay's `OK` (or why there was none).
    pub relays: Vec<OkResult>,
}

/// The answer to a `relays` request.
#[derive(Debug, Serialize)]
pub struct RelaysReply {
    /// Each relay's status.
    pub relays: Vec<RelayStatus>,
    /// Resume marks: subscription → relay → newest `created_at` seen.
    pub marks: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The Nostr operator. Hand it to [`switchboard_bus::run`].
#[derive(Default)]
pub struct NostrOperator {
    running: Option<Running>,
}

impl std::fmt::Debug for NostrOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NostrOperator")
            .field("running", &self.running.is_some())
            .finish()
    }
}

struct Running {
    config: NostrConfig,
    instance: String,
    relays: BTreeMap<String, RelayHandle>,
    shared: Shared,
    subs: Arc<Vec<SubscriptionConfig>>,
    instance_tx: watch::Sender<String>,
    paused_tx: watch::Sender<bool>,
    collect_tx: watch::Sender<Duration>,
    own_tx: watch::Sender<(PublicKey, bool)>,
    recent: Arc<Mutex<Recent>>,
    inbound: JoinHandle<()>,
}

impl NostrOperator {
    /// An operator that connects when started.
    pub fn new() -> NostrOperator {
        NostrOperator::default()
    }

    fn instance(ctx: &Context, config: &NostrConfig) -> String {
        config
            .instance
            .clone()
            .unwrap_or_else(|| ctx.id().to_string())
    }

    async fn subscribe(ctx: &mut Context, instance: &str) -> HandlerResult {
        // send.nostr.<instance>.*.*
        ctx.subscribe(&ChatPattern::send().protocol("nostr").instance(instance))
            .await?;
        Ok(())
    }
}

impl Running {
    fn spawn_relays(&mut self, stats: &switchboard_bus::Stats) {
        for rc in &self.config.relays {
            if !self.relays.contains_key(&rc.url) {
                let h = RelayHandle::spawn(
                    rc.clone(),
                    self.shared.clone(),
                    Arc::clone(&self.subs),
                    stats,
                );
                self.relays.insert(rc.url.clone(), h);
            }
        }
    }

    fn statuses(&self) -> RelaysReply {
        let marks = self
            .shared
            .resume
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .marks()
            .clone();
        RelaysReply {
            relays: self.relays.values().map(RelayHandle::status).collect(),
            marks,
        }
    }
}

/// Sends `event` to every write relay and waits for their `OK`s.
async fn publish(
    bus: Bus,
    writers: Vec<(String, tokio::sync::oneshot::Receiver<OkResult>)>,
    id: String,
    timeout: Duration,
    stats: NostrStats,
    reply: Option<String>,
) {
    let mut results = Vec::new();
    for (url, rx) in writers {
        let result = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => OkResult {
                url,
                accepted: false,
                message: "the relay was removed before it answered".to_string(),
            },
            Err(_) => {
                stats.refusals.inc();
                OkResult {
                    url,
                    accepted: false,
                    message: format!(
                        "no OK within {timeout:?} (publish_timeout); the relay may be down"
                    ),
                }
            }
        };
        results.push(result);
    }
    let ok = results.iter().any(|r| r.accepted);
    let error = (!ok).then(|| {
        let why: Vec<String> = results
            .iter()
            .map(|r| format!("{}: {}", r.url, r.message))
            .collect();
        format!("no relay accepted the event ({})", why.join("; "))
    });
    tracing::debug!(%id, ok, "publish finished");
    if let Some(reply) = reply {
        let body = PublishResult {
            ok,
            error,
            id,
            relays: results,
        };
        if let Err(e) = bus.respond_json(&reply, &body).await {
            tracing::warn!(error = %e, "could not answer a publish request");
        }
    }
}

impl Operator for NostrOperator {
    type Config = NostrConfig;

    fn version(&self) -> Option<String> {
        Some(env!("CARGO_PKG_VERSION").to_string())
    }

    async fn start(&mut self, ctx: &mut Context, config: NostrConfig) -> HandlerResult {
        let instance = Self::instance(ctx, &config);
        let tls = config.tls().map_err(|e| format!("TLS setup: {e}"))?;
        let overlap = config.resume_overlap.as_secs();
        let resume = match ctx.state_dir() {
            Some(dir) => {
                let (resume, problem) = Resume::load(dir, overlap);
                if let Some(e) = problem {
                    tracing::warn!(error = %e, "resume state");
                }
                resume
            }
            None => {
                tracing::info!("no state dir: resume marks are kept in memory only (a restart starts from now)");
                Resume::in_memory(overlap)
            }
        };
        let resume = Arc::new(Mutex::new(resume));
        let stats = NostrStats::new(ctx.bus().stats());
        let (inbound_tx, inbound_rx) = mpsc::channel(1024);
        let (instance_tx, instance_rx) = watch::channel(instance.clone());
        let (paused_tx, paused_rx) = watch::channel(false);
        let (collect_tx, collect_rx) = watch::channel(config.collect);
        let (own_tx, own_rx) = watch::channel((config.keys.public_key(), config.own_events));
        let recent = Arc::new(Mutex::new(Recent::default()));
        let inbound = tokio::spawn(
            Inbound {
                bus: ctx.bus().clone(),
                instance: instance_rx,
                paused: paused_rx,
                collect: collect_rx,
                own: own_rx,
                resume: Arc::clone(&resume),
                recent: Arc::clone(&recent),
                stats: stats.clone(),
            }
            .run(inbound_rx),
        );
        let shared = Shared {
            keys: config.keys.clone(),
            resume,
            inbound: inbound_tx,
            stats,
            reconnect: Arc::new(config.reconnect.clone()),
            max_event_bytes: config.max_event_bytes,
            tls,
            health: crate::relay::status::RelayHealth::new(ctx.health().clone()),
        };
        Self::subscribe(ctx, &instance).await?;
        tracing::info!(
            %instance,
            relays = config.relays.len(),
            subscriptions = config.subscriptions.len(),
            pubkey = %config.keys.public_key(),
            "starting"
        );
        let mut running = Running {
            subs: Arc::new(config.subscriptions.clone()),
            config,
            instance,
            relays: BTreeMap::new(),
            shared,
            instance_tx,
            paused_tx,
            collect_tx,
            own_tx,
            recent,
            inbound,
        };
        running.spawn_relays(ctx.bus().stats());
        self.running = Some(running);
        Ok(())
    }

    async fn message(&mut self, ctx: &mut Context, delivery: Delivery) -> HandlerResult {
        let Some(run) = &self.running else {
            return Ok(());
        };
        let request = {
            let recent = run.recent.lock().unwrap_or_else(|p| p.into_inner());
            request_for(&delivery, &run.instance, &run.config.keys, &recent)
        };
        let outcome = match request {
            Err(e) => Err(e),
            Ok(Request::Relays) => {
                if let Some(reply) = &delivery.reply {
                    ctx.bus().respond_json(reply, &run.statuses()).await?;
                }
                return Ok(());
            }
            Ok(Request::Publish(event)) => {
                let event = Arc::new(*event);
                let writers: Vec<_> = run
                    .relays
                    .values()
                    .filter(|h| h.config().write)
                    .map(|h| (h.config().url.clone(), h.publish(Arc::clone(&event))))
                    .collect();
                if writers.is_empty() {
                    Err("no write relay is configured; set write = true on a relay".to_string())
                } else {
                    tokio::spawn(publish(
                        ctx.bus().clone(),
                        writers,
                        event.id.to_hex(),
                        run.config.publish_timeout,
                        run.shared.stats.clone(),
                        delivery.reply.clone(),
                    ));
                    Ok(())
                }
            }
        };
        if let Err(error) = outcome {
            tracing::debug!(subject = %delivery.subject, %error, "send request refused");
            if let Some(reply) = &delivery.reply {
                ctx.bus()
                    .respond_json(reply, &SendResult::failed(error))
                    .await?;
            }
        }
        Ok(())
    }

    async fn reload(&mut self, ctx: &mut Context, config: NostrConfig) -> HandlerResult {
        let Some(run) = &mut self.running else {
            return self.start(ctx, config).await;
        };
        let instance = Self::instance(ctx, &config);
        if instance != run.instance {
            ctx.clear_subscriptions();
            Self::subscribe(ctx, &instance).await?;
            run.instance = instance.clone();
            let _ = run.instance_tx.send(instance);
        }
        // Checked before anything changes: a bad tls_ca refuses the reload.
        let tls = config.tls().map_err(|e| format!("TLS setup: {e}"))?;
        if run.config.needs_reconnect(&config) {
            for (_, h) in std::mem::take(&mut run.relays) {
                h.stop();
            }
            run.shared.keys = config.keys.clone();
            run.shared.reconnect = Arc::new(config.reconnect.clone());
            run.shared.max_event_bytes = config.max_event_bytes;
        }
        // Relays started from here on (new, or all after the above) use it.
        run.shared.tls = tls;
        // Relays gone, or whose read/write flags changed, stop; new ones start.
        let keep: Vec<String> = run
            .relays
            .iter()
            .filter(|(url, h)| {
                config
                    .relays
                    .iter()
                    .any(|r| &r.url == *url && r == h.config())
            })
            .map(|(url, _)| url.clone())
            .collect();
        let gone: Vec<String> = run
            .relays
            .keys()
            .filter(|u| !keep.contains(u))
            .cloned()
            .collect();
        for url in gone {
            if let Some(h) = run.relays.remove(&url) {
                tracing::info!(relay = %url, "relay removed");
                h.stop();
            }
        }
        let subs = Arc::new(config.subscriptions.clone());
        if subs != run.subs {
            let names: Vec<&str> = subs.iter().map(|s| s.name.as_str()).collect();
            run.shared
                .resume
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain_subscriptions(&names);
            for h in run.relays.values() {
                h.set_subscriptions(Arc::clone(&subs));
            }
            run.subs = subs;
        }
        run.shared
            .resume
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_overlap(config.resume_overlap.as_secs());
        let _ = run.collect_tx.send(config.collect);
        let _ = run
            .own_tx
            .send((config.keys.public_key(), config.own_events));
        run.config = config;
        run.spawn_relays(ctx.bus().stats());
        tracing::info!(relays = run.relays.len(), "reloaded");
        Ok(())
    }

    async fn halt(&mut self, _ctx: &mut Context) -> HandlerResult {
        if let Some(run) = &self.running {
            let _ = run.paused_tx.send(true);
        }
        Ok(())
    }

    async fn resume(&mut self, _ctx: &mut Context) -> HandlerResult {
        if let Some(run) = &self.running {
            let _ = run.paused_tx.send(false);
        }
        Ok(())
    }

    async fn stop(&mut self, _ctx: &mut Context) -> HandlerResult {
        if let Some(run) = self.running.take() {
            for (_, h) in run.relays {
                h.stop();
            }
            let _ = run.paused_tx.send(false);
            drop(run.shared);
            // The inbound task publishes what it holds once every sender
            // is gone, then saves the resume state.
            let mut inbound = run.inbound;
            if tokio::time::timeout(Duration::from_secs(2), &mut inbound)
                .await
                .is_err()
            {
                inbound.abort();
            }
        }
        Ok(())
    }
}
