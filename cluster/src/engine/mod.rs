//! The engine: one per host. It registers the host, keeps its heartbeat,
//! watches the cluster, claims the operators placement gives it, hands
//! back those it should no longer run, and tells its caller, through a
//! channel of [`Event`]s, which operators to start and stop. It starts no
//! process itself.
//!
//! Three tasks:
//! - the *heartbeat* registers a fresh incarnation (epoch) of the host and
//!   renews `host.<name>` every [`RENEW_INTERVAL`](crate::lease::RENEW_INTERVAL) by compare-and-set on
//!   its own last revision; a renewal refused because the revision moved
//!   means a peer declared this incarnation gone: it fences and
//!   registers anew;
//! - the *fence* checks every few milliseconds that the last acknowledged
//!   renewal is younger than [`crate::lease::FENCE_AFTER`], and otherwise emits
//!   [`Event::Stop`] for everything running (no I/O in the way, so a hung
//!   request cannot delay it);
//! - the *reconciler* applies the bucket watches to its view, then every
//!   [`TICK`](crate::lease::TICK): declares gone the hosts whose heartbeat stood still for
//!   [`LEASE_TTL`](crate::lease::LEASE_TTL), computes [`crate::place`], claims (compare-and-set on
//!   `owner.<id>`) what is placed here and free, starts what it owns,
//!   releases what is placed elsewhere (stop, wait [`STOP_BUDGET`],
//!   delete the record with compare-and-set).
//!
//! The safety argument is in [`crate::lease`] and docs/cluster.md.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::buckets::{self, host_key, Buckets, REQUEST_TIMEOUT};
use crate::lease::{Validity, STOP_BUDGET};

mod heartbeat;
mod reconcile;
mod view;

use heartbeat::{fence, is_alive_epoch};
use reconcile::Reconciler;
pub use view::ViewSnapshot;
use view::{watch, Bucket, View, WatchMsg};

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

/// Reads an engine's [`Engine::must_be_gone_by`]; cheap to clone, valid
/// as long as the engine runs (afterwards it keeps the last value).
#[derive(Clone)]
pub struct Deadline(Arc<Mutex<Shared>>);

impl Deadline {
    /// See [`Engine::must_be_gone_by`].
    pub fn must_be_gone_by(&self) -> Option<std::time::Instant> {
        lock(&self.0).validity.fence_at().map(|f| f + STOP_BUDGET)
    }

    /// Whether this host may start an operator now: not fenced, and its
    /// last acknowledged renewal still valid. The caller's restarts of a
    /// crashed operator ask this first: after a freeze or a lost lease
    /// the engine's stop may not have been carried out yet, and a
    /// restart then would run beside the peer that took it over.
    pub fn may_start(&self) -> bool {
        let s = lock(&self.0);
        !s.fenced && s.validity.valid(Instant::now())
    }
}

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Deadline")
            .field(&self.must_be_gone_by())
            .finish()
    }
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
    /// Operators the caller was told to stop and has confirmed gone
    /// ([`Stopped::confirm`]) since: their records may be handed back
    /// before the [`STOP_BUDGET`] runs out.
    gone: BTreeSet<String>,
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
            self.gone.remove(&id);
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
            self.gone.remove(id);
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
    snapshot: Arc<Mutex<ViewSnapshot>>,
    /// See [`Stopped`].
    confirmed: Arc<Notify>,
}

/// Where the caller confirms that an operator it was told to stop is
/// gone ([`Engine::stopped`]); cheap to clone.
#[derive(Clone)]
pub struct Stopped {
    shared: Arc<Mutex<Shared>>,
    /// Wakes the reconciler, which hands the record back at once rather
    /// than at its next tick.
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stopped")
    }
}

impl Stopped {
    /// Operator `id`, which this engine told the caller to stop, is gone:
    /// its process and everything it started have exited (reaped, its
    /// process group killed). The engine may then hand its record back at
    /// once instead of waiting out the [`STOP_BUDGET`] (a drain, a
    /// rebalance, a removal, a clean leave): the budget is the longest a
    /// caller may take, and a caller that knows it is done has nothing
    /// left to wait for. Ignored for an operator the caller is meant to
    /// run (started again since), so a late confirmation cannot release
    /// a running one. Say it only after the stop was carried out.
    pub fn confirm(&self, id: &str) {
        let mut s = lock(&self.shared);
        if !s.running.contains(id) {
            s.gone.insert(id.to_owned());
            self.wake.notify_one();
        }
    }
}

