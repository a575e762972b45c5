//! Counters every bus client keeps, reported in heartbeats.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use switchboard_proto::Counters;

/// Live counters shared by a [`crate::Bus`] and its subscriptions.
///
/// Relaxed atomics: these are statistics, read now and then by the
/// heartbeat, never used to synchronise anything.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) received: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) handler_errors: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) disconnects: AtomicU64,
}

impl Stats {
    pub(crate) fn new() -> Arc<Stats> {
        Arc::new(Stats::default())
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A snapshot in the wire form used by heartbeats.
    pub fn snapshot(&self) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut counters = Counters {
            received: get(&self.received),
            published: get(&self.published),
            malformed: get(&self.malformed),
            duplicates: get(&self.duplicates),
            dropped: get(&self.dropped),
            handler_errors: get(&self.handler_errors),
            reconnects: get(&self.reconnects),
            ..Counters::default()
        };
        counters
            .extra
            .insert("disconnects".to_string(), get(&self.disconnects));
        counters
    }

    /// An envelope its subscription counted as received turned out to be
    /// a repeat that another subscription already delivered.
    pub(crate) fn reclassify_as_duplicate(&self) {
        self.received.fetch_sub(1, Ordering::Relaxed);
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a handler that returned an error.
    pub fn handler_error(&self) {
        Self::add(&self.handler_errors, 1);
    }
}
