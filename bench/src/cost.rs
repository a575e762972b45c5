//! Single-thread cost of the per-message work the bus adds, in isolation.
//!
//! The end-to-end tables say *how much* slower the bus is; these tight
//! loops say *which step* costs what, so that a missed target points at
//! code. No I/O: each loop runs one step over and over on one core.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use switchboard_bus::proto::WireEnvelope;
use switchboard_bus::{Envelope, Pattern};

use crate::table::{size, Table};
use crate::workload::{self, MIDDLE_HASH_PATTERN, SUBJECT};

/// Each step runs for about this long per measurement.
const SLICE: Duration = Duration::from_millis(100);

/// Nanoseconds per call of `step`: the best of three ~100 ms slices (the
/// least disturbed by other work on the machine).
fn ns_per_op(mut step: impl FnMut()) -> f64 {
    // Warm caches and the allocator first.
    for _ in 0..1_000 {
        step();
    }
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        let mut ops = 0u64;
        while started.elapsed() < SLICE {
            for _ in 0..256 {
                step();
            }
            ops += 256;
        }
        best = best.min(started.elapsed().as_nanos() as f64 / ops as f64);
    }
    best
}

/// Measures the steps and returns them as a table.
pub fn table(bodies: &[usize]) -> anyhow::Result<Table> {
    let mut t = Table::new(
        "per-message CPU cost of the bus's own steps (one thread, best of 3, ns/op)",
        &["step", "what it is", "ns/op"],
    );
    for &body in bodies {
        let mut envelope = workload::envelope(body);
        let bytes = envelope.to_vec();
        let label = size(body);
        let mut n = 0u64;
        t.row(vec![
            format!("encode {label}"),
            "Envelope::to_vec (publisher)".into(),
            format!(
                "{:.0}",
                ns_per_op(|| {
                    n += 1;
                    workload::restamp(&mut envelope, n);
                    black_box(envelope.to_vec());
                })
            ),
        ]);
        let payload = bytes::Bytes::from(bytes.clone());
        WireEnvelope::parse(payload.clone()).context("the benchmark envelope does not parse")?;
        t.row(vec![
            format!("receive {label}"),
            "WireEnvelope::parse (subscriber: validate, find the fields)".into(),
            format!(
                "{:.0}",
                ns_per_op(|| {
                    let _ = black_box(WireEnvelope::parse(black_box(payload.clone())));
                })
            ),
        ]);
        Envelope::from_slice(&bytes).context("the benchmark envelope does not decode")?;
        t.row(vec![
            format!("decode {label}"),
            "Envelope::from_slice (an owned envelope, what Delivery::envelope builds)".into(),
            format!(
                "{:.0}",
                ns_per_op(|| {
                    let _ = black_box(Envelope::from_slice(black_box(&bytes)));
                })
            ),
        ]);
        t.row(vec![
            format!("scan {label}"),
            "JSON syntax check only (serde IgnoredAny), floor for any JSON decode".into(),
            format!(
                "{:.0}",
                ns_per_op(|| {
                    let _ = black_box(serde_json::from_slice::<serde::de::IgnoredAny>(black_box(
                        &bytes,
                    )));
                })
            ),
        ]);
    }
    let pattern = Pattern::parse(MIDDLE_HASH_PATTERN).context("benchmark pattern")?;
    t.row(vec![
        "match #".into(),
        format!("Pattern::matches({MIDDLE_HASH_PATTERN}) on {SUBJECT}"),
        format!(
            "{:.0}",
            ns_per_op(|| {
                black_box(pattern.matches(black_box(SUBJECT)));
            })
        ),
    ]);
    let subject = async_nats::Subject::from_static(SUBJECT);
    t.row(vec![
        "subject copy".into(),
        "Subject -> String, as Delivery.subject does".into(),
        format!(
            "{:.0}",
            ns_per_op(|| {
                black_box(black_box(&subject).to_string());
            })
        ),
    ]);
    Ok(t)
}
