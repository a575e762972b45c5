//! The bridge process on a real nats-server, with the test playing the
//! protocol operators, for what real IRC servers do not do: show a bot its
//! own posts. The bridge must not relay its own copy back (the echo), a
//! copy another bridge made (`bridge-origin`), or its own envelopes.

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use switchboard_bridge::relay::ORIGIN_HEADER;
use switchboard_bus::proto::{launch, ready_subject, ChatAddress, Envelope, OperatorId};
use switchboard_bus::{Bus, BusOptions, Subscription};
use switchboard_testkit::NatsServer;

const WAIT: Duration = Duration::from_secs(15);

async fn said(bus: &Bus, source: &str, room: &ChatAddress, sender: &str, text: &str) -> Envelope {
    let env = Envelope::new(
        source,
        json!({"sender": sender, "room": room.room, "text": text}),
    )
    .with_header("room", room.room.as_str());
    bus.publish(&room.event_subject("message"), &env)
        .await
        .unwrap();
    bus.flush().await.unwrap();
    env
}

/// The texts of the next send requests within `within`.
async fn sends(sub: &mut Subscription, within: Duration) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout_at(deadline, sub.next()).await {
        out.push((
            d.subject.clone(),
            d.envelope().body["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_copies_and_its_own_envelopes_are_not_relayed() {
    let nats = NatsServer::start().expect("nats-server (make tools)");
    let bus = Bus::connect(&BusOptions::new(&nats.url()), "test")
        .await
        .unwrap();
    let mut ready = bus
        .subscribe_raw(&ready_subject(&OperatorId::new("bridge").unwrap()))
        .await
        .unwrap();
    let mut out = bus.subscribe("send.#").await.unwrap();
    bus.sync().await.unwrap();
    let a = ChatAddress::new("nostr", "n", "#a");
    let b = ChatAddress::new("irc", "b", "#b");
    let config = json!({"gateways": [{"name": "g", "members": [
        {"protocol": "nostr", "instance": "n", "room": "#a"},
        {"protocol": "irc", "instance": "b", "room": "#b"},
    ], "rate": {"burst": 100, "per_second": 100.0}}]});
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bridge.log");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard-bridge"));
    for var in launch::ALL {
        cmd.env_remove(var);
    }
    let _bridge = cmd
        .env(launch::ID, "bridge")
        .env(launch::NATS_URL, nats.url())
        .env(launch::HEARTBEAT_MS, "500")
        .env(launch::CONFIG, config.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn switchboard-bridge");
    tokio::time::timeout(WAIT, ready.next())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no ready; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
        .unwrap();

    // ann on nostr says hi: it goes to #b.
    // Sources are the instances: chat events are authentic only from their
    // owner (docs/PROTOCOL.md), else the bridge's runtime drops them.
    said(&bus, "n", &a, "ann", "hi").await;
    let got = sends(&mut out, Duration::from_secs(1)).await;
    assert_eq!(
        got,
        [(b.send_subject("message"), "<ann@nostr> hi".to_owned())]
    );

    // The IRC side shows the bot its own post (an echo, no header): not
    // relayed back to #a.
    said(&bus, "b", &b, "sbb", "<ann@nostr> hi").await;
    // A copy made by another bridge (it carries bridge-origin): not relayed.
    let copy = Envelope::new(
        "b",
        json!({"sender": "sbb", "room": "#b", "text": "copied"}),
    )
    .with_header("room", "#b")
    .with_header(ORIGIN_HEADER, "x nostr/n/#a");
    bus.publish(&b.event_subject("message"), &copy)
        .await
        .unwrap();
    // Its own envelope on a chat subject: not relayed (its runtime drops
    // it before the bridge sees it: `bridge` does not own instance `b`).
    let own = Envelope::new(
        "bridge",
        json!({"sender": "x", "room": "#b", "text": "mine"}),
    )
    .with_header("room", "#b");
    bus.publish(&b.event_subject("message"), &own)
        .await
        .unwrap();
    // bob then says the same words as the echo: that is a person, relayed.
    said(&bus, "b", &b, "bob", "<ann@nostr> hi").await;
    let got = sends(&mut out, Duration::from_secs(2)).await;
    assert_eq!(
        got,
        [(
            a.send_subject("message"),
            "<bob@irc> <ann@nostr> hi".to_owned()
        )],
        "log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
