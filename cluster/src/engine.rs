//! The engine: one per host. It registers the host, keeps its heartbeat,
//! watches the cluster, claims the operators placement gives it, hands
//! back those it should no longer run, and tells its caller, through a
//! channel of [`Event`]s, which operators to start and stop. It starts no
//! process itself.
//!
//! Three tasks:
//! - the *heartbeat* registers a fresh incarnation (epoch) of the host and
//!   renews `host.<name>` every [`RENEW_INTERVAL`] by compare-and-set on
//!   its own last revision; a renewal refused because the revision moved
//!   means a peer declared this incarnation gone: it fences and
//!   registers anew;
//! - the *fence* checks every few milliseconds that the last acknowledged
//!   renewal is younger than [`crate::lease::FENCE_AFTER`], and otherwise emits
//!   [`Event::Stop`] for everything running (no I/O in the way, so a hung
//!   request cannot delay it);
//! - the *reconciler* applies the bucket watches to its view, then every
//!   [`TICK`]: declares gone the hosts whose heartbeat stood still for
//!   [`LEASE_TTL`], computes [`crate::place`], claims (compare-and-set on
//!   `owner.<id>`) what is placed here and free, starts what it owns,
//!   releases what is placed elsewhere (stop, wait [`STOP_BUDGET`],
//!   delete the record with compare-and-set).
//!
//! The safety argument is in [`crate::lease`] and docs/cluster.md.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout};

use crate::buckets::{
    self, host_key, owner_key, Buckets, HostRecord, HostState, OwnerRecord, REQUEST_TIMEOUT,
};
use crate::desired::{self, DesiredSet};
use crate::lease::{Seen, Validity, LEASE_TTL, RENEW_INTERVAL, RESUME_GRACE, STOP_BUDGET, TICK};
use crate::placement::{self, HostView, PlacementSpec};

/// How often the fence task looks at the clock: part of the timer
/// lateness [`crate::lease::SKEW_MARGIN`] absorbs.
const FENCE_CHECK: std::time::Duration = std::time::Duration::from_millis(20);

/// How long the view may miss our own acknowledged heartbeat before the
/// watch is started over (two renewals and a bit).
const WATCH_SILENCE: std::time::Duration = std::time::Duration::from_millis(1200);

/// Who this engine is.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// This host's name (see [`crate::ClusterConfig::host`]).
    pub host: String,
    /// Its labels.
    pub labels: BTreeSet<String>,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start this operator (this host owns it now).
    Start {
        /// Operator id.
        id: String,
        /// Its manifest (TOML text) from the desired state.
        manifest: String,
    },
    /// Stop this operator; it must be gone within [`STOP_BUDGET`].
    Stop {
        /// Operator id.
        id: String,
        /// Why.
        reason: StopReason,
    },
}

/// Why an operator is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// This host could not renew its heartbeat in time (or was declared
    /// gone): it stops everything before any peer may take over.
    Fenced,
    /// Placement moved it to another host (drain, rebalance).
    Moved,
    /// It is no longer in the desired state.
    Removed,
    /// Its ownership record names another host. Never expected (fencing
    /// comes first); stopping at once is the safe answer if it happens.
    Lost,
    /// The engine is shutting down.
    Shutdown,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The host name is not valid.
    #[error("`{0}` is not a host name: use 1 to 64 of A-Z, a-z, 0-9, `_` and `-`")]
    BadHost(String),
    /// The buckets could not be opened.
    #[error(transparent)]
    Buckets(#[from] buckets::BucketError),
}

/// The kinds of [`EngineError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineErrorKind {
    /// [`EngineError::BadHost`].
    BadHost,
    /// [`EngineError::Buckets`].
    Buckets,
}

impl EngineError {
    /// What kind of failure.
    pub fn kind(&self) -> EngineErrorKind {
        match self {
            EngineError::BadHost(_) => EngineErrorKind::BadHost,
            EngineError::Buckets(_) => EngineErrorKind::Buckets,
        }
    }
}

