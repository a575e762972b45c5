//! `make bench`: Switchboard's bus against raw async-nats, and its
//! orchestrator against s6 and supervisord, in one run.
//!
//! The bus half starts its own nats-server, then measures on loopback,
//! each case as raw async-nats and through the bus:
//!
//! 1. throughput, one publisher and one subscriber on two connections,
//!    128 B and 1 KiB envelope bodies;
//! 2. the cost of a pattern NATS cannot express (`chat.#.message`, which
//!    the bus filters client-side) against a literal one;
//! 3. one-way latency, one message at a time (p50, p99);
//! 4. where the time goes: a raw reference whose subscriber also decodes
//!    with the bus's decoder, CPU per delivered message (client and
//!    server), and the single-thread cost of the bus's own steps.
//!
//! The durable half (`durable.rs`) measures envelopes per second through
//! the JetStream stream and the logger to disk beside the core bus, and
//! the delay from publish to the line on disk.
//!
//! Ratios are only meaningful within one run on one machine, which is why
//! raw and bus runs are interleaved rather than measured separately.
//! Missed targets are reported, not fatal: the exit status is 0 unless the
//! benchmark itself could not run.

mod cost;
mod cpu;
mod daemon;
mod durable;
mod icount;
mod latency;
mod machine;
mod peer;
mod procfs;
mod rivals;
mod supervision;
mod table;
mod throughput;
mod workload;

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use switchboard_bus::Pattern;
use switchboard_testkit::NatsServer;

use crate::table::{micros, size, thousands, Table};
use crate::workload::{Path, MIDDLE_HASH_PATTERN, SUBJECT};

/// Throughput and latency of Switchboard's bus against raw async-nats,
/// on a nats-server started for the run; cold start, crash recovery and
/// idle footprint of its orchestrator beside s6 and supervisord.
#[derive(Debug, Parser)]
#[command(name = "switchboard-bench", version)]
struct Args {
    /// Fewer messages, kills and runs: a quick check that everything
    /// works, with noisier numbers.
    #[arg(long)]
    quick: bool,

    /// Run only one half [default: both].
    #[arg(long, value_enum, value_name = "HALF")]
    only: Option<Half>,

    /// SIGKILLs per Switchboard crash series (supervisord and s6, which
    /// take ~1 s per restart, get at most 20 and 10) [default: 50; 10
    /// with --quick].
    #[arg(long, value_name = "N")]
    kills: Option<usize>,

    /// Messages per throughput run [default: 500000; 50000 with --quick].
    #[arg(long, value_name = "N")]
    messages: Option<u64>,

    /// Samples per latency run [default: 20000; 3000 with --quick].
    #[arg(long, value_name = "N")]
    latency_messages: Option<u64>,

    /// Repetitions of every case; tables show the median.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    reps: u64,

    /// Most messages in flight during throughput runs (publisher waits for
    /// the subscriber beyond that); 0 for none, which lets a fast publisher
    /// overflow the subscriber (reported as loss).
    #[arg(long, value_name = "N", default_value_t = 16_384)]
    window: u64,

    /// Longest a single throughput run may publish, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 4.0)]
    budget: f64,

    /// Messages per instruction-count run under callgrind [default:
    /// 20000; 5000 with --quick]; 0 skips the instruction counts.
    #[arg(long, value_name = "N")]
    icount_messages: Option<u64>,

    /// Messages per nats.js peer run [default: 200000; 30000 with
    /// --quick]; 0 skips the peer.
    #[arg(long, value_name = "N")]
    peer_messages: Option<u64>,

    /// Internal: run one instruction-count case (`raw-128`, `bus-1024`,
    /// ...) against `--icount-url` and exit; the bench starts itself this
    /// way under callgrind.
    #[arg(long, hide = true, value_name = "CASE", requires = "icount_url")]
    icount_child: Option<String>,

    /// Internal: the server of `--icount-child`.
    #[arg(long, hide = true, value_name = "URL")]
    icount_url: Option<String>,
}

/// The two halves of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Half {
    /// The bus against raw async-nats.
    Bus,
    /// The durable stream and the logger against the core bus.
    Durable,
    /// The orchestrator: cold start, crash recovery, idle footprint.
    Supervision,
}

/// Envelope body sizes measured (their JSON encoding, in bytes).
const SMALL: usize = 128;
const LARGE: usize = 1024;

