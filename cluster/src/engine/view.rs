//! What the engine knows of the cluster: the bucket watches and the view
//! they build (hosts, their incarnations, owners, drains, the desired set).

use crate::buckets::{HostRecord, HostState, OwnerRecord, REQUEST_TIMEOUT};
use crate::desired::{self, DesiredSet};
use crate::lease::{Seen, TICK};
use crate::placement::{place, HostView, Placement, PlacementSpec};
use async_nats::jetstream::kv;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep, timeout};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bucket {
    Desired,
    Cluster,
}

#[derive(Debug)]
pub(super) enum WatchMsg {
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
pub(super) async fn watch(
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
pub(super) struct View {
    /// Shared with [`ViewSnapshot`]s: replaced, never edited, so a
    /// snapshot costs a pointer copy however large the set.
    pub(super) desired: Arc<DesiredSet>,
    pub(super) desired_revision: Option<u64>,
    pub(super) desired_current: bool,
    pub(super) cluster_current: bool,
    pub(super) hosts: BTreeMap<String, (HostRecord, Seen)>,
    pub(super) drained: BTreeSet<String>,
    pub(super) owners: BTreeMap<String, (OwnerRecord, u64)>,
}

impl View {
    pub(super) fn apply(&mut self, msg: WatchMsg, now: Instant) {
        match msg {
            WatchMsg::Current(Bucket::Desired, current) => self.desired_current = current,
            WatchMsg::Current(Bucket::Cluster, current) => self.cluster_current = current,
            WatchMsg::Entry(Bucket::Desired, e) => {
                if e.key != desired::DESIRED_KEY {
                    return;
                }
                if e.operation != kv::Operation::Put {
                    self.desired = Arc::default();
                    self.desired_revision = None;
                    return;
                }
                match desired::decode(&e.value, e.revision) {
                    Ok(set) => {
                        self.desired = Arc::new(set);
                        self.desired_revision = Some(e.revision);
                    }
                    Err(err) => {
                        tracing::warn!(%err, "cluster: keeping the last readable desired state")
                    }
                }
            }
            WatchMsg::Entry(Bucket::Cluster, e) => self.apply_cluster(e, now),
        }
    }

    pub(super) fn apply_cluster(&mut self, e: kv::Entry, now: Instant) {
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

    /// What callers may see of this view (see [`ViewSnapshot`]).
    pub(super) fn snapshot(&self) -> ViewSnapshot {
        ViewSnapshot {
            current: self.desired_current && self.cluster_current,
            desired: Arc::clone(&self.desired),
            desired_revision: self.desired_revision,
            hosts: self
                .hosts
                .iter()
                .map(|(name, (rec, _))| (name.clone(), rec.clone()))
                .collect(),
            heartbeat_seen: self
                .hosts
                .iter()
                .map(|(name, (_, seen))| (name.clone(), seen.since))
                .collect(),
            drained: self.drained.clone(),
            owners: self
                .owners
                .iter()
                .map(|(id, (rec, _))| (id.clone(), rec.clone()))
                .collect(),
        }
    }

    /// Whether the incarnation an ownership record names is alive in
    /// this view. "No heartbeat" means the host left or was declared gone
    /// (see [`crate::buckets`] on why a view cannot lag that way).
    pub(super) fn holder_live(&self, rec: &OwnerRecord) -> bool {
        self.hosts
            .get(&rec.host)
            .is_some_and(|(h, _)| h.state == HostState::Alive && h.epoch == rec.epoch)
    }
}

/// The engine's view of the cluster as of its last tick: what `status`
/// shows (hosts, drains, who owns what, the desired state) without a
/// request of its own, so it answers at once even while the buckets
/// cannot (a lost server, an election). Read it with
/// [`crate::Engine::view`].
#[derive(Debug, Clone, Default)]
pub struct ViewSnapshot {
    /// Both bucket watches have delivered their snapshot: the view is the
    /// buckets' state at some revision (false: still catching up).
    pub current: bool,
    /// The desired state.
    pub desired: Arc<DesiredSet>,
    /// Its revision (`None` before the first apply).
    pub desired_revision: Option<u64>,
    /// Every host's heartbeat record, by name.
    pub hosts: BTreeMap<String, HostRecord>,
    /// When this host first saw each host's latest heartbeat revision
    /// (on its own monotonic clock): the age a peer's lease is judged by
    /// ([`crate::lease::Seen`]).
    pub heartbeat_seen: BTreeMap<String, Instant>,
    /// Drained hosts.
    pub drained: BTreeSet<String>,
    /// Ownership records, by operator id.
    pub owners: BTreeMap<String, OwnerRecord>,
}

impl ViewSnapshot {
    /// The host whose live incarnation owns `id` (a record naming a
    /// host that left or was declared gone counts for nothing).
    pub fn owner_of(&self, id: &str) -> Option<&str> {
        let owner = self.owners.get(id)?;
        let host = self.hosts.get(&owner.host)?;
        (host.state == HostState::Alive && host.epoch == owner.epoch).then_some(owner.host.as_str())
    }

    /// Where placement puts every desired operator given this view: the
    /// same inputs the engine decides by (live hosts, their labels and
    /// drains, who owns what now), so an operator whose owner differs
    /// from its placement is about to move (for `status` and the rolling
    /// restart, which waits until nothing is left to move).
    pub fn placement(&self) -> Placement {
        place_over(self.hosts.iter(), &self.drained, &self.desired, |id| {
            self.owner_of(id)
        })
    }
}

/// Placement over one view of the cluster: the live hosts (with their
/// labels and drains), every desired operator's placement keys, and who
/// owns each now (`owner`: the host of a live incarnation's record). One
/// function for the engine's decisions and for what `status` says is
/// about to move, so the two cannot disagree.
pub(super) fn place_over<'a>(
    hosts: impl Iterator<Item = (&'a String, &'a HostRecord)>,
    drained: &BTreeSet<String>,
    desired: &DesiredSet,
    owner: impl Fn(&str) -> Option<&'a str>,
) -> Placement {
    let hosts: BTreeMap<String, HostView> = hosts
        .filter(|(_, h)| h.state == HostState::Alive)
        .map(|(name, h)| {
            (
                name.clone(),
                HostView {
                    labels: h.labels.clone(),
                    drained: drained.contains(name),
                },
            )
        })
        .collect();
    let specs: BTreeMap<String, PlacementSpec> = desired
        .operators
        .iter()
        .map(|(id, op)| (id.clone(), op.placement.clone()))
        .collect();
    let current: BTreeMap<String, String> = desired
        .operators
        .keys()
        .filter_map(|id| Some((id.clone(), owner(id)?.to_owned())))
        .collect();
    place(&specs, &hosts, &current)
}
