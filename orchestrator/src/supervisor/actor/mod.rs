//! The actor of one operator: the only place that spawns or kills its
//! process. It sleeps until something happens (the process exits, a
//! lifecycle message, a health deadline, a command), asks `transitions`
//! what that means, and carries it out.

mod control;
mod launch;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard_proto::api::{CtlOutcome, OperatorEvent, SupervisedState};
use switchboard_proto::{event_subject, FailureCode, OperatorId, Timestamp, Verb};
use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;

use super::board::Entry;
use super::transitions::{self, AfterExit, Ended, HealthVerdict, Heard, Timings};
use super::{Cmd, Lifecycle, Shared, BUS_RECOVERY_GRACE};
use crate::backoff::RestartTracker;
use crate::manifest::{Change, Control as ControlMode, Manifest};
use crate::outbox::Lane;
use crate::process::{describe_exit, OperatorProcess};

/// The reason of an operator's first `starting` event.
const FIRST_START: &str = "first start";

/// What woke an actor.
enum Wake {
    Exited(std::process::ExitStatus),
    Cmd(Cmd),
    Life(Lifecycle),
    HealthDeadline,
    StartDue,
    Closed,
}

pub(super) struct Actor {
    id: OperatorId,
    manifest: Manifest,
    shared: Arc<Shared>,
    board: Arc<Mutex<BTreeMap<String, Entry>>>,
    cmds: mpsc::Receiver<Cmd>,
    life: mpsc::Receiver<Lifecycle>,
    tracker: RestartTracker,
    state: SupervisedState,
    /// Process starts so far; restarts = starts - 1.
    starts: u64,
    proc: Option<OperatorProcess>,
    last_seen: Option<Instant>,
    /// When the next start is due (no process running).
    next_start: Option<TokioInstant>,
    /// A config sent with `ctl reload`, used until the manifest changes.
    config_override: Option<Value>,
    /// The daemon's own reconnect count when health was last judged: a
    /// bus outage silences every operator, and must not be held against
    /// them.
    bus_reconnects: u64,
    /// No health verdict before this (set after a bus outage).
    grace_until: Option<Instant>,
    /// The pid of the process before the current one.
    previous_pid: Option<u32>,
    /// A start is waiting for this host's cluster lease (see `start`).
    waiting_for_lease: bool,
}

/// How often a start held back by a lapsed cluster lease asks again (the
/// engine renews every 500 ms).
const LEASE_RETRY: Duration = Duration::from_millis(500);

impl Actor {
    pub(super) fn new(
        manifest: Manifest,
        shared: Arc<Shared>,
        board: Arc<Mutex<BTreeMap<String, Entry>>>,
        cmds: mpsc::Receiver<Cmd>,
        life: mpsc::Receiver<Lifecycle>,
    ) -> Actor {
        Actor {
            id: manifest.id.clone(),
            tracker: RestartTracker::new(manifest.backoff.clone(), manifest.crash_loop.clone()),
            manifest,
            shared,
            board,
            cmds,
            life,
            state: SupervisedState::Exited,
            starts: 0,
            proc: None,
            last_seen: None,
            next_start: None,
            config_override: None,
            bus_reconnects: 0,
            grace_until: None,
            previous_pid: None,
            waiting_for_lease: false,
        }
    }

