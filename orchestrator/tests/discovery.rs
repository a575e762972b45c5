//! NATS service discovery against a real daemon: `$SRV.PING`, `$SRV.INFO`
//! and `$SRV.STATS` answer with the micro protocol's shapes, by name and
//! by id, and the stats count the API requests served. In cluster mode
//! (three real daemons, their servers clustered) a client on one host
//! hears every host's daemon once, each naming its host and listing the
//! subjects that reach it from there. Runs alone (`.config/nextest.toml`):
//! three daemons and their servers are the whole of a 2-core machine.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Daemon, DaemonConfig, WAIT};
use serde_json::Value;
use switchboard_proto::api::StatusReply;
use switchboard_testkit::daemon::ClusterTable;

async fn ask(d: &Daemon, subject: &str) -> Value {
    d.bus
        .request_json(subject, &serde_json::json!({}), WAIT)
        .await
        .unwrap_or_else(|e| panic!("{subject}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_answers_service_discovery() {
    let d = DaemonConfig::new().start().await;
    let ping = ask(&d, "$SRV.PING").await;
    assert_eq!(ping["type"], "io.nats.micro.v1.ping_response", "{ping}");
    assert_eq!(ping["name"], "switchboard");
    assert_eq!(ping["version"], env!("CARGO_PKG_VERSION"));
    let id = ping["id"].as_str().expect("an id").to_owned();
    assert_eq!(id.len(), 22, "{ping}");

    let info = ask(&d, &format!("$SRV.INFO.switchboard.{id}")).await;
    assert_eq!(info["type"], "io.nats.micro.v1.info_response", "{info}");
    let subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["subject"].as_str())
        .collect();
    assert_eq!(
        subjects,
        ["sb.api.status", "sb.api.ctl", "sb.api.logs"],
        "{info}"
    );

    d.status().await;
    d.status().await;
    let _: Value = d
        .bus
        .request_json("sb.api.logs", &serde_json::json!({"id": "nobody"}), WAIT)
        .await
        .unwrap();
    let stats = ask(&d, "$SRV.STATS.switchboard").await;
    assert_eq!(stats["type"], "io.nats.micro.v1.stats_response", "{stats}");
    let endpoint = |name: &str| {
        stats["endpoints"]
            .as_array()
            .and_then(|e| e.iter().find(|x| x["name"] == name))
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        endpoint("status")["num_requests"].as_u64() >= Some(2),
        "{stats}"
    );
    assert_eq!(
        endpoint("logs")["num_errors"],
        1,
        "an unknown id is an error: {stats}"
    );
    assert!(stats["started"].is_string());

    // Another service's name or another id: no answer from us.
    let other = d
        .bus
        .request_json::<_, Value>(
            "$SRV.PING.someoneelse",
            &serde_json::json!({}),
            std::time::Duration::from_millis(300),
        )
        .await;
    assert!(other.is_err(), "{other:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cluster_host_is_one_instance_reachable_from_any_host() {
    const HOSTS: [&str; 3] = ["s0", "s1", "s2"];
    let mut daemons = Vec::new();
    for table in ClusterTable::loopback(&HOSTS).expect("free ports") {
        daemons.push(DaemonConfig::new().cluster(table).start().await);
    }
    // A client of s1's server, as `nats micro ls` there would be. Routes
    // carry the other daemons' `$SRV.>` interest once they are up.
    let asker = &daemons[1];
    // The CLI's login (the harness's) may call the listed subjects but
    // never read them: it cannot pose as a host's daemon.
    let mut spy = asker
        .bus
        .subscribe_raw("sb.host.>")
        .await
        .expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let pings: Vec<Value> = loop {
        let answers = asker
            .bus
            .request_all(
                "$SRV.PING.switchboard",
                Bytes::from_static(b"{}"),
                Duration::from_millis(700),
            )
            .await
            .expect("$SRV.PING");
        let pings: Vec<Value> = answers
            .iter()
            .map(|a| serde_json::from_slice(a).expect("a JSON answer"))
            .collect();
        if pings.len() >= HOSTS.len() || Instant::now() > deadline {
            break pings;
        }
    };
    let mut hosts: Vec<&str> = pings
        .iter()
        .map(|p| p["metadata"]["host"].as_str().unwrap_or("(none)"))
        .collect();
    hosts.sort_unstable();
    assert_eq!(
        hosts, HOSTS,
        "one answer per host, each naming it: {pings:?}"
    );

    for ping in &pings {
        let host = ping["metadata"]["host"].as_str().expect("host");
        let id = ping["id"].as_str().expect("id");
        let info = ask(asker, &format!("$SRV.INFO.switchboard.{id}")).await;
        assert_eq!(info["metadata"]["host"], host, "{info}");
        let subjects: Vec<String> = info["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .filter_map(|e| e["subject"].as_str().map(str::to_owned))
            .collect();
        let want: Vec<String> = [
            "status", "ctl", "logs", "apply", "drain", "undrain", "restart", "forget",
        ]
        .iter()
        .map(|m| format!("sb.host.{host}.api.{m}"))
        .collect();
        assert_eq!(subjects, want, "{info}");
        // The subject it lists reaches that host's daemon from s1.
        let status: StatusReply = asker
            .bus
            .request_json(&subjects[0], &serde_json::json!({}), WAIT)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", subjects[0]));
        let answered = status.cluster.expect("cluster part").host;
        assert_eq!(answered, host, "{} answered by {answered}", subjects[0]);
        let stats = ask(asker, &format!("$SRV.STATS.switchboard.{id}")).await;
        assert_eq!(stats["metadata"]["host"], host, "{stats}");
        let status_endpoint = stats["endpoints"]
            .as_array()
            .and_then(|e| e.iter().find(|x| x["name"] == "status"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(status_endpoint["subject"], subjects[0].as_str(), "{stats}");
        assert!(
            status_endpoint["num_requests"].as_u64() >= Some(1),
            "{stats}"
        );
    }
    asker.bus.sync().await.expect("sync");
    let seen = futures::FutureExt::now_or_never(futures::StreamExt::next(&mut spy)).flatten();
    assert!(
        seen.is_none(),
        "the CLI's login read {:?}",
        seen.map(|m| m.subject)
    );
    println!("$SRV.PING through s1: {hosts:?}");
}
