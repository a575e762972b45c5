//! Cluster routes over mutual TLS (`[cluster.tls]`): three real daemons
//! on three loopback addresses, each with a route certificate from the
//! cluster's own CA, form the cluster and run an operator; then three
//! outside nats-servers try to route into it: one without TLS, one with
//! a certificate from another CA, and, as the control that shows the
//! check can fail, one with a certificate from the cluster's CA.
//!
//! "Joined" is judged the way it matters: a client of the outside server
//! subscribes to everything (`>`); a routed server receives the cluster's
//! traffic (every host writes its heartbeat twice a second), a refused
//! one receives nothing.

mod common;

use std::time::{Duration, Instant};

use common::{pingbot_manifest, Daemon, DaemonConfig};
use futures::StreamExt as _;
use switchboard_proto::api::SupervisedState;
use switchboard_testkit::cluster::free_ports;
use switchboard_testkit::daemon::ClusterTable;
use switchboard_testkit::{NatsServer, NatsServerOptions, TestCa};

use common::cluster::HOSTS;
/// How long a refused server is watched for traffic that should not come.
const WATCH: Duration = Duration::from_secs(3);
/// Formation and placement on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(40);

/// The loopback address of host `i` (each host its own, as on separate
/// machines, so each certificate names a different address).
fn addr(i: usize) -> String {
    format!("127.0.0.{}", i + 1)
}

/// Wait until `daemon` sees all three hosts alive and `id` running
/// somewhere.
async fn formed(daemon: &Daemon, id: &str) {
    let started = Instant::now();
    loop {
        let status = daemon.try_status().await.ok();
        let cluster = status.as_ref().and_then(|s| s.cluster.as_ref());
        let alive = cluster.map_or(0, |c| c.hosts.iter().filter(|h| h.alive).count());
        let local_running = status.as_ref().is_some_and(|s| {
            s.operators
                .iter()
                .any(|o| o.id == id && o.state == SupervisedState::Running)
        });
        let placed = cluster.is_some_and(|c| {
            c.operators.iter().any(|p| {
                p.id == id
                    && p.host.is_some()
                    && (local_running
                        || p.status
                            .as_ref()
                            .is_some_and(|s| s.state == SupervisedState::Running))
            })
        });
        if alive == 3 && placed {
            return;
        }
        assert!(
            started.elapsed() < SETTLE,
            "the TLS cluster did not form within {SETTLE:?}: {cluster:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An outside nats-server (no JetStream) whose cluster block routes to
/// `route`, with `tls` (cert, key, ca) or none.
fn outsider(route: &str, tls: Option<(&TestCa, &str)>) -> NatsServer {
    let port = free_ports(1).expect("port")[0];
    let tls_block = match tls {
        Some((ca, name)) => {
            let (cert, key) = ca.route_cert(name, &["127.0.0.4"]).expect("certificate");
            format!(
                "  tls {{\n    cert_file: {:?}\n    key_file: {:?}\n    ca_file: {:?}\n    \
                 verify: true\n    timeout: 2\n  }}\n",
                cert.display().to_string(),
                key.display().to_string(),
                ca.ca_file().display().to_string()
            )
        }
        None => String::new(),
    };
    NatsServer::start_with(NatsServerOptions {
        no_jetstream: true,
        extra_config: format!(
            "cluster {{\n  name: \"switchboard\"\n  listen: \"127.0.0.4:{port}\"\n{tls_block}  \
             routes: [\"nats-route://{route}\"]\n}}\n"
        ),
        ..NatsServerOptions::default()
    })
    .expect("outside nats-server")
}

/// How many messages a client of `server` subscribed to everything
/// receives within `within` (stops at the first when `first` is set).
async fn traffic_seen(server: &NatsServer, within: Duration, first: bool) -> usize {
    let client = async_nats::connect(server.url())
        .await
        .expect("connect to the outside server");
    let mut all = client.subscribe(">").await.expect("subscribe");
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, all.next()).await {
        seen += 1;
        if first {
            break;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_routes_form_the_cluster_and_refuse_servers_without_the_clusters_certificate() {
    let ca = TestCa::new().expect("cluster CA");
    let ports = free_ports(3).expect("ports");
    let route = |i: usize| format!("{}:{}", addr(i), ports[i]);
    let mut daemons = Vec::new();
    for i in 0..HOSTS.len() {
        let table = ClusterTable::host_of(&HOSTS, i, route)
            .with_tls(&ca, &addr(i))
            .expect("route certificate");
        let mut config = DaemonConfig::new().cluster(table);
        if i == 0 {
            config = config.manifest("tls-ping.toml", pingbot_manifest("tls-ping"));
        }
        daemons.push(config.start().await);
    }
    let started = Instant::now();
    formed(&daemons[2], "tls-ping").await;
    println!(
        "TLS cluster formed, operator placed, in {:?}",
        started.elapsed()
    );

    // `tail` on one host shows the bus of the whole cluster: a `!ping`
    // published on h0, and the bot's `pong` from whichever host runs it.
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(daemons[2].config_path())
        .args(["tail", "#"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("switchboard tail");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        tail.stdout.take().expect("stdout"),
    ));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let ping = switchboard_bus::Envelope::new(
        "test",
        serde_json::json!({"text": "!ping", "sender": "t", "room": "r"}),
    );
    daemons[0]
        .bus
        .publish("chat.t.test.r.message", &ping)
        .await
        .expect("publish");
    daemons[0].bus.flush().await.expect("flush");
    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let both = |seen: &[String]| {
        seen.iter().any(|l| l.contains("!ping")) && seen.iter().any(|l| l.contains("pong"))
    };
    while let Ok(Ok(Some(line))) = tokio::time::timeout_at(until, lines.next_line()).await {
        seen.push(line);
        if both(&seen) {
            break;
        }
    }
    assert!(
        both(&seen),
        "tail on h2 did not show h0's !ping and the bot's pong: {seen:?}"
    );
    drop(tail);

    // Outsiders route to h0. Neither a plain server nor one with another
    // CA's certificate gets in; both are watched side by side.
    let plain = outsider(&route(0), None);
    let stranger_ca = TestCa::new().expect("another CA");
    let stranger = outsider(&route(0), Some((&stranger_ca, "stranger")));
    let (plain_seen, stranger_seen) = tokio::join!(
        traffic_seen(&plain, WATCH, false),
        traffic_seen(&stranger, WATCH, false)
    );
    assert_eq!(
        plain_seen,
        0,
        "a server without TLS joined the cluster's routes; its log:\n{}",
        plain.log()
    );
    assert_eq!(
        stranger_seen,
        0,
        "a server with another CA's certificate joined; its log:\n{}",
        stranger.log()
    );
    // The refusal is TLS's, not a wrong address: h0's side of it shows
    // in the outsider's log as a failed route handshake.
    let log = stranger.log();
    assert!(
        log.contains("TLS") || log.contains("tls"),
        "the stranger's log does not name TLS:\n{log}"
    );

    // The control: a certificate from the cluster's CA gets in, and its
    // client sees the cluster's traffic (so the zero counts above are not
    // a watcher that cannot see anything).
    let friend = outsider(&route(0), Some((&ca, "friend")));
    let friend_seen = traffic_seen(&friend, SETTLE, true).await;
    assert!(
        friend_seen > 0,
        "a server with the cluster CA's certificate saw no traffic; its log:\n{}",
        friend.log()
    );
    drop(friend);

    // The cluster is unharmed: still three hosts, the operator running.
    formed(&daemons[1], "tls-ping").await;
}
