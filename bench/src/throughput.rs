//! One publisher, one subscriber, two connections: how many messages per
//! second make it from `publish` to the consumer.
//!
//! A run publishes up to `messages` messages (or fewer, if its time budget
//! runs out) and measures from the first publish to the arrival of the
//! last message. The publisher keeps at most `window` messages in flight:
//! without that, a publisher faster than the subscriber overflows the
//! subscription queue, the client drops messages, and the run measures
//! how fast messages are thrown away rather than delivered. With the
//! window, the rate is what the slowest stage (publisher, server or
//! consumer) sustains without loss.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use switchboard_bus::proto::WireEnvelope;
use switchboard_bus::{Delivery, Pattern};
use tokio::sync::Notify;

use crate::workload::{self, BusSender, Path, RawSender, Sender, SUBJECT};
use crate::{cpu, icount};

/// One run's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Raw or bus.
    pub path: Path,
    /// Size of the envelope body's JSON encoding.
    pub body: usize,
    /// Messages to publish, unless `budget` runs out first.
    pub messages: u64,
    /// Publishing stops at the next check after this much time.
    pub budget: Duration,
    /// Most messages in flight (published, not yet consumed); 0 for no
    /// limit.
    pub window: u64,
    /// nats-server's process id, to measure its CPU time too.
    pub server_pid: Option<u32>,
    /// Call the callgrind markers around the measured part (see
    /// [`crate::icount`]).
    pub count_instructions: bool,
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Messages published.
    pub sent: u64,
    /// Messages the consumer got (less than `sent` means loss).
    pub received: u64,
    /// First publish to last arrival.
    pub elapsed: Duration,
    /// Bytes of one message payload on the wire.
    pub wire_bytes: usize,
    /// CPU time of this process (publisher + subscriber) during the run.
    pub client_cpu: Option<Duration>,
    /// CPU time of nats-server during the run.
    pub server_cpu: Option<Duration>,
}

impl Outcome {
    /// Messages delivered per second.
    pub fn msgs_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.received as f64 / secs
        } else {
            0.0
        }
    }

    /// Payload megabytes (10^6) delivered per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.msgs_per_sec() * self.wire_bytes as f64 / 1e6
    }

    /// CPU time per delivered message: (this process, nats-server).
    pub fn cpu_per_msg(&self) -> (Option<Duration>, Option<Duration>) {
        let per = |d: Option<Duration>| {
            let received = u32::try_from(self.received).ok().filter(|n| *n > 0)?;
            Some(d? / received)
        };
        (per(self.client_cpu), per(self.server_cpu))
    }

    /// Whether every published message arrived.
    pub fn complete(&self) -> bool {
        self.received >= self.sent
    }
}

/// How often (in messages) the consumer records its arrival time and
/// wakes the publisher: rarely enough to cost nothing per message, and at
/// most a quarter of the window so that a small window never starves.
const REPORT_EVERY: u64 = 1024;

/// How often the publisher looks at the clock.
const BUDGET_CHECK_EVERY: u64 = 1024;

/// No progress for this long means messages were lost: stop waiting.
const STALL: Duration = Duration::from_secs(2);

/// Shared between the publisher, the consumer task and the coordinator.
struct Progress {
    /// Messages consumed so far.
    received: AtomicU64,
    /// The count at which the consumer stops: the planned count, lowered
    /// by the publisher *before* it publishes its last message when the
    /// budget runs out, so the consumer always sees the final target.
    target: AtomicU64,
    /// Nanoseconds after `origin` of the latest recorded arrival.
    last_ns: AtomicU64,
    origin: Instant,
    /// Wakes a publisher waiting for room in the window.
    room: Notify,
    /// See [`REPORT_EVERY`].
    report_every: u64,
}

