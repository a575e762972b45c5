//! The reconciler: every tick, declare silent hosts gone, place, claim
//! what is placed here, release what is placed elsewhere.

use crate::buckets::{
    host_key, owner_key, Buckets, HostRecord, HostState, OwnerRecord, REQUEST_TIMEOUT,
};
use crate::lease::{Seen, LEASE_TTL, RESUME_GRACE, STOP_BUDGET, TICK};

use async_nats::jetstream::kv;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::{sleep, timeout};

use super::*;

/// How often a leaving engine looks for its caller's stop confirmations.
const CONFIRM_POLL: std::time::Duration = std::time::Duration::from_millis(10);

pub(super) struct Reconciler {
    pub(super) me: String,
    pub(super) buckets: Buckets,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) view: View,
    /// Operators being handed back: delete the record at this instant.
    pub(super) releasing: BTreeMap<String, Instant>,
    /// Tells the cluster bucket's watch to start over.
    pub(super) restart_watch: Arc<Notify>,
    /// The caller confirmed a stop ([`super::Stopped`]): hand back what
    /// is due now, not at the next tick.
    pub(super) confirmed: Arc<Notify>,
    /// Since when our own acknowledged heartbeat is newer than the view.
    pub(super) silent_since: Option<Instant>,
    /// The view as callers see it, refreshed every tick.
    pub(super) snapshot: Arc<std::sync::Mutex<ViewSnapshot>>,
}

impl Reconciler {
    pub(super) async fn run(
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
                () = self.confirmed.notified() => {
                    if self.view.desired_current && self.view.cluster_current {
                        self.release_due(Instant::now()).await;
                    }
                }
                _ = tick.tick() => {
                    self.check_stall(Instant::now());
                    if self.view.desired_current && self.view.cluster_current {
                        self.reconcile().await;
                    }
                    *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = self.view.snapshot();
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

    pub(super) async fn reconcile(&mut self) {
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
        let view = &self.view;
        let placement = super::view::place_over(
            view.hosts.iter().map(|(name, (h, _))| (name, h)),
            &view.drained,
            &view.desired,
            |id| {
                view.owners
                    .get(id)
                    .filter(|(rec, _)| view.holder_live(rec))
                    .map(|(rec, _)| rec.host.as_str())
            },
        );

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
                s.gone.remove(id);
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
    pub(super) fn check_stall(&mut self, now: Instant) {
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
    pub(super) async fn declare_gone(&mut self, now: Instant) {
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
    pub(super) async fn claim(&mut self, id: &str, rev: Option<u64>, epoch: &str) -> bool {
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
    /// record that changed meanwhile is not ours to delete): the stop
    /// budget has run out, or the caller confirmed the operator gone.
    pub(super) async fn release_due(&mut self, now: Instant) {
        let due: Vec<String> = {
            let s = lock(&self.shared);
            self.releasing
                .iter()
                .filter(|(id, at)| **at <= now || s.gone.contains(*id))
                .map(|(id, _)| id.clone())
                .collect()
        };
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
                    lock(&self.shared).gone.remove(&id);
                }
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    self.releasing.remove(&id);
                    lock(&self.shared).gone.remove(&id);
                }
                _ => {}
            }
        }
    }

    /// Shutdown: stop everything, wait until the caller confirmed each
    /// gone or the budget ran out, give every record back.
    pub(super) async fn leave(&mut self) {
        let (epoch, stopping) = {
            let mut s = lock(&self.shared);
            let stopping = s.running.clone();
            for id in &stopping {
                s.stop(id, StopReason::Shutdown);
            }
            s.fenced = true;
            (s.epoch.clone(), stopping)
        };
        let budget = Instant::now() + STOP_BUDGET;
        while Instant::now() < budget {
            if stopping
                .iter()
                .all(|id| lock(&self.shared).gone.contains(id))
            {
                break;
            }
            sleep(CONFIRM_POLL).await;
        }
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
