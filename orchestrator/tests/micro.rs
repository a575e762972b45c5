//! NATS service discovery: the daemon answers `$SRV.PING`, `$SRV.INFO`
//! and `$SRV.STATS` (plain, with its name, with name and id) in the NATS
//! micro protocol's documented shapes (ADR-32), asked by the CLI's user as
//! `nats micro ls` would.

mod common;

use std::time::Duration;

use common::Daemon;
use serde_json::Value;
use switchboard_proto::api::{StatusReply, StatusRequest};

async fn ask(d: &Daemon, subject: &str) -> Value {
    d.bus
        .request_json(subject, &serde_json::json!({}), Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{subject}: {e}"))
}

fn identity(v: &Value, kind: &str) -> String {
    assert_eq!(
        v["type"],
        format!("io.nats.micro.v1.{kind}_response"),
        "{v}"
    );
    assert_eq!(v["name"], "switchboard", "{v}");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{v}");
    assert!(v["metadata"].is_object(), "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    assert!(!id.is_empty());
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_answers_micro_ping_info_and_stats() {
    let d = Daemon::start(&[]).await;
    let id = identity(&ask(&d, "$SRV.PING").await, "ping");
    assert_eq!(
        identity(&ask(&d, "$SRV.PING.switchboard").await, "ping"),
        id
    );
    assert_eq!(
        identity(
            &ask(&d, &format!("$SRV.PING.switchboard.{id}")).await,
            "ping"
        ),
        id
    );

    let info = ask(&d, "$SRV.INFO.switchboard").await;
    identity(&info, "info");
    assert!(info["description"].as_str().is_some_and(|s| !s.is_empty()));
    let subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e["subject"].as_str().expect("subject"))
        .collect();
    assert_eq!(subjects, ["sb.api.status", "sb.api.ctl", "sb.api.logs"]);

    // One status and one unknown-id logs request, then the stats show them.
    let _: StatusReply = d
        .bus
        .request_json("sb.api.status", &StatusRequest {}, Duration::from_secs(5))
        .await
        .expect("status");
    let _: Value = d
        .bus
        .request_json(
            "sb.api.logs",
            &serde_json::json!({"id": "nobody"}),
            Duration::from_secs(5),
        )
        .await
        .expect("logs");
    let stats = ask(&d, "$SRV.STATS").await;
    identity(&stats, "stats");
    assert!(
        stats["started"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{stats}"
    );
    let e = &stats["endpoints"];
    assert_eq!(e[0]["name"], "status");
    assert!(e[0]["num_requests"].as_u64() >= Some(1), "{stats}");
    assert_eq!(e[0]["num_errors"], 0, "{stats}");
    assert!(e[0]["processing_time"].as_u64() > Some(0), "{stats}");
    assert_eq!(e[2]["name"], "logs");
    assert_eq!(e[2]["num_requests"], 1, "{stats}");
    assert_eq!(e[2]["num_errors"], 1, "an unknown id is an error: {stats}");
}
