//! Cluster mode (`[cluster]` in switchboard.toml): this daemon is one
//! host of several sharing one bus, and runs what the cluster engine
//! ([`switchboard_cluster::Engine`]) gives it instead of its manifests
//! directory.
//!
//! - The engine runs on its own connection to this host's server (never
//!   a discovered one: a host whose operators lost the bus must not keep
//!   its heartbeat alive through a peer; docs/cluster.md).
//! - `Event::Start` becomes a supervised operator, its manifest text
//!   loaded as a file would be (same checks; relative paths and secrets
//!   resolved on this host, under its manifests directory);
//!   `Event::Stop` stops it, with the SIGTERM grace capped so the process
//!   is gone within the lease's stop budget ([`desired::MAX_STOP_GRACE`]).
//!   Events are handled by one task that never waits on the network, so
//!   a fence's stops are never queued behind an apply.
//! - The manifests directory is what this host *proposes*: at start (only
//!   while the cluster has no desired state yet), on SIGHUP and with
//!   `switchboard apply`, it is written to the cluster's desired state by
//!   compare-and-set on the revision this host's directory is based on:
//!   the last one it wrote, or found equal to its directory at start
//!   ([`ClusterState::apply`]); a stale host is refused, never
//!   overwrites. An empty directory proposes nothing (at start and on
//!   SIGHUP).
//! - An edit of a running operator's manifest in the desired state
//!   restarts it here with the new manifest (stop, then start: bounded by
//!   the stop budget, unlike an in-place reload that waits for the
//!   operator's answer).
//! - Leaving cleanly ([`Cluster::leave`]) runs `Engine::shutdown`: every
//!   operator here stops, the records are handed back, the heartbeat is
//!   deleted, and peers take over without waiting for the lease TTL.
//!
//! The NATS users of the operators stay per host: the supervisor grants
//! a user on this host's server when it starts an operator and revokes it
//! when it stops, so each server's users follow what runs on its host.

mod desired;
mod forward;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use switchboard_cluster::{
    ApplyError, BucketError, Buckets, ClusterConfig, DesiredSet, DesiredStore, Engine,
    EngineOptions, Event, ViewHandle,
};
use switchboard_proto::api::ClusterStatus;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::manifest::Manifest;
use crate::supervisor::Supervisor;

pub use desired::{check_set, manifest_of, nominal_path, set_from_dir, MAX_STOP_GRACE};
pub use forward::{forward_ctl, forward_logs, remote_details};

/// The subject this host's daemon answers `method` on in cluster mode:
/// `sb.host.<host>.api.<method>`.
pub fn host_api_subject(host: &str, method: &str) -> String {
    format!("sb.host.{host}.api.{method}")
}

/// The subject a peer daemon asks this host's daemon on: the same
/// methods, answered for this host only (never forwarded again).
pub fn host_peer_subject(host: &str, method: &str) -> String {
    format!("sb.host.{host}.peer.{method}")
}

/// The server config lines (a subject mapping) that make this host's
/// server deliver `sb.api.<method>`, published by its own clients, to
/// this host's daemon alone.
///
/// Every daemon of the cluster serves the API, and routes carry a
/// request to every subscriber (a queue group would pick any member of
/// the cluster at random, not the local one): `switchboard status` on a
/// host must be answered by that host's daemon. The mapping runs where a
/// client publishes, after its permissions are checked on the subject it
/// used, so the CLI, operators with `api` grants and other tools keep
/// using `sb.api.<method>` unchanged.
pub fn api_mapping(host: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    format!(
        "mappings {{\n  {}: {}\n}}\n",
        q("sb.api.*"),
        q(&host_api_subject(host, "{{wildcard(1)}}"))
    )
}

/// How the engine's connection logs in to this host's server.
#[derive(Clone)]
pub struct Login {
    /// This host's server.
    pub url: String,
    /// The daemon's user.
    pub user: String,
    /// Its password (never logged).
    pub password: String,
    /// The CA, when the server speaks TLS.
    pub tls_ca: Option<PathBuf>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("url", &self.url)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Why a cluster request (apply, drain) was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The engine has not opened the buckets yet.
    #[error(
        "this host has not joined the cluster yet (its engine waits for the cluster's buckets, \
         which need 3 hosts up); try again in a few seconds"
    )]
    NotJoined,
    /// A manifest of the set does not load.
    #[error("the desired state is not valid, nothing written:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
    /// The desired state could not be written (stale among them).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A drain flag could not be written.
    #[error(transparent)]
    Bucket(#[from] BucketError),
    /// Drain or undrain of a host the cluster has never seen.
    #[error("no host `{host}` in the cluster (hosts: {known}); see `switchboard status`")]
    UnknownHost {
        /// The host asked for.
        host: String,
        /// The hosts there are.
        known: String,
    },
}

