//! The bus half's tables: throughput against raw async-nats (and the
//! nats.js peer), the cost of a pattern NATS cannot express, where the
//! gap goes, instruction counts and latency.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use switchboard_bus::Pattern;

use crate::summary::{median, Summary, Target};
use crate::table::{micros, size, thousands, Table};
use crate::workload::{Path, MIDDLE_HASH_PATTERN, SUBJECT};
use crate::{cost, icount, latency, peer, throughput, Args};

/// Envelope body sizes measured (their JSON encoding, in bytes).
const SMALL: usize = 128;
const LARGE: usize = 1024;

/// The bus half on the server at `url`: throughput, latency, the cost
/// of each step.
pub async fn run(
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
) -> Vec<(Case, &'static str, throughput::Spec)> {
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
        (Case::RawSmall, "raw 128 B", spec(Path::Raw, SMALL)),
        (
            Case::DecSmall,
            "raw+dec 128 B",
            spec(Path::RawDecode, SMALL),
        ),
        (Case::BusSmall, "bus 128 B", spec(literal, SMALL)),
        (Case::RawLarge, "raw 1 KiB", spec(Path::Raw, LARGE)),
        (
            Case::DecLarge,
            "raw+dec 1 KiB",
            spec(Path::RawDecode, LARGE),
        ),
        (Case::BusLarge, "bus 1 KiB", spec(literal, LARGE)),
        (Case::BusHash, "bus 128 B #", spec(hash, SMALL)),
    ]
}

/// The throughput cases: which path, which body, which pattern. The
/// results are keyed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    /// Raw async-nats, 128 B body.
    RawSmall,
    /// Raw async-nats whose subscriber decodes as the bus does, 128 B.
    DecSmall,
    /// The bus, literal subject, 128 B.
    BusSmall,
    /// Raw async-nats, 1 KiB body.
    RawLarge,
    /// Raw + decode, 1 KiB.
    DecLarge,
    /// The bus, literal subject, 1 KiB.
    BusLarge,
    /// The bus, `chat.#.message` (filtered client-side), 128 B.
    BusHash,
}

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
    for (_, name, spec) in &cases {
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
    let mut results: BTreeMap<Case, Vec<throughput::Outcome>> = BTreeMap::new();
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
        for (case, name, spec) in &cases {
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
            results.entry(*case).or_default().push(outcome);
        }
    }

    let runs = |case: Case| results.get(&case).map_or(&[][..], Vec::as_slice);
    let rate = |case| median(runs(case).iter().map(throughput::Outcome::msgs_per_sec));
    let mbps = |case| median(runs(case).iter().map(throughput::Outcome::mb_per_sec));
    let sent = |case| median(runs(case).iter().map(|o| o.sent as f64));
    // Ratios are taken per repetition (raw and bus ran back to back) and
    // then the median: steadier than a ratio of medians on a busy machine.
    let ratio = |num, den| {
        median(
            runs(num)
                .iter()
                .zip(runs(den))
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
            thousands(sent(Case::RawSmall).min(sent(Case::BusSmall))),
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
    for (body, raw, bus) in [
        (SMALL, Case::RawSmall, Case::BusSmall),
        (LARGE, Case::RawLarge, Case::BusLarge),
    ] {
        let r = ratio(bus, raw);
        t.row(vec![
            format!("{} body", size(body)),
            runs(bus)
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
    let slowdown = ratio(Case::BusSmall, Case::BusHash);
    let target = Target::AtMost(1.20);
    for (i, pattern) in [
        (Case::BusSmall, SUBJECT),
        (Case::BusHash, MIDDLE_HASH_PATTERN),
    ] {
        let plan = Pattern::parse(pattern)
            .with_context(|| format!("pattern {pattern}"))?
            .nats_plan();
        let (vs, verdict) = if i == Case::BusHash {
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
        &|case| {
            runs(case)
                .iter()
                .map(throughput::Outcome::msgs_per_sec)
                .collect()
        },
        summary,
    );

    // Where the difference goes: the raw + decode reference, and CPU per
    // delivered message.
    let cpu_ns = |case, server: bool| {
        let v: Vec<f64> = runs(case)
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
        ("128 B body", Case::RawSmall, Case::DecSmall, Case::BusSmall),
        ("1 KiB body", Case::RawLarge, Case::DecLarge, Case::BusLarge),
        (
            "128 B, chat.#.message",
            Case::RawSmall,
            Case::DecSmall,
            Case::BusHash,
        ),
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
    bus_rates: &dyn Fn(Case) -> Vec<f64>,
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
    for (slot, (body, bus)) in [(SMALL, Case::BusSmall), (LARGE, Case::BusLarge)]
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
pub fn icount_table(args: &Args, url: &str, summary: &mut Summary) -> anyhow::Result<()> {
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
    let (mut raw, mut bus) = (Vec::new(), Vec::new());
    for rep in 1..=args.reps {
        let cases = [
            ("raw", spec(Path::Raw), &mut raw),
            ("bus", spec(Path::Bus { pattern: SUBJECT }), &mut bus),
        ];
        for (name, spec, runs) in cases {
            let outcome = latency::run(url, spec)
                .await
                .with_context(|| format!("latency run {name} (rep {rep})"))?;
            eprintln!(
                "  rep {rep}/{}  latency {name}  p50 {}  p99 {}",
                args.reps,
                micros(outcome.p50),
                micros(outcome.p99)
            );
            runs.push(outcome);
        }
    }
    let secs = |d: Duration| d.as_secs_f64();
    let p50 = |runs: &[latency::Outcome]| median(runs.iter().map(|o| secs(o.p50)));
    let p99 = |runs: &[latency::Outcome]| median(runs.iter().map(|o| secs(o.p99)));
    let ratio = median(
        bus.iter()
            .zip(&raw)
            .map(|(bus, raw)| secs(bus.p99) / secs(raw.p99)),
    );
    let target = Target::AtMost(1.5);
    let count = raw.first().map_or(messages, |o| o.count);
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
        us(p50(&raw)),
        us(p50(&bus)),
        us(p99(&raw)),
        us(p99(&bus)),
        format!("{ratio:.2}"),
        target.verdict(ratio),
    ]);
    t.note("publish on one connection -> arrival on another (bus: incl. encode + decode)");
    println!("{t}");
    summary.check("p99 bus/raw", ratio, target);
    Ok(())
}
