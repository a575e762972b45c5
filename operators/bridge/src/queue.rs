//! One ordered, rate-limited, bounded queue per gateway: a token bucket
//! in a task that publishes in the order messages were queued. Over the
//! rate, messages wait; past `max_queue`, new ones are shed and counted
//! (`bridge_shed`), never silently lost.

use std::time::Duration;

use switchboard_bus::Bus;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::Rate;
use crate::relay::Outgoing;

/// Heartbeat counter: envelopes handed to the bus.
pub const RELAYED: &str = "bridge_relayed";
/// Heartbeat counter: envelopes shed because a gateway's queue was full.
pub const SHED: &str = "bridge_shed";
/// Heartbeat counter: envelopes the bus refused to publish.
pub const PUBLISH_FAILED: &str = "bridge_publish_failed";

/// The sending side of a gateway's queue; dropping it ends the task once
/// the queue is empty.
#[derive(Debug)]
pub struct GatewayQueue {
    name: String,
    tx: mpsc::Sender<Outgoing>,
    bus: Bus,
}

impl GatewayQueue {
    /// Start the task for gateway `name`.
    pub fn spawn(name: &str, rate: &Rate, bus: Bus) -> GatewayQueue {
        let (tx, rx) = mpsc::channel(rate.max_queue);
        tokio::spawn(send_loop(name.to_owned(), rate.clone(), bus.clone(), rx));
        GatewayQueue {
            name: name.to_owned(),
            tx,
            bus,
        }
    }

    /// Queue `out`, or shed it (counted, warned once per burst of shedding)
    /// when the queue is full.
    pub fn push(&self, out: Outgoing) {
        if let Err(e) = self.tx.try_send(out) {
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

async fn send_loop(name: String, rate: Rate, bus: Bus, mut rx: mpsc::Receiver<Outgoing>) {
    let mut bucket = Bucket::new(&rate);
    while let Some(out) = rx.recv().await {
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
