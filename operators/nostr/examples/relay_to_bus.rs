//! Measures the operator end to end: N notes written by the independent
//! client to one or two real relays (one websocket, as fast as the relay
//! takes them), until all N are published on the bus, each once.
//!
//!     cargo run --release -p switchboard-nostr --example relay_to_bus -- 500
//!
//! Needs `make tools` (nats-server, nostr-relay, the Python client) and
//! the operator binary (`cargo build --release -p switchboard-nostr`).
//! Prints the relay-side write time, the time until the last event was on
//! the bus, and events per second; nothing is asserted.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use switchboard_bus::proto::{launch, ChatPattern};
use switchboard_bus::{Bus, BusOptions};
use switchboard_testkit::nostr::NostrRelay;
use switchboard_testkit::NatsServer;

fn peer(args: &[&str]) -> Value {
    let python = switchboard_testkit::workspace_root().join(".tools/venv/bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peer/nostr_peer.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("python (make tools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    for relays in [1, 2] {
        let servers: Vec<NostrRelay> = (0..relays)
            .map(|_| NostrRelay::start().expect("nostr-relay"))
            .collect();
        let urls: Vec<String> = servers.iter().map(NostrRelay::url).collect();
        let nats = NatsServer::start().expect("nats-server");
        let bus = Bus::connect(&BusOptions::new(&nats.url()), "bench")
            .await
            .expect("bus");
        let mut events = bus
            .subscribe(&ChatPattern::chat().protocol("nostr").instance("bench"))
            .await
            .expect("subscribe");
        bus.sync().await.expect("sync");
        let config = json!({
            "relays": urls,
            "secret_key": "6b911fd37cdf5c81d4c0adb1ab7fa822ed253ab0ad9aa18d77257c88b29b718e",
            "subscriptions": [{"name": "notes", "kinds": [1]}],
        });
        // target/<profile>/examples/relay_to_bus -> target/<profile>/switchboard-nostr
        let exe = std::env::current_exe().expect("current_exe");
        let bin = exe
            .parent()
            .and_then(|p| p.parent())
            .expect("target dir")
            .join("switchboard-nostr");
        let mut child = tokio::process::Command::new(bin)
            .env(launch::ID, "bench")
            .env(launch::NATS_URL, nats.url())
            .env(launch::CONFIG, config.to_string())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the operator");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let secret = peer(&["keygen"])["secret"].as_str().unwrap().to_string();
        let started = Instant::now();
        // The same N events to each relay, one relay after the other.
        let out = peer(&["bulk", &urls.join(","), &secret, &n.to_string()]);
        let write_secs = out["seconds"].as_f64().unwrap_or(0.0);
        let ids: HashSet<String> = out["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let mut got: HashSet<String> = HashSet::new();
        let mut copies = 0usize;
        while got.len() < ids.len() {
            match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
                Ok(Some(d)) => {
                    copies += 1;
                    got.insert(d.envelope().body["id"].as_str().unwrap_or("").to_string());
                }
                _ => break,
            }
        }
        let total = started.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        while let Some(Some(_)) = futures::FutureExt::now_or_never(events.next()) {
            copies += 1;
        }
        println!(
            "relays={relays} events={n} on_bus={} copies={copies} relay_write={write_secs:.2}s until_last_on_bus={:.2}s rate={:.0}/s",
            got.len(),
            total.as_secs_f64(),
            got.len() as f64 / total.as_secs_f64()
        );
        let _ = child.kill().await;
    }
}
