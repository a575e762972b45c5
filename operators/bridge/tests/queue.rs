//! A gateway's queue against a real nats-server: over the rate messages
//! wait in order; past `max_queue` they are shed and counted, so
//! relayed + shed + waiting always equals what was pushed.

use std::time::Duration;

use futures::StreamExt;
use switchboard_bridge::config::Rate;
use switchboard_bridge::queue::{GatewayQueue, DISCARDED, RELAYED, SHED};
use switchboard_bridge::relay::Outgoing;
use switchboard_bus::proto::{ChatAddress, Envelope};
use switchboard_bus::{Bus, BusOptions};
use switchboard_testkit::NatsServer;

#[tokio::test]
async fn a_full_queue_sheds_and_counts_and_keeps_order() {
    let nats = NatsServer::start().expect("nats-server (make tools)");
    let bus = Bus::connect(&BusOptions::new(&nats.url()), "bridge")
        .await
        .expect("bus");
    let watcher = Bus::connect(&BusOptions::new(&nats.url()), "test")
        .await
        .expect("bus");
    let mut sub = watcher.subscribe("send.irc.b.#").await.expect("subscribe");
    watcher.sync().await.expect("sync");
    // Two at once, then one every 100 s: the rest wait or are shed.
    let rate = Rate {
        burst: 2,
        per_second: 0.01,
        max_queue: 3,
    };
    let queue = GatewayQueue::spawn("g", &rate, bus.clone());
    const PUSHED: u64 = 10;
    for i in 0..PUSHED {
        queue.push(Outgoing {
            subject: "send.irc.b.=23b.message".to_owned(),
            envelope: Envelope::new("bridge", serde_json::json!({"text": i.to_string()})),
            to: ChatAddress::new("irc", "b", "#b"),
        });
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("the burst is sent")
            .expect("open");
        got.push(d.envelope().body["text"].as_str().unwrap().to_owned());
    }
    // The first two, in order.
    assert_eq!(got, ["0", "1"]);
    let relayed = bus.stats().counter(RELAYED).get();
    let shed = bus.stats().counter(SHED).get();
    assert_eq!(relayed, 2);
    // The test runs on one thread: nothing was sent while pushing, so
    // three were queued and the other seven shed; one of the queued
    // waits in the task's hand, two in the queue.
    assert_eq!(shed, PUSHED - 3);
}

fn outgoing(text: &str) -> Outgoing {
    Outgoing {
        subject: "send.irc.b.=23b.message".to_owned(),
        envelope: Envelope::new("bridge", serde_json::json!({"text": text})),
        to: ChatAddress::new("irc", "b", "#b"),
    }
}

#[tokio::test]
async fn a_paused_queue_holds_and_closing_counts_what_is_left() {
    let nats = NatsServer::start().expect("nats-server (make tools)");
    let bus = Bus::connect(&BusOptions::new(&nats.url()), "bridge")
        .await
        .expect("bus");
    let mut sub = bus.subscribe("send.irc.b.#").await.expect("subscribe");
    bus.sync().await.expect("sync");
    let rate = Rate {
        burst: 1,
        per_second: 0.01,
        max_queue: 10,
    };
    let queue = GatewayQueue::spawn("g", &rate, bus.clone());
    queue.pause(true);
    queue.push(outgoing("held"));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), sub.next())
            .await
            .is_err(),
        "a paused queue sent"
    );
    queue.pause(false);
    let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("sent after resume")
        .expect("open");
    assert_eq!(d.envelope().body["text"], "held");
    // The bucket is empty now: these wait, and are discarded on close.
    queue.push(outgoing("a"));
    queue.push(outgoing("b"));
    assert_eq!(queue.close(), 2);
    assert_eq!(bus.stats().counter(DISCARDED).get(), 2);
    assert_eq!(bus.stats().counter(RELAYED).get(), 1);
}
