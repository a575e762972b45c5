//! NATS service discovery against a real daemon: `$SRV.PING`, `$SRV.INFO`
//! and `$SRV.STATS` answer with the micro protocol's shapes, by name and
//! by id, and the stats count the API requests served.

mod common;

use common::{Daemon, DaemonConfig, WAIT};
use serde_json::Value;

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