    pub(super) async fn run(mut self) {
        self.publish_board(None);
        if self.manifest.enabled {
            self.next_start = Some(TokioInstant::now());
        } else {
            self.set_state(SupervisedState::Disabled, None).await;
        }
        loop {
            let wake = self.next_wake().await;
            match wake {
                Wake::Exited(status) => self.on_exit(status, None).await,
                Wake::Life(msg) => self.on_lifecycle(msg).await,
                Wake::HealthDeadline => self.on_health_failure().await,
                Wake::StartDue => {
                    self.next_start = None;
                    self.start().await;
                }
                Wake::Cmd(Cmd::Stop { reply }) => {
                    self.stop_process("stopped").await;
                    self.set_state(SupervisedState::Exited, Some("stopped".into()))
                        .await;
                    // Removed (or the daemon is stopping): its config and
                    // credential files hold secrets, and its NATS user
                    // must go.
                    let _ = std::fs::remove_dir_all(self.operator_dirs().own);
                    self.shared.access.revoke(&self.id, true).await;
                    let _ = reply.send(());
                    return;
                }
                Wake::Cmd(Cmd::Ctl {
                    verb,
                    config,
                    in_place,
                    reply,
                }) => {
                    let outcome = self.on_ctl(verb, config, in_place).await;
                    let _ = reply.send(outcome);
                }
                Wake::Cmd(Cmd::Update {
                    manifest,
                    change,
                    reply,
                }) => {
                    self.on_update(*manifest, change).await;
                    let _ = reply.send(());
                }
                Wake::Closed => {
                    self.stop_process("supervisor gone").await;
                    return;
                }
            }
        }
    }

    async fn next_wake(&mut self) -> Wake {
        let deadline = self.health_deadline();
        let start_due = self.next_start;
        // An immediate restart should not wait for a timer tick (about
        // 1 ms); a queued command still goes first, so a stop wins.
        if self.proc.is_none() && start_due.is_some_and(|t| t <= TokioInstant::now()) {
            return match self.cmds.try_recv() {
                Ok(cmd) => Wake::Cmd(cmd),
                Err(_) => Wake::StartDue,
            };
        }
        let far = TokioInstant::now() + Duration::from_secs(86_400);
        match self.proc.as_mut() {
            Some(proc) => tokio::select! {
                status = proc.exited() => Wake::Exited(status),
                cmd = self.cmds.recv() => cmd.map_or(Wake::Closed, Wake::Cmd),
                Some(msg) = self.life.recv() => Wake::Life(msg),
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => Wake::HealthDeadline,
            },
            None => tokio::select! {
                cmd = self.cmds.recv() => cmd.map_or(Wake::Closed, Wake::Cmd),
                Some(msg) = self.life.recv() => Wake::Life(msg),
                _ = tokio::time::sleep_until(start_due.unwrap_or(far)), if start_due.is_some() => Wake::StartDue,
            },
        }
    }

    /// When the current process must have shown a sign of life.
    fn health_deadline(&self) -> Option<TokioInstant> {
        let proc = self.proc.as_ref()?;
        transitions::health_deadline(
            self.state,
            self.manifest.control,
            proc.started,
            self.last_seen,
            Timings::of(&self.manifest),
            self.grace_until,
        )
        .map(TokioInstant::from_std)
    }

    fn entry(&self) -> Entry {
        Entry {
            state: self.state,
            pid: self.proc.as_ref().map(|p| p.pid),
            started: self.proc.as_ref().map(|p| p.started),
            restarts: self.starts.saturating_sub(1),
            last_seen: self.last_seen,
            last_exit: None,
            reason: None,
            control: match self.manifest.control {
                ControlMode::Nats => "nats",
                ControlMode::Signals => "signals",
            },
            sandbox: self.shared.sandbox.describe(self.manifest.sandbox),
            counters: None,
            ignored_lifecycle: 0,
            malformed_lifecycle: 0,
            links: Default::default(),
            health: Default::default(),
            health_reason: None,
            manifest: Some(switchboard_proto::api::ManifestSummary {
                path: self.manifest.path.display().to_string(),
                command: self.manifest.command.clone(),
                args: self.manifest.args.len(),
                publish: self.manifest.publish.clone(),
                subscribe: self.manifest.subscribe.clone(),
                api: self.manifest.api.iter().map(ToString::to_string).collect(),
            }),
        }
    }

