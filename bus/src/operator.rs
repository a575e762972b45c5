//! The operator runtime: ready, heartbeats, control verbs, signals.
//!
//! An operator implements [`Operator`] and hands itself to [`run`]. The
//! runtime does the lifecycle the orchestrator expects (docs/PROTOCOL.md,
//! "Lifecycle"): it connects from the launch environment, calls `start`,
//! announces `ready` (flushed), sends heartbeats with state and counters,
//! answers every control verb with an ack, maps SIGTERM/SIGINT to
//! shutdown and SIGHUP to reload, and flushes before it returns.
//!
//! Handlers run one at a time on the caller's task, so an operator needs
//! no locks for its own state; long work belongs in a spawned task that
//! holds a clone of [`Context::bus`].

use std::path::Path;
use std::time::{Duration, Instant};

use futures::stream::{SelectAll, StreamExt};
use futures::FutureExt;
use serde::de::DeserializeOwned;
use switchboard_proto::{
    control_subject, heartbeat_subject, ready_subject, ChatAddress, Control, ControlAck,
    FailureCode, Heartbeat, OperatorId, OperatorState, Ready, Timestamp, ToPattern,
    PROTOCOL_VERSION,
};
use tokio::signal::unix::{signal, SignalKind};
use tracing::Instrument;

use crate::client::Bus;
use crate::config::ConfigError;
use crate::error::{BoxError, ConnectError, PublishError, ReplyError, SubscribeError};
use crate::launch::{LaunchEnv, LaunchError};
use crate::subscription::{Dedupe, Delivery, Subscription};

/// What a handler returns when it fails; anything that is an error.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The result of a handler.
pub type HandlerResult = Result<(), HandlerError>;

/// An operator's behaviour. Only `start` is required.
///
/// `async fn` in this trait is deliberate: the runtime awaits handlers on
/// the caller's own task, so their futures need not be `Send`, and an
/// operator may keep non-`Send` state.
#[allow(async_fn_in_trait)]
pub trait Operator {
    /// The operator's configuration, deserialised from the manifest's
    /// `[config]` table (JSON in `SWITCHBOARD_CONFIG`). Use
    /// `serde_json::Value` to take it as is.
    type Config: DeserializeOwned;

    /// The operator's own version, reported in `ready`.
    fn version(&self) -> Option<String> {
        None
    }

    /// Set up: subscribe with [`Context::subscribe`], open connections.
    /// `ready` is announced when this returns `Ok`.
    async fn start(&mut self, ctx: &mut Context, config: Self::Config) -> HandlerResult;

    /// One envelope from a subscription made with [`Context::subscribe`].
    /// Not called while halted (deliveries wait until `resume`).
    async fn message(&mut self, ctx: &mut Context, delivery: Delivery) -> HandlerResult {
        let _ = (ctx, delivery);
        Ok(())
    }

    /// Apply a new configuration without exiting. The default stops,
    /// drops the subscriptions and starts again with `config`; override it
    /// to apply changes more gently (keep connections open).
    async fn reload(&mut self, ctx: &mut Context, config: Self::Config) -> HandlerResult {
        self.stop(ctx).await?;
        ctx.clear_subscriptions();
        self.start(ctx, config).await
    }

    /// Pause: stop producing. Deliveries are held until `resume`.
    async fn halt(&mut self, ctx: &mut Context) -> HandlerResult {
        let _ = ctx;
        Ok(())
    }

    /// Continue after `halt`.
    async fn resume(&mut self, ctx: &mut Context) -> HandlerResult {
        let _ = ctx;
        Ok(())
    }

    /// Release resources before exit or restart. Publishes made here are
    /// flushed by the runtime.
    async fn stop(&mut self, ctx: &mut Context) -> HandlerResult {
        let _ = ctx;
        Ok(())
    }
}

/// What handlers get: the bus, the operator's identity and directories,
/// and its subscriptions.
pub struct Context {
    bus: Bus,
    id: OperatorId,
    launch: LaunchEnv,
    inbox: SelectAll<Subscription>,
    /// Each subscription drops its own repeats; this catches an envelope
    /// that two overlapping subscriptions both delivered.
    dedupe: Dedupe,
    state: OperatorState,
    shutdown_requested: bool,
    health: crate::HealthReport,
    /// Deliveries that arrived while halted, handed over at `resume`;
    /// bounded by [`HELD_BYTES`] (oldest shed and counted).
    held: std::collections::VecDeque<Delivery>,
    held_bytes: usize,
    links: std::collections::BTreeMap<String, String>,
}