/// A handle on an engine's view of the cluster ([`Engine::view`]), for
/// whoever shows it (`status`) while the engine runs elsewhere.
#[derive(Debug, Clone)]
pub struct ViewHandle(Arc<Mutex<ViewSnapshot>>);

impl ViewHandle {
    /// The view as of the engine's last tick (100 ms).
    pub fn get(&self) -> ViewSnapshot {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
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
            gone: BTreeSet::new(),
            events: tx,
        }));
        let (watch_tx, watch_rx) = mpsc::unbounded_channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let restart_watch = Arc::new(Notify::new());
        let confirmed = Arc::new(Notify::new());
        let snapshot = Arc::new(Mutex::new(ViewSnapshot::default()));
        let tasks = vec![
            tokio::spawn(heartbeat::heartbeat(
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
                    confirmed: Arc::clone(&confirmed),
                    silent_since: None,
                    snapshot: Arc::clone(&snapshot),
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
                snapshot,
                confirmed,
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

    /// This engine's view of the cluster, kept current while it runs:
    /// what a `status` shows without asking the buckets.
    pub fn view(&self) -> ViewHandle {
        ViewHandle(Arc::clone(&self.snapshot))
    }

    /// Operators this host was told to run, now.
    pub fn running(&self) -> BTreeSet<String> {
        lock(&self.shared).running.clone()
    }

    /// The latest moment every operator of this host must be gone by if
    /// no further renewal is acknowledged: the fence time of the last
    /// acknowledged renewal plus [`STOP_BUDGET`]. What the orchestrator's
    /// fence warden enforces when the daemon itself cannot (frozen).
    /// `None` before the first acknowledged renewal (nothing runs then).
    pub fn must_be_gone_by(&self) -> Option<std::time::Instant> {
        self.deadline().must_be_gone_by()
    }

    /// A handle that reads [`Engine::must_be_gone_by`] without the
    /// engine, for a task that feeds the deadline on while the engine's
    /// owner is busy.
    pub fn deadline(&self) -> Deadline {
        Deadline(Arc::clone(&self.shared))
    }

    /// Where the caller confirms stops carried out (see [`Stopped`]).
    pub fn stopped(&self) -> Stopped {
        Stopped {
            shared: Arc::clone(&self.shared),
            wake: Arc::clone(&self.confirmed),
        }
    }

    /// Whether the host is fenced (registered nowhere, or its heartbeat
    /// is too old to run anything).
    pub fn is_fenced(&self) -> bool {
        lock(&self.shared).fenced
    }

    /// Leave the cluster cleanly: stop every operator here, wait until
    /// the caller confirmed each gone ([`Stopped::confirm`]) or the stop
    /// budget ran out, give the ownership records back and remove the
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buckets::{HostRecord, HostState, OwnerRecord};
    use crate::lease::Seen;
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
                gone: BTreeSet::new(),
                events: tx,
            },
            rx,
        )
    }

    #[test]
    fn a_confirmed_stop_counts_only_for_an_operator_told_to_stop() {
        let (mut s, _rx) = shared();
        s.running.insert("a".into());
        let shared = Arc::new(Mutex::new(s));
        let stopped = Stopped {
            shared: Arc::clone(&shared),
            wake: Arc::default(),
        };
        // Running: a confirmation (late, or wrong) releases nothing.
        stopped.confirm("a");
        assert!(!lock(&shared).gone.contains("a"));
        assert!(lock(&shared).stop("a", StopReason::Moved));
        stopped.confirm("a");
        assert!(lock(&shared).gone.contains("a"));
        // A new stop forgets an earlier confirmation.
        lock(&shared).running.insert("a".into());
        assert!(lock(&shared).stop("a", StopReason::Moved));
        assert!(!lock(&shared).gone.contains("a"));
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
