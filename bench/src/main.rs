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
//! The IRC half (`irc_ping.rs`) times what a chat user sees: `!ping` on a
//! real ngIRCd answered by the ping bot through the daemon and the IRC
//! operator, beside the same round trip between two raw IRC clients.
//!
//! Ratios are only meaningful within one run on one machine, which is why
//! raw and bus runs are interleaved rather than measured separately.
//! Missed targets are reported, not fatal: the exit status is 0 unless the
//! benchmark itself could not run.

mod bus_report;
mod cluster;
mod cost;
mod cpu;
mod daemon;
mod durable;
mod icount;
mod irc_ping;
mod latency;
mod machine;
mod peer;
mod procfs;
mod rivals;
mod summary;
mod supervision;
mod table;
mod throughput;
mod workload;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use switchboard_testkit::NatsServer;

use crate::summary::Summary;
use crate::workload::SUBJECT;

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

    /// Pings per path of the IRC `!ping` round trip [default: 200; 30
    /// with --quick].
    #[arg(long, value_name = "N")]
    pings: Option<usize>,

    /// Whole-host SIGKILLs in the cluster failover series [default: 20;
    /// 5 with --quick].
    #[arg(long, value_name = "N")]
    host_kills: Option<usize>,

    /// Operators placed at once on the 3-host cluster [default: 300; 60
    /// with --quick].
    #[arg(long, value_name = "N")]
    operators: Option<usize>,

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
    /// A person's `!ping` on IRC answered through the daemon, beside the
    /// same round trip between two raw IRC clients.
    Irc,
    /// Three daemons in cluster mode: failover after host kills,
    /// placement of many operators, lease traffic.
    Cluster,
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
    let (bus, durable, supervision, irc) = match args.only {
        None => (true, true, true, true),
        Some(Half::Bus) => (true, false, false, false),
        Some(Half::Durable) => (false, true, false, false),
        Some(Half::Supervision) => (false, false, true, false),
        Some(Half::Irc) => (false, false, false, true),
        Some(Half::Cluster) => (false, false, false, false),
    };
    let cluster = matches!(args.only, None | Some(Half::Cluster));
    println!(
        "switchboard bench: {}",
        match (bus, durable, supervision, irc) {
            (true, true, true, true) => "bus vs raw async-nats, stream + logger vs core bus, orchestrator vs s6 and supervisord, IRC !ping through the daemon vs raw IRC, same run",
            (true, _, false, _) => "bus vs raw async-nats, same run, same server",
            (false, true, false, _) => "stream + logger to disk vs the core bus, same run, same server",
            (false, false, false, true) => "a person's IRC !ping through the daemon vs the same round trip between raw IRC clients, same ngircd",
            (false, false, false, false) => "three daemons in cluster mode: failover, placement, lease traffic",
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
        runtime.block_on(bus_report::run(
            &args,
            &server.url(),
            server.pid(),
            &mut summary,
        ))?;
        // Child processes under callgrind, one at a time, after the timed
        // runs so that they disturb none of them.
        bus_report::icount_table(&args, &server.url(), &mut summary)?;
        summary.bus_ran = true;
    }
    if durable {
        let server = NatsServer::start().context("starting nats-server")?;
        let bins = daemon::Binaries::find()?;
        runtime.block_on(durable::run(
            &server.url(),
            server.pid(),
            &bins.logger,
            durable::Settings::new(args.quick),
            &mut summary,
        ))?;
    }
    if supervision {
        let settings = supervision::Settings::new(args.quick, args.kills);
        summary.supervision_ran = true;
        runtime.block_on(supervision::run(settings, &mut summary))?;
    }
    if irc {
        let settings = irc_ping::Settings::new(args.quick, args.pings);
        runtime.block_on(irc_ping::run(settings, &mut summary))?;
    }
    if cluster {
        let settings = cluster::Settings::new(args.quick, args.host_kills, args.operators);
        runtime.block_on(cluster::run(settings, &mut summary))?;
    }
    summary.print();
    Ok(())
}