impl Context {
    /// Say in `ready` (and so in `switchboard status`) what this operator
    /// serves for people: a name and a URL (a dashboard, a web hook).
    /// Call it in [`Operator::start`], before ready goes out.
    pub fn advertise(&mut self, name: impl Into<String>, url: impl Into<String>) {
        self.links.insert(name.into(), url.into());
    }

    /// The health this operator reports in heartbeats: set it when its
    /// work cannot go on (`ctx.health().set(Health::Degraded, "...")`),
    /// and back to ok when it can. Clone it into tasks.
    pub fn health(&self) -> &crate::HealthReport {
        &self.health
    }

    /// The connection, to publish and request. Clone it into tasks.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// This operator's unique ID.
    pub fn id(&self) -> &OperatorId {
        &self.id
    }

    /// The launch environment it was started with.
    pub fn launch(&self) -> &LaunchEnv {
        &self.launch
    }

    /// Persistent directory (survives restarts), if the launcher gave one.
    pub fn state_dir(&self) -> Option<&Path> {
        self.launch.state_dir.as_deref()
    }

    /// Scratch directory (wiped when the operator stops), if given.
    pub fn scratch_dir(&self) -> Option<&Path> {
        self.launch.scratch_dir.as_deref()
    }

    /// The state the runtime reports in heartbeats.
    pub fn state(&self) -> OperatorState {
        self.state
    }

    /// Route envelopes matching `pattern` to [`Operator::message`]:
    /// a [`Pattern`](switchboard_proto::Pattern), its text
    /// (`ctx.subscribe("chat.#.message")`) or a
    /// [`ChatPattern`](switchboard_proto::ChatPattern).
    pub async fn subscribe<P: ToPattern + ?Sized>(
        &mut self,
        pattern: &P,
    ) -> Result<(), SubscribeError> {
        let sub = self.bus.subscribe(pattern).await?;
        tracing::debug!(pattern = %sub.pattern(), "subscribed");
        self.inbox.push(sub);
        Ok(())
    }

    /// Answer the chat event `to` with `text`, in the room it came from
    /// (`send.<protocol>.<instance>.<room>.message`), with this operator
    /// as `source`, a fresh id, `in-reply-to` the event's id and the raw
    /// `room` header. See [`Bus::reply`].
    ///
    /// ```no_run
    /// # use switchboard_bus::{Context, Delivery, HandlerResult};
    /// # async fn message(ctx: &mut Context, d: Delivery) -> HandlerResult {
    /// if d.chat()?.text() == "!ping" {
    ///     ctx.reply(&d, "pong").await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ReplyError`]: `to` is not a chat event, or publishing failed.
    pub async fn reply(&self, to: &Delivery, text: impl Into<String>) -> Result<(), ReplyError> {
        self.bus.reply(to, text).await
    }

    /// Say `text` in `room` (`send.<protocol>.<instance>.<room>.message`),
    /// e.g. an address kept from an earlier
    /// [`ChatEvent::address`](switchboard_proto::ChatEvent::address). See
    /// [`Bus::send_text`].
    ///
    /// # Errors
    ///
    /// [`PublishError`] when publishing fails.
    pub async fn send(
        &self,
        room: &ChatAddress,
        text: impl Into<String>,
    ) -> Result<(), PublishError> {
        self.bus.send_text(room, text).await
    }

    /// Drop every subscription made with [`Context::subscribe`].
    /// Deliveries that had already arrived and were not handled (held
    /// while halted, or queued behind a slow handler) go with them: they
    /// are counted in the heartbeat's `discarded` counter and said once,
    /// never lost silently.
    pub fn clear_subscriptions(&mut self) {
        let mut discarded = self.held.len() as u64;
        self.held.clear();
        self.held_bytes = 0;
        while let Some(Some(_)) = self.inbox.next().now_or_never() {
            discarded += 1;
        }
        if discarded > 0 {
            self.bus.stats().counter(DISCARDED).add(discarded);
            tracing::info!(
                discarded,
                "deliveries that arrived but were not handled were discarded with the subscriptions"
            );
        }
        self.inbox = SelectAll::new();
        self.bus.forget_refused_subscriptions();
    }

