//! Lease timing: how long a heartbeat is good for, and when a host must
//! stop its operators because it can no longer prove it is alive.
//!
//! # The arithmetic
//!
//! A host renews its heartbeat (`host.<name>`, compare-and-set on its own
//! last revision) every [`RENEW_INTERVAL`]. Let `s` be the instant, on the
//! host's own monotonic clock, at which it *sent* the last renewal that
//! was acknowledged. The write happened at or after `s`.
//!
//! A peer declares the host gone only after it has seen the host's latest
//! heartbeat revision stand still for [`LEASE_TTL`] on *its own* monotonic
//! clock, counted from when it first saw that revision (which is after the
//! write, so after `s`), and only by a compare-and-set on that very
//! revision: if the host renewed meanwhile, the declaration fails. Only
//! then may the peer claim the host's operators. So a takeover happens at
//! the earliest at `s + LEASE_TTL`, in real time, up to the drift between
//! the two clocks' *rates* (no wall clock is compared anywhere).
//!
//! The host, for its part, stops its operators ("fences") at
//! `s + FENCE_AFTER`, and its caller has [`STOP_BUDGET`] to make them
//! gone (SIGTERM, then SIGKILL). They are gone by
//! `s + FENCE_AFTER + STOP_BUDGET = s + LEASE_TTL - SKEW_MARGIN`:
//! [`SKEW_MARGIN`] before any peer may start them. The margin absorbs
//! clock-rate drift (parts per million: microseconds over a 3 s TTL),
//! the lateness of the fence timer and of the peer's tick on a loaded
//! machine, which are the real risk.
//!
//! A dead host's operators start elsewhere within about
//! `RENEW_INTERVAL + LEASE_TTL + TICK` after it dies (its last heartbeat
//! was at most one interval old): 3.6 s, under the 5 s promise.
//!
//! What this does not cover: a daemon that is *frozen* (SIGSTOP, a VM
//! paused) cannot fence; its operators keep running. The operator side of
//! fencing (each operator told its deadline, stopping itself) is the
//! orchestrator's part, see docs/cluster.md.

use std::time::{Duration, Instant};

/// How often a host renews its heartbeat.
pub const RENEW_INTERVAL: Duration = Duration::from_millis(RENEW_INTERVAL_MS);
/// How long a peer waits, on its own clock, after a heartbeat revision
/// stops changing before it declares the host gone.
pub const LEASE_TTL: Duration = Duration::from_millis(LEASE_TTL_MS);
/// Slack between "the old owner's operators are gone" and "a peer may
/// start them": clock-rate drift and timer lateness.
pub const SKEW_MARGIN: Duration = Duration::from_millis(SKEW_MARGIN_MS);
/// How long the caller has to make an operator gone after a
/// [`crate::Event::Stop`] (SIGTERM, then SIGKILL before the budget ends).
pub const STOP_BUDGET: Duration = Duration::from_millis(STOP_BUDGET_MS);
/// After the last acknowledged renewal was *sent*, a host fences at this
/// age: `LEASE_TTL - SKEW_MARGIN - STOP_BUDGET`.
pub const FENCE_AFTER: Duration = Duration::from_millis(FENCE_AFTER_MS);
/// After the bucket could not be written (a Raft election), how long a
/// peer waits, from its own first acknowledged write, before it counts
/// any heartbeat's TTL as over: time for every live host to land a
/// renewal (three attempts). Liveness only: safety rests on the TTL
/// counted from when a revision was first seen, which this does not
/// shorten (docs/cluster.md, "the leader-loss case").
pub const RESUME_GRACE: Duration = Duration::from_millis(RESUME_GRACE_MS);
/// How often the engine reconciles (claims, releases, declares hosts
/// gone).
pub const TICK: Duration = Duration::from_millis(100);

