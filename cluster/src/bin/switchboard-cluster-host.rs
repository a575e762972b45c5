//! One host of the cluster test bed: an [`Engine`] on this host's own
//! nats-server, its events as JSON lines on stdout.
//!
//! Why a process: in the network-namespace test bed each host's engine
//! must reach its own server through its own namespace's network, so that
//! a partition cuts the engine off exactly as it cuts the server off. A
//! test process lives in one namespace; this helper is started in the
//! host's namespace (`ip netns exec`) and stands in for the daemon. It is
//! a test tool, not part of the daemon, and starts no operator: "start"
//! and "stop" are only reported.
//!
//! Usage: `switchboard-cluster-host <host> <nats-url> [<operators>]`.
//! With `<operators>`, it writes a desired state of that many operators
//! (`op0`...) if the cluster has none yet. Lines printed:
//! `{"ready":true}`, `{"start":"op0"}`, `{"stop":"op0","why":"Fenced"}`,
//! `{"leader":"n1"}` (the cluster bucket's Raft leader, twice a second
//! when the answer names one).
//! It exits when its stdin closes, so a test that dies takes it along.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use switchboard_cluster::{
    DesiredOperator, DesiredSet, DesiredStore, Engine, EngineOptions, Event, PlacementSpec,
};
use tokio::io::AsyncReadExt as _;

/// How long to keep retrying while the cluster elects its leaders.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

fn say(line: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout means the test is gone; nothing to tell anyone.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (host, url, ops) = match args.as_slice() {
        [host, url] => (host.clone(), url.clone(), None),
        [host, url, n] => match n.parse::<usize>() {
            Ok(n) => (host.clone(), url.clone(), Some(n)),
            Err(_) => {
                eprintln!("<operators> must be a number, not `{n}`");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: switchboard-cluster-host <host> <nats-url> [<operators>]");
            return ExitCode::from(2);
        }
    };
    // The engine's log (RUST_LOG, default info) on stderr: a test shows
    // it next to the events.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .try_init();
    // Its own server only: see docs/cluster.md (a host whose server is
    // gone must not renew through another one).
    let client = match async_nats::ConnectOptions::new()
        .ignore_discovered_servers()
        .retry_on_initial_connect()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(&url)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{host}: cannot connect to {url}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let deadline = Instant::now() + FORM_TIMEOUT;
    let (engine, mut events) = loop {
        let options = EngineOptions {
            host: host.clone(),
            labels: BTreeSet::new(),
        };
        match Engine::start(client.clone(), options).await {
            Ok(started) => break started,
            Err(e) if Instant::now() >= deadline => {
                eprintln!("{host}: engine: {e}");
                return ExitCode::FAILURE;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    if let Some(n) = ops {
        let store = DesiredStore::new(engine.buckets().desired.clone());
        loop {
            match store.load().await {
                Ok(Some(_)) => break,
                Ok(None) => {
                    if store.apply(&set(n), None).await.is_ok() {
                        break;
                    }
                }
                Err(e) if Instant::now() >= deadline => {
                    eprintln!("{host}: desired state: {e}");
                    return ExitCode::FAILURE;
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    say(&serde_json::json!({ "ready": true }));
    let cluster = engine.buckets().cluster.clone();
    // Every answer that names a leader is printed: a stream info answered
    // by a replica that has not heard from the leader names none, and
    // the test wants fresh reports, not only changes.
    let leader = tokio::spawn(async move {
        loop {
            if let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_secs(2), cluster.status()).await
            {
                if let Some(l) = status.info.cluster.and_then(|c| c.leader) {
                    say(&serde_json::json!({ "leader": l }));
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Start { id, .. }) => say(&serde_json::json!({ "start": id })),
                Some(Event::Stop { id, reason }) => {
                    say(&serde_json::json!({ "stop": id, "why": format!("{reason:?}") }))
                }
                None => break,
            },
            read = stdin.read(&mut sink) => {
                if !matches!(read, Ok(n) if n > 0) {
                    break;
                }
            }
        }
    }
    leader.abort();
    drop(engine);
    ExitCode::SUCCESS
}

/// `n` operators without placement constraints, as the failover tests use.
fn set(n: usize) -> DesiredSet {
    DesiredSet {
        operators: (0..n)
            .map(|i| {
                (
                    format!("op{i}"),
                    DesiredOperator {
                        placement: PlacementSpec::default(),
                        manifest: format!("id = \"op{i}\"\n"),
                    },
                )
            })
            .collect(),
    }
}
