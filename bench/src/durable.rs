//! What keeping costs: envelopes per second through the durable stream
//! and the logger to disk, beside the core-NATS bus in the same run on the
//! same server, and the delay from publish to the line on disk.
//!
//! The logger is the release `switchboard-logger` as a process, with its
//! default batch (500) and both fsync policies. Throughput is N envelopes
//! published as fast as the client can, timed from the first publish to
//! the logger's heartbeat counter `lines_written` reaching N. The delay is
//! measured at a steady rate well under the throughput: each envelope's id
//! carries its publish time, and the file is read every millisecond, so
//! the figure includes up to 1 ms of polling.

use std::collections::HashMap;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt as _;
use switchboard_bus::stream::{StreamSpec, DEFAULT_STREAM};
use switchboard_bus::{Bus, BusOptions, Envelope};

use crate::table::Table;

const SUBJECT: &str = "chat.bench.net.room.message";

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Envelopes per throughput run.
    pub messages: usize,
    /// Envelopes per second in the delay run.
    pub rate: u64,
    /// Length of the delay run.
    pub seconds: u64,
}

impl Settings {
    /// Full or quick.
    pub fn new(quick: bool) -> Settings {
        if quick {
            Settings {
                messages: 20_000,
                rate: 500,
                seconds: 2,
            }
        } else {
            Settings {
                messages: 100_000,
                rate: 1_000,
                seconds: 10,
            }
        }
    }
}

fn envelope(i: usize) -> Envelope {
    Envelope::new(
        "bench",
        serde_json::json!({"sender": "ann", "text": format!("message {i:08} {}", "x".repeat(64)), "private": false}),
    )
    .with_header("id", format!("b{i:09}"))
}

/// The tables, printed.
pub async fn run(url: &str, logger: &Path, settings: Settings) -> anyhow::Result<()> {
    // As an operator under a daemon that keeps a stream: ids in headers.
    let bus = Bus::connect(&BusOptions::new(url).stream_ids(true), "bench").await?;
    bus.ensure_stream(&StreamSpec {
        name: DEFAULT_STREAM.into(),
        max_age: Duration::from_secs(3600),
        max_bytes: 2 << 30,
        duplicate_window: Duration::from_secs(120),
        max_message_bytes: 0,
        replicas: 1,
    })
    .await
    .context("the durable stream (nats-server with JetStream)")?;
    let n = settings.messages;
    let mut t = Table::new(
        format!("durable path: {n} envelopes of ~150 B, published as fast as possible, to disk"),
        &["path", "envelopes/s", "vs core bus", "lines per batch"],
    );
    let core = core_rate(&bus, n).await?;
    t.row(vec![
        "core bus (publish -> subscriber)".into(),
        rate(core),
        "1.00".into(),
    ]);
    let stored = stored_rate(&bus, n).await?;
    t.row(vec![
        "stream only (publish -> stored)".into(),
        rate(stored),
        format!("{:.2}", stored / core),
    ]);
    let mut offset = n;
    for fsync in ["batch", "never"] {
        let (r, per_batch) = logged_rate(&bus, url, logger, fsync, offset, n).await?;
        offset += n;
        t.row(vec![
            format!("stream + logger, fsync={fsync}"),
            rate(r),
            format!("{:.2}", r / core),
            format!("{per_batch:.0}"),
        ]);
    }
    t.note("`stream + logger`: publish (core NATS, the stream captures it) until the logger's lines_written reaches N.");
    println!("{t}");

    let (p50, p99, max) = delay(&bus, url, logger, settings, offset).await?;
    let mut d = Table::new(
        format!(
            "publish -> line on disk, {} envelopes/s for {} s, fsync=batch",
            settings.rate, settings.seconds
        ),
        &["p50", "p99", "max"],
    );
    d.row(vec![ms(p50), ms(p99), ms(max)]);
    d.note("includes up to 1 ms of polling the file");
    println!("{d}");
    Ok(())
}

fn rate(r: f64) -> String {
    format!("{r:.0}")
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Publish `n` envelopes on a captured subject and time until the stream
/// holds them all (no reader).
async fn stored_rate(bus: &Bus, n: usize) -> anyhow::Result<f64> {
    let before = bus.stream_state(DEFAULT_STREAM).await?.messages;
    let started = Instant::now();
    for i in 0..n {
        bus.publish(SUBJECT, &envelope(i)).await?;
    }
    bus.flush().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while bus.stream_state(DEFAULT_STREAM).await?.messages < before + n as u64 {
        if Instant::now() > deadline {
            bail!("the stream did not store {n} envelopes within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

async fn core_rate(bus: &Bus, n: usize) -> anyhow::Result<f64> {
    let mut sub = bus.subscribe_raw("bench.core.>").await?;
    bus.sync().await?;
    let started = Instant::now();
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for i in 0..n {
                bus.publish("bench.core.x", &envelope(i)).await?;
            }
            bus.flush().await
        })
    };
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
            Ok(Some(_)) => got += 1,
            _ => bail!("core bus: only {got} of {n} arrived"),
        }
    }
    publisher.await??;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

struct Logger {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Logger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_logger(url: &str, logger: &Path, fsync: &str, id: &str) -> anyhow::Result<Logger> {
    let dir = tempfile::tempdir()?;
    let config = serde_json::json!({
        "dir": dir.path().join("logs"),
        "subjects": ["chat.#"],
        "fsync": fsync,
    });
    let child = Command::new(logger)
        .env_clear()
        .env("SWITCHBOARD_ID", id)
        .env("SWITCHBOARD_NATS_URL", url)
        .env("SWITCHBOARD_STREAM", DEFAULT_STREAM)
        .env("SWITCHBOARD_STATE_DIR", dir.path().join("state"))
        .env("SWITCHBOARD_HEARTBEAT_MS", "50")
        .env("SWITCHBOARD_CONFIG", config.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", logger.display()))?;
    Ok(Logger { child, dir })
}

/// Wait until the logger's heartbeats say `lines_written` >= `n`.
async fn written(
    heartbeats: &mut switchboard_bus::RawSubscription,
    n: u64,
) -> anyhow::Result<serde_json::Value> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(60), heartbeats.next())
            .await
            .context("the logger stopped sending heartbeats")?
            .context("heartbeats ended")?;
        let hb: serde_json::Value = serde_json::from_slice(&m.payload)?;
        if hb["counters"]["lines_written"].as_u64().unwrap_or(0) >= n {
            return Ok(hb["counters"].clone());
        }
    }
}