/// A target from the design doc, checked against a measured ratio or
/// quantity.
#[derive(Debug, Clone, Copy)]
enum Target {
    AtLeast(f64),
    AtMost(f64),
    /// Strictly below a limit in a unit (`< 50 ms`).
    Below(f64, Unit),
}

/// The unit of a [`Target::Below`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Ms,
    Mb,
    PctCore,
}

impl Unit {
    /// `12.3 ms`, `6.1 MB`, `0.42% of a core`.
    fn show(self, value: f64) -> String {
        match self {
            Unit::Ms if value < 10.0 => format!("{value:.2} ms"),
            Unit::Ms if value < 100.0 => format!("{value:.1} ms"),
            Unit::Ms => format!("{value:.0} ms"),
            Unit::Mb => format!("{value:.1} MB"),
            Unit::PctCore => format!("{value:.2}% of a core"),
        }
    }
}

impl Target {
    fn met(self, value: f64) -> bool {
        match self {
            Target::AtLeast(limit) => value >= limit,
            Target::AtMost(limit) => value <= limit,
            Target::Below(limit, _) => value < limit,
        }
    }

    /// `>= 0.90  ok` or `>= 0.90  MISSED`.
    fn verdict(self, value: f64) -> String {
        let state = if self.met(value) { "ok" } else { "MISSED" };
        format!("{}  {state}", target_text(self))
    }

    /// The value as this target's unit shows it.
    fn show(self, value: f64) -> String {
        match self {
            Target::Below(_, unit) => unit.show(value),
            _ => format!("{value:.2}"),
        }
    }
}

/// Results that feed the final summary line.
#[derive(Debug, Default)]
struct Summary {
    /// (what, measured, target)
    checks: Vec<(String, f64, Target)>,
    /// Runs where messages were lost or a run failed (bus).
    problems: Vec<String>,
    /// Whether the bus half ran (it reports message loss).
    bus_ran: bool,
    /// Supervision runs that left processes behind or misbehaved.
    cleanup: Vec<String>,
    /// Whether the supervision half ran.
    supervision_ran: bool,
    /// Targets that could not be measured, and why.
    unmeasured: Vec<String>,
}

impl Summary {
    fn check(&mut self, what: impl Into<String>, value: f64, target: Target) {
        self.checks.push((what.into(), value, target));
    }

    fn print(&self) {
        let met: Vec<String> = self
            .checks
            .iter()
            .filter(|(_, v, t)| t.met(*v))
            .map(|(what, v, t)| format!("{what} {}", t.show(*v)))
            .collect();
        let missed: Vec<String> = self
            .checks
            .iter()
            .filter(|(_, v, t)| !t.met(*v))
            .map(|(what, v, t)| format!("{what} {} (target {})", t.show(*v), target_text(*t)))
            .collect();
        println!(
            "summary: {} of {} targets met",
            met.len(),
            self.checks.len()
        );
        if !met.is_empty() {
            println!("  met:    {}", met.join("; "));
        }
        if missed.is_empty() {
            println!("  MISSED: none");
        } else {
            println!("  MISSED: {}", missed.join("; "));
        }
        for what in &self.unmeasured {
            println!("  NOT MEASURED: {what}");
        }
        if self.bus_ran {
            if self.problems.is_empty() {
                println!("  loss:   none (every run delivered every message)");
            } else {
                for p in &self.problems {
                    println!("  LOSS:   {p}");
                }
            }
        }
        if self.supervision_ran {
            if self.cleanup.is_empty() {
                println!("  procs:  every daemon, operator and rival stopped cleanly");
            } else {
                for p in &self.cleanup {
                    println!("  PROCS:  {p}");
                }
            }
        }
    }
}