/// The kinds of [`ClusterError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterErrorKind {
    /// [`ClusterError::NotJoined`].
    NotJoined,
    /// [`ClusterError::Invalid`].
    Invalid,
    /// [`ClusterError::Apply`] for a stale revision.
    Stale,
    /// Any other [`ClusterError::Apply`], or [`ClusterError::Bucket`].
    Store,
    /// [`ClusterError::UnknownHost`].
    UnknownHost,
}

impl ClusterError {
    /// What kind of failure.
    pub fn kind(&self) -> ClusterErrorKind {
        match self {
            ClusterError::NotJoined => ClusterErrorKind::NotJoined,
            ClusterError::Invalid(_) => ClusterErrorKind::Invalid,
            ClusterError::Apply(e) if e.kind() == switchboard_cluster::ApplyErrorKind::Stale => {
                ClusterErrorKind::Stale
            }
            ClusterError::Apply(_) | ClusterError::Bucket(_) => ClusterErrorKind::Store,
            ClusterError::UnknownHost { .. } => ClusterErrorKind::UnknownHost,
        }
    }

    /// The revision that won, when the apply was stale.
    pub fn current(&self) -> Option<u64> {
        match self {
            ClusterError::Apply(ApplyError::Stale { current, .. }) => Some(*current),
            _ => None,
        }
    }
}

/// What the API handlers and the event task share: who this host is,
/// the buckets once joined, and the revision its directory is based on.
#[derive(Debug)]
pub struct ClusterState {
    host: String,
    manifests_dir: Mutex<PathBuf>,
    buckets: OnceLock<Buckets>,
    view: OnceLock<ViewHandle>,
    based_on: Mutex<Option<u64>>,
    /// One apply at a time from this host, so `based_on` moves in order.
    applying: tokio::sync::Mutex<()>,
}

impl ClusterState {
    /// This host's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn based_on(&self) -> Option<u64> {
        *self.based_on.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_based_on(&self, revision: u64) {
        *self.based_on.lock().unwrap_or_else(|p| p.into_inner()) = Some(revision);
    }