    /// Write our fields to the status board, keeping what only the board
    /// remembers (last exit, counters) unless given.
    fn publish_board(&self, update: Option<BoardNote>) {
        let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = self.entry();
        let e = board
            .entry(self.id.to_string())
            .or_insert_with(|| fresh.clone());
        e.state = fresh.state;
        if e.pid != fresh.pid {
            // What the last process said of itself is not news about
            // this one.
            e.links.clear();
            e.health = Default::default();
            e.health_reason = None;
        }
        e.pid = fresh.pid;
        e.started = fresh.started;
        e.restarts = fresh.restarts;
        e.last_seen = fresh.last_seen;
        e.control = fresh.control;
        e.manifest = fresh.manifest;
        e.sandbox = fresh.sandbox;
        if let Some(BoardNote { last_exit, reason }) = update {
            if last_exit.is_some() {
                e.last_exit = last_exit;
            }
            e.reason = reason;
        }
    }

    async fn set_state(&mut self, state: SupervisedState, reason: Option<String>) {
        self.set_state_with_exit(state, reason, None).await;
    }

    /// Like `set_state`, but always published: a new process is news even
    /// when the state name is the same as before (an immediate restart).
    /// The first start says so: `exited -> starting` alone reads like a
    /// crash to someone reading `switchboard logs` on a fresh daemon.
    async fn announce_start(&mut self, state: SupervisedState) {
        let reason = (self.starts == 1).then(|| FIRST_START.to_owned());
        self.state_change(state, reason, None, true).await;
    }

    async fn set_state_with_exit(
        &mut self,
        state: SupervisedState,
        reason: Option<String>,
        last_exit: Option<String>,
    ) {
        self.state_change(state, reason, last_exit, false).await;
    }

    async fn state_change(
        &mut self,
        state: SupervisedState,
        reason: Option<String>,
        last_exit: Option<String>,
        force: bool,
    ) {
        let previous = self.state;
        self.state = state;
        // A NATS user exists only while a process runs or is about to: in
        // a state with no process and no start due now, it is revoked, so
        // nothing the last process left behind keeps talking as it. (An
        // immediate restart passes no such state: its new password
        // replaces the old one without a second reload.)
        if self.proc.is_none()
            && matches!(
                state,
                SupervisedState::Exited
                    | SupervisedState::Backoff
                    | SupervisedState::Failed
                    | SupervisedState::Disabled
            )
        {
            self.shared.access.revoke(&self.id, false).await;
        }
        self.publish_board(Some(BoardNote {
            last_exit,
            reason: reason.clone(),
        }));
        if previous == state && reason.is_none() && !force {
            return;
        }
        tracing::info!(operator = %self.id, %previous, %state, reason = reason.as_deref().unwrap_or(""), "state");
        let event = OperatorEvent {
            id: self.id.to_string(),
            state,
            previous,
            pid: self.proc.as_ref().map(|p| p.pid),
            restarts: self.starts.saturating_sub(1),
            reason,
            timestamp: Timestamp::now(),
            host: self.shared.host.clone(),
        };
        // Never waits for the bus: see `outbox`.
        self.shared
            .outbox
            .push_json(Lane::Event, event_subject(&self.id), &event);
    }