impl Progress {
    fn new(target: u64, window: u64) -> Self {
        Progress {
            received: AtomicU64::new(0),
            target: AtomicU64::new(target),
            last_ns: AtomicU64::new(0),
            origin: Instant::now(),
            room: Notify::new(),
            report_every: if window == 0 {
                REPORT_EVERY
            } else {
                (window / 4).clamp(1, REPORT_EVERY)
            },
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Runs one throughput measurement on a fresh pair of connections.
///
/// Fresh connections per run keep runs independent: nothing left in
/// flight by a run that lost messages can reach the next one.
pub async fn run(url: &str, spec: Spec) -> anyhow::Result<Outcome> {
    let envelope = workload::envelope(spec.body);
    let wire_bytes = envelope.to_vec().len();
    let progress = Arc::new(Progress::new(spec.messages, spec.window));
    match spec.path {
        Path::Raw | Path::RawDecode => {
            let sub_client = workload::raw_connect(url, "bench-raw-sub").await?;
            let client = workload::raw_connect(url, "bench-raw-pub").await?;
            let sub = sub_client
                .subscribe(SUBJECT)
                .await
                .context("raw subscribe")?;
            workload::raw_sync(&sub_client).await?;
            let weigh = if spec.path == Path::RawDecode {
                decoded_body_len
            } else {
                payload_len
            };
            let consumer = tokio::spawn(consume(sub, Arc::clone(&progress), weigh));
            let payload = Bytes::from(envelope.to_vec());
            let sender = RawSender { client, payload };
            drive(spec, &progress, consumer, sender, wire_bytes).await
        }
        Path::Bus { pattern } => {
            let pattern = Pattern::parse(pattern)
                .with_context(|| format!("benchmark pattern `{pattern}` does not parse"))?;
            let sub_bus = workload::bus_connect(url, "bench-bus-sub").await?;
            let bus = workload::bus_connect(url, "bench-bus-pub").await?;
            let sub = sub_bus.subscribe(&pattern).await.context("bus subscribe")?;
            sub_bus.sync().await.context("bus sync")?;
            let consumer = tokio::spawn(consume(sub, Arc::clone(&progress), body_len));
            let sender = BusSender { bus, envelope };
            drive(spec, &progress, consumer, sender, wire_bytes).await
        }
    }
}

/// What the raw consumer does: count, without looking inside.
fn payload_len(message: &async_nats::Message) -> usize {
    message.payload.len()
}

/// What the raw + decode consumer does: what the bus's subscription does
/// to a payload (validate it into a `WireEnvelope`), then what the bus
/// consumer does with it (its body as text), minus filtering,
/// de-duplication and the `Delivery`.
fn decoded_body_len(message: &async_nats::Message) -> usize {
    match WireEnvelope::parse(message.payload.clone()) {
        Ok(envelope) => envelope.body_text().map_or(0, |text| text.len()),
        Err(_) => 0,
    }
}

/// What the bus consumer does with each envelope: read its body as text
/// (a string body), as a handler would, so that decoding cannot be
/// skipped or optimised away.
fn body_len(delivery: &Delivery) -> usize {
    delivery.body_text().map_or(0, |text| text.len())
}

/// The consumer task: take items until the target count, reporting
/// progress. Returns a checksum of what it looked at.
async fn consume<S, F>(mut stream: S, progress: Arc<Progress>, weigh: F) -> usize
where
    S: Stream + Unpin,
    F: Fn(&S::Item) -> usize,
{
    let mut count = 0u64;
    let mut checksum = 0usize;
    while let Some(item) = stream.next().await {
        checksum = checksum.wrapping_add(weigh(&item));
        drop(item);
        count += 1;
        progress.received.store(count, Ordering::Relaxed);
        let done = count >= progress.target.load(Ordering::Acquire);
        if done || count % progress.report_every == 0 {
            progress.last_ns.store(progress.now_ns(), Ordering::Relaxed);
            progress.room.notify_one();
        }
        if done {
            break;
        }
    }
    checksum
}

/// Publishes with flow control and the time budget, then waits for the
/// consumer (or for it to stall, when messages were lost).
async fn drive(
    spec: Spec,
    progress: &Arc<Progress>,
    mut consumer: tokio::task::JoinHandle<usize>,
    mut sender: impl Sender,
    wire_bytes: usize,
) -> anyhow::Result<Outcome> {
    if spec.count_instructions {
        icount::begin();
    }
    let cpu_before = cpu::Snapshot::take(spec.server_pid);
    let start_ns = progress.now_ns();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut acked = 0u64;
    while sent < spec.messages {
        let mut last = false;
        if sent > 0 && sent % BUDGET_CHECK_EVERY == 0 && started.elapsed() >= spec.budget {
            // Tell the consumer before the final message goes out.
            progress.target.store(sent + 1, Ordering::Release);
            last = true;
        }
        if spec.window > 0 && sent - acked >= spec.window {
            match wait_for_room(progress, sent, spec.window).await {
                Some(received) => acked = received,
                None => {
                    // Stalled: the consumer lost messages and will never
                    // catch up. Stop publishing and report the loss.
                    progress.target.store(sent, Ordering::Release);
                    break;
                }
            }
        }
        if let Err(e) = sender.send(sent).await {
            consumer.abort();
            return Err(e);
        }
        sent += 1;
        if last {
            break;
        }
    }
    // Final target: never above what was published.
    progress.target.fetch_min(sent, Ordering::AcqRel);

    // Wait for the consumer to finish; stop waiting when it makes no
    // progress for STALL (messages lost: a slow consumer).
    let mut seen = progress.received.load(Ordering::Relaxed);
    let mut idle_since = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_millis(20), &mut consumer).await {
            Ok(joined) => {
                joined.context("consumer task failed")?;
                break;
            }
            Err(_) => {
                let now = progress.received.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    idle_since = Instant::now();
                } else if idle_since.elapsed() >= STALL {
                    consumer.abort();
                    break;
                }
            }
        }
    }
    let (client_cpu, server_cpu) = cpu::Snapshot::take(spec.server_pid).since(&cpu_before);
    if spec.count_instructions {
        icount::end();
    }
    let received = progress.received.load(Ordering::Relaxed);
    let end_ns = progress.last_ns.load(Ordering::Relaxed);
    Ok(Outcome {
        sent,
        received,
        elapsed: Duration::from_nanos(end_ns.saturating_sub(start_ns)),
        wire_bytes,
        client_cpu,
        server_cpu,
    })
}

/// Waits until fewer than `window` messages are in flight; `None` when the
/// consumer made no progress for [`STALL`].
async fn wait_for_room(progress: &Progress, sent: u64, window: u64) -> Option<u64> {
    loop {
        let received = progress.received.load(Ordering::Relaxed);
        if sent - received < window {
            return Some(received);
        }
        // A notification sent while we were not waiting is kept as a
        // permit, so none is missed between the check and the wait.
        if tokio::time::timeout(STALL, progress.room.notified())
            .await
            .is_err()
        {
            return None;
        }
    }
}