    fn manifests_dir(&self) -> PathBuf {
        self.manifests_dir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The cluster as this host's engine sees it now.
    pub fn status(&self) -> ClusterStatus {
        status::status(
            &self.host,
            self.based_on(),
            self.view.get().map(ViewHandle::get),
        )
    }

    /// Write `set` as the cluster's desired state, based on `based_on`
    /// (absent: the revision this host's directory is based on). Returns the
    /// new revision.
    ///
    /// # Errors
    ///
    /// [`ClusterError::NotJoined`], [`ClusterError::Invalid`], or
    /// [`ClusterError::Apply`] ([`ApplyError::Stale`] when the desired
    /// state moved on since the revision it is based on).
    pub async fn apply(&self, set: DesiredSet, based_on: Option<u64>) -> Result<u64, ClusterError> {
        let buckets = self.buckets.get().ok_or(ClusterError::NotJoined)?;
        check_set(&set, &self.manifests_dir()).map_err(ClusterError::Invalid)?;
        let _one = self.applying.lock().await;
        let base = based_on.or(self.based_on());
        let revision = DesiredStore::new(buckets.desired.clone())
            .apply(&set, base)
            .await?;
        self.set_based_on(revision);
        tracing::info!(
            revision,
            operators = set.operators.len(),
            "cluster: desired state applied"
        );
        Ok(revision)
    }

    /// SIGHUP: apply this host's manifests directory, based on the
    /// revision its directory is based on; problems and staleness are
    /// logged, nothing is overwritten.
    async fn apply_dir(&self, dir: &Path) {
        *self.manifests_dir.lock().unwrap_or_else(|p| p.into_inner()) = dir.to_owned();
        let set = match set_from_dir(dir) {
            Ok(set) if set.operators.is_empty() => {
                // An empty directory proposes nothing (as at start): a
                // reload of a host that only follows the cluster must not
                // remove every operator. `switchboard apply` of an empty
                // directory does, on purpose.
                tracing::info!(
                    dir = %dir.display(),
                    "cluster: no manifests here, nothing proposed to the desired state"
                );
                return;
            }
            Ok(set) => set,
            Err(problems) => {
                for p in &problems {
                    tracing::error!("{p}");
                }
                tracing::error!(
                    dir = %dir.display(),
                    "cluster: manifests not applied to the desired state: fix the problems above \
                     and send SIGHUP again"
                );
                return;
            }
        };
        if let Err(e) = self.apply(set, None).await {
            match e.current() {
                Some(current) => tracing::error!(
                    based_on = ?self.based_on(),
                    current,
                    "cluster: manifests not applied: the desired state changed since this host \
                     last read it (revision {current} was applied from another host); review \
                     it (`switchboard status`) and run `switchboard apply <dir> --based-on \
                     {current}` to replace it"
                ),
                None => tracing::error!(error = %e, "cluster: manifests not applied"),
            }
        }
    }

    /// At start: adopt the cluster's desired state if it has one (a host
    /// that joins or comes back must not undo newer edits with an older
    /// directory); otherwise propose this host's directory, unless it is
    /// empty (a host with nothing to propose waits for an apply).
    async fn initial(&self, dir: &Path) {
        let Some(buckets) = self.buckets.get() else {
            return;
        };
        let store = DesiredStore::new(buckets.desired.clone());
        for attempt in 0..30 {
            match store.load().await {
                Ok(Some((set, revision))) => {
                    self.adopt(dir, &set, revision).await;
                    return;
                }
                Ok(None) => break,
                Err(e) if attempt < 29 => {
                    tracing::debug!(error = %e, "cluster: desired state not readable yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cluster: cannot read the desired state");
                    return;
                }
            }
        }
        match set_from_dir(dir) {
            Ok(set) if set.operators.is_empty() => tracing::info!(
                "cluster: no desired state yet and no manifests here; waiting for \
                 `switchboard apply` or SIGHUP on any host"
            ),
            Ok(set) => match self.apply(set, None).await {
                Ok(_) => {}
                Err(e) => match e.current() {
                    // Another host proposed first: follow it.
                    Some(_) => match store.load().await {
                        Ok(Some((set, revision))) => self.adopt(dir, &set, revision).await,
                        _ => tracing::error!(
                            "cluster: another host wrote the first desired state, which cannot \
                             be read now"
                        ),
                    },
                    None => tracing::error!(error = %e, "cluster: manifests not applied"),
                },
            },
            Err(problems) => {
                for p in &problems {
                    tracing::error!("{p}");
                }
                tracing::error!(
                    "cluster: manifests not applied to the desired state: fix the problems \
                     above and send SIGHUP"
                );
            }
        }
    }

    /// Follow the cluster's desired state `set` at `revision`. This
    /// host's later applies are based on that revision only if its
    /// directory says the same: a host that comes back with an older
    /// directory must not overwrite newer edits at its next SIGHUP.
    async fn adopt(&self, dir: &Path, set: &DesiredSet, revision: u64) {
        let _one = self.applying.lock().await;
        if set_from_dir(dir).is_ok_and(|mine| mine == *set) {
            self.set_based_on(revision);
            tracing::info!(
                revision,
                operators = set.operators.len(),
                "cluster: the cluster's desired state is this host's manifests directory"
            );
        } else {
            tracing::info!(
                revision,
                operators = set.operators.len(),
                "cluster: the cluster has a desired state and this host follows it; its own \
                 manifests directory differs, so a SIGHUP here is refused as stale until \
                 `switchboard apply <dir> --based-on {revision}` (or a later revision) replaces \
                 the cluster's on purpose"
            );
        }
    }

    /// The other hosts with a live heartbeat, as this host's engine sees
    /// them.
    pub fn live_peers(&self) -> Vec<String> {
        let Some(view) = self.view.get().map(ViewHandle::get) else {
            return Vec::new();
        };
        view.hosts
            .iter()
            .filter(|(name, rec)| {
                **name != self.host && rec.state == switchboard_cluster::buckets::HostState::Alive
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The host whose live incarnation owns `id`, as this host's engine
    /// sees it.
    pub fn owner(&self, id: &str) -> Option<String> {
        self.view.get()?.get().owner_of(id).map(str::to_owned)
    }

    /// `drain` (`on`) or `undrain` a host of the cluster.
    ///
    /// # Errors
    ///
    /// [`ClusterError::NotJoined`], [`ClusterError::UnknownHost`],
    /// [`ClusterError::Bucket`].
    pub async fn drain(&self, host: &str, on: bool) -> Result<(), ClusterError> {
        let buckets = self.buckets.get().ok_or(ClusterError::NotJoined)?;
        let view = self.view.get().ok_or(ClusterError::NotJoined)?.get();
        if !view.hosts.contains_key(host) && !view.drained.contains(host) {
            return Err(ClusterError::UnknownHost {
                host: host.to_owned(),
                known: view.hosts.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        if on {
            buckets.drain(host).await?;
        } else {
            buckets.undrain(host).await?;
        }
        tracing::info!(host, drained = on, "cluster: drain flag written");
        Ok(())
    }
}

/// The running cluster mode: its state and its task.
#[derive(Debug)]
pub struct Cluster {
    state: Arc<ClusterState>,
    reload: mpsc::UnboundedSender<PathBuf>,
    leave: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// Start cluster mode: join (retrying while the cluster forms), then
    /// turn the engine's events into supervised operators.
    pub fn start(
        config: &ClusterConfig,
        login: Login,
        supervisor: Arc<Supervisor>,
        manifests_dir: PathBuf,
    ) -> Cluster {
        let state = Arc::new(ClusterState {
            host: config.host.clone(),
            manifests_dir: Mutex::new(manifests_dir.clone()),
            buckets: OnceLock::new(),
            view: OnceLock::new(),
            based_on: Mutex::new(None),
            applying: tokio::sync::Mutex::new(()),
        });
        let (reload, reloads) = mpsc::unbounded_channel();
        let leave = CancellationToken::new();
        let host = Host {
            state: Arc::clone(&state),
            options: EngineOptions {
                host: config.host.clone(),
                labels: config.labels.clone(),
            },
            login,
            supervisor,
            running: BTreeMap::new(),
        };
        let task = tokio::spawn(host.run(manifests_dir, reloads, leave.clone()));
        Cluster {
            state,
            reload,
            leave,
            task,
        }
    }

    /// What the API handlers use.
    pub fn state(&self) -> Arc<ClusterState> {
        Arc::clone(&self.state)
    }

    /// SIGHUP: apply `dir` to the desired state (in the background).
    pub fn reload(&self, dir: PathBuf) {
        let _ = self.reload.send(dir);
    }

    /// Leave the cluster cleanly (`Engine::shutdown`): stop everything
    /// here, hand the records back, delete the heartbeat.
    pub async fn leave(self) {
        self.leave.cancel();
        let _ = self.task.await;
    }
}

/// The event task's own state.
struct Host {
    state: Arc<ClusterState>,
    options: EngineOptions,
    login: Login,
    supervisor: Arc<Supervisor>,
    /// What the engine told this host to run: the manifest text it came
    /// as, and the manifest loaded from it.
    running: BTreeMap<String, (String, Manifest)>,
}

impl Host {
    async fn run(
        mut self,
        dir: PathBuf,
        mut reloads: mpsc::UnboundedReceiver<PathBuf>,
        leave: CancellationToken,
    ) {
        let Some((engine, mut events)) = self.join(&leave).await else {
            return;
        };
        let buckets = engine.buckets().clone();
        let _ = self.state.buckets.set(buckets.clone());
        let _ = self.state.view.set(engine.view());
        let state = Arc::clone(&self.state);
        tokio::spawn(async move { state.initial(&dir).await });
        let (desired_tx, mut desired) = mpsc::unbounded_channel();
        let watcher = tokio::spawn(watch_desired(buckets, desired_tx));
        loop {
            tokio::select! {
                biased;
                () = leave.cancelled() => break,
                Some(event) = events.recv() => {
                    let mut batch = vec![event];
                    while let Ok(more) = events.try_recv() {
                        batch.push(more);
                    }
                    self.handle(batch).await;
                }
                Some(set) = desired.recv() => self.desired_changed(&set).await,
                Some(dir) = reloads.recv() => {
                    // Network work off this task: a stop must never wait
                    // behind an apply.
                    let state = Arc::clone(&self.state);
                    tokio::spawn(async move { state.apply_dir(&dir).await });
                }
            }
        }
        watcher.abort();
        tracing::info!("cluster: leaving (handing this host's operators over)");
        let shutdown = engine.shutdown();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(event) = events.recv() => self.handle(vec![event]).await,
            }
        }
        let mut rest = Vec::new();
        while let Ok(event) = events.try_recv() {
            rest.push(event);
        }
        if !rest.is_empty() {
            self.handle(rest).await;
        }
    }

    /// Connect to this host's server and start the engine, retrying
    /// while the cluster forms (the buckets need three servers); `None`
    /// when asked to leave first.
    async fn join(
        &self,
        leave: &CancellationToken,
    ) -> Option<(Engine, mpsc::UnboundedReceiver<Event>)> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let tried = async {
                let client = connect(&self.login).await?;
                Engine::start(client, self.options.clone())
                    .await
                    .map_err(|e| e.to_string())
            };
            let outcome = tokio::select! {
                () = leave.cancelled() => return None,
                outcome = tried => outcome,
            };
            match outcome {
                Ok(started) => {
                    tracing::info!(host = %self.options.host, "cluster: joined");
                    return Some(started);
                }
                Err(e) => {
                    // Said at info the first time and then every ~30 s:
                    // the other hosts may simply not be up yet.
                    if attempt == 1 || attempt % 30 == 0 {
                        tracing::info!(error = %e, "cluster: not joined yet, retrying");
                    }
                }
            }
            tokio::select! {
                () = leave.cancelled() => return None,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Apply a batch of engine events in order: stops first as they
    /// come, a start of an id stopped earlier in the batch only after
    /// that stop has been carried out.
    async fn handle(&mut self, batch: Vec<Event>) {
        let dir = self.state.manifests_dir();
        let mut stopped = BTreeSet::new();
        for event in batch {
            match event {
                Event::Stop { id, reason } => {
                    if self.running.remove(&id).is_some() {
                        tracing::info!(operator = %id, reason = ?reason, "cluster: stop");
                    }
                    stopped.insert(id);
                }
                Event::Start { id, manifest } => {
                    if stopped.contains(&id) {
                        self.sync().await;
                        stopped.clear();
                    }
                    match manifest_of(&dir, &id, &manifest) {
                        Ok(m) => {
                            tracing::info!(operator = %id, "cluster: start");
                            self.running.insert(id, (manifest, m));
                        }
                        Err(problems) => {
                            for p in &problems {
                                tracing::error!("{p}");
                            }
                            tracing::error!(
                                operator = %id,
                                "cluster: its manifest from the desired state does not load on \
                                 this host; not started (fix it and apply again)"
                            );
                        }
                    }
                }
            }
        }
        self.sync().await;
    }

    /// Make the supervisor run exactly [`Host::running`].
    async fn sync(&self) {
        let manifests = self.running.values().map(|(_, m)| m.clone()).collect();
        let summary = self.supervisor.apply(manifests, &[]).await;
        tracing::debug!(
            added = ?summary.added,
            removed = ?summary.removed,
            "cluster: operators here"
        );
    }

    /// A new desired state: operators running here whose manifest text
    /// changed restart with the new one (stop, then start).
    async fn desired_changed(&mut self, set: &DesiredSet) {
        let dir = self.state.manifests_dir();
        let mut changed = Vec::new();
        for (id, (text, _)) in &self.running {
            let Some(op) = set.operators.get(id) else {
                continue; // removed: the engine says stop
            };
            if op.manifest == *text {
                continue;
            }
            match manifest_of(&dir, id, &op.manifest) {
                Ok(m) => changed.push((id.clone(), op.manifest.clone(), m)),
                Err(problems) => {
                    for p in &problems {
                        tracing::error!("{p}");
                    }
                    tracing::error!(operator = %id, "cluster: new manifest does not load here; the old one keeps running");
                }
            }
        }
        if changed.is_empty() {
            return;
        }
        for (id, _, _) in &changed {
            self.running.remove(id);
        }
        self.sync().await;
        for (id, text, m) in changed {
            tracing::info!(operator = %id, "cluster: manifest changed, restarted with it");
            self.running.insert(id, (text, m));
        }
        self.sync().await;
    }
}

/// The engine's connection: this host's server only, reconnecting fast.
async fn connect(login: &Login) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::with_user_and_password(
        login.user.clone(),
        login.password.clone(),
    )
    .name("switchboard-cluster")
    .ignore_discovered_servers()
    .reconnect_delay_callback(|_| Duration::from_millis(100))
    .connection_timeout(Duration::from_secs(2));
    if let Some(ca) = &login.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    options.connect(login.url.as_str()).await.map_err(|e| {
        format!(
            "cannot connect to this host's nats-server at {}: {e}",
            login.url
        )
    })
}

/// Every new desired state, from the bucket's watch (started over when
/// it ends: the engine watches on its own; this one only feeds
/// [`Host::desired_changed`]).
async fn watch_desired(buckets: Buckets, tx: mpsc::UnboundedSender<DesiredSet>) {
    let store = DesiredStore::new(buckets.desired);
    loop {
        if let Ok(watch) = store.watch().await {
            tokio::pin!(watch);
            while let Some((set, _revision)) = watch.next().await {
                if tx.send(set).is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
