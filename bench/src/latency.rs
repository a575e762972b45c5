//! One message at a time: how long from `publish` on one connection to its
//! arrival on another.
//!
//! A single task publishes a message and then waits on the subscription
//! for it, so each sample is one-way latency measured with one clock
//! (both connections live in this process): publish call, client queue,
//! socket, nats-server, socket, client, and for the bus also envelope
//! encoding, decoding, filtering and de-duplication. Nothing else is in
//! flight, so queueing does not blur the numbers.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use hdrhistogram::Histogram;
use switchboard_bus::Pattern;

use crate::workload::{self, BusSender, Path, RawSender, Sender, SUBJECT};

/// A whole run taking longer than this means messages are being lost.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Largest latency the histogram tracks (larger samples are clamped).
const MAX_TRACKED: Duration = Duration::from_secs(10);

/// One run's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Raw or bus.
    pub path: Path,
    /// Size of the envelope body's JSON encoding.
    pub body: usize,
    /// Samples recorded.
    pub messages: u64,
    /// Messages sent first and not recorded (connection and allocator
    /// warm-up).
    pub warmup: u64,
}

/// The distribution one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Samples recorded.
    pub count: u64,
}

/// Runs one latency measurement on a fresh pair of connections.
pub async fn run(url: &str, spec: Spec) -> anyhow::Result<Outcome> {
    // 3 significant figures: 1 ns resolution is far finer than needed.
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, nanos(MAX_TRACKED), 3).context("histogram bounds")?;
    let envelope = workload::envelope(spec.body);
    match spec.path {
        // Latency runs never decode on the raw side (main uses `Raw`).
        Path::Raw | Path::RawDecode => {
            let sub_client = workload::raw_connect(url, "bench-lat-raw-sub").await?;
            let client = workload::raw_connect(url, "bench-lat-raw-pub").await?;
            let mut sub = sub_client
                .subscribe(SUBJECT)
                .await
                .context("raw subscribe")?;
            workload::raw_sync(&sub_client).await?;
            let payload = Bytes::from(envelope.to_vec());
            let mut sender = RawSender { client, payload };
            limited(measure(&mut sender, &mut sub, spec, &mut hist)).await?;
        }
        Path::Bus { pattern } => {
            let pattern = Pattern::parse(pattern)
                .with_context(|| format!("benchmark pattern `{pattern}` does not parse"))?;
            let sub_bus = workload::bus_connect(url, "bench-lat-bus-sub").await?;
            let bus = workload::bus_connect(url, "bench-lat-bus-pub").await?;
            let mut sub = sub_bus.subscribe(&pattern).await.context("bus subscribe")?;
            sub_bus.sync().await.context("bus sync")?;
            let mut sender = BusSender { bus, envelope };
            limited(measure(&mut sender, &mut sub, spec, &mut hist)).await?;
        }
    }
    Ok(Outcome {
        p50: Duration::from_nanos(hist.value_at_quantile(0.50)),
        p99: Duration::from_nanos(hist.value_at_quantile(0.99)),
        count: hist.len(),
    })
}

/// Fails instead of hanging when a message never arrives.
async fn limited(
    measurement: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    match tokio::time::timeout(RUN_LIMIT, measurement).await {
        Ok(result) => result,
        Err(_) => bail!(
            "latency run did not finish within {RUN_LIMIT:?}: a message was lost or the \
             machine is overloaded"
        ),
    }
}

/// Publish, wait for the arrival, record; `warmup + messages` times.
async fn measure<S>(
    sender: &mut impl Sender,
    stream: &mut S,
    spec: Spec,
    hist: &mut Histogram<u64>,
) -> anyhow::Result<()>
where
    S: Stream + Unpin,
{
    for n in 0..spec.warmup + spec.messages {
        let sent_at = Instant::now();
        sender.send(n).await?;
        if stream.next().await.is_none() {
            bail!("the subscription ended during the latency run");
        }
        let took = sent_at.elapsed();
        if n >= spec.warmup {
            hist.saturating_record(nanos(took));
        }
    }
    Ok(())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
