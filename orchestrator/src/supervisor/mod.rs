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
//!
//! Files: this one is the facade ([`Supervisor`]: apply a manifest set,
//! route control verbs, stop everything); `board` is the status board and
//! the lifecycle router; `actor` is the per-operator task, with `launch`
//! (what a process is started with) and `control` (halt/resume/reload by
//! NATS or by signal) under it; `transitions` is the actor's decision core,
//! pure functions of state and event with no I/O, unit-tested on their own.

mod actor;
mod board;
mod transitions;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard_bus::Bus;
use switchboard_proto::api::{
    glob_matches, CtlOutcome, CtlReply, CtlRequest, OperatorStatus, SupervisedState,
};
use switchboard_proto::{Heartbeat, Ready, Verb};
use tokio::sync::{mpsc, oneshot};

use crate::access::Access;
use crate::manifest::{Change, Manifest};
use crate::outbox::Outbox;
use crate::process::LogBook;

use actor::Actor;
use board::Entry;
pub use board::Routes;

/// How long a control request to an operator may take to be acked.
pub(crate) const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// After the daemon's own bus connection comes back, how long operators
/// get to reconnect too before their silence counts (their clients retry
/// with a backoff capped at 2 s).
pub(crate) const BUS_RECOVERY_GRACE: Duration = Duration::from_secs(5);

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
    /// Where output lines and events go to the bus without waiting.
    pub outbox: Outbox,
    /// Where to look for operator commands besides `$PATH`: the
    /// orchestrator's own directory, so sibling binaries are found.
    pub exe_dir: Option<PathBuf>,
    /// Whether and how operators are sandboxed here.
    pub sandbox: crate::sandbox::Sandboxing,
    /// In cluster mode, this host's name: said in every `sb.event.<id>`,
    /// since every host's events share one bus.
    pub host: Option<String>,
    /// In cluster mode, the fence warden that kills this host's
    /// operators if the daemon cannot fence them itself (`crate::warden`):
    /// every operator's process groups are reported to it.
    pub warden: Option<crate::warden::WardenLink>,
    /// In cluster mode, the engine's lease (set once it has joined): no
    /// operator process starts here while it is not valid.
    pub lease: Option<Arc<std::sync::OnceLock<switchboard_cluster::Deadline>>>,
}

/// Lifecycle messages routed to an actor.
#[derive(Debug)]
pub enum Lifecycle {
    /// `sb.op.<id>.ready`.
    Ready(Ready),
    /// `sb.op.<id>.heartbeat`.
    Heartbeat(Heartbeat),
    /// Something on one of those subjects that is not a ready or a
    /// heartbeat: counted, never acted on.
    Malformed {
        /// `ready` or `heartbeat`.
        what: &'static str,
        /// The parser's error (never the payload).
        error: String,
    },
}

enum Cmd {
    Ctl {
        verb: Verb,
        config: Option<Value>,
        in_place: bool,
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

    /// The daemon's bus connection.
    pub fn bus(&self) -> &switchboard_bus::Bus {
        &self.shared.bus
    }

    /// The outbox (its drop counters, for `status`).
    pub fn outbox(&self) -> &Outbox {
        &self.shared.outbox
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
                    // A renamed file is the same operator: remember its new
                    // path, or a later problem in that file would not be
                    // recognised as this operator's and would stop it.
                    if change == Change::None && handle.manifest.path != manifest.path {
                        handle.manifest.path = manifest.path.clone();
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
            let in_place = req.in_place;
            async move {
                let (reply, rx) = oneshot::channel();
                if tx
                    .send(Cmd::Ctl {
                        verb,
                        config,
                        in_place,
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
        let actor = Actor::new(
            manifest.clone(),
            Arc::clone(&self.shared),
            Arc::clone(&self.board),
            cmd_rx,
            life_rx,
        );
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
