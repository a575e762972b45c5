//! One ordered, rate-limited, bounded queue per gateway: a token bucket
//! in a task that publishes in the order messages were queued. Over the
//! rate, messages wait; past `max_queue`, new ones are shed and counted
//! (`bridge_shed`), never silently lost. A halted bridge holds its queues;
//! what is still queued when it stops is counted (`bridge_discarded`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard_bus::Bus;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::Rate;
use crate::relay::Outgoing;

/// Heartbeat counter: envelopes handed to the bus.
pub const RELAYED: &str = "bridge_relayed";
/// Heartbeat counter: envelopes shed because a gateway's queue was full.
pub const SHED: &str = "bridge_shed";
/// Heartbeat counter: envelopes the bus refused to publish.
pub const PUBLISH_FAILED: &str = "bridge_publish_failed";
/// Heartbeat counter: envelopes still queued when the bridge stopped
/// (shutdown, reload, restart).
pub const DISCARDED: &str = "bridge_discarded";

/// A gateway's queue and the task that sends from it.
#[derive(Debug)]
pub struct GatewayQueue {
    name: String,
    tx: mpsc::Sender<Outgoing>,
    bus: Bus,
    /// Queued and not yet published (or refused).
    pending: Arc<AtomicU64>,
    paused: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl GatewayQueue {
    /// Start the task for gateway `name`.
    pub fn spawn(name: &str, rate: &Rate, bus: Bus) -> GatewayQueue {
        let (tx, rx) = mpsc::channel(rate.max_queue);
        let (paused, paused_rx) = watch::channel(false);
        let pending = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(send_loop(SendLoop {
            name: name.to_owned(),
            rate: rate.clone(),
            bus: bus.clone(),
            rx,
            paused: paused_rx,
            pending: pending.clone(),
        }));
        GatewayQueue {
            name: name.to_owned(),
            tx,
            bus,
            pending,
            paused,
            task,
        }
    }

    /// Hold (`true`) or release (`false`) what is queued: a halted
    /// bridge sends nothing.
    pub fn pause(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// End the task now; returns how many queued envelopes were not
    /// sent, which are counted in [`DISCARDED`].
    pub fn close(self) -> u64 {
        self.task.abort();
        let left = self.pending.load(Ordering::Relaxed);
        if left > 0 {
            self.bus.stats().counter(DISCARDED).add(left);
            tracing::info!(gateway = %self.name, discarded = left, "queued messages discarded on stop (counted in bridge_discarded)");
        }
        left
    }

    /// Queue `out`, or shed it (counted, warned once per burst of shedding)
    /// when the queue is full.
    pub fn push(&self, out: Outgoing) {
        // Counted before it can be taken, so `pending` never goes below 0.
        self.pending.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.tx.try_send(out) {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            let shed = self.bus.stats().counter(SHED);
            if shed.get() == 0 {
                tracing::warn!(gateway = %self.name, "gateway queue full: messages are shed (counted in bridge_shed); raise rate.per_second or rate.max_queue");
            }
            shed.add(1);
            tracing::debug!(gateway = %self.name, reason = %e, "shed");
        }
    }
}

/// A token bucket: `burst` at once, then `per_second`.
struct Bucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: &Rate) -> Bucket {
        Bucket {
            tokens: f64::from(rate.burst),
            burst: f64::from(rate.burst),
            per_second: rate.per_second,
            at: Instant::now(),
        }
    }

    /// How long until a token is free (zero: take it now).
    fn wait(&mut self) -> Duration {
        let now = Instant::now();
        self.tokens =
            (self.tokens + (now - self.at).as_secs_f64() * self.per_second).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
        }
    }
}

/// What the sending task owns.
struct SendLoop {
    name: String,
    rate: Rate,
    bus: Bus,
    rx: mpsc::Receiver<Outgoing>,
    paused: watch::Receiver<bool>,
    pending: Arc<AtomicU64>,
}

async fn send_loop(mut s: SendLoop) {
    let SendLoop { name, bus, .. } = &s;
    let (name, bus) = (name.clone(), bus.clone());
    let mut bucket = Bucket::new(&s.rate);
    while let Some(out) = s.rx.recv().await {
        if s.paused.wait_for(|p| !p).await.is_err() {
            return;
        }
        loop {
            let wait = bucket.wait();
            if wait.is_zero() {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        match bus.publish(&out.subject, &out.envelope).await {
            Ok(()) => bus.stats().counter(RELAYED).add(1),
            Err(e) => {
                bus.stats().counter(PUBLISH_FAILED).add(1);
                tracing::warn!(gateway = %name, subject = %out.subject, error = %e, "could not publish a relayed message");
            }
        }
        s.pending.fetch_sub(1, Ordering::Relaxed);
    }
    if let Err(e) = bus.flush().await {
        tracing::debug!(gateway = %name, error = %e, "flush at the end of the queue failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_bucket_lets_a_burst_through_then_paces() {
        let mut b = Bucket::new(&Rate {
            burst: 2,
            per_second: 4.0,
            max_queue: 10,
        });
        assert!(b.wait().is_zero());
        assert!(b.wait().is_zero());
        let w = b.wait();
        assert!(!w.is_zero() && w <= Duration::from_millis(250), "{w:?}");
    }
}