/// State the three tasks share; locked briefly, never across an await.
#[derive(Debug)]
struct Shared {
    /// The current incarnation (empty before the first registration).
    epoch: String,
    /// Whether `epoch` is registered and not declared gone.
    registered: bool,
    /// Last revision of our heartbeat.
    host_rev: u64,
    validity: Validity,
    /// Send time of the first renewal of the current run of acknowledged
    /// ones (`None` after a failed one): how long this host has itself
    /// been able to write.
    streak_since: Option<Instant>,
    /// True until the first renewal, and after a fence until the next
    /// acknowledged renewal.
    fenced: bool,
    /// No start before this (a fence or stop needs [`STOP_BUDGET`] to
    /// take effect before the same host may start anything again).
    no_start_before: Option<Instant>,
    /// Operators the caller was told to start and not yet to stop.
    running: BTreeSet<String>,
    events: mpsc::UnboundedSender<Event>,
}

impl Shared {
    fn may_start(&self, now: Instant) -> bool {
        self.registered
            && !self.fenced
            && self.validity.valid(now)
            && self.no_start_before.is_none_or(|t| now >= t)
    }

    fn fence(&mut self, now: Instant) {
        if !self.running.is_empty() {
            tracing::warn!(
                operators = self.running.len(),
                "cluster: heartbeat not renewed in time, stopping every operator here"
            );
        }
        for id in std::mem::take(&mut self.running) {
            let _ = self.events.send(Event::Stop {
                id,
                reason: StopReason::Fenced,
            });
        }
        self.fenced = true;
        self.no_start_before = Some(now + STOP_BUDGET);
    }

