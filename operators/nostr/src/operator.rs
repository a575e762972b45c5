//! [`NostrOperator`]: the bus side. Starts a task per relay, the inbound
//! task and the relay-event task, turns send requests into signed events
//! published to the write relays or the named ones (answering with each
//! relay's `OK`), adds and removes relays on request, and applies reloads
//! to the running connections: relays added and removed, filters
//! changed, without a restart.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use switchboard_bus::proto::ChatPattern;
use switchboard_bus::{Bus, Context, Delivery, HandlerResult, Operator};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{BotKeys, NostrConfig, RelayConfig, SubscriptionConfig};
use crate::control::{publish_events, Origin, Overlay, RelayEvents};
use crate::inbound::{Inbound, Recent};
use crate::outbound::{request_for, Refusal, Request};
use crate::relay::{OkResult, RelayHandle, RelayStatus, Shared};
use crate::resume::Resume;
use crate::stats::NostrStats;

/// The answer to a publish request: [`SendResult`](switchboard_bus::proto::SendResult)'s `ok`/`error`, plus
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

/// One relay in a `relays`, `relay-add` or `relay-remove` answer.
#[derive(Debug, Serialize)]
pub struct RelayEntry {
    /// Its status.
    #[serde(flatten)]
    pub status: RelayStatus,
    /// From the manifest, or added over the bus.
    pub origin: Origin,
}

/// The answer to a `relays` request.
#[derive(Debug, Serialize)]
pub struct RelaysReply {
    /// Each relay's status.
    pub relays: Vec<RelayEntry>,
    /// Resume marks: subscription → relay → newest `created_at` seen.
    pub marks: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The answer to a `relay-add` or `relay-remove` request.
#[derive(Debug, Serialize)]
pub struct RelayChange {
    /// Always true (a refusal is a `SendResult`).
    pub ok: bool,
    /// The relays after the change.
    pub relays: Vec<RelayEntry>,
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
    own_tx: watch::Sender<(BotKeys, bool)>,
    recent: Arc<Mutex<Recent>>,
    inbound: JoinHandle<()>,
    /// What `relay-add` and `relay-remove` changed.
    overlay: Overlay,
    relay_events: JoinHandle<()>,
}

impl NostrOperator {
    /// An operator that connects when started.
    pub fn new() -> NostrOperator {
        NostrOperator::default()
    }

    /// Its own id: a configured `instance` must say the same (see
    /// [`switchboard_bus::authentic::own_instance`]).
    fn instance(
        ctx: &Context,
        config: &NostrConfig,
    ) -> Result<String, switchboard_bus::authentic::ForeignInstance> {
        switchboard_bus::authentic::own_instance(ctx.id().as_str(), config.instance.as_deref())
    }

    async fn subscribe(ctx: &mut Context, instance: &str) -> HandlerResult {
        // send.nostr.<instance>.*.*
        ctx.subscribe(&ChatPattern::send().protocol("nostr").instance(instance))
            .await?;
        Ok(())
    }
}

impl Running {
    /// The relays that should run: the manifest's, with the bus's changes.
    fn wanted(&self) -> Vec<(RelayConfig, Origin)> {
        self.overlay.apply(&self.config.relays)
    }

    /// TLS for `wss://` relays when one is wanted and none is set up (a
    /// relay added over the bus, a manifest without `wss://` relays).
    fn ensure_tls(&mut self, wanted: &[RelayConfig]) -> Result<(), Refusal> {
        if self.shared.tls.is_none() && wanted.iter().any(|r| r.url.starts_with("wss://")) {
            let tls = crate::relay::tls::client_config(self.config.tls_ca.as_deref())
                .map_err(|reason| Refusal::Tls { reason })?;
            self.shared.tls = Some(tls);
        }
        Ok(())
    }

