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

use crate::cpu;
use crate::summary::{Summary, Target};
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

/// The issue-21 targets: the stream alone within 10% of the core bus, and
/// the stream with the logger writing to disk (fsync before every
/// acknowledgement) at half of it.
const STORED_TARGET: Target = Target::AtLeast(0.9);
const LOGGED_TARGET: Target = Target::AtLeast(0.5);

/// Where one run's time went: CPU of each process per envelope, and how
/// many of the machine's cores were busy on average. A run that keeps
/// every core busy is bound by the CPU the processes spend per envelope
/// (rate ~ cores / total CPU per envelope); one that leaves cores idle is
/// bound by something that waits (a round trip, an fsync).
#[derive(Debug, Clone, Copy, Default)]
struct Profile {
    elapsed: Duration,
    bench: Option<Duration>,
    server: Option<Duration>,
    logger: Option<Duration>,
}

/// CPU times at the start of a run.
struct Clock {
    started: Instant,
    server_pid: Option<u32>,
    logger_pid: Option<u32>,
    bench: Option<Duration>,
    server: Option<Duration>,
    logger: Option<Duration>,
}

impl Clock {
    fn start(server_pid: Option<u32>, logger_pid: Option<u32>) -> Clock {
        Clock {
            started: Instant::now(),
            server_pid,
            logger_pid,
            bench: cpu::process_time(None),
            server: server_pid.and_then(|p| cpu::process_time(Some(p))),
            logger: logger_pid.and_then(|p| cpu::process_time(Some(p))),
        }
    }

    fn stop(&self) -> Profile {
        let since =
            |then: Option<Duration>, now: Option<Duration>| Some(now?.saturating_sub(then?));
        Profile {
            elapsed: self.started.elapsed(),
            bench: since(self.bench, cpu::process_time(None)),
            server: since(
                self.server,
                self.server_pid.and_then(|p| cpu::process_time(Some(p))),
            ),
            logger: since(
                self.logger,
                self.logger_pid.and_then(|p| cpu::process_time(Some(p))),
            ),
        }
    }
}

impl Profile {
    fn rate(&self, n: usize) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }

    /// The profile's cells: µs of CPU per envelope for the bench (the
    /// publisher, and the subscriber of the core run), the server and the
    /// logger, their sum, the average number of busy cores, and how many
    /// of them the server kept busy.
    fn cells(&self, n: usize) -> Vec<String> {
        let per = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6 / n as f64);
        let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        let parts = [per(self.bench), per(self.server), per(self.logger)];
        let total: f64 = parts.iter().flatten().sum();
        let cores = |us: f64| us * n as f64 / 1e6 / self.elapsed.as_secs_f64();
        vec![
            show(parts[0]),
            show(parts[1]),
            show(parts[2]),
            format!("{total:.2}"),
            format!("{:.2}", cores(total)),
            show(parts[1].map(cores)),
        ]
    }
}