async fn logged_rate(
    bus: &Bus,
    url: &str,
    logger: &Path,
    fsync: &str,
    offset: usize,
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    // A consumer of its own that starts with new messages only.
    let id = format!("bench-logger-{fsync}");
    let mut heartbeats = bus.subscribe_raw(&format!("sb.op.{id}.heartbeat")).await?;
    let mut ready = bus.subscribe_raw(&format!("sb.op.{id}.ready")).await?;
    bus.sync().await?;
    // Messages already in the stream (earlier runs) are written first:
    // count from what is there.
    let _logger = start_logger(url, logger, fsync, &id)?;
    tokio::time::timeout(Duration::from_secs(30), ready.next())
        .await
        .context("the logger did not become ready")?;
    let before = written(&mut heartbeats, offset as u64).await?;
    let started = Instant::now();
    for i in offset..offset + n {
        bus.publish(SUBJECT, &envelope(i)).await?;
    }
    bus.flush().await?;
    let after = written(&mut heartbeats, (offset + n) as u64).await?;
    let elapsed = started.elapsed();
    let count = |c: &serde_json::Value, k: &str| c[k].as_u64().unwrap_or(0);
    let batches = count(&after, "batches").saturating_sub(count(&before, "batches"));
    let lines = count(&after, "lines_written").saturating_sub(count(&before, "lines_written"));
    Ok((
        n as f64 / elapsed.as_secs_f64(),
        lines as f64 / batches.max(1) as f64,
    ))
}

async fn delay(
    bus: &Bus,
    url: &str,
    logger: &Path,
    settings: Settings,
    offset: usize,
) -> anyhow::Result<(Duration, Duration, Duration)> {
    let id = "bench-logger-delay";
    let mut heartbeats = bus.subscribe_raw(&format!("sb.op.{id}.heartbeat")).await?;
    let mut ready = bus.subscribe_raw(&format!("sb.op.{id}.ready")).await?;
    bus.sync().await?;
    let lg = start_logger(url, logger, "batch", id)?;
    tokio::time::timeout(Duration::from_secs(30), ready.next())
        .await
        .context("the logger did not become ready")?;
    written(&mut heartbeats, offset as u64).await?;
    let total = (settings.rate * settings.seconds) as usize;
    let logs = lg.dir.path().join("logs");
    let watcher = tokio::task::spawn_blocking({
        let logs = logs.clone();
        move || watch(&logs, offset, total)
    });
    let started = Instant::now();
    let mut sent = HashMap::with_capacity(total);
    let step = Duration::from_secs_f64(1.0 / settings.rate as f64);
    for k in 0..total {
        let due = started + step * k as u32;
        tokio::time::sleep_until(due.into()).await;
        let i = offset + k;
        sent.insert(format!("b{i:09}"), Instant::now());
        bus.publish(SUBJECT, &envelope(i)).await?;
        if k % 64 == 0 {
            bus.flush().await?;
        }
    }
    bus.flush().await?;
    let arrived = watcher.await??;
    let mut delays: Vec<Duration> = arrived
        .iter()
        .filter_map(|(id, at)| Some(at.saturating_duration_since(*sent.get(id)?)))
        .collect();
    if delays.len() < total {
        bail!("only {} of {total} lines reached the disk", delays.len());
    }
    delays.sort();
    let pick = |q: f64| delays[((delays.len() as f64 * q) as usize).min(delays.len() - 1)];
    Ok((
        pick(0.50),
        pick(0.99),
        *delays.last().unwrap_or(&Duration::ZERO),
    ))
}

/// Poll the files under `dir` every millisecond until `total` ids past
/// `offset` are seen; when each was first seen.
fn watch(dir: &Path, offset: usize, total: usize) -> anyhow::Result<HashMap<String, Instant>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen: HashMap<String, Instant> = HashMap::with_capacity(total);
    let mut positions: HashMap<PathBuf, u64> = HashMap::new();
    let first = format!("b{offset:09}");
    while seen.len() < total {
        if Instant::now() > deadline {
            bail!(
                "only {} of {total} lines reached the disk in time",
                seen.len()
            );
        }
        let now = Instant::now();
        for file in switchboard_logger::read::log_files(dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        {
            let pos = positions.entry(file.clone()).or_insert(0);
            let Ok(mut f) = std::fs::File::open(&file) else {
                continue;
            };
            if f.seek(SeekFrom::Start(*pos)).is_err() {
                continue;
            }
            let mut text = String::new();
            let _ = f.read_to_string(&mut text);
            // Only whole lines.
            let whole = text.rfind('\n').map_or(0, |i| i + 1);
            *pos += whole as u64;
            for line in text[..whole].lines() {
                if let Some(at) = line.find("\"id\":\"b") {
                    let id = &line[at + 6..at + 6 + 10];
                    if *id >= *first.as_str() {
                        seen.entry(id.to_owned()).or_insert(now);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(seen)
}
