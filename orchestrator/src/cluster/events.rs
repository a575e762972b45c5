//! The event task: joins the cluster (retrying while it forms), turns
//! the engine's `Start`/`Stop` into the supervisor's set of operators,
//! restarts an operator whose manifest was edited, and leaves cleanly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use switchboard_cluster::{
    Buckets, Deadline, DesiredSet, DesiredStore, Engine, EngineOptions, Event, Stopped,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{manifest_of, ClusterState, Login};
use crate::manifest::Manifest;
use crate::supervisor::Supervisor;
use crate::warden::WardenLink;
use switchboard_bus::stream::{OperatorStreams, StreamSpec};

/// The event task's own state.
pub(super) struct Host {
    pub(super) state: Arc<ClusterState>,
    pub(super) options: EngineOptions,
    pub(super) login: Login,
    pub(super) supervisor: Arc<Supervisor>,
    /// What the engine told this host to run: the manifest text it came
    /// as, and the manifest loaded from it.
    pub(super) running: BTreeMap<String, (String, Manifest)>,
    /// The fence warden, told the lease deadline (see `crate::warden`).
    pub(super) warden: Option<WardenLink>,
    /// The engine's deadline, once joined.
    pub(super) deadline: Option<Deadline>,
    /// Where stops carried out are confirmed to the engine, once joined:
    /// a moved operator's record is then handed over as soon as its
    /// process is gone, not after the whole stop budget.
    pub(super) stopped: Option<Stopped>,
    /// Where the supervisor reads the lease (set once joined).
    pub(super) lease: Option<Arc<OnceLock<Deadline>>>,
    /// The main stream's shape and the operators' own streams, when the
    /// daemon keeps them: each operator's is made when it starts here.
    pub(super) operator_streams: Option<(StreamSpec, OperatorStreams)>,
}

impl Host {
    pub(super) async fn run(
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
        self.deadline = Some(engine.deadline());
        self.stopped = Some(engine.stopped());
        if let Some(lease) = &self.lease {
            let _ = lease.set(engine.deadline());
        }
        let feed = self
            .warden
            .clone()
            .map(|w| tokio::spawn(feed_deadline(engine.deadline(), w)));
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
        if let Some(feed) = feed {
            feed.abort();
        }
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
    /// that stop has been carried out. Every stop carried out is
    /// confirmed to the engine (the supervisor's apply returns once the
    /// removed operators' processes are reaped and their groups killed).
    async fn handle(&mut self, batch: Vec<Event>) {
        let dir = self.state.manifests_dir();
        let mut stopped = BTreeSet::new();
        let mut to_confirm = BTreeSet::new();
        for event in batch {
            match event {
                Event::Stop { id, reason } => {
                    if self.running.remove(&id).is_some() {
                        tracing::info!(operator = %id, reason = ?reason, "cluster: stop");
                    }
                    to_confirm.insert(id.clone());
                    stopped.insert(id);
                }
                Event::Start { id, manifest } => {
                    // The warden learns the deadline this start is
                    // covered by before the operator's `watch` (one
                    // channel, in order), never a stale one.
                    if let (Some(w), Some(d)) = (&self.warden, &self.deadline) {
                        w.deadline(d.must_be_gone_by());
                    }
                    if stopped.contains(&id) {
                        self.sync().await;
                        self.confirm(&mut to_confirm);
                        stopped.clear();
                    }
                    match manifest_of(&dir, &id, &manifest) {
                        Ok(m) => {
                            tracing::info!(operator = %id, "cluster: start");
                            self.ensure_own_stream(&id);
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
        self.confirm(&mut to_confirm);
    }

    /// Tell the engine the operators of `ids` that no longer run here are
    /// gone (called after the supervisor carried the stops out).
    fn confirm(&self, ids: &mut BTreeSet<String>) {
        if let Some(stopped) = &self.stopped {
            for id in ids.iter().filter(|id| !self.running.contains_key(*id)) {
                stopped.confirm(id);
            }
        }
        ids.clear();
    }

    /// Make sure operator `id` has its own stream (idempotent, in the
    /// background: the operator does not wait for it, and the copy
    /// starts from the beginning of the main stream, so nothing is missed
    /// by making it late). Retried while JetStream is not ready (a
    /// cluster still forming); one warning if it never is.
    fn ensure_own_stream(&self, id: &str) {
        let Some((spec, streams)) = self.operator_streams.clone() else {
            return;
        };
        let bus = self.supervisor.bus().clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            let mut last = None;
            for _ in 0..15 {
                match bus.ensure_operator_stream(&spec, &streams, &id).await {
                    Ok(_) => return,
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            if let Some(e) = last {
                tracing::warn!(
                    operator = %id,
                    error = %e,
                    "no stream of its own: its history is kept only in the shared stream"
                );
            }
        });
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

/// Tell the warden every new lease deadline: a task of its own, so the
/// deadline moves on while the event task waits on a stop.
async fn feed_deadline(deadline: Deadline, warden: WardenLink) {
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let now = deadline.must_be_gone_by();
        if now != last {
            warden.deadline(now);
            last = now;
        }
    }
}