/// The tables, printed; the ratios checked in `summary`.
pub async fn run(
    url: &str,
    server_pid: Option<u32>,
    logger: &Path,
    settings: Settings,
    summary: &mut Summary,
) -> anyhow::Result<()> {
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
        &[
            "path",
            "envelopes/s",
            "vs core bus",
            "target",
            "lines per batch",
        ],
    );
    let mut p = Table::new(
        "where the time goes (CPU per envelope, µs; busy = average cores in use)",
        &[
            "path",
            "bench",
            "server",
            "logger",
            "total",
            "busy",
            "server busy",
        ],
    );
    let core = core_rate(&bus, n, server_pid).await?;
    let core_rate = core.rate(n);
    t.row(vec![
        "core bus (publish -> subscriber)".into(),
        rate(core_rate),
        "1.00".into(),
    ]);
    p.row([vec!["core bus".to_owned()], core.cells(n)].concat());
    let stored = stored_rate(&bus, n, server_pid).await?;
    let ratio = stored.rate(n) / core_rate;
    t.row(vec![
        "stream only (publish -> stored)".into(),
        rate(stored.rate(n)),
        format!("{ratio:.2}"),
        STORED_TARGET.verdict(ratio),
    ]);
    summary.check("stream only/core bus", ratio, STORED_TARGET);
    p.row([vec!["stream only".to_owned()], stored.cells(n)].concat());
    // The same without the `Nats-Msg-Id` header the stream dedupes on
    // (what a client that does not know of the stream sends): the
    // server's share of the dedupe, for the profile; not a target.
    let plain = Bus::connect(&BusOptions::new(url).stream_ids(false), "bench-plain").await?;
    let unmarked = stored_rate(&plain, n, server_pid).await?;
    t.row(vec![
        "stream only, no Nats-Msg-Id (no dedupe)".into(),
        rate(unmarked.rate(n)),
        format!("{:.2}", unmarked.rate(n) / core_rate),
    ]);
    p.row(
        [
            vec!["stream only, no Nats-Msg-Id".to_owned()],
            unmarked.cells(n),
        ]
        .concat(),
    );
    // Both stream-only runs left n envelopes each in the stream; the loggers
    // read from the first.
    let mut offset = 2 * n;
    for fsync in ["batch", "never"] {
        let (profile, per_batch) =
            logged_rate(&bus, url, server_pid, logger, fsync, offset, n).await?;
        offset += n;
        let ratio = profile.rate(n) / core_rate;
        let verdict = if fsync == "batch" {
            summary.check("stream + logger fsync=batch/core bus", ratio, LOGGED_TARGET);
            LOGGED_TARGET.verdict(ratio)
        } else {
            String::new()
        };
        t.row(vec![
            format!("stream + logger, fsync={fsync}"),
            rate(profile.rate(n)),
            format!("{ratio:.2}"),
            verdict,
            format!("{per_batch:.0}"),
        ]);
        p.row(
            [
                vec![format!("stream + logger, fsync={fsync}")],
                profile.cells(n),
            ]
            .concat(),
        );
    }
    // The logger's reading alone: the same durable pull consumer with the
    // same batch, each batch acknowledged, nothing written. What the
    // server and the bus's reader take, the ceiling of any logger.
    let reader = reader_rate(&bus, offset, n, server_pid).await?;
    offset += n;
    t.row(vec![
        "stream + durable reader, no disk".into(),
        rate(reader.rate(n)),
        format!("{:.2}", reader.rate(n) / core_rate),
    ]);
    p.row(
        [
            vec!["stream + durable reader, no disk".to_owned()],
            reader.cells(n),
        ]
        .concat(),
    );
    t.note("`stream + logger`: publish (core NATS, the stream captures it) until the logger's lines_written reaches N.");
    println!("{t}");
    p.note(format!(
        "{} cores; bench = this process (publisher, and the core run's subscriber); a busy figure near the core count means CPU-bound; \
         server busy ~1.00 with cores to spare: the server's JetStream work, which runs on one core, sets the rate (docs/benchmarks.md, issue 21 round 3)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    println!("{p}");

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
async fn stored_rate(bus: &Bus, n: usize, server_pid: Option<u32>) -> anyhow::Result<Profile> {
    let before = bus.stream_state(DEFAULT_STREAM).await?.messages;
    let clock = Clock::start(server_pid, None);
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
    Ok(clock.stop())
}

/// Publish `n` envelopes (ids from `first`) and read them back through a durable consumer
/// of its own (started at new messages), batches of the logger's default
/// size, the last of each acknowledged (covering the batch); time until
/// all are read.
async fn reader_rate(
    bus: &Bus,
    first: usize,
    n: usize,
    server_pid: Option<u32>,
) -> anyhow::Result<Profile> {
    let mut durable = bus
        .durable(
            DEFAULT_STREAM,
            "bench-reader",
            &["chat.>".to_owned()],
            Duration::from_secs(30),
            switchboard_bus::stream::StartAt::New,
        )
        .await?;
    let clock = Clock::start(server_pid, None);
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for i in first..first + n {
                bus.publish(SUBJECT, &envelope(i)).await?;
            }
            bus.flush().await
        })
    };
    let mut got = 0;
    while got < n {
        let mut batch = durable.fetch(500, Duration::from_secs(10)).await?;
        if batch.is_empty() {
            bail!("durable reader: only {got} of {n} arrived");
        }
        got += batch.len();
        if let Some(last) = batch.last_mut() {
            last.ack().await?;
        }
    }
    publisher.await??;
    Ok(clock.stop())
}

async fn core_rate(bus: &Bus, n: usize, server_pid: Option<u32>) -> anyhow::Result<Profile> {
    let mut sub = bus.subscribe_raw("bench.core.>").await?;
    bus.sync().await?;
    let clock = Clock::start(server_pid, None);
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
    Ok(clock.stop())
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
    server_pid: Option<u32>,
    logger: &Path,
    fsync: &str,
    offset: usize,
    n: usize,
) -> anyhow::Result<(Profile, f64)> {
    // A consumer of its own that starts with new messages only.
    let id = format!("bench-logger-{fsync}");
    let mut heartbeats = bus.subscribe_raw(&format!("sb.op.{id}.heartbeat")).await?;
    let mut ready = bus.subscribe_raw(&format!("sb.op.{id}.ready")).await?;
    bus.sync().await?;
    // Messages already in the stream (earlier runs) are written first:
    // count from what is there.
    let lg = start_logger(url, logger, fsync, &id)?;
    tokio::time::timeout(Duration::from_secs(30), ready.next())
        .await
        .context("the logger did not become ready")?;
    let before = written(&mut heartbeats, offset as u64).await?;
    let clock = Clock::start(server_pid, Some(lg.child.id()));
    for i in offset..offset + n {
        bus.publish(SUBJECT, &envelope(i)).await?;
    }
    bus.flush().await?;
    let after = written(&mut heartbeats, (offset + n) as u64).await?;
    let profile = clock.stop();
    let count = |c: &serde_json::Value, k: &str| c[k].as_u64().unwrap_or(0);
    let batches = count(&after, "batches").saturating_sub(count(&before, "batches"));
    let lines = count(&after, "lines_written").saturating_sub(count(&before, "lines_written"));
    Ok((profile, lines as f64 / batches.max(1) as f64))
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