fn target_text(t: Target) -> String {
    match t {
        Target::AtLeast(l) => format!(">= {l:.2}"),
        Target::AtMost(l) => format!("<= {l:.2}"),
        Target::Below(l, unit) => format!("< {}", unit.show(l)),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.budget.is_finite() && args.budget > 0.0,
        "--budget must be a positive number of seconds"
    );
    if let (Some(case), Some(url)) = (&args.icount_child, &args.icount_url) {
        let case = icount::Case::parse(case, SUBJECT)?;
        let messages = args.messages.unwrap_or(20_000).max(1);
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("building the tokio runtime")?
            .block_on(icount::child(url, case, messages, args.window));
    }
    let bin = switchboard_testkit::nats_server_bin().context("looking for nats-server")?;
    let (bus, durable, supervision) = match args.only {
        None => (true, true, true),
        Some(Half::Bus) => (true, false, false),
        Some(Half::Durable) => (false, true, false),
        Some(Half::Supervision) => (false, false, true),
    };
    println!(
        "switchboard bench: {}",
        match (bus, durable, supervision) {
            (true, true, true) => "bus vs raw async-nats, stream + logger vs core bus, orchestrator vs s6 and supervisord, same run",
            (true, _, false) => "bus vs raw async-nats, same run, same server",
            (false, true, false) => "stream + logger to disk vs the core bus, same run, same server",
            _ => "orchestrator vs s6 and supervisord, same run",
        }
    );
    println!("{}", machine::Machine::describe(&bin));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let mut summary = Summary::default();
    if bus {
        // Started outside the runtime: it is a child process, and is
        // killed when `server` drops at the end of this block.
        let server = NatsServer::start().context("starting nats-server")?;
        runtime.block_on(bench(&args, &server.url(), server.pid(), &mut summary))?;
        // Child processes under callgrind, one at a time, after the timed
        // runs so that they disturb none of them.
        icount_table(&args, &server.url(), &mut summary)?;
        summary.bus_ran = true;
    }
    if durable {
        let server = NatsServer::start().context("starting nats-server")?;
        let bins = daemon::Binaries::find()?;
        runtime.block_on(durable::run(
            &server.url(),
            &bins.logger,
            durable::Settings::new(args.quick),
        ))?;
    }
    if supervision {
        let settings = supervision::Settings::new(args.quick, args.kills);
        summary.supervision_ran = true;
        runtime.block_on(supervision::run(settings, &mut summary))?;
    }
    summary.print();
    Ok(())
}

async fn bench(
    args: &Args,
    url: &str,
    server_pid: Option<u32>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let messages = args
        .messages
        .unwrap_or(if args.quick { 50_000 } else { 500_000 })
        .max(1);
    let latency_messages = args
        .latency_messages
        .unwrap_or(if args.quick { 3_000 } else { 20_000 })
        .max(1);
    println!(
        "server:      {url} (loopback), tokio multi-thread runtime, {} workers",
        tokio::runtime::Handle::current().metrics().num_workers()
    );
    println!();

    throughput_tables(args, url, server_pid, messages, summary).await?;
    latency_table(args, url, latency_messages, summary).await?;
    // Plain synchronous loops: nothing else runs on the runtime now.
    println!("{}", cost::table(&[SMALL, LARGE])?);
    Ok(())
}

/// The throughput cases, in the order they run within a repetition.
fn throughput_cases(
    args: &Args,
    server_pid: Option<u32>,
    messages: u64,
) -> Vec<(&'static str, throughput::Spec)> {
    let spec = |path, body| throughput::Spec {
        path,
        body,
        messages,
        budget: Duration::from_secs_f64(args.budget),
        window: args.window,
        server_pid,
        count_instructions: false,
    };
    let literal = Path::Bus { pattern: SUBJECT };
    let hash = Path::Bus {
        pattern: MIDDLE_HASH_PATTERN,
    };
    vec![
        ("raw 128 B", spec(Path::Raw, SMALL)),
        ("raw+dec 128 B", spec(Path::RawDecode, SMALL)),
        ("bus 128 B", spec(literal, SMALL)),
        ("raw 1 KiB", spec(Path::Raw, LARGE)),
        ("raw+dec 1 KiB", spec(Path::RawDecode, LARGE)),
        ("bus 1 KiB", spec(literal, LARGE)),
        ("bus 128 B #", spec(hash, SMALL)),
    ]
}

// Indexes into `throughput_cases`.
const RAW_SMALL: usize = 0;
const DEC_SMALL: usize = 1;
const BUS_SMALL: usize = 2;
const RAW_LARGE: usize = 3;
const DEC_LARGE: usize = 4;
const BUS_LARGE: usize = 5;
const BUS_HASH: usize = 6;

