//! Relays controlled over the bus (GenNostr's `add_relay`,
//! `remove_relay`, `list_relays`, `send_message` to one relay,
//! `broadcast_message`) and relay events published on it, against real
//! relays (PyPI `nostr-relay`) and a real nats-server.

mod common;

use common::{config, Harness, Peer};
use serde_json::json;
use switchboard_testkit::nostr::NostrRelay;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_are_added_removed_and_addressed_over_the_bus_until_a_reload_says_otherwise() {
    let a = NostrRelay::start().expect("nostr-relay (make tools)");
    let b = NostrRelay::start().expect("nostr-relay (make tools)");
    let mut h = Harness::new("nostr-ctl").await;
    // Off by default: refused with what to do.
    let off = config(std::slice::from_ref(&a.url()), json!({}));
    h.start_bot(off).await;
    let ack = h.request("_", "relay-add", json!({"url": b.url()})).await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert!(
        ack["error"]
            .as_str()
            .unwrap()
            .contains("relay_control = true"),
        "{ack}"
    );
    let ack = h
        .request("_", "relay-remove", json!({"url": a.url()}))
        .await;
    assert_eq!(ack["ok"], false, "{ack}");
    h.kill_bot().await;

    let manifest = config(
        std::slice::from_ref(&a.url()),
        json!({"relay_control": true}),
    );
    h.start_bot(manifest.clone()).await;
    h.relay_state(&a.url(), "connected").await;
    let connected = h.relay_event(&a.url(), "relay-connected", |_| true).await;
    assert_eq!(connected.envelope().body["sender"], a.url().as_str());
    assert_eq!(h.relays().await[&a.url()]["origin"], "config");

    // Added: connected, listed as from the bus, with its flags.
    let ack = h
        .request("_", "relay-add", json!({"url": b.url(), "write": true}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let listed = ack["relays"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|r| r["url"] == b.url().as_str() && r["origin"] == "bus" && r["read"] == true),
        "{ack}"
    );
    h.relay_event(&b.url(), "relay-connected", |_| true).await;
    h.relay_state(&b.url(), "connected").await;

    // One event to one named relay; then to all of them.
    let ack = h
        .request(
            "_",
            "note",
            json!({"text": "to b only", "relays": [b.url()]}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["relays"].as_array().unwrap().len(), 1, "{ack}");
    assert_eq!(ack["relays"][0]["url"], b.url().as_str());
    let only_b = ack["id"].clone();
    assert!(Peer::fetch(&a.url(), json!({"ids": [only_b]})).is_empty());
    assert_eq!(Peer::fetch(&b.url(), json!({"ids": [only_b]})).len(), 1);
    let ack = h.request("_", "note", json!({"text": "to all"})).await;
    assert_eq!(ack["relays"].as_array().unwrap().len(), 2, "{ack}");
    // The bot reads what only the added relay carries.
    let alice = Peer::keygen();
    let sk = alice["secret"].as_str().unwrap();
    let on_b = Peer::publish(&[&b.url()], sk, "only on b", json!([]));
    h.event_with_id(on_b["id"].as_str().unwrap()).await;

    // Refusals say what to do.
    let ack = h
        .request(
            "_",
            "note",
            json!({"text": "x", "relays": ["ws://127.0.0.1:9"]}),
        )
        .await;
    assert_eq!(ack["ok"], false);
    assert!(
        ack["error"].as_str().unwrap().contains("relay-add"),
        "{ack}"
    );
    let ack = h
        .request("_", "relay-add", json!({"url": "http://example.com"}))
        .await;
    assert!(
        ack["error"].as_str().unwrap().contains("websocket"),
        "{ack}"
    );

    // Removed: disconnected with the reason, not read any more.
    let ack = h
        .request("_", "relay-remove", json!({"url": a.url()}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let gone = h
        .relay_event(&a.url(), "relay-disconnected", |_| true)
        .await;
    assert_eq!(
        gone.envelope().body["reason"],
        "removed over the bus",
        "{:?}",
        gone.envelope().body
    );
    let ack = h
        .request("_", "relay-remove", json!({"url": b.url()}))
        .await;
    assert_eq!(ack["ok"], false);
    assert!(
        ack["error"].as_str().unwrap().contains("only relay"),
        "{ack}"
    );

    // A reload that leaves a's manifest entry as it was keeps both
    // changes; one that changes it brings a back.
    let mut same = manifest.clone();
    same["collect"] = json!("100ms");
    assert!(
        h.control(json!({"verb": "reload", "config": same}))
            .await
            .ok
    );
    let relays = h.relays().await;
    assert!(!relays.contains_key(&a.url()), "{relays:?}");
    assert_eq!(relays[&b.url()]["origin"], "bus", "{relays:?}");
    let changed = config(
        &[],
        json!({"relays": [{"url": a.url(), "write": false}], "collect": "100ms",
               "relay_control": true}),
    );
    assert!(
        h.control(json!({"verb": "reload", "config": changed}))
            .await
            .ok
    );
    let back = h.relay_state(&a.url(), "connected").await;
    assert_eq!(back["origin"], "config");
    assert_eq!(back["write"], false);
    assert_eq!(h.relays().await[&b.url()]["origin"], "bus");
}
