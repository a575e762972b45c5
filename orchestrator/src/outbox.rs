//! What the daemon publishes without ever waiting for the bus: operators'
//! output lines (`sb.log.*`) and lifecycle events (`sb.event.*`).
//!
//! Why: a NATS publish only queues, and the queue is bounded; during an
//! outage a chatty operator would fill it, and then every task that
//! publishes (an actor announcing a state change, an output pump) would
//! wait for the bus, so nothing could be restarted or stopped until it
//! came back. Here producers push into a bounded queue and return at once;
//! one task publishes from it while the bus is connected. When the queue is
//! full the oldest entry goes, and is counted (`status`: `log_lines_dropped`,
//! `events_dropped`): never silent. Events have a queue of their own and go
//! first, so a flood of output cannot push a state change out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use switchboard_bus::Bus;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Output lines held while the bus is away.
pub const LOG_QUEUE: usize = 10_000;
/// Events held while the bus is away.
pub const EVENT_QUEUE: usize = 2_000;
/// How long the last entries may take to go out at shutdown.
const FLUSH_AT_SHUTDOWN: Duration = Duration::from_secs(2);

/// Which queue an entry goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// `sb.event.*`: few, and go first.
    Event,
    /// `sb.log.*`: many; the oldest are shed first.
    Log,
}

#[derive(Debug, Default)]
struct Queues {
    events: VecDeque<(String, Bytes)>,
    logs: VecDeque<(String, Bytes)>,
}

#[derive(Debug, Default)]
struct Inner {
    queues: Mutex<Queues>,
    more: Notify,
    events_dropped: AtomicU64,
    logs_dropped: AtomicU64,
}

/// The producers' side; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    inner: Arc<Inner>,
}

impl Outbox {
    /// Queue `payload` for `subject`; never waits. Returns false when an
    /// older entry had to be dropped for it.
    pub fn push(&self, lane: Lane, subject: String, payload: impl Into<Bytes>) -> bool {
        let mut q = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        let (queue, cap, dropped) = match lane {
            Lane::Event => (&mut q.events, EVENT_QUEUE, &self.inner.events_dropped),
            Lane::Log => (&mut q.logs, LOG_QUEUE, &self.inner.logs_dropped),
        };
        let mut kept = true;
        if queue.len() >= cap {
            queue.pop_front();
            let n = dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    ?lane,
                    dropped = n,
                    "the bus is not keeping up; dropping the oldest queued messages"
                );
            }
            kept = false;
        }
        queue.push_back((subject, payload.into()));
        drop(q);
        self.inner.more.notify_one();
        kept
    }

    /// [`Outbox::push`] of a value as JSON.
    pub fn push_json<T: serde::Serialize>(&self, lane: Lane, subject: String, value: &T) -> bool {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.push(lane, subject, bytes),
            Err(e) => {
                tracing::error!(error = %e, %subject, "cannot encode a message for the bus");
                false
            }
        }
    }

    /// Output lines dropped so far.
    pub fn log_lines_dropped(&self) -> u64 {
        self.inner.logs_dropped.load(Ordering::Relaxed)
    }

    /// Events dropped so far.
    pub fn events_dropped(&self) -> u64 {
        self.inner.events_dropped.load(Ordering::Relaxed)
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        let q = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        q.events.len() + q.logs.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn pop(&self) -> Option<(String, Bytes)> {
        let mut q = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        q.events.pop_front().or_else(|| q.logs.pop_front())
    }

    /// The one task that publishes: while the bus is connected, whatever
    /// is queued; while it is not, nothing (so the client's own queue never
    /// fills with our backlog). After `shutdown`, what is left goes out
    /// for at most a couple of seconds.
    pub async fn run(self, bus: Bus, shutdown: CancellationToken) {
        loop {
            if shutdown.is_cancelled() {
                let deadline = tokio::time::Instant::now() + FLUSH_AT_SHUTDOWN;
                while tokio::time::Instant::now() < deadline && bus.is_connected() {
                    let Some((subject, payload)) = self.pop() else {
                        break;
                    };
                    let _ = bus.publish_bytes(&subject, payload).await;
                }
                let _ = tokio::time::timeout(FLUSH_AT_SHUTDOWN, bus.flush()).await;
                return;
            }
            if !bus.is_connected() {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
            match self.pop() {
                Some((subject, payload)) => {
                    if let Err(e) = bus.publish_bytes(&subject, payload).await {
                        tracing::debug!(error = %e, %subject, "not published");
                    }
                }
                None => {
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = self.inner.more.notified() => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queues_drop_the_oldest_and_count() {
        let o = Outbox::default();
        for i in 0..LOG_QUEUE + 5 {
            o.push(Lane::Log, format!("sb.log.x.{i}"), vec![]);
        }
        o.push(Lane::Event, "sb.event.x".into(), vec![1]);
        assert_eq!(o.log_lines_dropped(), 5);
        assert_eq!(o.events_dropped(), 0);
        assert_eq!(o.len(), LOG_QUEUE + 1);
        // Events first, then the oldest line that was kept.
        assert_eq!(o.pop().unwrap().0, "sb.event.x");
        assert_eq!(o.pop().unwrap().0, "sb.log.x.5");
    }
}
