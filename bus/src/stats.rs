//! Counters every bus client keeps, reported in heartbeats.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use switchboard_proto::Counters;

/// How long after a slow-consumer warning further drops are only counted.
const SLOW_LOG_QUIET: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// Set by [`crate::Bus::close`]: a disconnect after it is the close
    /// itself (or the server going with us), not news worth a warning.
    pub(crate) closing: std::sync::atomic::AtomicBool,
    /// Counters an operator registered with [`Stats::counter`].
    custom: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    /// Drops are warned about once per burst, not once per message: a slow
    /// consumer drops thousands at a time.
    drop_log: Mutex<Option<crate::subscription::BurstLog>>,
}

/// A named counter of an operator's own (lines sent, reconnects to its
/// chat network...), reported in every heartbeat next to the bus's
/// counters. Cheap to clone and to increment.
#[derive(Debug, Clone)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Add one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
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
        let custom = self.custom.lock().unwrap_or_else(|p| p.into_inner());
        for (name, value) in custom.iter() {
            counters.extra.insert(name.clone(), get(value));
        }
        counters
    }

    /// The operator's own counter `name` (created at 0 the first time;
    /// the same counter every time after). It appears in heartbeats under
    /// `counters.<name>`. A name the bus already uses (`received`,
    /// `reconnects`, ...) is reported as `op_<name>`, so an operator can
    /// never overwrite the bus's own figures.
    ///
    /// ```
    /// # fn demo(stats: &switchboard_bus::Stats) {
    /// let sent = stats.counter("lines_sent");
    /// sent.inc();
    /// # }
    /// ```
    pub fn counter(&self, name: &str) -> Counter {
        const OWN: [&str; 9] = [
            "received",
            "published",
            "publish_pending",
            "malformed",
            "duplicates",
            "dropped",
            "handler_errors",
            "reconnects",
            "disconnects",
        ];
        let key = if OWN.contains(&name) {
            format!("op_{name}")
        } else {
            name.to_string()
        };
        let mut custom = self.custom.lock().unwrap_or_else(|p| p.into_inner());
        Counter(Arc::clone(custom.entry(key).or_default()))
    }

    /// An envelope its subscription counted as received turned out to be
    /// a repeat that another subscription already delivered.
    pub(crate) fn reclassify_as_duplicate(&self) {
        self.received.fetch_sub(1, Ordering::Relaxed);
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    /// A message was dropped because a subscription's queue was full (the
    /// handler cannot keep up): counted in `dropped`, warned once per
    /// burst; the operator runtime reports `degraded` while it goes on
    /// (see [`crate::operator`]).
    pub(crate) fn slow_consumer(&self, subject: &dyn std::fmt::Display) {
        Self::add(&self.dropped, 1);
        let mut log = self.drop_log.lock().unwrap_or_else(|p| p.into_inner());
        log.get_or_insert_with(|| crate::subscription::BurstLog::new(SLOW_LOG_QUIET))
            .record(|suppressed| {
                tracing::warn!(
                    subject = %subject,
                    suppressed,
                    "slow consumer: a subscription's queue is full and a message was dropped \
                     (counted in `dropped`); the handler cannot keep up"
                );
            });
    }

    /// Count a handler that returned an error.
    pub fn handler_error(&self) {
        Self::add(&self.handler_errors, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_counters_show_in_snapshots_without_shadowing_the_bus() {
        let stats = Stats::default();
        let sent = stats.counter("lines_sent");
        sent.add(3);
        stats.counter("lines_sent").inc();
        stats.counter("reconnects").add(7);
        Stats::add(&stats.reconnects, 1);
        let snap = stats.snapshot();
        assert_eq!(snap.extra["lines_sent"], 4);
        assert_eq!(snap.extra["op_reconnects"], 7);
        assert_eq!(snap.reconnects, 1);
        assert_eq!(sent.get(), 4);
    }
}
