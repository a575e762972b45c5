//! What the dashboard knows, shared by the bus tasks that fill it and the
//! HTTP handlers that show it: the daemon's last status, whether the bus
//! answers, message rates and the bounded tail.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use switchboard_bus::Counter;
use switchboard_proto::api::StatusReply;
use tokio::sync::{broadcast, watch};

use crate::rates::{Rates, Series};

/// Longest payload kept per tail entry; the rest is cut (and said so).
pub const MAX_TAIL_PAYLOAD: usize = 4096;

/// Lifecycle events (`sb.event.*`) kept for the event history, apart from
/// the tail so that chat traffic does not push them out.
pub const EVENT_HISTORY: usize = 300;

/// One message seen on the bus.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    /// Its NATS subject.
    pub subject: String,
    /// Milliseconds since the Unix epoch when the dashboard got it.
    pub at_ms: u64,
    /// The payload as text (lossy UTF-8), at most [`MAX_TAIL_PAYLOAD`]
    /// bytes.
    pub payload: String,
    /// Whether `payload` was cut.
    pub truncated: bool,
}

/// Whether the daemon's API answers, and what it said last.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The bus connection is up and the last `sb.api.status` answered.
    pub bus_up: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus_error: Option<String>,
    /// The last status the daemon gave (kept while the bus is down, so
    /// the page shows what was last known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusReply>,
    /// Milliseconds since the epoch of that status.
    pub status_at_ms: u64,
    /// Per-branch counts over the rate window.
    pub rates: Vec<Series>,
    /// Whether state-changing requests are possible (a token is set).
    pub controls: bool,
    /// The dashboard's own operator id: "restart all" and "stop all" on
    /// the page leave it out (it would cut its own answer off).
    pub me: String,
    /// The daemon's resident memory and CPU time, when readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon: Option<crate::process::Sample>,
    /// The dashboard's own counters (what its heartbeats report).
    pub dashboard: DashboardCounters,
}

/// The dashboard's counters, for the page.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DashboardCounters {
    /// See [`Counters::tail_dropped`].
    pub tail_dropped: u64,
    /// See [`Counters::status_errors`].
    pub status_errors: u64,
    /// See [`Counters::unauthorized`].
    pub unauthorized: u64,
    /// See [`Counters::ctl_requests`].
    pub ctl_requests: u64,
    /// See [`Counters::published`].
    pub published: u64,
}

/// Counters the dashboard reports in its heartbeats.
#[derive(Debug, Clone)]
pub struct Counters {
    /// Messages a slow page did not get in its tail or log stream (it was
    /// told how many, with a `lagged` event).
    pub tail_dropped: Counter,
    /// `sb.api.status` calls that failed.
    pub status_errors: Counter,
    /// State-changing requests refused for a missing or wrong token.
    pub unauthorized: Counter,
    /// `ctl` requests passed to the daemon.
    pub ctl_requests: Counter,
    /// Envelopes sent from the page's publish box.
    pub published: Counter,
}

/// The shared state.
#[derive(Debug)]
pub struct Hub {
    inner: Mutex<Inner>,
    /// Every message seen, for the tail and log streams.
    pub seen: broadcast::Sender<Arc<Seen>>,
    /// A new snapshot after each poll.
    pub updates: watch::Sender<u64>,
    /// Heartbeat counters.
    pub counters: Counters,
    /// Whether a token is configured.
    pub controls: bool,
    /// The dashboard's operator id.
    pub me: String,
}