    async fn start(&mut self) {
        if let Some(lease) = &self.shared.lease {
            if !lease.get().is_some_and(|l| l.may_start()) {
                // The engine's stop follows; until then nothing starts
                // (a crash restart here could run beside the host that
                // took the operator over).
                // Not the operator's failure: it does not count towards
                // its crash loop. Asked again every LEASE_RETRY; said
                // once.
                if !self.waiting_for_lease {
                    tracing::warn!(operator = %self.id, "not started: this host's cluster lease has lapsed (fenced); waiting for it, or for the cluster to move the operator");
                    self.waiting_for_lease = true;
                    self.set_state(
                        SupervisedState::Backoff,
                        Some("waiting for this host's cluster lease (fenced)".to_owned()),
                    )
                    .await;
                }
                self.next_start = Some(TokioInstant::now() + LEASE_RETRY);
                return;
            }
        }
        self.waiting_for_lease = false;
        let config = match self.effective_config() {
            Ok(c) => c,
            Err(e) => {
                // A missing secret does not fix itself by retrying.
                tracing::error!(operator = %self.id, error = %e, "cannot start");
                self.set_state(SupervisedState::Failed, Some(e.to_string()))
                    .await;
                return;
            }
        };
        let nats = match self.shared.access.grant(&self.manifest).await {
            Ok(env) => env,
            Err(e) if e.is_transient() => {
                // The server may be restarting: try again with backoff.
                let reason = e.to_string();
                tracing::error!(operator = %self.id, error = %reason, "cannot start");
                self.after_failure(reason.clone(), reason, Duration::ZERO)
                    .await;
                return;
            }
            Err(e) => {
                tracing::error!(operator = %self.id, error = %e, "cannot start");
                self.set_state(SupervisedState::Failed, Some(e.to_string()))
                    .await;
                return;
            }
        };
        let spec = match self.launch_spec(&config, nats) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(operator = %self.id, error = %e, "cannot start");
                self.set_state(SupervisedState::Failed, Some(e.to_string()))
                    .await;
                return;
            }
        };
        self.starts += 1;
        if spec.sandbox.is_none() && self.manifest.sandbox == crate::sandbox::SandboxKind::None {
            tracing::warn!(operator = %self.id, "runs without a sandbox (`sandbox = \"none\"` in its manifest): it can read what the daemon's user can, other operators' processes included");
        }
        match OperatorProcess::spawn(
            &spec,
            Some(self.shared.outbox.clone()),
            self.shared.logs.clone(),
        )
        .await
        {
            Ok(proc) => {
                tracing::debug!(operator = %self.id, pid = proc.pid, sandboxed = proc.sandbox_init.is_some(), "spawned");
                crate::leftovers::record(&self.shared.state_dir, self.id.as_str(), proc.leader);
                if let Some(warden) = &self.shared.warden {
                    // The leader's group (bwrap's monitor in a sandbox) and
                    // the operator's (the sandbox init's, whose death ends
                    // its pid namespace).
                    let mut groups = vec![proc.leader, proc.group];
                    groups.dedup();
                    groups.retain(|g| *g > 1);
                    warden.watch(self.id.as_str(), &groups);
                }
                self.proc = Some(proc);
                self.last_seen = None;
                self.grace_until = None;
                let state = match self.manifest.control {
                    ControlMode::Nats => SupervisedState::Starting,
                    ControlMode::Signals => SupervisedState::Running,
                };
                self.announce_start(state).await;
            }
            Err(e) => {
                let reason = format!("{e} (check `command` in {})", self.manifest.path.display());
                tracing::error!(operator = %self.id, error = %reason, "spawn failed");
                self.after_failure(reason.clone(), reason, Duration::ZERO)
                    .await;
            }
        }
    }

    async fn on_lifecycle(&mut self, msg: Lifecycle) {
        let Some(proc) = self.proc.as_ref() else {
            return; // from a process that is already gone
        };
        let pid = match &msg {
            Lifecycle::Ready(r) => r.pid,
            Lifecycle::Heartbeat(h) => h.pid,
            Lifecycle::Malformed { what, error } => {
                let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(e) = board.get_mut(self.id.as_str()) {
                    e.malformed_lifecycle += 1;
                    if e.malformed_lifecycle.is_power_of_two() {
                        tracing::warn!(
                            operator = %self.id,
                            what,
                            error = %error,
                            malformed = e.malformed_lifecycle,
                            "ignored a malformed lifecycle message"
                        );
                    }
                }
                return;
            }
        };
        if !proc.owns(pid) {
            // A leftover of an earlier process, or a forgery: it must not
            // keep this process "healthy".
            let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
            // The last words of the process just replaced (its final
            // heartbeat) are expected and only ignored; anything else is
            // counted and worth a look.
            if self.previous_pid == Some(pid) {
                tracing::debug!(operator = %self.id, claimed_pid = pid, "late message from the previous process ignored");
            } else if let Some(e) = board.get_mut(self.id.as_str()) {
                e.ignored_lifecycle += 1;
                if e.ignored_lifecycle.is_power_of_two() {
                    tracing::warn!(
                        operator = %self.id,
                        claimed_pid = pid,
                        pid = proc.pid,
                        ignored = e.ignored_lifecycle,
                        "ignored a lifecycle message from another process"
                    );
                }
            }
            return;
        }
        self.last_seen = Some(Instant::now());
        let heard = match &msg {
            Lifecycle::Ready(_) => Heard::Ready,
            Lifecycle::Heartbeat(hb) => Heard::Heartbeat(hb.state),
            Lifecycle::Malformed { .. } => return,
        };
        if let Lifecycle::Ready(ready) = &msg {
            let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = board.get_mut(self.id.as_str()) {
                e.links = ready
                    .links
                    .iter()
                    .take(8)
                    .map(|(k, v)| (k.chars().take(64).collect(), v.chars().take(512).collect()))
                    .collect();
            }
        }
        if let Lifecycle::Heartbeat(hb) = msg {
            let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = board.get_mut(self.id.as_str()) {
                e.counters = Some(transitions::bounded_counters(hb.counters));
                e.last_seen = self.last_seen;
                if e.health != hb.health || e.health_reason != hb.health_reason {
                    match hb.health {
                        switchboard_proto::Health::Ok => {
                            tracing::info!(operator = %self.id, "health ok again")
                        }
                        h => {
                            tracing::warn!(operator = %self.id, health = h.as_str(), reason = hb.health_reason.as_deref().unwrap_or(""), "operator reports trouble")
                        }
                    }
                }
                e.health = hb.health;
                e.health_reason = hb.health_reason.map(transitions::bounded_reason);
            }
        }
        match transitions::on_heard(self.state, heard) {
            Some(next) => {
                if heard == Heard::Ready {
                    let took = self.proc.as_ref().map(|p| p.started.elapsed());
                    tracing::info!(operator = %self.id, pid, ?took, "ready");
                }
                self.set_state(next, None).await;
            }
            None => self.publish_board(None),
        }
    }

    async fn on_health_failure(&mut self) {
        let reconnects = self.shared.bus.stats().snapshot().reconnects;
        let bus_fine = self.shared.bus.is_connected() && reconnects == self.bus_reconnects;
        self.bus_reconnects = reconnects;
        match transitions::health_verdict(
            self.state,
            Timings::of(&self.manifest),
            bus_fine,
            Instant::now(),
            BUS_RECOVERY_GRACE,
        ) {
            HealthVerdict::Postpone(until) => {
                // Nobody can be heard while the bus is down.
                self.grace_until = Some(until);
                tracing::debug!(operator = %self.id, "bus was down; health check postponed");
            }
            HealthVerdict::Kill(reason) => {
                tracing::warn!(operator = %self.id, %reason, "unhealthy; killing");
                if let Some(proc) = self.proc.as_mut() {
                    let status = proc.kill().await;
                    self.on_exit(status, Some(reason)).await;
                }
            }
        }
    }

    /// The process ended on its own (or was killed for its health).
    async fn on_exit(&mut self, status: std::process::ExitStatus, health: Option<String>) {
        let Some(proc) = self.proc.take() else { return };
        self.previous_pid = Some(proc.pid);
        let ran = proc.started.elapsed();
        self.last_seen = None;
        let ended = Ended {
            clean: status.success() && health.is_none(),
            described: describe_exit(&status),
            health,
        };
        let tracker = &mut self.tracker;
        let next = transitions::after_exit(self.id.as_str(), self.manifest.restart, &ended, || {
            tracker.on_exit(Instant::now(), ran)
        });
        match &next {
            AfterExit::Stay { .. } => {
                tracing::info!(operator = %self.id, exit = %ended.described, "exited; not restarting (restart policy)");
            }
            AfterExit::RestartNow { .. } | AfterExit::RestartAfter { .. } => {
                tracing::warn!(operator = %self.id, exit = %ended.described, "operator ended; restarting");
            }
            // `carry_out` says why it gives up.
            AfterExit::Fail { .. } => {}
        }
        self.after_process().await;
        self.carry_out(next, ended.described).await;
    }

    /// A start failed: restart now, back off, or give up.
    async fn after_failure(&mut self, reason: String, last_exit: String, ran: Duration) {
        let verdict = self.tracker.on_exit(Instant::now(), ran);
        let next = transitions::after_failure(self.id.as_str(), reason, verdict);
        self.carry_out(next, last_exit).await;
    }

    /// Make it so.
    async fn carry_out(&mut self, next: AfterExit, last_exit: String) {
        match next {
            AfterExit::Stay { reason } => {
                self.set_state_with_exit(SupervisedState::Exited, Some(reason), Some(last_exit))
                    .await;
            }
            AfterExit::RestartNow { reason } => {
                // Due at once: the actor loop starts it on its next turn
                // (a direct call would recurse through spawn failures).
                self.publish_board(Some(BoardNote {
                    last_exit: Some(last_exit),
                    reason: Some(reason),
                }));
                self.next_start = Some(TokioInstant::now());
            }
            AfterExit::RestartAfter { delay, reason } => {
                self.next_start = Some(TokioInstant::now() + delay);
                self.set_state_with_exit(SupervisedState::Backoff, Some(reason), Some(last_exit))
                    .await;
            }
            AfterExit::Fail { reason } => {
                tracing::error!(operator = %self.id, "{reason}");
                self.next_start = None;
                self.set_state_with_exit(SupervisedState::Failed, Some(reason), Some(last_exit))
                    .await;
            }
        }
    }

    /// After the process is gone: forget its process group and wipe its
    /// scratch dir. (Its NATS user goes with the next state that has no
    /// process, see `state_change`, or is replaced by the next start.)
    async fn after_process(&self) {
        crate::leftovers::forget(&self.shared.state_dir, self.id.as_str());
        if let Some(warden) = &self.shared.warden {
            warden.forget(self.id.as_str());
        }
        let _ = std::fs::remove_dir_all(self.operator_dirs().scratch);
    }

    /// Stop the process if there is one (SIGTERM, deadline, SIGKILL).
    async fn stop_process(&mut self, why: &str) {
        if self.proc.is_none() {
            self.next_start = None;
            return;
        }
        self.set_state(SupervisedState::Stopping, Some(why.to_string()))
            .await;
        let timeout = self.manifest.stop_timeout;
        if let Some(mut proc) = self.proc.take() {
            self.previous_pid = Some(proc.pid);
            let (status, killed) = proc.stop(timeout).await;
            let mut described = describe_exit(&status);
            if killed {
                described.push_str(&format!(
                    " after {} (stop_timeout)",
                    switchboard_proto::duration::format_duration(timeout)
                ));
            }
            self.publish_board(Some(BoardNote {
                last_exit: Some(described),
                reason: None,
            }));
        }
        self.last_seen = None;
        self.next_start = None;
        self.after_process().await;
    }

    fn outcome(&self, ok: bool, error: Option<String>, code: Option<FailureCode>) -> CtlOutcome {
        CtlOutcome {
            id: self.id.to_string(),
            ok,
            state: self.state,
            error,
            code,
        }
    }

    async fn on_ctl(&mut self, verb: Verb, config: Option<Value>, in_place: bool) -> CtlOutcome {
        match verb {
            Verb::Restart if !self.manifest.enabled => {
                let msg = format!(
                    "{} is disabled in {}: set `enabled = true` and reload",
                    self.id,
                    self.manifest.path.display()
                );
                self.outcome(false, Some(msg), None)
            }
            Verb::Restart
                if in_place
                    && self.proc.is_some()
                    && self.manifest.control == ControlMode::Nats
                    && matches!(
                        self.state,
                        SupervisedState::Running | SupervisedState::Halted
                    ) =>
            {
                // The operator's own `restart` verb: the process stays and
                // announces ready again (docs/PROTOCOL.md, control verbs).
                self.control(Verb::Restart, None).await
            }
            Verb::Restart => {
                // A real process restart, and a fresh start for the
                // backoff: someone asked for it.
                self.stop_process("restart requested").await;
                self.tracker.reset();
                self.start().await;
                self.outcome(self.proc.is_some(), None, None)
            }
            Verb::Shutdown => {
                self.stop_process("shutdown requested").await;
                self.set_state(SupervisedState::Exited, Some("shutdown requested".into()))
                    .await;
                self.outcome(true, None, None)
            }
            Verb::Halt | Verb::Resume | Verb::Reload => {
                if self.proc.is_none() {
                    let msg = format!(
                        "{} is {}, not running: use `restart` to start it",
                        self.id, self.state
                    );
                    return self.outcome(false, Some(msg), None);
                }
                let explicit = config.is_some();
                let config = match (verb, config) {
                    (Verb::Reload, Some(c)) => Some(c),
                    // Re-read the manifest's config (secrets may have
                    // rotated), dropping any earlier override.
                    (Verb::Reload, None) => match self
                        .manifest
                        .resolve_secrets(|name| std::env::var(name).ok())
                    {
                        Ok(c) => Some(c),
                        Err(e) => return self.outcome(false, Some(e.to_string()), None),
                    },
                    _ => None,
                };
                let outcome = self.control(verb, config.clone()).await;
                // Only a config the operator accepted is kept for its
                // next start; a refused one must not crash-loop it.
                if verb == Verb::Reload && outcome.ok {
                    self.config_override = if explicit { config } else { None };
                }
                outcome
            }
        }
    }

    async fn on_update(&mut self, manifest: Manifest, change: Change) {
        let was_enabled = self.manifest.enabled;
        let grants_changed = !self.manifest.same_grants(&manifest);
        self.manifest = manifest;
        if grants_changed && self.proc.is_some() && change != Change::Launch {
            // Applied to the live connection by the server: no restart.
            match self.shared.access.update(&self.manifest).await {
                Ok(()) => tracing::info!(operator = %self.id, "bus permissions updated"),
                Err(e) => {
                    tracing::error!(operator = %self.id, error = %e, "bus permissions not updated")
                }
            }
        }
        self.tracker.update(
            self.manifest.backoff.clone(),
            self.manifest.crash_loop.clone(),
        );
        self.publish_board(None);
        if !self.manifest.enabled {
            self.stop_process("disabled").await;
            self.set_state(SupervisedState::Disabled, None).await;
            return;
        }
        let idle = self.proc.is_none();
        if !was_enabled || (idle && self.state == SupervisedState::Failed) {
            // Enabled again, or a reload is the retry a failed operator
            // waits for.
            self.tracker.reset();
            self.config_override = None;
            self.start().await;
            return;
        }
        match change {
            Change::None | Change::Supervision => {}
            Change::Launch => {
                self.config_override = None;
                if !idle {
                    self.stop_process("manifest changed").await;
                    self.tracker.reset();
                    self.start().await;
                }
            }
            Change::Config => {
                self.config_override = None;
                if idle {
                    return; // the next start uses the new config
                }
                let config = match self.effective_config() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(operator = %self.id, error = %e, "new config unusable; keeping the old one running");
                        return;
                    }
                };
                let out = self.control(Verb::Reload, Some(config)).await;
                if !out.ok {
                    tracing::warn!(
                        operator = %self.id,
                        error = out.error.as_deref().unwrap_or(""),
                        "reload refused; restarting with the new config"
                    );
                    self.stop_process("reload refused").await;
                    self.start().await;
                }
            }
        }
    }
}

/// What a state change tells the status board besides the state itself.
struct BoardNote {
    /// How the last process ended; `None` keeps the one the board has.
    last_exit: Option<String>,
    /// Why it is in its new state; `None` clears the old reason.
    reason: Option<String>,
}