const RENEW_INTERVAL_MS: u64 = 500;
const LEASE_TTL_MS: u64 = 3000;
const SKEW_MARGIN_MS: u64 = 500;
const STOP_BUDGET_MS: u64 = 1000;
const FENCE_AFTER_MS: u64 = LEASE_TTL_MS - SKEW_MARGIN_MS - STOP_BUDGET_MS;
const RESUME_GRACE_MS: u64 = 3 * RENEW_INTERVAL_MS;

// A host survives two lost renewals in a row without fencing.
const _: () = assert!(FENCE_AFTER_MS > 2 * RENEW_INTERVAL_MS);
// A live host gets at least two renewals in after writes resume before
// any peer may count its heartbeat stale.
const _: () = assert!(RESUME_GRACE_MS >= 2 * RENEW_INTERVAL_MS + 100);
// The promise: a dead host's operators start elsewhere within 5 s.
const _: () = assert!(RENEW_INTERVAL_MS + LEASE_TTL_MS + 2 * 100 < 5000);

/// A key's revision and when this host first saw it: the peer's side of
/// the arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The revision.
    pub revision: u64,
    /// When it was first seen here.
    pub since: Instant,
}

impl Seen {
    /// A revision seen at `now`: keeps `since` if it is the same revision
    /// seen again (a watcher that restarts delivers it twice), so a
    /// re-delivery never extends a lease.
    pub fn observe(previous: Option<Seen>, revision: u64, now: Instant) -> Seen {
        match previous {
            Some(p) if p.revision == revision => p,
            _ => Seen {
                revision,
                since: now,
            },
        }
    }

    /// Whether the revision has stood still for the TTL at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) >= LEASE_TTL
    }
}

/// The host's side: when it must fence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Validity {
    /// Send time of the last acknowledged renewal.
    pub last_ack_sent: Option<Instant>,
}

impl Validity {
    /// A renewal sent at `sent` was acknowledged (answers may arrive out
    /// of order: the latest send counts).
    pub fn acknowledged(&mut self, sent: Instant) {
        self.last_ack_sent = Some(self.last_ack_sent.map_or(sent, |s| s.max(sent)));
    }

    /// When the host must have told its caller to stop everything.
    pub fn fence_at(&self) -> Option<Instant> {
        self.last_ack_sent.map(|s| s + FENCE_AFTER)
    }

    /// Whether the host may run operators at `now`.
    pub fn valid(&self, now: Instant) -> bool {
        self.fence_at().is_some_and(|f| now < f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_owner_is_gone_a_margin_before_anyone_may_take_over() {
        let s = Instant::now();
        let mut v = Validity::default();
        assert!(!v.valid(s), "nothing acknowledged: not valid");
        v.acknowledged(s);
        let gone = v.fence_at().expect("fence time") + STOP_BUDGET;
        // The peer saw the write no earlier than it was sent.
        let peer = Seen::observe(None, 7, s);
        let takeover = peer.since + LEASE_TTL;
        assert_eq!(takeover - gone, SKEW_MARGIN);
        assert!(!peer.expired(takeover - Duration::from_millis(1)));
        assert!(peer.expired(takeover));
        assert!(v.valid(s + FENCE_AFTER - Duration::from_millis(1)));
        assert!(!v.valid(s + FENCE_AFTER));
    }

    #[test]
    fn a_redelivered_revision_does_not_extend_the_lease_and_a_late_answer_does_not_shorten_it() {
        let t0 = Instant::now();
        let first = Seen::observe(None, 3, t0);
        let again = Seen::observe(Some(first), 3, t0 + Duration::from_secs(2));
        assert_eq!(again.since, t0);
        let next = Seen::observe(Some(again), 4, t0 + Duration::from_secs(2));
        assert_eq!(next.since, t0 + Duration::from_secs(2));
        let mut v = Validity::default();
        v.acknowledged(t0 + Duration::from_secs(1));
        v.acknowledged(t0);
        assert_eq!(v.last_ack_sent, Some(t0 + Duration::from_secs(1)));
    }
}