    /// Ask the runtime to shut down after the current handler returns.
    pub fn request_shutdown(&mut self) {
        self.shutdown_requested = true;
    }
}

/// How a `degraded` health caused by dropped messages begins.
const SLOW_CONSUMER_REASON: &str = "slow consumer";

/// The heartbeat counter of deliveries dropped with the subscriptions
/// (shutdown while halted, reload, restart in place).
pub const DISCARDED: &str = "discarded";

/// The heartbeat counter of deliveries shed while halted because the held
/// ones were over [`HELD_BYTES`] (the oldest go first).
pub const HELD_SHED: &str = "held_shed";

/// How many bytes of envelopes a halted operator holds for `resume`.
/// Without a bound, each subscription's queue (65,536 messages of up to
/// 1 MiB) could hold gigabytes.
pub const HELD_BYTES: usize = 64 << 20;

impl Context {
    /// Keep `d` for `resume`, shedding the oldest held ones past
    /// [`HELD_BYTES`].
    fn hold(&mut self, d: Delivery) {
        let size = d.wire().payload().len();
        let mut shed = 0u64;
        while self.held_bytes + size > HELD_BYTES {
            let Some(old) = self.held.pop_front() else {
                break;
            };
            self.held_bytes -= old.wire().payload().len();
            shed += 1;
        }
        if shed > 0 {
            if self.bus.stats().counter(HELD_SHED).get() == 0 {
                tracing::warn!(
                    limit_bytes = HELD_BYTES,
                    "halted too long: the oldest held deliveries are shed (counted in held_shed)"
                );
            }
            self.bus.stats().counter(HELD_SHED).add(shed);
        }
        self.held_bytes += size;
        self.held.push_back(d);
    }
}

/// Why [`run`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The launch environment is incomplete.
    #[error(transparent)]
    Launch {
        /// What is missing or invalid.
        #[from]
        source: LaunchError,
    },
    /// NATS could not be reached.
    #[error(transparent)]
    Connect {
        /// Why.
        #[from]
        source: ConnectError,
    },
    /// The configuration does not fit the operator's `Config` type.
    #[error("invalid configuration for operator {id}: {source}")]
    Config {
        /// The operator.
        id: String,
        /// The key path and what was wrong, never the value.
        source: ConfigError,
    },
    /// `start` failed (at launch, or in an in-place restart).
    #[error("operator {id} failed to start: {source}")]
    Start {
        /// The operator.
        id: String,
        /// The handler's error, as it returned it.
        source: HandlerError,
    },
    /// The control subject could not be subscribed, or signals installed.
    #[error("operator runtime setup failed: cannot {what}: {source}")]
    Setup {
        /// What the runtime was doing, e.g. `subscribe to sb.ctl.bot`.
        what: String,
        /// Why it failed.
        source: BoxError,
    },
}

crate::error::kinds! {
    /// Coarse classes of [`RunError`].
    RunError => RunErrorKind { Launch, Connect, Config, Start, Setup }
}