    /// Tell the caller to stop `id`; its record is handed back only
    /// [`STOP_BUDGET`] later (see `Reconciler::releasing`).
    fn stop(&mut self, id: &str, reason: StopReason) -> bool {
        if self.running.remove(id) {
            let _ = self.events.send(Event::Stop {
                id: id.to_owned(),
                reason,
            });
            true
        } else {
            false
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running engine. Dropping it aborts its tasks without any goodbye
/// (what a killed daemon does); [`Engine::shutdown`] leaves cleanly.
#[derive(Debug)]
pub struct Engine {
    host: String,
    buckets: Buckets,
    shared: Arc<Mutex<Shared>>,
    shutdown: Option<oneshot::Sender<oneshot::Sender<()>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Engine {
    /// Open the buckets and start the engine on `client` (this host's
    /// connection to its own nats-server). Events arrive on the returned
    /// receiver, which the caller must keep reading.
    ///
    /// # Errors
    ///
    /// [`EngineError::BadHost`], or [`EngineError::Buckets`] when the
    /// buckets cannot be opened (callers retry while the cluster forms).
    pub async fn start(
        client: async_nats::Client,
        options: EngineOptions,
    ) -> Result<(Engine, mpsc::UnboundedReceiver<Event>), EngineError> {
        if !crate::config::is_valid_name(&options.host) {
            return Err(EngineError::BadHost(options.host));
        }
        let js = buckets::context(client);
        let buckets = Buckets::ensure(&js).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared {
            epoch: String::new(),
            registered: false,
            host_rev: 0,
            validity: Validity::default(),
            streak_since: None,
            fenced: true,
            no_start_before: None,
            running: BTreeSet::new(),
            events: tx,
        }));
        let (watch_tx, watch_rx) = mpsc::unbounded_channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let restart_watch = Arc::new(Notify::new());
        let tasks = vec![
            tokio::spawn(heartbeat(
                buckets.cluster.clone(),
                options.clone(),
                Arc::clone(&shared),
            )),
            tokio::spawn(fence(Arc::clone(&shared))),
            tokio::spawn(watch(
                buckets.desired.clone(),
                Bucket::Desired,
                watch_tx.clone(),
                Arc::default(),
            )),
            tokio::spawn(watch(
                buckets.cluster.clone(),
                Bucket::Cluster,
                watch_tx,
                Arc::clone(&restart_watch),
            )),
            tokio::spawn(
                Reconciler {
                    me: options.host.clone(),
                    buckets: buckets.clone(),
                    shared: Arc::clone(&shared),
                    view: View::default(),
                    releasing: BTreeMap::new(),
                    restart_watch,
                    silent_since: None,
                }
                .run(watch_rx, shutdown_rx),
            ),
        ];
        Ok((
            Engine {
                host: options.host,
                buckets,
                shared,
                shutdown: Some(shutdown_tx),
                tasks,
            },
            rx,
        ))
    }

    /// This host's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The buckets (for `apply`, `drain`, `undrain` from this host).
    pub fn buckets(&self) -> &Buckets {
        &self.buckets
    }

    /// Operators this host was told to run, now.
    pub fn running(&self) -> BTreeSet<String> {
        lock(&self.shared).running.clone()
    }

    /// Whether the host is fenced (registered nowhere, or its heartbeat
    /// is too old to run anything).
    pub fn is_fenced(&self) -> bool {
        lock(&self.shared).fenced
    }

    /// Leave the cluster cleanly: stop every operator here, wait the
    /// stop budget, give the ownership records back and remove the
    /// heartbeat, so peers take over at once instead of after the TTL.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let (done_tx, done_rx) = oneshot::channel();
            if tx.send(done_tx).is_ok() {
                let _ = done_rx.await;
            }
        }
        for t in &self.tasks {
            t.abort();
        }
        let epoch = {
            let mut s = lock(&self.shared);
            s.registered = false;
            s.epoch.clone()
        };
        // Remove the heartbeat so peers stop placing operators here at
        // once. A renewal may have been in flight when the task ended:
        // read the revision rather than trust the last one we know.
        let kv = &self.buckets.cluster;
        let key = host_key(&self.host);
        for _ in 0..3 {
            let Ok(Ok(Some(entry))) = timeout(REQUEST_TIMEOUT, kv.entry(&key)).await else {
                break;
            };
            if !is_alive_epoch(&entry, &epoch) {
                break;
            }
            let deleted = timeout(
                REQUEST_TIMEOUT,
                kv.delete_expect_revision(&key, Some(entry.revision)),
            )
            .await;
            if matches!(deleted, Ok(Ok(()))) {
                break;
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn encode<T: serde::Serialize>(value: &T) -> bytes::Bytes {
    // These records are plain structs of strings and numbers: encoding
    // cannot fail.
    serde_json::to_vec(value).unwrap_or_default().into()
}

/// Register an incarnation, then renew it until a peer declares it gone;
/// then again with a new epoch.
async fn heartbeat(kv: kv::Store, options: EngineOptions, shared: Arc<Mutex<Shared>>) {
    let key = host_key(&options.host);
    let mut beat = 0u64;
    loop {
        let epoch = nuid::next().to_string();
        let mut rev = register(&kv, &key, &options, &epoch, &shared).await;
        let mut next = Instant::now() + RENEW_INTERVAL;
        loop {
            sleep_until(next.into()).await;
            let sent = Instant::now();
            next = sent + RENEW_INTERVAL;
            beat += 1;
            let record = HostRecord {
                state: HostState::Alive,
                epoch: epoch.clone(),
                labels: options.labels.clone(),
                beat,
                gone_by: None,
            };
            match timeout(RENEW_INTERVAL, kv.update(&key, encode(&record), rev)).await {
                Ok(Ok(r)) => {
                    rev = r;
                    let mut s = lock(&shared);
                    s.host_rev = r;
                    s.validity.acknowledged(sent);
                    s.streak_since.get_or_insert(sent);
                    if s.fenced && s.validity.valid(Instant::now()) {
                        tracing::info!("cluster: heartbeat renewed again, resuming");
                        s.fenced = false;
                    }
                }
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    lock(&shared).streak_since = None;
                    // Either an earlier renewal landed after its answer
                    // was lost (the record is still ours: adopt its
                    // revision, without extending validity), or a peer
                    // declared us gone.
                    match timeout(REQUEST_TIMEOUT, kv.entry(&key)).await {
                        Ok(Ok(Some(e))) if is_alive_epoch(&e, &epoch) => rev = e.revision,
                        Ok(Ok(_)) => {
                            tracing::warn!(
                                "cluster: this host was declared gone by a peer; \
                                 stopping everything and registering again"
                            );
                            let mut s = lock(&shared);
                            s.registered = false;
                            s.fence(Instant::now());
                            break;
                        }
                        _ => {}
                    }
                }
                // Timed out or failed: the fence task watches the clock.
                _ => lock(&shared).streak_since = None,
            }
        }
    }
}

fn is_alive_epoch(e: &kv::Entry, epoch: &str) -> bool {
    e.operation == kv::Operation::Put
        && serde_json::from_slice::<HostRecord>(&e.value)
            .is_ok_and(|r| r.state == HostState::Alive && r.epoch == epoch)
}

/// Write our heartbeat for `epoch`: at once if the key is free or marked
/// gone, else after the previous incarnation's heartbeat stood still for
/// the TTL (a crash that left it behind). Returns its revision.
async fn register(
    kv: &kv::Store,
    key: &str,
    options: &EngineOptions,
    epoch: &str,
    shared: &Mutex<Shared>,
) -> u64 {
    let record = encode(&HostRecord {
        state: HostState::Alive,
        epoch: epoch.to_owned(),
        labels: options.labels.clone(),
        beat: 0,
        gone_by: None,
    });
    let mut seen: Option<Seen> = None;
    loop {
        let sent = Instant::now();
        let written = match timeout(REQUEST_TIMEOUT, kv.entry(key)).await {
            Ok(Ok(Some(e))) if e.operation == kv::Operation::Put => {
                let alive = serde_json::from_slice::<HostRecord>(&e.value)
                    .is_ok_and(|r| r.state == HostState::Alive);
                let s = Seen::observe(seen, e.revision, sent);
                seen = Some(s);
                if !alive || s.expired(sent) {
                    timeout(REQUEST_TIMEOUT, kv.update(key, record.clone(), e.revision))
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    None
                }
            }
            Ok(Ok(_)) => timeout(REQUEST_TIMEOUT, kv.create(key, record.clone()))
                .await
                .ok()
                .and_then(Result::ok),
            _ => None,
        };
        if let Some(rev) = written {
            let mut s = lock(shared);
            s.epoch = epoch.to_owned();
            s.registered = true;
            s.host_rev = rev;
            s.validity = Validity::default();
            s.validity.acknowledged(sent);
            s.streak_since = Some(sent);
            s.fenced = false;
            tracing::info!(host = %options.host, %epoch, "cluster: host registered");
            return rev;
        }
        sleep(RENEW_INTERVAL).await;
    }
}

/// Fence when the last acknowledged renewal is too old.
async fn fence(shared: Arc<Mutex<Shared>>) {
    loop {
        sleep(FENCE_CHECK).await;
        let now = Instant::now();
        let mut s = lock(&shared);
        if !s.fenced && !s.validity.valid(now) {
            s.fence(now);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Desired,
    Cluster,
}

#[derive(Debug)]
enum WatchMsg {
    Entry(Bucket, kv::Entry),
    /// Whether the view of the bucket is complete: false while a
    /// snapshot is being delivered, true once it is.
    Current(Bucket, bool),
}

/// Forward a bucket's changes: first every key's latest value (the
/// snapshot), then each change as it happens; again from a fresh snapshot
/// after any failure ([`Seen::observe`] keeps a re-delivered revision's
/// first-seen time).
///
/// The snapshot is in order of each key's *latest* revision, not of
/// history (a host's registration was compacted into its latest
/// heartbeat, which comes after its ownership records), so the view is
/// consistent only once the snapshot is complete: the watcher says
/// `Current(false)` before and `Current(true)` after, and the reconciler
/// acts only in between snapshots.
///
/// `restart` makes it start over from a snapshot: the reconciler asks
/// when the watch has fallen silent (see `Reconciler::check_stall`).
async fn watch(
    kv: kv::Store,
    bucket: Bucket,
    tx: mpsc::UnboundedSender<WatchMsg>,
    restart: Arc<Notify>,
) {
    loop {
        if tx.send(WatchMsg::Current(bucket, false)).is_err() {
            return;
        }
        let Ok(Ok(mut stream)) = timeout(REQUEST_TIMEOUT, kv.watch_with_history(">")).await else {
            tracing::debug!(?bucket, "cluster: watch could not start, retrying");
            sleep(TICK).await;
            continue;
        };
        // Keys are never purged, only deleted (a marker stays), so a
        // bucket empty now was empty when the watch began: no snapshot.
        match timeout(REQUEST_TIMEOUT, kv.status()).await {
            Ok(Ok(status)) if status.values() == 0 => {
                if tx.send(WatchMsg::Current(bucket, true)).is_err() {
                    return;
                }
            }
            Ok(Ok(_)) => {}
            _ => {
                tracing::debug!(?bucket, "cluster: bucket status unavailable, retrying");
                sleep(TICK).await;
                continue;
            }
        }
        loop {
            let entry = tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(entry)) => entry,
                    _ => break,
                },
                () = restart.notified() => break,
            };
            let current = entry.delta == 0;
            if tx.send(WatchMsg::Entry(bucket, entry)).is_err() {
                return;
            }
            if current && tx.send(WatchMsg::Current(bucket, true)).is_err() {
                return;
            }
        }
        sleep(TICK).await;
    }
}

/// What this host knows of the cluster: a prefix of each bucket's history.
#[derive(Debug, Default)]
struct View {
    desired: DesiredSet,
    desired_current: bool,
    cluster_current: bool,
    hosts: BTreeMap<String, (HostRecord, Seen)>,
    drained: BTreeSet<String>,
    owners: BTreeMap<String, (OwnerRecord, u64)>,
}

impl View {
    fn apply(&mut self, msg: WatchMsg, now: Instant) {
        match msg {
            WatchMsg::Current(Bucket::Desired, current) => self.desired_current = current,
            WatchMsg::Current(Bucket::Cluster, current) => self.cluster_current = current,
            WatchMsg::Entry(Bucket::Desired, e) => {
                if e.key != desired::DESIRED_KEY {
                    return;
                }
                if e.operation != kv::Operation::Put {
                    self.desired = DesiredSet::default();
                    return;
                }
                match desired::decode(&e.value, e.revision) {
                    Ok(set) => self.desired = set,
                    Err(err) => {
                        tracing::warn!(%err, "cluster: keeping the last readable desired state")
                    }
                }
            }
            WatchMsg::Entry(Bucket::Cluster, e) => self.apply_cluster(e, now),
        }
    }

    fn apply_cluster(&mut self, e: kv::Entry, now: Instant) {
        let put = e.operation == kv::Operation::Put;
        if let Some(host) = e.key.strip_prefix("host.") {
            if !put {
                self.hosts.remove(host);
                return;
            }
            match serde_json::from_slice::<HostRecord>(&e.value) {
                Ok(rec) => {
                    let seen = Seen::observe(self.hosts.get(host).map(|h| h.1), e.revision, now);
                    self.hosts.insert(host.to_owned(), (rec, seen));
                }
                Err(err) => tracing::warn!(%err, key = %e.key, "cluster: unreadable heartbeat"),
            }
        } else if let Some(host) = e.key.strip_prefix("drain.") {
            if put {
                self.drained.insert(host.to_owned());
            } else {
                self.drained.remove(host);
            }
        } else if let Some(id) = e.key.strip_prefix("owner.") {
            if !put {
                self.owners.remove(id);
                return;
            }
            match serde_json::from_slice::<OwnerRecord>(&e.value) {
                Ok(rec) => {
                    self.owners.insert(id.to_owned(), (rec, e.revision));
                }
                Err(err) => tracing::warn!(%err, key = %e.key, "cluster: unreadable owner record"),
            }
        }
    }

    /// Whether the incarnation an ownership record names is alive in
    /// this view. "No heartbeat" means the host left or was declared gone
    /// (see [`crate::buckets`] on why a view cannot lag that way).
    fn holder_live(&self, rec: &OwnerRecord) -> bool {
        self.hosts
            .get(&rec.host)
            .is_some_and(|(h, _)| h.state == HostState::Alive && h.epoch == rec.epoch)
    }
}

struct Reconciler {
    me: String,
    buckets: Buckets,
    shared: Arc<Mutex<Shared>>,
    view: View,
    /// Operators being handed back: delete the record at this instant.
    releasing: BTreeMap<String, Instant>,
    /// Tells the cluster bucket's watch to start over.
    restart_watch: Arc<Notify>,
    /// Since when our own acknowledged heartbeat is newer than the view.
    silent_since: Option<Instant>,
}

impl Reconciler {
    async fn run(
        mut self,
        mut watch: mpsc::UnboundedReceiver<WatchMsg>,
        mut shutdown: oneshot::Receiver<oneshot::Sender<()>>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = watch.recv() => match msg {
                    Some(msg) => self.view.apply(msg, Instant::now()),
                    None => return,
                },
                _ = tick.tick() => {
                    self.check_stall(Instant::now());
                    if self.view.desired_current && self.view.cluster_current {
                        self.reconcile().await;
                    }
                }
                done = &mut shutdown => {
                    self.leave().await;
                    if let Ok(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
            }
        }
    }

    async fn reconcile(&mut self) {
        let now = Instant::now();
        let (epoch, registered, valid) = {
            let s = lock(&self.shared);
            (
                s.epoch.clone(),
                s.registered,
                s.validity.valid(now) && !s.fenced,
            )
        };
        if !registered {
            return;
        }
        if valid {
            self.declare_gone(now).await;
        }
        let me = self.me.clone();
        let mine = |rec: &OwnerRecord| rec.host == me && rec.epoch == epoch;

        // Placement over the live hosts.
        let hosts: BTreeMap<String, HostView> = self
            .view
            .hosts
            .iter()
            .filter(|(_, (h, _))| h.state == HostState::Alive)
            .map(|(name, (h, _))| {
                (
                    name.clone(),
                    HostView {
                        labels: h.labels.clone(),
                        drained: self.view.drained.contains(name),
                    },
                )
            })
            .collect();
        let specs: BTreeMap<String, PlacementSpec> = self
            .view
            .desired
            .operators
            .iter()
            .map(|(id, op)| (id.clone(), op.placement.clone()))
            .collect();
        let current: BTreeMap<String, String> = self
            .view
            .owners
            .iter()
            .filter(|(_, (rec, _))| self.view.holder_live(rec))
            .map(|(id, (rec, _))| (id.clone(), rec.host.clone()))
            .collect();
        let placement = placement::place(&specs, &hosts, &current);

        // Stop what is running here and should not be.
        let running = lock(&self.shared).running.clone();
        for id in &running {
            let owned = self.view.owners.get(id).is_some_and(|(rec, _)| mine(rec));
            let reason = if !owned {
                Some(StopReason::Lost)
            } else if !self.view.desired.operators.contains_key(id) {
                Some(StopReason::Removed)
            } else if placement.assigned.get(id) != Some(&self.me) {
                Some(StopReason::Moved)
            } else {
                None
            };
            if let Some(reason) = reason {
                if reason == StopReason::Lost {
                    tracing::error!(%id, "cluster: another host owns an operator running here; stopping it");
                }
                lock(&self.shared).stop(id, reason);
                if owned {
                    self.releasing.insert(id.clone(), now + STOP_BUDGET);
                }
            }
        }
        // Records we own but should not: hand back once nothing can be
        // running (the last stop or fence plus the budget).
        let settle = lock(&self.shared)
            .no_start_before
            .map_or(now, |t| t.max(now));
        for (id, (rec, _)) in &self.view.owners {
            if mine(rec)
                && placement.assigned.get(id) != Some(&self.me)
                && !self.releasing.contains_key(id)
                && !lock(&self.shared).running.contains(id)
            {
                self.releasing.insert(id.clone(), settle);
            }
        }
        self.release_due(now).await;

        // Claim and start what is placed here.
        for (id, host) in &placement.assigned {
            if host != &self.me || self.releasing.contains_key(id) {
                continue;
            }
            let state = match self.view.owners.get(id) {
                Some((rec, _)) if mine(rec) => Ok(true),
                Some((rec, _)) if self.view.holder_live(rec) => Ok(false),
                Some((_, rev)) => Err(Some(*rev)),
                None => Err(None),
            };
            let owned = match state {
                Ok(owned) => owned,
                Err(rev) => self.claim(id, rev, &epoch).await,
            };
            if !owned {
                continue;
            }
            let Some(op) = self.view.desired.operators.get(id) else {
                continue;
            };
            let mut s = lock(&self.shared);
            let now = Instant::now();
            if !s.running.contains(id) && s.may_start(now) && s.epoch == epoch {
                s.running.insert(id.clone());
                let _ = s.events.send(Event::Start {
                    id: id.clone(),
                    manifest: op.manifest.clone(),
                });
            }
        }
    }

    /// Restart the cluster watch when it has missed our own heartbeat
    /// for a while: an ordered consumer whose server froze or died can
    /// stay silent for many seconds before the client notices, and a
    /// silent view neither sees peers die nor lets us claim.
    fn check_stall(&mut self, now: Instant) {
        let acked = lock(&self.shared).host_rev;
        let seen = self
            .view
            .hosts
            .get(&self.me)
            .map_or(0, |(_, seen)| seen.revision);
        if seen >= acked || !self.view.cluster_current {
            self.silent_since = None;
            return;
        }
        let since = *self.silent_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= WATCH_SILENCE {
            tracing::info!("cluster: the bucket watch fell silent, starting it over");
            self.restart_watch.notify_one();
            self.silent_since = None;
        }
    }

    /// Mark gone every peer whose heartbeat stood still for the TTL, by
    /// compare-and-set on the revision seen: it fails if the peer renewed
    /// meanwhile.
    ///
    /// The TTL is counted from when this host first saw the revision
    /// (the arithmetic's only requirement), and besides, this host must
    /// have been able to write without a break for [`RESUME_GRACE`]:
    /// while the bucket cannot be written (its Raft group electing a
    /// leader) no heartbeat moves, and without the grace every host would
    /// declare every other gone the moment writes come back. The grace is
    /// shorter than the TTL on purpose: after losing the bucket's leader
    /// the election already took 4-9 s, and a full TTL on top of it was
    /// 3 s of the takeover spent waiting for live hosts that renew within
    /// one interval. Waiting longer is always safe; the grace only guards
    /// live hosts from a needless declaration.
    async fn declare_gone(&mut self, now: Instant) {
        let Some(streak) = lock(&self.shared).streak_since else {
            return;
        };
        let stale: Vec<(String, HostRecord, u64)> = self
            .view
            .hosts
            .iter()
            .filter(|(name, (h, seen))| {
                **name != self.me
                    && h.state == HostState::Alive
                    && seen.expired(now)
                    && now.saturating_duration_since(streak) >= RESUME_GRACE
            })
            .map(|(name, (h, seen))| (name.clone(), h.clone(), seen.revision))
            .collect();
        for (name, mut record, rev) in stale {
            record.state = HostState::Gone;
            record.gone_by = Some(self.me.clone());
            let key = host_key(&name);
            let kv = &self.buckets.cluster;
            match timeout(REQUEST_TIMEOUT, kv.update(&key, encode(&record), rev)).await {
                Ok(Ok(new_rev)) => {
                    tracing::warn!(
                        host = %name,
                        silent_for = ?LEASE_TTL,
                        "cluster: host declared gone, its operators go elsewhere"
                    );
                    let seen = Seen::observe(None, new_rev, now);
                    self.view.hosts.insert(name, (record, seen));
                }
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // Our view is behind. Reading the heartbeat directly
                    // is safe to merge: a fresher host record can only
                    // say an incarnation is *less* alive than the view
                    // thought (gone, replaced, left) or renewed; never
                    // merged: ownership records (a fresh owner next to a
                    // stale heartbeat could look free while it is not).
                    if let Ok(Ok(Some(entry))) = timeout(REQUEST_TIMEOUT, kv.entry(&key)).await {
                        self.view.apply_cluster(entry, Instant::now());
                    }
                }
                _ => {}
            }
        }
    }

    /// Compare-and-set `owner.<id>` to this incarnation: from revision
    /// `rev` (a record whose holder is gone), or from nothing.
    async fn claim(&mut self, id: &str, rev: Option<u64>, epoch: &str) -> bool {
        let record = OwnerRecord {
            host: self.me.clone(),
            epoch: epoch.to_owned(),
        };
        let key = owner_key(id);
        let kv = &self.buckets.cluster;
        let result = match rev {
            Some(rev) => timeout(REQUEST_TIMEOUT, kv.update(&key, encode(&record), rev))
                .await
                .ok()
                .and_then(Result::ok),
            None => timeout(REQUEST_TIMEOUT, kv.create(&key, encode(&record)))
                .await
                .ok()
                .and_then(Result::ok),
        };
        match result {
            Some(new_rev) => {
                tracing::info!(%id, "cluster: claimed");
                self.view.owners.insert(id.to_owned(), (record, new_rev));
                true
            }
            None => false,
        }
    }

    /// Delete the records whose release is due, by compare-and-set (a
    /// record that changed meanwhile is not ours to delete).
    async fn release_due(&mut self, now: Instant) {
        let due: Vec<String> = self
            .releasing
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some((_, rev)) = self.view.owners.get(&id) else {
                self.releasing.remove(&id);
                continue;
            };
            let result = timeout(
                REQUEST_TIMEOUT,
                self.buckets
                    .cluster
                    .delete_expect_revision(owner_key(&id), Some(*rev)),
            )
            .await;
            match result {
                Ok(Ok(())) => {
                    self.view.owners.remove(&id);
                    self.releasing.remove(&id);
                }
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    self.releasing.remove(&id);
                }
                _ => {}
            }
        }
    }

    /// Shutdown: stop everything, wait the budget, give every record back.
    async fn leave(&mut self) {
        let epoch = {
            let mut s = lock(&self.shared);
            for id in s.running.clone() {
                s.stop(&id, StopReason::Shutdown);
            }
            s.fenced = true;
            s.epoch.clone()
        };
        sleep(STOP_BUDGET).await;
        let mine: Vec<(String, u64)> = self
            .view
            .owners
            .iter()
            .filter(|(_, (rec, _))| rec.host == self.me && rec.epoch == epoch)
            .map(|(id, (_, rev))| (id.clone(), *rev))
            .collect();
        for (id, rev) in mine {
            let _ = timeout(
                REQUEST_TIMEOUT,
                self.buckets
                    .cluster
                    .delete_expect_revision(owner_key(&id), Some(rev)),
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::FENCE_AFTER;

    fn shared() -> (Shared, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Shared {
                epoch: "e1".into(),
                registered: true,
                host_rev: 1,
                validity: Validity::default(),
                streak_since: None,
                fenced: false,
                no_start_before: None,
                running: BTreeSet::new(),
                events: tx,
            },
            rx,
        )
    }

    #[test]
    fn a_fence_stops_everything_and_holds_starts_for_the_budget() {
        let (mut s, mut rx) = shared();
        let t0 = Instant::now();
        assert!(!s.may_start(t0), "no acknowledged renewal yet");
        s.validity.acknowledged(t0);
        assert!(s.may_start(t0));
        s.running.extend(["a".to_string(), "b".to_string()]);
        s.fence(t0 + FENCE_AFTER);
        assert!(s.running.is_empty());
        let mut stopped = Vec::new();
        while let Ok(Event::Stop { id, reason }) = rx.try_recv() {
            assert_eq!(reason, StopReason::Fenced);
            stopped.push(id);
        }
        assert_eq!(stopped, ["a", "b"]);
        // A renewal comes back at once: still no start within the budget.
        let t1 = t0 + FENCE_AFTER;
        s.validity.acknowledged(t1);
        s.fenced = false;
        assert!(!s.may_start(t1 + STOP_BUDGET / 2));
        assert!(s.may_start(t1 + STOP_BUDGET));
    }

    #[test]
    fn a_view_trusts_only_the_named_incarnation() {
        let mut v = View::default();
        let now = Instant::now();
        let rec = |state, epoch: &str| HostRecord {
            state,
            epoch: epoch.into(),
            labels: BTreeSet::new(),
            beat: 0,
            gone_by: None,
        };
        let owner = OwnerRecord {
            host: "b".into(),
            epoch: "e1".into(),
        };
        assert!(!v.holder_live(&owner), "left or gone");
        v.hosts.insert(
            "b".into(),
            (rec(HostState::Alive, "e1"), Seen::observe(None, 1, now)),
        );
        assert!(v.holder_live(&owner));
        v.hosts.insert(
            "b".into(),
            (rec(HostState::Alive, "e2"), Seen::observe(None, 2, now)),
        );
        assert!(!v.holder_live(&owner), "a new incarnation does not inherit");
        v.hosts.insert(
            "b".into(),
            (rec(HostState::Gone, "e1"), Seen::observe(None, 3, now)),
        );
        assert!(!v.holder_live(&owner));
    }
}
