//! Supervision: one actor task per operator.
//!
//! Each actor owns its operator's process and is the only place that
//! spawns or kills it, which is what makes "never two processes for one
//! ID" true: it always reaps the old process before starting a new one.
//! The actor reacts to four things: the process exiting, lifecycle
//! messages (ready, heartbeats) routed to it by ID, health deadlines
//! (ready timeout, missed heartbeats), and commands (control verbs,
//! manifest updates, stop). Every state change is written to the status
//! board and published on `sb.event.<id>`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use switchboard_bus::Bus;
use switchboard_proto::api::{
    glob_matches, CtlOutcome, CtlReply, CtlRequest, OperatorEvent, OperatorStatus, SupervisedState,
};
use switchboard_proto::{
    control_subject, event_subject, launch, Control, ControlAck, Counters, FailureCode, Heartbeat,
    OperatorId, Ready, Timestamp, Verb,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant as TokioInstant;

use crate::access::Access;
use crate::backoff::{RestartTracker, Verdict};
use crate::files::write_private;
use crate::manifest::{Change, Control as ControlMode, Manifest, RestartPolicy};
use crate::process::{describe_exit, LaunchSpec, LogBook, OperatorProcess};

/// How long a control request to an operator may take to be acked.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// After the daemon's own bus connection comes back, how long operators
/// get to reconnect too before their silence counts (their clients retry
/// with a backoff capped at 2 s).
const BUS_RECOVERY_GRACE: Duration = Duration::from_secs(5);

/// Shared by every actor.
#[derive(Debug)]
pub struct Shared {
    /// The orchestrator's own connection (events, control requests).
    pub bus: Bus,
    /// How operators get their own NATS identity.
    pub access: Access,
    /// Persistent state; each operator gets `<state_dir>/operators/<id>`.
    pub state_dir: PathBuf,
    /// Runtime files; scratch dirs and config files live here.
    pub runtime_dir: PathBuf,
    /// Captured output.
    pub logs: LogBook,
    /// Where to look for operator commands besides `$PATH`: the
    /// orchestrator's own directory, so sibling binaries are found.
    pub exe_dir: Option<PathBuf>,
}

/// Lifecycle messages routed to an actor.
#[derive(Debug)]
pub enum Lifecycle {
    /// `sb.op.<id>.ready`.
    Ready(Ready),
    /// `sb.op.<id>.heartbeat`.
    Heartbeat(Heartbeat),
}

enum Cmd {
    Ctl {
        verb: Verb,
        config: Option<Value>,
        reply: oneshot::Sender<CtlOutcome>,
    },
    Update {
        manifest: Box<Manifest>,
        change: Change,
        reply: oneshot::Sender<()>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    state: SupervisedState,
    pid: Option<u32>,
    started: Option<Instant>,
    restarts: u64,
    last_seen: Option<Instant>,
    last_exit: Option<String>,
    reason: Option<String>,
    control: &'static str,
    counters: Option<Counters>,
    ignored_lifecycle: u64,
}

impl Entry {
    fn to_status(&self, id: &str, now: Instant) -> OperatorStatus {
        let ms = |t: Instant| u64::try_from(now.duration_since(t).as_millis()).unwrap_or(u64::MAX);
        OperatorStatus {
            id: id.to_string(),
            state: self.state,
            pid: self.pid,
            uptime_ms: self.started.map(ms),
            restarts: self.restarts,
            last_heartbeat_ms: self.last_seen.map(ms),
            last_exit: self.last_exit.clone(),
            reason: self.reason.clone(),
            control: self.control.to_string(),
            counters: self.counters.clone(),
            ignored_lifecycle: self.ignored_lifecycle,
        }
    }
}

/// Routes lifecycle messages by operator ID.
#[derive(Debug, Clone, Default)]
pub struct Routes(Arc<RwLock<HashMap<String, mpsc::Sender<Lifecycle>>>>);

impl Routes {
    /// Hand `msg` to the actor of `id`; dropped if it is busy or unknown
    /// (heartbeats come again).
    pub fn deliver(&self, id: &str, msg: Lifecycle) {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(id) {
            let _ = tx.try_send(msg);
        }
    }
}

struct Handle {
    cmds: mpsc::Sender<Cmd>,
    task: tokio::task::JoinHandle<()>,
    manifest: Manifest,
}

/// All supervised operators.
pub struct Supervisor {
    shared: Arc<Shared>,
    board: Arc<Mutex<BTreeMap<String, Entry>>>,
    routes: Routes,
    actors: tokio::sync::Mutex<BTreeMap<String, Handle>>,
}

/// What a call to [`Supervisor::apply`] did, for the log line after a
/// reload.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplySummary {
    /// IDs started for the first time.
    pub added: Vec<String>,
    /// IDs stopped and forgotten.
    pub removed: Vec<String>,
    /// IDs restarted because their command, args, env, workdir or control
    /// changed.
    pub restarted: Vec<String>,
    /// IDs sent their new config.
    pub reloaded: Vec<String>,
    /// IDs whose supervision settings changed (no process action).
    pub updated: Vec<String>,
    /// IDs left alone.
    pub unchanged: Vec<String>,
    /// IDs whose manifest is broken now and which keep running as they
    /// were.
    pub kept_broken: Vec<String>,
}

impl Supervisor {
    /// A supervisor with no operators yet.
    pub fn new(shared: Shared) -> Supervisor {
        Supervisor {
            shared: Arc::new(shared),
            board: Arc::default(),
            routes: Routes::default(),
            actors: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// The router for lifecycle messages (fed by the daemon's
    /// subscription to `sb.op.*.ready` / `sb.op.*.heartbeat`).
    pub fn routes(&self) -> Routes {
        self.routes.clone()
    }

    /// The log book (for `sb.api.logs`).
    pub fn logs(&self) -> &LogBook {
        &self.shared.logs
    }

    /// Status of every operator, sorted by ID.
    pub fn status(&self) -> Vec<OperatorStatus> {
        let now = Instant::now();
        let board = self.board.lock().unwrap_or_else(|p| p.into_inner());
        board.iter().map(|(id, e)| e.to_status(id, now)).collect()
    }

    /// Bring the running set in line with `manifests`: the one code path
    /// for start-up and SIGHUP. `broken` lists manifest files that failed
    /// to load: an operator whose file is among them is left as it is.
    pub async fn apply(&self, manifests: Vec<Manifest>, broken: &[PathBuf]) -> ApplySummary {
        let mut summary = ApplySummary::default();
        let mut actors = self.actors.lock().await;
        let wanted: BTreeMap<String, Manifest> = manifests
            .into_iter()
            .map(|m| (m.id.to_string(), m))
            .collect();

        // Removals first, and awaited: a removed ID may come back under a
        // new file, and two processes for one ID must never overlap.
        let gone: Vec<String> = actors
            .iter()
            .filter(|(id, _)| !wanted.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        let mut stops = Vec::new();
        for id in gone {
            let Some(handle) = actors.get(&id) else {
                continue;
            };
            if broken.iter().any(|p| same_file(p, &handle.manifest.path)) {
                summary.kept_broken.push(id);
                continue;
            }
            if let Some(handle) = actors.remove(&id) {
                stops.push((id, handle));
            }
        }
        let stopped = futures::future::join_all(stops.into_iter().map(|(id, h)| async move {
            stop_actor(h).await;
            id
        }))
        .await;
        for id in stopped {
            self.forget(&id);
            summary.removed.push(id);
        }

        let mut updates = Vec::new();
        for (id, manifest) in wanted {
            match actors.get_mut(&id) {
                None => {
                    let handle = self.spawn_actor(manifest);
                    actors.insert(id.clone(), handle);
                    summary.added.push(id);
                }
                Some(handle) => {
                    let change = handle.manifest.diff(&manifest);
                    match change {
                        Change::None => summary.unchanged.push(id),
                        Change::Supervision => summary.updated.push(id.clone()),
                        Change::Config => summary.reloaded.push(id.clone()),
                        Change::Launch => summary.restarted.push(id.clone()),
                    }
                    if change != Change::None {
                        handle.manifest = manifest.clone();
                        let (tx, rx) = oneshot::channel();
                        let cmd = Cmd::Update {
                            manifest: Box::new(manifest),
                            change,
                            reply: tx,
                        };
                        if handle.cmds.send(cmd).await.is_ok() {
                            updates.push(rx);
                        }
                    }
                }
            }
        }
        drop(actors);
        futures::future::join_all(updates).await;
        summary
    }

    /// Carry out a control verb for the operators `req.target` matches.
    pub async fn ctl(&self, req: CtlRequest) -> CtlReply {
        let targets: Vec<(String, mpsc::Sender<Cmd>)> = {
            let actors = self.actors.lock().await;
            actors
                .iter()
                .filter(|(id, _)| glob_matches(&req.target, id))
                .map(|(id, h)| (id.clone(), h.cmds.clone()))
                .collect()
        };
        if targets.is_empty() {
            return CtlReply {
                results: Vec::new(),
                error: Some(format!(
                    "no operator matches `{}`: see `switchboard status` for the IDs",
                    req.target
                )),
            };
        }
        let results = futures::future::join_all(targets.into_iter().map(|(id, tx)| {
            let config = req.config.clone();
            let verb = req.verb;
            async move {
                let (reply, rx) = oneshot::channel();
                if tx
                    .send(Cmd::Ctl {
                        verb,
                        config,
                        reply,
                    })
                    .await
                    .is_err()
                {
                    return failed_outcome(
                        &id,
                        SupervisedState::Exited,
                        "operator is being removed",
                    );
                }
                rx.await.unwrap_or_else(|_| {
                    failed_outcome(&id, SupervisedState::Exited, "operator is being removed")
                })
            }
        }))
        .await;
        CtlReply {
            results,
            error: None,
        }
    }

    /// Stop every operator in parallel, each within its stop timeout.
    pub async fn shutdown(&self) {
        let handles: Vec<Handle> = {
            let mut actors = self.actors.lock().await;
            std::mem::take(&mut *actors).into_values().collect()
        };
        futures::future::join_all(handles.into_iter().map(stop_actor)).await;
    }

    fn forget(&self, id: &str) {
        self.board
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.routes
            .0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.shared.logs.forget(id);
    }

    fn spawn_actor(&self, manifest: Manifest) -> Handle {
        let id = manifest.id.to_string();
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (life_tx, life_rx) = mpsc::channel(64);
        self.routes
            .0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), life_tx);
        self.shared.logs.register(&id);
        let actor = Actor {
            id: manifest.id.clone(),
            tracker: RestartTracker::new(manifest.backoff.clone(), manifest.crash_loop.clone()),
            manifest: manifest.clone(),
            shared: Arc::clone(&self.shared),
            board: Arc::clone(&self.board),
            cmds: cmd_rx,
            life: life_rx,
            state: SupervisedState::Exited,
            starts: 0,
            proc: None,
            last_seen: None,
            next_start: None,
            config_override: None,
            bus_reconnects: 0,
            grace_until: None,
        };
        let task = tokio::spawn(actor.run());
        Handle {
            cmds: cmd_tx,
            task,
            manifest,
        }
    }
}

async fn stop_actor(handle: Handle) {
    let (tx, rx) = oneshot::channel();
    if handle.cmds.send(Cmd::Stop { reply: tx }).await.is_ok() {
        let _ = rx.await;
    }
    let _ = handle.task.await;
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
}

fn failed_outcome(id: &str, state: SupervisedState, error: &str) -> CtlOutcome {
    CtlOutcome {
        id: id.to_string(),
        ok: false,
        state,
        error: Some(error.to_string()),
        code: None,
    }
}

/// What woke an actor.
enum Wake {
    Exited(std::process::ExitStatus),
    Cmd(Cmd),
    Life(Lifecycle),
    HealthDeadline,
    StartDue,
    Closed,
}

struct Actor {
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
}

impl Actor {
    async fn run(mut self) {
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
                    // Removed (or the daemon is stopping): its config file
                    // may hold secrets, and its NATS user must go.
                    let (_, _, config_file) = self.operator_dirs();
                    let _ = std::fs::remove_file(config_file);
                    self.shared.access.revoke(&self.id, true).await;
                    let _ = reply.send(());
                    return;
                }
                Wake::Cmd(Cmd::Ctl {
                    verb,
                    config,
                    reply,
                }) => {
                    let outcome = self.on_ctl(verb, config).await;
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
        if self.manifest.control == ControlMode::Signals {
            return None; // no ready/heartbeat protocol to hold them to
        }
        let to_tokio = |t: Instant| TokioInstant::from_std(t);
        match self.state {
            SupervisedState::Starting => Some(proc.started + self.manifest.ready_timeout),
            SupervisedState::Running | SupervisedState::Halted => {
                let last = self.last_seen.unwrap_or(proc.started);
                let allowed = self.manifest.heartbeat_interval * self.manifest.missed_heartbeats;
                Some(last + allowed)
            }
            _ => None,
        }
        .map(|due| to_tokio(self.grace_until.map_or(due, |g| due.max(g))))
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
            counters: None,
            ignored_lifecycle: 0,
        }
    }

    /// Write our fields to the status board, keeping what only the board
    /// remembers (last exit, counters) unless given.
    fn publish_board(&self, update: Option<(Option<String>, Option<String>)>) {
        let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = self.entry();
        let e = board
            .entry(self.id.to_string())
            .or_insert_with(|| fresh.clone());
        e.state = fresh.state;
        e.pid = fresh.pid;
        e.started = fresh.started;
        e.restarts = fresh.restarts;
        e.last_seen = fresh.last_seen;
        e.control = fresh.control;
        if let Some((last_exit, reason)) = update {
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
    async fn announce_start(&mut self, state: SupervisedState) {
        self.state_change(state, None, None, true).await;
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
        self.publish_board(Some((last_exit, reason.clone())));
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
        };
        if let Err(e) = self
            .shared
            .bus
            .publish_json(&event_subject(&self.id), &event)
            .await
        {
            tracing::debug!(operator = %self.id, error = %e, "could not publish event");
        }
    }

    /// The config this operator should run with: an override from
    /// `ctl reload`, else the manifest's with secrets resolved.
    fn effective_config(&self) -> Result<Value, String> {
        if let Some(v) = &self.config_override {
            return Ok(v.clone());
        }
        self.manifest
            .resolve_secrets(|name| std::env::var(name).ok())
            .map_err(|e| e.to_string())
    }

    fn operator_dirs(&self) -> (PathBuf, PathBuf, PathBuf) {
        let id = self.id.as_str();
        (
            self.shared.state_dir.join("operators").join(id),
            self.shared.runtime_dir.join("scratch").join(id),
            self.shared
                .runtime_dir
                .join("config")
                .join(format!("{id}.json")),
        )
    }

    /// Everything the process is started with. Its environment is built
    /// from nothing: the variables `inherit_env` names (from the daemon's
    /// own environment), the launch variables with its own NATS access
    /// (`nats`), then the manifest's `env`. No other variable of the
    /// daemon's reaches it.
    fn launch_spec(
        &self,
        config: &Value,
        nats: Vec<(&'static str, String)>,
    ) -> Result<LaunchSpec, String> {
        let (state_dir, scratch_dir, config_file) = self.operator_dirs();
        let run_as = match &self.manifest.user {
            Some(user) => {
                let ids = crate::process::resolve_run_as(user, self.manifest.group.as_deref())
                    .map_err(|e| format!("{e} (`user` in {})", self.manifest.path.display()))?;
                let me = nix::unistd::geteuid().as_raw();
                if me != 0 && me != ids.0 {
                    return Err(format!(
                        "cannot run as `{user}`: switchboard runs as uid {me}, and only root \
                         can start processes as another user (set in {})",
                        self.manifest.path.display()
                    ));
                }
                Some(ids)
            }
            None => None,
        };
        // Private to the operator: its state may hold sessions and keys.
        crate::files::create_private_dir(&state_dir)
            .map_err(|e| format!("cannot create state dir {}: {e}", state_dir.display()))?;
        let _ = std::fs::remove_dir_all(&scratch_dir);
        crate::files::create_private_dir(&scratch_dir)
            .map_err(|e| format!("cannot create scratch dir {}: {e}", scratch_dir.display()))?;
        let config_json = config.to_string();
        write_private(&config_file, config_json.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", config_file.display()))?;
        if let Some((uid, gid)) = run_as {
            crate::files::hand_over(
                &[&self.shared.state_dir, &self.shared.runtime_dir],
                &[&state_dir, &scratch_dir, &config_file],
                uid,
                gid,
            )
            .map_err(|e| format!("cannot give the operator's files to uid {uid}: {e}"))?;
        }
        let program = resolve_program(&self.manifest, self.shared.exe_dir.as_deref())?;
        let path = |p: &Path| p.display().to_string();
        let mut env: Vec<(String, String)> = self
            .manifest
            .inherit_env
            .iter()
            .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?)))
            .collect();
        env.extend([
            (launch::ID.into(), self.id.to_string()),
            (launch::CONFIG.into(), config_json),
            (launch::CONFIG_FILE.into(), path(&config_file)),
            (launch::STATE_DIR.into(), path(&state_dir)),
            (launch::SCRATCH_DIR.into(), path(&scratch_dir)),
            (
                launch::HEARTBEAT_MS.into(),
                self.manifest
                    .heartbeat_interval
                    .as_millis()
                    .max(1)
                    .to_string(),
            ),
            (
                launch::CONTROL.into(),
                match self.manifest.control {
                    ControlMode::Nats => launch::CONTROL_NATS,
                    ControlMode::Signals => launch::CONTROL_SIGNALS,
                }
                .into(),
            ),
        ]);
        env.extend(nats.into_iter().map(|(k, v)| (k.to_owned(), v)));
        env.extend(
            self.manifest
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let workdir = self.manifest.workdir.clone();
        if let Some(dir) = &workdir {
            if !dir.is_dir() {
                return Err(format!(
                    "workdir {} does not exist (set in {})",
                    dir.display(),
                    self.manifest.path.display()
                ));
            }
        }
        Ok(LaunchSpec {
            id: self.id.clone(),
            program,
            args: self.manifest.args.clone(),
            env,
            workdir,
            run_as,
        })
    }

    async fn start(&mut self) {
        let config = match self.effective_config() {
            Ok(c) => c,
            Err(e) => {
                // A missing secret does not fix itself by retrying.
                tracing::error!(operator = %self.id, error = %e, "cannot start");
                self.set_state(SupervisedState::Failed, Some(e)).await;
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
                self.set_state(SupervisedState::Failed, Some(e)).await;
                return;
            }
        };
        self.starts += 1;
        match OperatorProcess::spawn(
            &spec,
            Some(self.shared.bus.clone()),
            self.shared.logs.clone(),
        ) {
            Ok(proc) => {
                tracing::debug!(operator = %self.id, pid = proc.pid, "spawned");
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
        };
        if !crate::process::is_in_group(pid, proc.pid) {
            // A leftover of an earlier process, or a forgery: it must not
            // keep this process "healthy".
            let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = board.get_mut(self.id.as_str()) {
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
        match msg {
            Lifecycle::Ready(ready) => {
                if self.state == SupervisedState::Starting {
                    let took = self.proc.as_ref().map(|p| p.started.elapsed());
                    tracing::info!(operator = %self.id, pid = ready.pid, ?took, "ready");
                    self.set_state(SupervisedState::Running, None).await;
                } else {
                    self.publish_board(None);
                }
            }
            Lifecycle::Heartbeat(hb) => {
                let next = match (self.state, hb.state) {
                    (SupervisedState::Running, switchboard_proto::OperatorState::Halted) => {
                        Some(SupervisedState::Halted)
                    }
                    (SupervisedState::Halted, switchboard_proto::OperatorState::Running) => {
                        Some(SupervisedState::Running)
                    }
                    // A heartbeat proves readiness if the ready was lost.
                    (SupervisedState::Starting, switchboard_proto::OperatorState::Running) => {
                        Some(SupervisedState::Running)
                    }
                    _ => None,
                };
                {
                    let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(e) = board.get_mut(self.id.as_str()) {
                        e.counters = Some(hb.counters);
                        e.last_seen = self.last_seen;
                    }
                }
                if let Some(state) = next {
                    self.set_state(state, None).await;
                }
            }
        }
    }

    async fn on_health_failure(&mut self) {
        let reconnects = self.shared.bus.stats().snapshot().reconnects;
        if !self.shared.bus.is_connected() || reconnects != self.bus_reconnects {
            // We cannot hear anyone while the bus is down: give the
            // operator a whole window from now (or from the reconnect).
            self.bus_reconnects = reconnects;
            self.grace_until = Some(Instant::now() + BUS_RECOVERY_GRACE);
            tracing::debug!(operator = %self.id, "bus was down; health check postponed");
            return;
        }
        let reason = if self.state == SupervisedState::Starting {
            format!(
                "not ready within {:?} (ready_timeout)",
                self.manifest.ready_timeout
            )
        } else {
            format!(
                "missed {} heartbeats ({:?} interval)",
                self.manifest.missed_heartbeats, self.manifest.heartbeat_interval
            )
        };
        tracing::warn!(operator = %self.id, %reason, "unhealthy; killing");
        if let Some(proc) = self.proc.as_mut() {
            let status = proc.kill().await;
            self.on_exit(status, Some(reason)).await;
        }
    }

    /// The process ended on its own (or was killed for its health).
    async fn on_exit(&mut self, status: std::process::ExitStatus, health: Option<String>) {
        let Some(proc) = self.proc.take() else { return };
        let ran = proc.started.elapsed();
        let described = describe_exit(&status);
        self.last_seen = None;
        self.after_process().await;
        let clean = status.success() && health.is_none();
        let restart = match self.manifest.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !clean,
            RestartPolicy::Never => false,
        };
        let reason = health.unwrap_or_else(|| described.clone());
        if !restart {
            tracing::info!(operator = %self.id, exit = %described, "exited; not restarting (restart policy)");
            self.set_state_with_exit(SupervisedState::Exited, Some(reason), Some(described))
                .await;
            return;
        }
        tracing::warn!(operator = %self.id, exit = %described, %reason, "operator ended; restarting");
        self.after_failure(reason, described, ran).await;
    }

    /// Decide between restart now, backoff, or failed.
    async fn after_failure(&mut self, reason: String, last_exit: String, ran: Duration) {
        match self.tracker.on_exit(Instant::now(), ran) {
            Verdict::RestartAfter(delay) if delay.is_zero() => {
                // Due at once: the actor loop starts it on its next turn
                // (a direct call would recurse through spawn failures).
                self.publish_board(Some((Some(last_exit), Some(reason))));
                self.next_start = Some(TokioInstant::now());
            }
            Verdict::RestartAfter(delay) => {
                self.next_start = Some(TokioInstant::now() + delay);
                self.set_state_with_exit(
                    SupervisedState::Backoff,
                    Some(format!("{reason}; restarting in {delay:?}")),
                    Some(last_exit),
                )
                .await;
            }
            Verdict::CrashLoop { restarts, window } => {
                let why = format!(
                    "crash loop: {restarts} restarts within {window:?} (last: {reason}); \
                     fix it, then `switchboard ctl restart {}` or reload",
                    self.id
                );
                tracing::error!(operator = %self.id, "{why}");
                self.next_start = None;
                self.set_state_with_exit(SupervisedState::Failed, Some(why), Some(last_exit))
                    .await;
            }
        }
    }

    /// After the process is gone: wipe its scratch dir and take its NATS
    /// user away, so nothing it left behind keeps talking on the bus as it
    /// (the next start issues a new password anyway).
    async fn after_process(&self) {
        let (_, scratch, _) = self.operator_dirs();
        let _ = std::fs::remove_dir_all(scratch);
        self.shared.access.revoke(&self.id, false).await;
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
            let (status, killed) = proc.stop(timeout).await;
            let mut described = describe_exit(&status);
            if killed {
                described.push_str(&format!(" after {timeout:?} (stop_timeout)"));
            }
            self.publish_board(Some((Some(described), None)));
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

    async fn on_ctl(&mut self, verb: Verb, config: Option<Value>) -> CtlOutcome {
        match verb {
            Verb::Restart if !self.manifest.enabled => {
                let msg = format!(
                    "{} is disabled in {}: set `enabled = true` and reload",
                    self.id,
                    self.manifest.path.display()
                );
                self.outcome(false, Some(msg), None)
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

    /// Deliver halt/resume/reload to the process, by NATS or by signal.
    async fn control(&mut self, verb: Verb, config: Option<Value>) -> CtlOutcome {
        match self.manifest.control {
            ControlMode::Signals => {
                let Some(proc) = self.proc.as_ref() else {
                    return self.outcome(false, Some("not running".into()), None);
                };
                match verb {
                    Verb::Halt => {
                        proc.signal_group(Signal::SIGSTOP);
                        self.set_state(SupervisedState::Halted, None).await;
                    }
                    Verb::Resume => {
                        proc.signal_group(Signal::SIGCONT);
                        self.set_state(SupervisedState::Running, None).await;
                    }
                    _ => {
                        if let Some(c) = &config {
                            let (_, _, file) = self.operator_dirs();
                            let written =
                                write_private(&file, c.to_string().as_bytes()).and_then(|()| {
                                    match proc.run_as {
                                        // A new file: give it to the operator's user again.
                                        Some((uid, gid)) => {
                                            std::os::unix::fs::chown(&file, Some(uid), Some(gid))
                                        }
                                        None => Ok(()),
                                    }
                                });
                            if let Err(e) = written {
                                return self.outcome(
                                    false,
                                    Some(format!("cannot write {}: {e}", file.display())),
                                    None,
                                );
                            }
                        }
                        proc.signal_group(Signal::SIGHUP);
                    }
                }
                self.outcome(true, None, None)
            }
            ControlMode::Nats => {
                let request = match verb {
                    Verb::Halt => Control::Halt,
                    Verb::Resume => Control::Resume,
                    _ => Control::Reload {
                        config: config.unwrap_or(Value::Null),
                    },
                };
                let answer: Result<ControlAck, _> = self
                    .shared
                    .bus
                    .request_json(&control_subject(&self.id), &request, CONTROL_TIMEOUT)
                    .await;
                match answer {
                    Ok(ack) => {
                        let next = match ack.state {
                            switchboard_proto::OperatorState::Halted => {
                                Some(SupervisedState::Halted)
                            }
                            switchboard_proto::OperatorState::Running => {
                                Some(SupervisedState::Running)
                            }
                            _ => None,
                        };
                        if let Some(s) = next {
                            if self.state != SupervisedState::Starting {
                                self.set_state(s, None).await;
                            }
                        }
                        match ack.error {
                            None if ack.ok => self.outcome(true, None, None),
                            Some(f) => self.outcome(false, Some(f.message), Some(f.code)),
                            None => self.outcome(false, Some("refused".into()), None),
                        }
                    }
                    Err(e) => self.outcome(false, Some(e.to_string()), None),
                }
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

/// Find the program: a path with a slash is taken relative to the
/// manifest's directory; a bare name is looked up in the orchestrator's
/// own directory, then `$PATH`.
fn resolve_program(manifest: &Manifest, exe_dir: Option<&Path>) -> Result<PathBuf, String> {
    let cmd = Path::new(&manifest.command);
    if manifest.command.contains('/') {
        let base = manifest.path.parent().unwrap_or(Path::new("."));
        let p = if cmd.is_absolute() {
            cmd.to_path_buf()
        } else {
            base.join(cmd)
        };
        return Ok(p);
    }
    let mut dirs: Vec<PathBuf> = exe_dir.map(Path::to_path_buf).into_iter().collect();
    if let Some(paths) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&paths));
    }
    dirs.into_iter()
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "command `{}` not found next to switchboard or on $PATH (set an absolute path in {})",
                manifest.command,
                manifest.path.display()
            )
        })
}