#[derive(Debug)]
struct Inner {
    bus_error: Option<String>,
    status: Option<StatusReply>,
    status_at_ms: u64,
    rates: Rates,
    tail: VecDeque<Arc<Seen>>,
    tail_capacity: usize,
    events: VecDeque<Arc<Seen>>,
    daemon_cpu: Option<crate::process::Sample>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Hub {
    /// An empty hub.
    pub fn new(
        tail_capacity: usize,
        rate_window_secs: u64,
        counters: Counters,
        controls: bool,
        me: String,
    ) -> Hub {
        Hub {
            inner: Mutex::new(Inner {
                bus_error: Some("not asked yet".into()),
                status: None,
                status_at_ms: 0,
                rates: Rates::new(rate_window_secs),
                tail: VecDeque::with_capacity(tail_capacity),
                tail_capacity,
                events: VecDeque::with_capacity(EVENT_HISTORY),
                daemon_cpu: None,
            }),
            seen: broadcast::channel(1024).0,
            updates: watch::channel(0).0,
            counters,
            controls,
            me,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A message arrived on `subject`.
    pub fn saw(&self, subject: &str, payload: &[u8]) {
        let at_ms = now_ms();
        let cut = payload.len() > MAX_TAIL_PAYLOAD;
        let text = String::from_utf8_lossy(&payload[..payload.len().min(MAX_TAIL_PAYLOAD)]);
        let seen = Arc::new(Seen {
            subject: subject.to_owned(),
            at_ms,
            payload: text.into_owned(),
            truncated: cut,
        });
        {
            let mut inner = self.lock();
            inner.rates.record(subject, at_ms / 1000);
            if inner.tail.len() == inner.tail_capacity {
                inner.tail.pop_front();
            }
            inner.tail.push_back(Arc::clone(&seen));
            if subject.starts_with("sb.event.") {
                if inner.events.len() == EVENT_HISTORY {
                    inner.events.pop_front();
                }
                inner.events.push_back(Arc::clone(&seen));
            }
        }
        // No page listening is not an error.
        let _ = self.seen.send(seen);
    }

    /// The daemon answered `sb.api.status`.
    pub fn status(&self, status: StatusReply) {
        // What the daemon says of itself (its sandbox hides the daemon's
        // process from the dashboard), else /proc (an older daemon, or
        // the dashboard unsandboxed).
        let sample = match (status.rss_bytes, status.cpu_seconds) {
            (Some(rss_bytes), Some(cpu_seconds)) => Some(crate::process::Sample {
                rss_bytes,
                cpu_seconds,
            }),
            _ => crate::process::sample(status.pid),
        };
        {
            let mut inner = self.lock();
            inner.bus_error = None;
            inner.status = Some(status);
            inner.status_at_ms = now_ms();
            inner.daemon_cpu = sample;
        }
        self.updates.send_modify(|n| *n += 1);
    }

    /// The daemon did not answer (or the bus is down).
    pub fn status_failed(&self, error: String) {
        self.counters.status_errors.inc();
        self.lock().bus_error = Some(error);
        self.updates.send_modify(|n| *n += 1);
    }

    /// The tail as it is, oldest first.
    pub fn tail(&self) -> Vec<Arc<Seen>> {
        self.lock().tail.iter().cloned().collect()
    }

    /// The event history as it is, oldest first.
    pub fn events(&self) -> Vec<Arc<Seen>> {
        self.lock().events.iter().cloned().collect()
    }

    /// Everything for the page.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            bus_up: inner.bus_error.is_none(),
            bus_error: inner.bus_error.clone(),
            status: inner.status.clone(),
            status_at_ms: inner.status_at_ms,
            rates: inner.rates.series(now_ms() / 1000),
            controls: self.controls,
            me: self.me.clone(),
            daemon: inner.daemon_cpu,
            dashboard: DashboardCounters {
                tail_dropped: self.counters.tail_dropped.get(),
                status_errors: self.counters.status_errors.get(),
                unauthorized: self.counters.unauthorized.get(),
                ctl_requests: self.counters.ctl_requests.get(),
                published: self.counters.published.get(),
            },
        }
    }

    /// The Prometheus exposition of what is known.
    pub fn metrics(&self) -> String {
        let inner = self.lock();
        crate::metrics::render(&crate::metrics::Input {
            bus_up: inner.bus_error.is_none(),
            status: inner.status.as_ref(),
            rates: &inner.rates,
            now_secs: now_ms() / 1000,
            daemon: inner.daemon_cpu,
            counters: &self.counters,
        })
    }
}