/// Run `operator` with the launch environment of this process until it is
/// told to shut down. Returns `Ok` on a clean shutdown.
///
/// ```no_run
/// use switchboard_bus::{run, Context, HandlerResult, Operator};
///
/// struct Quiet;
/// impl Operator for Quiet {
///     type Config = serde_json::Value;
///     async fn start(&mut self, _ctx: &mut Context, _cfg: serde_json::Value) -> HandlerResult {
///         Ok(())
///     }
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), switchboard_bus::RunError> {
///     run(Quiet).await
/// }
/// ```
pub async fn run<O: Operator>(operator: O) -> Result<(), RunError> {
    crate::logging::init_tracing_for(std::any::type_name::<O>());
    let launch = LaunchEnv::from_env()?;
    run_with(operator, launch).await
}

/// [`run`] with an explicit launch environment (tests, embedding).
pub async fn run_with<O: Operator>(operator: O, launch: LaunchEnv) -> Result<(), RunError> {
    let span = tracing::info_span!("operator", id = %launch.id);
    Runtime::new(operator, launch)
        .await?
        .run()
        .instrument(span)
        .await
}

struct Runtime<O: Operator> {
    op: O,
    ctx: Context,
    config: serde_json::Value,
    started_at: Instant,
    seq: u64,
    /// `dropped` at the last heartbeat: more since then is a slow consumer
    /// (reported as `degraded` until a heartbeat interval passes without).
    dropped_seen: u64,
    /// Refuses envelopes whose `source` is not their subject's owner.
    gate: crate::authentic::Gate,
    /// Set when the operator can no longer work in this process (a failed
    /// in-place restart): [`run`] returns it so the supervisor restarts
    /// the process.
    fatal: Option<RunError>,
    /// The state when a `shutdown` request came (the ack already says
    /// `stopping`): a running operator hands over what arrived before it,
    /// a halted one does not.
    state_before_shutdown: Option<OperatorState>,
}

/// What woke the loop up.
enum Wake {
    Control(crate::subscription::RawMessage),
    ControlClosed,
    Heartbeat,
    Terminate(&'static str),
    Hangup,
    Delivery(Delivery),
    Held,
    Refused,
}

impl<O: Operator> Runtime<O> {
    async fn new(op: O, launch: LaunchEnv) -> Result<Self, RunError> {
        let bus = Bus::connect(&launch.nats, launch.id.as_str()).await?;
        let gate = crate::authentic::Gate::new(bus.stats());
        Ok(Runtime {
            gate,
            op,
            config: launch.config.clone(),
            ctx: Context {
                bus,
                id: launch.id.clone(),
                dedupe: Dedupe::new(launch.nats.dedupe_window),
                launch,
                inbox: SelectAll::new(),
                state: OperatorState::Starting,
                shutdown_requested: false,
                health: crate::HealthReport::default(),
                held: std::collections::VecDeque::new(),
                held_bytes: 0,
                links: std::collections::BTreeMap::new(),
            },
            started_at: Instant::now(),
            seq: 0,
            dropped_seen: 0,
            fatal: None,
            state_before_shutdown: None,
        })
    }

    /// The typed config, or why not: the key path and what was wrong,
    /// never the value (it may be a resolved secret, and this message
    /// goes into the log and the `reload` ack).
    fn parse_config(&self, value: &serde_json::Value) -> Result<O::Config, ConfigError> {
        crate::config::parse_config(value)
    }

    async fn run(mut self) -> Result<(), RunError> {
        let id = self.ctx.id.clone();
        let setup = |what: String, source: BoxError| RunError::Setup { what, source };
        let control_subject = control_subject(&id);
        let mut control = self
            .ctx
            .bus
            .subscribe_raw(&control_subject)
            .await
            .map_err(|e| setup(format!("subscribe to {control_subject}"), e.into()))?;
        let handler = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| setup(format!("install a {name} handler"), e.into()))
        };
        let mut sigterm = handler(SignalKind::terminate(), "SIGTERM")?;
        let mut sigint = handler(SignalKind::interrupt(), "SIGINT")?;
        let mut sighup = handler(SignalKind::hangup(), "SIGHUP")?;

        let config = self
            .parse_config(&self.config)
            .map_err(|source| RunError::Config {
                id: id.to_string(),
                source,
            })?;
        if let Err(source) = self.op.start(&mut self.ctx, config).await {
            return Err(RunError::Start {
                id: id.to_string(),
                source,
            });
        }
        self.ctx.state = OperatorState::Running;
        self.announce_ready().await;
        tracing::info!("ready");

        let mut refused = self.ctx.bus.refused_subscriptions();
        let mut heartbeat = tokio::time::interval(self.ctx.launch.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await; // the first tick is immediate; ready just went out

        while !self.ctx.shutdown_requested {
            let running = self.ctx.state == OperatorState::Running;
            let wake = tokio::select! {
                biased;
                _ = sigterm.recv() => Wake::Terminate("SIGTERM"),
                _ = sigint.recv() => Wake::Terminate("SIGINT"),
                _ = sighup.recv() => Wake::Hangup,
                msg = control.next() => match msg {
                    Some(m) => Wake::Control(m),
                    None => Wake::ControlClosed,
                },
                _ = heartbeat.tick() => Wake::Heartbeat,
                _ = self.ctx.health.changed() => Wake::Heartbeat,
                Ok(()) = refused.changed() => Wake::Refused,
                // What was held while halted goes first after `resume`.
                () = std::future::ready(()), if running && !self.ctx.held.is_empty() => Wake::Held,
                // Read while halted too, into the bounded hold: the
                // client's own queues are bounded by count, not bytes.
                Some(d) = self.ctx.inbox.next() => Wake::Delivery(d),
            };
            match wake {
                Wake::Terminate(sig) => {
                    tracing::info!(signal = sig, "shutting down");
                    self.ctx.shutdown_requested = true;
                }
                Wake::Hangup => {
                    let config = self.config_for_hangup().await;
                    match self.apply_reload(config).await {
                        Ok(()) => tracing::info!("reloaded on SIGHUP"),
                        Err((_, msg)) => tracing::warn!(error = %msg, "reload on SIGHUP failed"),
                    }
                }
                Wake::Control(msg) => self.handle_control(msg).await,
                Wake::ControlClosed => {
                    tracing::warn!("control subscription closed; shutting down");
                    self.ctx.shutdown_requested = true;
                }
                Wake::Heartbeat => self.send_heartbeat().await,
                Wake::Refused => {
                    let subjects = refused.borrow_and_update().clone();
                    self.report_refused(&subjects);
                }
                Wake::Delivery(d) if self.ctx.state == OperatorState::Running => {
                    self.deliver(d).await
                }
                Wake::Delivery(d) => self.ctx.hold(d),
                Wake::Held => {
                    if let Some(d) = self.ctx.held.pop_front() {
                        self.ctx.held_bytes -= d.wire().payload().len();
                        self.deliver(d).await;
                    }
                }
            }
        }
        self.shutdown().await;
        match self.fatal.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A subscription the server refused leaves the operator deaf there
    /// (its manifest's `subscribe` grants do not cover it): health
    /// `failed`, saying what to change, so `switchboard status` shows it
    /// instead of a healthy `running`. Back to ok when none is refused
    /// any more (a reload that listens elsewhere), unless the operator
    /// set another reason of its own meanwhile.
    fn report_refused(&self, subjects: &[String]) {
        const WHY: &str = "not allowed to subscribe to ";
        if subjects.is_empty() {
            let (health, reason) = self.ctx.health.get();
            if health == switchboard_proto::Health::Failed
                && reason.is_some_and(|r| r.starts_with(WHY))
            {
                self.ctx.health.ok();
            }
            return;
        }
        self.ctx.health.set(
            switchboard_proto::Health::Failed,
            format!(
                "{WHY}{}: the manifest's `subscribe` grants do not cover it; \
                 widen the grant or listen elsewhere",
                subjects.join(", ")
            ),
        );
    }

    async fn deliver(&mut self, d: Delivery) {
        if !self.gate.admit(&d.subject, d.source()) {
            return;
        }
        if self.ctx.inbox.len() > 1 {
            if let Some(id) = d.id() {
                if !self.ctx.dedupe.first_time(id) {
                    self.ctx.bus.stats().reclassify_as_duplicate();
                    return;
                }
            }
        }
        if let Err(e) = self.op.message(&mut self.ctx, d).await {
            self.ctx.bus.stats().handler_error();
            tracing::warn!(error = %e, "message handler failed");
        }
    }

    async fn announce_ready(&mut self) {
        let ready = Ready {
            id: self.ctx.id.to_string(),
            pid: std::process::id(),
            protocol: PROTOCOL_VERSION,
            version: self.op.version(),
            links: self.ctx.links.clone(),
            timestamp: Timestamp::now(),
        };
        if let Err(e) = self
            .ctx
            .bus
            .publish_json(&ready_subject(&self.ctx.id), &ready)
            .await
        {
            tracing::warn!(error = %e, "could not announce ready");
        }
        // `publish` only queues: make sure the orchestrator hears it now.
        let _ = self.ctx.bus.flush().await;
    }

    async fn send_heartbeat(&mut self) {
        self.seq += 1;
        let counters = self.ctx.bus.counters();
        self.slow_consumer_health(counters.dropped);
        let (health, health_reason) = self.ctx.health.get();
        let hb = Heartbeat {
            id: self.ctx.id.to_string(),
            pid: std::process::id(),
            seq: self.seq,
            state: self.ctx.state,
            uptime_ms: u64::try_from(self.started_at.elapsed().as_millis()).unwrap_or(u64::MAX),
            counters,
            health,
            health_reason,
            timestamp: Timestamp::now(),
        };
        if let Err(e) = self
            .ctx
            .bus
            .publish_json(&heartbeat_subject(&self.ctx.id), &hb)
            .await
        {
            tracing::warn!(error = %e, "could not send heartbeat");
        }
    }

    /// A slow consumer is never silent: messages dropped since the last
    /// heartbeat make the operator `degraded` with the reason (unless it
    /// already reports something else), and a heartbeat interval without
    /// drops makes it `ok` again.
    fn slow_consumer_health(&mut self, dropped: u64) {
        let new = dropped.saturating_sub(self.dropped_seen);
        self.dropped_seen = dropped;
        let (health, reason) = self.ctx.health.get();
        let ours = reason
            .as_deref()
            .is_some_and(|r| r.starts_with(SLOW_CONSUMER_REASON));
        if new > 0 && (health.is_ok() || ours) {
            self.ctx.health.set(
                switchboard_proto::Health::Degraded,
                format!(
                    "{SLOW_CONSUMER_REASON}: {new} messages dropped since the last heartbeat \
                     ({dropped} in all); the handler cannot keep up with what it subscribed to"
                ),
            );
        } else if new == 0 && ours {
            self.ctx.health.ok();
        }
    }

    /// SIGHUP: the config file if the launcher gave one, else the current
    /// config again (operators re-read their own files in `reload`).
    async fn config_for_hangup(&self) -> serde_json::Value {
        if let Some(path) = &self.ctx.launch.config_file {
            match tokio::fs::read(path).await {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(v) => return v,
                    Err(e) => tracing::warn!(
                        path = %path.display(), error = %e,
                        "config file is not JSON; reloading the current config"
                    ),
                },
                Err(e) => tracing::warn!(
                    path = %path.display(), error = %e,
                    "cannot read config file; reloading the current config"
                ),
            }
        }
        self.config.clone()
    }

    /// Apply a new config. A config that does not parse changes nothing.
    /// A reload handler that fails may have left the operator half set
    /// up, so it is restarted in place with the previous config; if even
    /// that fails, the process gives up (see [`Runtime::restart_in_place`]).
    async fn apply_reload(
        &mut self,
        config: serde_json::Value,
    ) -> Result<(), (FailureCode, String)> {
        let typed = self
            .parse_config(&config)
            .map_err(|e| (FailureCode::InvalidConfig, e.to_string()))?;
        let links = self.ctx.links.clone();
        if let Err(e) = self.op.reload(&mut self.ctx, typed).await {
            let message = format!("reload failed: {e}");
            tracing::warn!(error = %message, "restoring the previous config");
            let _ = self.restart_in_place().await;
            return Err((FailureCode::HandlerFailed, message));
        }
        self.config = config;
        // What it serves moved (a web server on a new address): say so
        // again, so `switchboard status` shows where it is now.
        if self.ctx.links != links {
            self.announce_ready().await;
        }
        Ok(())
    }

    /// Stop, forget subscriptions, start with the current config, announce
    /// ready again. On failure the operator cannot work in this process any
    /// more: it is marked fatal so `run` returns an error after the ack and
    /// the supervisor starts a fresh process.
    async fn restart_in_place(&mut self) -> Result<(), (FailureCode, String)> {
        self.ctx.state = OperatorState::Starting;
        if let Err(e) = self.op.stop(&mut self.ctx).await {
            tracing::warn!(error = %e, "stop handler failed during restart");
        }
        self.ctx.clear_subscriptions();
        let id = self.ctx.id.to_string();
        let (code, message, fatal) = match self.parse_config(&self.config) {
            Err(source) => (
                FailureCode::InvalidConfig,
                source.to_string(),
                RunError::Config { id, source },
            ),
            Ok(config) => match self.op.start(&mut self.ctx, config).await {
                Ok(()) => {
                    self.ctx.state = OperatorState::Running;
                    self.announce_ready().await;
                    return Ok(());
                }
                Err(source) => (
                    FailureCode::HandlerFailed,
                    format!("restart failed: {source}"),
                    RunError::Start { id, source },
                ),
            },
        };
        tracing::error!(error = %message, "cannot restart in place; exiting");
        self.fatal = Some(fatal);
        self.ctx.shutdown_requested = true;
        Err((code, message))
    }

    async fn handle_control(&mut self, msg: crate::subscription::RawMessage) {
        let request = Control::from_slice(&msg.payload);
        let ack = match request {
            Err(e) => {
                tracing::warn!(error = %e, "bad control request");
                ControlAck::failure(
                    self.ctx.id.to_string(),
                    None,
                    self.ctx.state,
                    FailureCode::BadRequest,
                    e.to_string(),
                )
            }
            Ok(control) => {
                let verb = control.verb();
                tracing::info!(%verb, "control request");
                match self.apply_control(control).await {
                    Ok(()) => ControlAck::success(self.ctx.id.to_string(), verb, self.ctx.state),
                    Err((code, message)) => {
                        tracing::warn!(%verb, error = %message, "control request failed");
                        ControlAck::failure(
                            self.ctx.id.to_string(),
                            Some(verb),
                            self.ctx.state,
                            code,
                            message,
                        )
                    }
                }
            }
        };
        match msg.reply {
            Some(reply) => {
                if let Err(e) = self.ctx.bus.respond_json(&reply, &ack).await {
                    tracing::warn!(error = %e, "could not send control ack");
                }
            }
            None => tracing::debug!("control message without reply subject; no ack sent"),
        }
    }

    async fn apply_control(&mut self, control: Control) -> Result<(), (FailureCode, String)> {
        let failed = |e: HandlerError| (FailureCode::HandlerFailed, e.to_string());
        match control {
            Control::Halt => {
                if self.ctx.state != OperatorState::Halted {
                    self.op.halt(&mut self.ctx).await.map_err(failed)?;
                    self.ctx.state = OperatorState::Halted;
                }
                Ok(())
            }
            Control::Resume => {
                if self.ctx.state == OperatorState::Halted {
                    self.op.resume(&mut self.ctx).await.map_err(failed)?;
                    self.ctx.state = OperatorState::Running;
                }
                Ok(())
            }
            Control::Reload { config } => self.apply_reload(config).await,
            Control::Restart => self.restart_in_place().await,
            Control::Shutdown => {
                self.ctx.shutdown_requested = true;
                self.state_before_shutdown = Some(self.ctx.state);
                self.ctx.state = OperatorState::Stopping;
                Ok(())
            }
        }
    }

    async fn shutdown(&mut self) {
        // Hand over what already arrived before we stop listening, within
        // a short deadline so shutdown stays prompt; a halted operator
        // handles nothing, as promised.
        let was_running =
            self.state_before_shutdown.unwrap_or(self.ctx.state) == OperatorState::Running;
        self.ctx.state = OperatorState::Stopping;
        let deadline = Instant::now() + Duration::from_millis(500);
        while was_running && self.fatal.is_none() && Instant::now() < deadline {
            let d = match self.ctx.held.pop_front() {
                Some(d) => {
                    self.ctx.held_bytes -= d.wire().payload().len();
                    d
                }
                None => match self.ctx.inbox.next().now_or_never() {
                    Some(Some(d)) => d,
                    _ => break,
                },
            };
            self.deliver(d).await;
        }
        self.ctx.clear_subscriptions();
        if let Err(e) = self.op.stop(&mut self.ctx).await {
            tracing::warn!(error = %e, "stop handler failed");
        }
        self.send_heartbeat().await;
        if tokio::time::timeout(Duration::from_secs(1), self.ctx.bus.flush())
            .await
            .is_err()
        {
            let lost = self
                .ctx
                .bus
                .counters()
                .extra
                .get(crate::client::PUBLISH_PENDING)
                .copied()
                .unwrap_or(0);
            tracing::warn!(
                not_written = lost,
                "could not flush pending publishes within 1 s; those not written are lost"
            );
        }
        tracing::info!("stopped");
    }
}