async fn throughput_tables(
    args: &Args,
    url: &str,
    server_pid: Option<u32>,
    messages: u64,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let cases = throughput_cases(args, server_pid, messages);

    // Warm-up: every path once, short, not recorded (connections, page
    // faults, allocator and CPU frequency settle).
    eprintln!("warming up...");
    for (name, spec) in &cases {
        let warm = throughput::Spec {
            messages: (messages / 10).max(5_000),
            ..*spec
        };
        throughput::run(url, warm)
            .await
            .with_context(|| format!("warm-up of {name}"))?;
    }

    // The nats.js peer runs in each repetition too, after the Rust cases.
    let peer_messages = args
        .peer_messages
        .unwrap_or(if args.quick { 30_000 } else { 200_000 });
    let peer = if peer_messages == 0 {
        Err("skipped (--peer-messages 0)".to_owned())
    } else {
        peer::Peer::locate()
    };
    let mut peer_results: [Vec<peer::Outcome>; 2] = [Vec::new(), Vec::new()];

    // Repetitions interleave the cases, so that a slow spell on a shared
    // machine hits raw and bus alike instead of one whole case.
    let mut results: Vec<Vec<throughput::Outcome>> = vec![Vec::new(); cases.len()];
    for rep in 1..=args.reps {
        if let Ok(peer) = &peer {
            for (slot, body) in [SMALL, LARGE].into_iter().enumerate() {
                let outcome = peer
                    .run(url, SUBJECT, body, peer_messages, args.window)
                    .await
                    .with_context(|| format!("nats.js peer {} (rep {rep})", size(body)))?;
                eprintln!(
                    "  rep {rep}/{}  nats.js {:<7} {:>10} msg/s  {}/{} received",
                    args.reps,
                    size(body),
                    thousands(outcome.msgs_per_sec()),
                    thousands(outcome.received as f64),
                    thousands(outcome.sent as f64),
                );
                if !outcome.complete() {
                    summary.problems.push(format!(
                        "nats.js {} rep {rep}: received {} of {} sent",
                        size(body),
                        thousands(outcome.received as f64),
                        thousands(outcome.sent as f64)
                    ));
                }
                peer_results[slot].push(outcome);
            }
        }
        for (i, (name, spec)) in cases.iter().enumerate() {
            let outcome = throughput::run(url, *spec)
                .await
                .with_context(|| format!("throughput run {name} (rep {rep})"))?;
            eprintln!(
                "  rep {rep}/{}  {name:<13} {:>10} msg/s  {}/{} received in {:.2} s",
                args.reps,
                thousands(outcome.msgs_per_sec()),
                thousands(outcome.received as f64),
                thousands(outcome.sent as f64),
                outcome.elapsed.as_secs_f64()
            );
            if !outcome.complete() {
                summary.problems.push(format!(
                    "{name} rep {rep}: received {} of {} sent (slow consumer)",
                    thousands(outcome.received as f64),
                    thousands(outcome.sent as f64)
                ));
            }
            results[i].push(outcome);
        }
    }

    let rate = |i: usize| median(results[i].iter().map(throughput::Outcome::msgs_per_sec));
    let mbps = |i: usize| median(results[i].iter().map(throughput::Outcome::mb_per_sec));
    let sent = |i: usize| median(results[i].iter().map(|o| o.sent as f64));
    // Ratios are taken per repetition (raw and bus ran back to back) and
    // then the median: steadier than a ratio of medians on a busy machine.
    let ratio = |num: usize, den: usize| {
        median(
            results[num]
                .iter()
                .zip(&results[den])
                .map(|(n, d)| n.msgs_per_sec() / d.msgs_per_sec()),
        )
    };
    let window = if args.window == 0 {
        "no flow control".to_owned()
    } else {
        format!("window {}", thousands(args.window as f64))
    };

    let mut t = Table::new(
        format!(
            "throughput (1 pub, 1 sub, {} msgs/run, {window}, median of {})",
            thousands(sent(RAW_SMALL).min(sent(BUS_SMALL))),
            args.reps
        ),
        &[
            "case",
            "wire B",
            "raw msg/s",
            "raw MB/s",
            "bus msg/s",
            "bus MB/s",
            "bus/raw",
            "target",
        ],
    );
    let target = Target::AtLeast(0.85);
    for (body, raw, bus) in [(SMALL, RAW_SMALL, BUS_SMALL), (LARGE, RAW_LARGE, BUS_LARGE)] {
        let r = ratio(bus, raw);
        t.row(vec![
            format!("{} body", size(body)),
            results[bus]
                .first()
                .map_or(String::new(), |o| o.wire_bytes.to_string()),
            thousands(rate(raw)),
            format!("{:.1}", mbps(raw)),
            thousands(rate(bus)),
            format!("{:.1}", mbps(bus)),
            format!("{r:.2}"),
            target.verdict(r),
        ]);
        summary.check(format!("bus/raw {}", size(body)), r, target);
    }
    t.note(format!(
        "wire B = envelope size on the wire (raw publishes the same bytes); \
         bus/raw = median of per-rep ratios; subject {SUBJECT}"
    ));
    println!("{t}");

    let mut t = Table::new(
        format!(
            "pattern cost (bus, 128 B body, publish on {SUBJECT}, median of {})",
            args.reps
        ),
        &[
            "pattern",
            "nats subs",
            "client filter",
            "msg/s",
            "literal/this",
            "target",
        ],
    );
    let slowdown = ratio(BUS_SMALL, BUS_HASH);
    let target = Target::AtMost(1.20);
    for (i, pattern) in [(BUS_SMALL, SUBJECT), (BUS_HASH, MIDDLE_HASH_PATTERN)] {
        let plan = Pattern::parse(pattern)
            .with_context(|| format!("pattern {pattern}"))?
            .nats_plan();
        let (vs, verdict) = if i == BUS_HASH {
            (format!("{slowdown:.2}"), target.verdict(slowdown))
        } else {
            ("1.00".to_owned(), String::new())
        };
        t.row(vec![
            pattern.to_owned(),
            plan.subjects.join(" "),
            if plan.needs_filter { "yes" } else { "no" }.to_owned(),
            thousands(rate(i)),
            vs,
            verdict,
        ]);
    }
    t.note("literal/this = literal msg/s / this pattern's msg/s (1.20 = 20% slower)");
    println!("{t}");
    summary.check("middle-# slowdown", slowdown, target);

    peer_table(
        args,
        &peer,
        &peer_results,
        &|i| {
            results[i]
                .iter()
                .map(throughput::Outcome::msgs_per_sec)
                .collect()
        },
        summary,
    );

    // Where the difference goes: the raw + decode reference, and CPU per
    // delivered message.
    let cpu_ns = |i: usize, server: bool| {
        let v: Vec<f64> = results[i]
            .iter()
            .filter_map(|o| {
                let (client, srv) = o.cpu_per_msg();
                if server {
                    srv
                } else {
                    client
                }
            })
            .map(|d| d.as_nanos() as f64)
            .collect();
        (!v.is_empty()).then(|| median(v.into_iter()))
    };
    let ns = |v: Option<f64>| v.map_or("n/a".to_owned(), thousands);
    let mut t = Table::new(
        format!("where the gap goes (median of {})", args.reps),
        &[
            "case",
            "raw msg/s",
            "+dec msg/s",
            "bus msg/s",
            "raw cpu",
            "+dec cpu",
            "bus cpu",
            "bus/raw cpu",
            "srv raw",
            "srv bus",
        ],
    );
    for (name, raw, dec, bus) in [
        ("128 B body", RAW_SMALL, DEC_SMALL, BUS_SMALL),
        ("1 KiB body", RAW_LARGE, DEC_LARGE, BUS_LARGE),
        ("128 B, chat.#.message", RAW_SMALL, DEC_SMALL, BUS_HASH),
    ] {
        t.row(vec![
            name.to_owned(),
            thousands(rate(raw)),
            thousands(rate(dec)),
            thousands(rate(bus)),
            ns(cpu_ns(raw, false)),
            ns(cpu_ns(dec, false)),
            ns(cpu_ns(bus, false)),
            match (cpu_ns(bus, false), cpu_ns(raw, false)) {
                (Some(b), Some(r)) if r > 0.0 => format!("{:.2}", b / r),
                _ => "n/a".to_owned(),
            },
            ns(cpu_ns(raw, true)),
            ns(cpu_ns(bus, true)),
        ]);
    }
    t.note(
        "+dec = raw async-nats whose subscriber validates each payload with WireEnvelope::parse \
         and decodes its body as the bus consumer does (the bus's decoder, nothing else of the bus)",
    );
    t.note(
        "cpu = CPU ns per delivered message of this process (publisher, subscriber, both \
         connections); srv = nats-server's",
    );
    t.note(format!(
        "{} cores in all: when CPU-bound, msg/s ~ cores / (client + server CPU per message)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    println!("{t}");
    Ok(())
}

/// The nats.js peer beside the bus: msgs/s and CPU per message, and the
/// bus's advantage (per-repetition ratios, median).
fn peer_table(
    args: &Args,
    peer: &Result<peer::Peer, String>,
    peer_results: &[Vec<peer::Outcome>; 2],
    bus_rates: &dyn Fn(usize) -> Vec<f64>,
    summary: &mut Summary,
) {
    let target = Target::AtLeast(4.0);
    let mut t = Table::new(
        format!(
            "peer: nats.js (npm nats, JSON.stringify/JSON.parse), same server, median of {}",
            args.reps
        ),
        &[
            "case",
            "nats.js msg/s",
            "nats.js cpu",
            "bus msg/s",
            "bus/nats.js",
            "target",
        ],
    );
    let why = match peer {
        Ok(_) => None,
        Err(why) => Some(why.clone()),
    };
    for (slot, (body, bus)) in [(SMALL, BUS_SMALL), (LARGE, BUS_LARGE)]
        .into_iter()
        .enumerate()
    {
        let runs = &peer_results[slot];
        let what = format!("bus/nats.js {}", size(body));
        if runs.is_empty() {
            let why = why.clone().unwrap_or_else(|| "no run".to_owned());
            t.row(vec![
                format!("{} body", size(body)),
                format!("NOT MEASURED: {why}"),
            ]);
            summary.unmeasured.push(format!("{what}: {why}"));
            continue;
        }
        let bus_rates = bus_rates(bus);
        let ratio = median(
            bus_rates
                .iter()
                .zip(runs)
                .map(|(b, js)| b / js.msgs_per_sec()),
        );
        t.row(vec![
            format!("{} body", size(body)),
            thousands(median(runs.iter().map(peer::Outcome::msgs_per_sec))),
            thousands(median(runs.iter().map(peer::Outcome::cpu_per_msg))),
            thousands(median(bus_rates.iter().copied())),
            format!("{ratio:.2}"),
            target.verdict(ratio),
        ]);
        summary.check(what, ratio, target);
    }
    if let Some(run) = peer_results.iter().flatten().next() {
        t.note(format!(
            "nats.js {} on node {}: one process, two connections, the same envelopes \
             ({} B at 128 B), window and subject as the bus; subscriber callback + JSON.parse, \
             publisher JSON.stringify per message",
            run.version,
            node_version(),
            run.wire_bytes
        ));
        t.note("cpu = CPU ns per delivered message of the node process (user + system)");
    }
    println!("{t}");
}

/// `node --version`, or `unknown`.
fn node_version() -> String {
    std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Client instructions per delivered message under callgrind: raw, raw +
/// decode and bus, one run each (the count does not depend on load).
fn icount_table(args: &Args, url: &str, summary: &mut Summary) -> anyhow::Result<()> {
    let messages = args
        .icount_messages
        .unwrap_or(if args.quick { 5_000 } else { 20_000 });
    let target = Target::AtMost(1.6);
    let title = format!(
        "client instructions per delivered message (callgrind, {} msgs/run, window {}, one run)",
        thousands(messages as f64),
        thousands(args.window as f64)
    );
    let header = [
        "case", "raw", "+dec", "bus", "+dec/raw", "bus/raw", "target",
    ];
    let skip = |why: String, summary: &mut Summary| {
        let mut t = Table::new(title.clone(), &header);
        t.row(vec!["all".to_owned(), format!("NOT MEASURED: {why}")]);
        println!("{t}");
        summary
            .unmeasured
            .push(format!("instructions bus/raw: {why}"));
    };
    if messages == 0 {
        skip("skipped (--icount-messages 0)".to_owned(), summary);
        return Ok(());
    }
    if let Some(why) = icount::unavailable() {
        skip(why, summary);
        return Ok(());
    }
    let dir = tempfile::tempdir().context("a directory for callgrind's output")?;
    let mut t = Table::new(title.clone(), &header);
    for body in [SMALL, LARGE] {
        let mut per = Vec::new();
        for path in [Path::Raw, Path::RawDecode, Path::Bus { pattern: SUBJECT }] {
            let case = icount::Case { path, body };
            eprintln!("  callgrind {} ...", case.arg());
            let count = icount::measure(url, case, messages, args.window, dir.path())
                .with_context(|| format!("instruction count of {}", case.arg()))?;
            eprintln!(
                "  callgrind {}: {} instructions / {} msgs",
                case.arg(),
                thousands(count.instructions as f64),
                thousands(count.messages as f64)
            );
            per.push(count.per_message());
        }
        let (raw, dec, bus) = (per[0], per[1], per[2]);
        let ratio = bus / raw;
        t.row(vec![
            format!("{} body", size(body)),
            thousands(raw),
            thousands(dec),
            thousands(bus),
            format!("{:.2}", dec / raw),
            format!("{ratio:.2}"),
            target.verdict(ratio),
        ]);
        summary.check(
            format!("instructions bus/raw {}", size(body)),
            ratio,
            target,
        );
    }
    t.note(
        "Ir counted by valgrind --tool=callgrind between two marker functions around one \
         throughput run (publisher + subscriber, all threads of the client process); \
         connect and warm-up not counted",
    );
    t.note("deterministic within ~1%: the figure to decide by on a busy machine");
    println!("{t}");
    Ok(())
}

async fn latency_table(
    args: &Args,
    url: &str,
    messages: u64,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let spec = |path| latency::Spec {
        path,
        body: SMALL,
        messages,
        warmup: (messages / 10).clamp(100, 2_000),
    };
    let cases = [
        ("raw", spec(Path::Raw)),
        ("bus", spec(Path::Bus { pattern: SUBJECT })),
    ];
    let mut results: Vec<Vec<latency::Outcome>> = vec![Vec::new(); cases.len()];
    for rep in 1..=args.reps {
        for (i, (name, spec)) in cases.iter().enumerate() {
            let outcome = latency::run(url, *spec)
                .await
                .with_context(|| format!("latency run {name} (rep {rep})"))?;
            eprintln!(
                "  rep {rep}/{}  latency {name}  p50 {}  p99 {}",
                args.reps,
                micros(outcome.p50),
                micros(outcome.p99)
            );
            results[i].push(outcome);
        }
    }
    let secs = |d: Duration| d.as_secs_f64();
    let p50 = |i: usize| median(results[i].iter().map(|o| secs(o.p50)));
    let p99 = |i: usize| median(results[i].iter().map(|o| secs(o.p99)));
    let ratio = median(
        results[1]
            .iter()
            .zip(&results[0])
            .map(|(bus, raw)| secs(bus.p99) / secs(raw.p99)),
    );
    let target = Target::AtMost(1.5);
    let count = results[0].first().map_or(messages, |o| o.count);
    let mut t = Table::new(
        format!(
            "latency, one way, one message at a time (128 B body, {} msgs/run, median of {})",
            thousands(count as f64),
            args.reps
        ),
        &[
            "case",
            "raw p50",
            "bus p50",
            "raw p99",
            "bus p99",
            "p99 bus/raw",
            "target",
        ],
    );
    let us = |s: f64| micros(Duration::from_secs_f64(s));
    t.row(vec![
        format!("{} body", size(SMALL)),
        us(p50(0)),
        us(p50(1)),
        us(p99(0)),
        us(p99(1)),
        format!("{ratio:.2}"),
        target.verdict(ratio),
    ]);
    t.note("publish on one connection -> arrival on another (bus: incl. encode + decode)");
    println!("{t}");
    summary.check("p99 bus/raw", ratio, target);
    Ok(())
}

/// Median of the values (mean of the middle two for an even count; 0
/// when empty).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }

    #[test]
    fn targets() {
        assert!(Target::AtLeast(0.9).met(0.9));
        assert!(!Target::AtLeast(0.9).met(0.89));
        assert!(Target::AtMost(2.0).verdict(2.5).ends_with("MISSED"));
        assert_eq!(Target::AtMost(1.2).verdict(1.0), "<= 1.20  ok");
        assert_eq!(
            Target::Below(50.0, Unit::Ms).verdict(12.34),
            "< 50.0 ms  ok"
        );
        assert!(!Target::Below(5.0, Unit::Ms).met(5.0));
        assert_eq!(Target::Below(20.0, Unit::Mb).show(7.26), "7.3 MB");
    }
}
