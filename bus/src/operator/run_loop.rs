//! The loop every operator runs in: it wakes on a signal, a control
//! request, a heartbeat tick, a health change, a refused subscription or
//! a delivery, and does one thing at a time on the caller's task.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::stream::{SelectAll, StreamExt};
use futures::FutureExt;
use switchboard_proto::{
    control_subject, heartbeat_subject, ready_subject, Control, ControlAck, FailureCode, Heartbeat,
    OperatorState, Ready, Timestamp, PROTOCOL_VERSION,
};
use tokio::signal::unix::{signal, SignalKind};

use super::context::{Context, Held};
use super::diagnosis;
use super::{HandlerError, Operator, RunError};
use crate::client::Bus;
use crate::config::ConfigError;
use crate::error::BoxError;
use crate::launch::LaunchEnv;
use crate::subscription::{Dedupe, Delivery};

pub(super) struct Runtime<O: Operator> {
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
    /// in-place restart): [`run`](super::run) returns it so the supervisor restarts
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
    pub(super) async fn new(op: O, launch: LaunchEnv) -> Result<Self, RunError> {
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
                held: Held::default(),
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

    pub(super) async fn run(mut self) -> Result<(), RunError> {
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
                    let config =
                        hangup_config(self.ctx.launch.config_file.as_deref(), &self.config).await;
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
                    diagnosis::refused_subscriptions(&self.ctx.health, &subjects);
                }
                Wake::Delivery(d) if self.ctx.state == OperatorState::Running => {
                    self.deliver(d).await
                }
                Wake::Delivery(d) => self.ctx.hold(d),
                Wake::Held => {
                    if let Some(d) = self.ctx.held.pop() {
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
        diagnosis::slow_consumer(&self.ctx.health, self.dropped_seen, counters.dropped);
        self.dropped_seen = counters.dropped;
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
        let was_running = hands_over(self.state_before_shutdown, self.ctx.state);
        self.ctx.state = OperatorState::Stopping;
        let deadline = Instant::now() + Duration::from_millis(500);
        while was_running && self.fatal.is_none() && Instant::now() < deadline {
            let d = match self.ctx.held.pop() {
                Some(d) => d,
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

/// SIGHUP: the config file if the launcher gave one, else the current
/// config again (operators re-read their own files in `reload`). A file
/// that cannot be read or is not JSON is said, and the current config
/// reloaded: a hangup never leaves the operator without one.
async fn hangup_config(file: Option<&Path>, current: &serde_json::Value) -> serde_json::Value {
    if let Some(path) = file {
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
    current.clone()
}

/// Whether a shutdown hands over the deliveries that already arrived: only
/// when the operator was running (`before`: its state when a `shutdown`
/// request came, whose ack already said `stopping`; `now` for a signal).
/// A halted operator handles nothing, as promised.
fn hands_over(before: Option<OperatorState>, now: OperatorState) -> bool {
    before.unwrap_or(now) == OperatorState::Running
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn hangup_reads_the_file_else_keeps_the_config() {
        let current = json!({"nick": "old"});
        assert_eq!(hangup_config(None, &current).await, current);
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("config.json");
        std::fs::write(&file, r#"{"nick": "new"}"#).expect("write");
        assert_eq!(
            hangup_config(Some(&file), &current).await,
            json!({"nick": "new"})
        );
        std::fs::write(&file, "{not json").expect("write");
        assert_eq!(hangup_config(Some(&file), &current).await, current);
        let missing = dir.path().join("missing.json");
        assert_eq!(hangup_config(Some(&missing), &current).await, current);
    }

    #[test]
    fn only_a_running_operator_hands_over_at_shutdown() {
        use OperatorState::*;
        assert!(hands_over(None, Running));
        assert!(!hands_over(None, Halted));
        // A `shutdown` request already set the state to stopping: what
        // counts is the state before it.
        assert!(hands_over(Some(Running), Stopping));
        assert!(!hands_over(Some(Halted), Stopping));
        assert!(!hands_over(Some(Starting), Stopping));
    }
}