    /// Stops the running relays that are no longer wanted (or whose
    /// flags changed), saying `why`, and starts the missing ones.
    fn reconcile(&mut self, stats: &switchboard_bus::Stats, why: &str) {
        let wanted = self.wanted();
        let gone: Vec<String> = self
            .relays
            .iter()
            .filter(|(url, h)| {
                !wanted
                    .iter()
                    .any(|(r, _)| &r.url == *url && r == h.config())
            })
            .map(|(url, _)| url.clone())
            .collect();
        for url in gone {
            if let Some(h) = self.relays.remove(&url) {
                tracing::info!(relay = %url, reason = why, "relay stopped");
                h.stop(why, &self.shared.events);
            }
        }
        for (rc, _) in wanted {
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

    fn entries(&self) -> Vec<RelayEntry> {
        let origins = self.wanted();
        self.relays
            .values()
            .map(|h| RelayEntry {
                status: h.status(),
                origin: origins
                    .iter()
                    .find(|(r, _)| r.url == h.config().url)
                    .map(|(_, o)| *o)
                    .unwrap_or(Origin::Config),
            })
            .collect()
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
            relays: self.entries(),
            marks,
        }
    }

    /// `relay-add`: a new relay, or new flags for a running one.
    fn add_relay(
        &mut self,
        rc: RelayConfig,
        stats: &switchboard_bus::Stats,
    ) -> Result<(), Refusal> {
        self.ensure_tls(std::slice::from_ref(&rc))?;
        tracing::info!(relay = %rc.url, read = rc.read, write = rc.write, "relay added over the bus");
        self.overlay.add(rc, &self.config.relays);
        self.reconcile(stats, "its read/write flags changed over the bus");
        Ok(())
    }

    /// `relay-remove`: refused for an unknown relay and for the last one.
    fn remove_relay(&mut self, url: &str, stats: &switchboard_bus::Stats) -> Result<(), Refusal> {
        if !self.relays.contains_key(url) {
            return Err(Refusal::Relay {
                reason: format!(
                    "{url} is not one of the operator's relays ({})",
                    self.relays.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
        if self.relays.len() == 1 {
            return Err(Refusal::Relay {
                reason: format!(
                    "{url} is the operator's only relay; add another before removing it"
                ),
            });
        }
        self.overlay.remove(url);
        self.reconcile(stats, "removed over the bus");
        Ok(())
    }

    /// The relays a publish goes to: every write relay, or the named
    /// ones (each must be running with `write = true`).
    fn writers(&self, named: Option<&[String]>) -> Result<Vec<&RelayHandle>, Refusal> {
        let Some(named) = named else {
            let all: Vec<&RelayHandle> =
                self.relays.values().filter(|h| h.config().write).collect();
            if all.is_empty() {
                return Err(Refusal::Relay {
                    reason: "no write relay is configured; set write = true on a relay".into(),
                });
            }
            return Ok(all);
        };
        let mut out: Vec<&RelayHandle> = Vec::new();
        for url in named {
            let Some(h) = self.relays.get(url.trim()) else {
                return Err(Refusal::Relay {
                    reason: format!(
                        "{url} is not one of the operator's relays ({}); add it with relay-add first",
                        self.relays.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            };
            if !h.config().write {
                return Err(Refusal::Relay {
                    reason: format!(
                        "{url} is read-only (write = false); change that with relay-add"
                    ),
                });
            }
            if !out.iter().any(|o| o.config().url == h.config().url) {
                out.push(h);
            }
        }
        Ok(out)
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
        let instance = Self::instance(ctx, &config)?;
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
        let mut resume = resume;
        resume.set_lookback(&config.subscriptions);
        let resume = Arc::new(Mutex::new(resume));
        let stats = NostrStats::new(ctx.bus().stats());
        let (events, events_rx) = RelayEvents::new(stats.relay_events_dropped.clone());
        let (inbound_tx, inbound_rx) = mpsc::channel(1024);
        let (instance_tx, instance_rx) = watch::channel(instance.clone());
        let (paused_tx, paused_rx) = watch::channel(false);
        let (collect_tx, collect_rx) = watch::channel(config.collect);
        let (own_tx, own_rx) = watch::channel((config.keys.clone(), config.own_events));
        let relay_events = tokio::spawn(publish_events(
            ctx.bus().clone(),
            instance_rx.clone(),
            events_rx,
        ));
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
            events,
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
            overlay: Overlay::default(),
            relay_events,
        };
        running.reconcile(ctx.bus().stats(), "");
        self.running = Some(running);
        Ok(())
    }

    async fn message(&mut self, ctx: &mut Context, delivery: Delivery) -> HandlerResult {
        let Some(run) = &mut self.running else {
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
            Ok(Request::AddRelay(_) | Request::RemoveRelay(_)) if !run.config.relay_control => {
                Err(Refusal::RelayControlOff)
            }
            Ok(Request::AddRelay(rc)) => run.add_relay(rc, ctx.bus().stats()),
            Ok(Request::RemoveRelay(url)) => run.remove_relay(&url, ctx.bus().stats()),
            Ok(Request::Publish { event, relays }) => {
                let event = Arc::new(*event);
                match run.writers(relays.as_deref()) {
                    Err(e) => Err(e),
                    Ok(handles) => {
                        let writers: Vec<_> = handles
                            .into_iter()
                            .map(|h| (h.config().url.clone(), h.publish(Arc::clone(&event))))
                            .collect();
                        tokio::spawn(publish(
                            ctx.bus().clone(),
                            writers,
                            event.id.to_hex(),
                            run.config.publish_timeout,
                            run.shared.stats.clone(),
                            delivery.reply.clone(),
                        ));
                        return Ok(());
                    }
                }
            }
        };
        // relay-add and relay-remove: answered with the relays now.
        if outcome.is_ok() {
            if let Some(reply) = &delivery.reply {
                let body = RelayChange {
                    ok: true,
                    relays: run.entries(),
                };
                ctx.bus().respond_json(reply, &body).await?;
            }
            return Ok(());
        }
        if let Err(error) = outcome {
            ctx.refuse(&delivery, &error).await?;
        }
        Ok(())
    }

    async fn reload(&mut self, ctx: &mut Context, config: NostrConfig) -> HandlerResult {
        let Some(run) = &mut self.running else {
            return self.start(ctx, config).await;
        };
        let instance = Self::instance(ctx, &config)?;
        if instance != run.instance {
            ctx.clear_subscriptions();
            Self::subscribe(ctx, &instance).await?;
            run.instance = instance.clone();
            let _ = run.instance_tx.send(instance);
        }
        // Checked before anything changes: a bad tls_ca refuses the reload
        // (also one only a relay added over the bus needs).
        let mut tls = config.tls().map_err(|e| format!("TLS setup: {e}"))?;
        let mut overlay = run.overlay.clone();
        overlay.reload(&run.config.relays, &config.relays);
        if tls.is_none()
            && overlay
                .apply(&config.relays)
                .iter()
                .any(|(r, _)| r.url.starts_with("wss://"))
        {
            tls = Some(
                crate::relay::tls::client_config(config.tls_ca.as_deref())
                    .map_err(|e| format!("TLS setup: {e}"))?,
            );
        }
        if run.config.needs_reconnect(&config) {
            for (_, h) in std::mem::take(&mut run.relays) {
                h.stop(
                    "the key, tls_ca, reconnect schedule or max_event_bytes changed (reload); reconnecting",
                    &run.shared.events,
                );
            }
            run.shared.keys = config.keys.clone();
            run.shared.reconnect = Arc::new(config.reconnect.clone());
            run.shared.max_event_bytes = config.max_event_bytes;
        }
        // Relays started from here on (new, or all after the above) use it.
        run.shared.tls = tls;
        run.overlay = overlay;
        let subs = Arc::new(config.subscriptions.clone());
        if subs != run.subs {
            let names: Vec<&str> = subs.iter().map(|s| s.name.as_str()).collect();
            {
                let mut resume = run.shared.resume.lock().unwrap_or_else(|p| p.into_inner());
                resume.retain_subscriptions(&names);
                resume.set_lookback(&subs);
            }
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
        let _ = run.own_tx.send((config.keys.clone(), config.own_events));
        run.config = config;
        // Relays gone, or whose read/write flags changed, stop; new ones start.
        run.reconcile(ctx.bus().stats(), "removed by a reload");
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
                h.stop("the operator is stopping", &run.shared.events);
            }
            let _ = run.paused_tx.send(false);
            drop(run.shared);
            // Its last events (the disconnects above) go out once every
            // sender is gone.
            let mut relay_events = run.relay_events;
            if tokio::time::timeout(Duration::from_secs(1), &mut relay_events)
                .await
                .is_err()
            {
                relay_events.abort();
            }
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
