//! Bad input and a dying server: counted, logged, survived.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use switchboard_bus::{Bus, BusOptions, Envelope, Pattern};
use switchboard_testkit::NatsServer;

#[tokio::test]
async fn garbage_payloads_are_counted_and_the_stream_goes_on() {
    let server = NatsServer::start().expect("nats-server");
    let opts = BusOptions::new(&server.url());
    let bus = Bus::connect(&opts, "t").await.unwrap();
    let mut sub = bus
        .subscribe(&Pattern::parse("chat.#").unwrap())
        .await
        .unwrap();
    bus.sync().await.unwrap();
    let garbage: [&[u8]; 6] = [
        b"\xff\xfe\x00garbage",
        b"",
        b"[1,2,3]",
        br#"{"source":"x"}"#,
        br#"{"source":"x","timestamp":"yesterday","body":1}"#,
        br#"{"source":7,"timestamp":"2026-01-01T00:00:00Z","body":1}"#,
    ];
    for g in garbage {
        bus.publish_bytes("chat.bad", Bytes::from_static(g))
            .await
            .unwrap();
    }
    let good = Envelope::new("t", serde_json::json!({"ok": true}));
    bus.publish("chat.good", &good).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the good envelope arrives after the garbage")
        .unwrap();
    assert_eq!(d.envelope(), &good);
    let stats = bus.stats().snapshot();
    assert_eq!(stats.malformed, garbage.len() as u64);
    assert_eq!(stats.received, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_during_an_outage_arrive_after_the_server_restarts() {
    let mut server = NatsServer::start().expect("nats-server");
    let opts = BusOptions::new(&server.url());
    // One client publishes and listens: on reconnect the client restores
    // its subscriptions before it sends what it queued, so nothing queued
    // can outrun the subscription.
    let bus = Bus::connect(&opts, "t").await.unwrap();
    let mut sub = bus
        .subscribe(&Pattern::parse("chat.gap.#").unwrap())
        .await
        .unwrap();
    bus.sync().await.unwrap();

    server.kill();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while bus.is_connected() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "client never noticed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut sent = Vec::new();
    for i in 0..200 {
        let env = Envelope::new("t", serde_json::json!({"n": i}));
        bus.publish("chat.gap.n", &env).await.unwrap();
        sent.push(env);
    }
    server.restart().expect("restart on the same port");

    for want in &sent {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("queued message arrives")
            .unwrap();
        assert_eq!(d.envelope(), want);
    }
    let stats = bus.stats().snapshot();
    assert!(stats.reconnects >= 1, "{stats:?}");
}

#[tokio::test]
async fn connect_errors_say_what_to_do() {
    // Nothing listens on this port (it was just freed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = BusOptions::new(&format!("nats://127.0.0.1:{port}"))
        .connect_timeout(Duration::from_millis(300));
    let err = Bus::connect(&opts, "t").await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("is nats-server running"), "{msg}");
    let err = Bus::connect(&BusOptions::new("nats://[not a url"), "t")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bad NATS URL"), "{err}");
}

#[tokio::test]
async fn wrong_credentials_are_refused_clearly() {
    let server = NatsServer::start_with(switchboard_testkit::NatsServerOptions {
        user_password: Some(("bot".into(), "right-pass".into())),
        ..Default::default()
    })
    .expect("nats-server");
    let ok = BusOptions::new(&server.url()).user_password("bot", "right-pass");
    Bus::connect(&ok, "t").await.expect("right password works");
    let bad = BusOptions::new(&server.url())
        .user_password("bot", "wrong-pass")
        .connect_timeout(Duration::from_secs(2));
    let err = Bus::connect(&bad, "t").await.unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains("wrong-pass"), "secret leaked: {msg}");
    assert!(
        msg.contains("refused") || msg.contains("cannot reach"),
        "{msg}"
    );
}

/// `published` counts what was written to the connection; what waits for
/// a reconnect is `publish_pending`, not silently "published".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_waiting_for_a_reconnect_are_pending_not_published() {
    let mut server = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&BusOptions::new(&server.url()), "t")
        .await
        .unwrap();
    let env = Envelope::new("t", serde_json::json!({"n": 1}));
    for _ in 0..10 {
        bus.publish("chat.a", &env).await.unwrap();
    }
    bus.flush().await.unwrap();
    let c = bus.counters();
    assert_eq!((c.published, c.extra["publish_pending"]), (10, 0), "{c:?}");

    server.kill();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bus.is_connected() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw the server go"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..5 {
        bus.publish("chat.a", &env).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = bus.counters();
    assert_eq!((c.published, c.extra["publish_pending"]), (10, 5), "{c:?}");

    server.restart().expect("restart");
    while bus.counters().extra["publish_pending"] > 0 {
        assert!(
            tokio::time::Instant::now() < deadline + Duration::from_secs(10),
            "never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(bus.counters().published, 15);
}

/// Two subscriptions to one pattern share the client's NATS subscription
/// (the second through the fan-out); a full queue on either drops messages
/// and counts them, never cuts the connection, and both go on once read;
/// dropping them gives the NATS subjects back (a new one still works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscription_drops_and_counts_and_goes_on() {
    let server = NatsServer::start().expect("nats-server");
    let url = server.url();
    let publisher = Bus::connect(&BusOptions::new(&url), "pub").await.unwrap();
    let listener = Bus::connect(&BusOptions::new(&url).subscription_capacity(8), "sub")
        .await
        .unwrap();
    let pattern = Pattern::parse("chat.slow.*").unwrap();
    let mut direct = listener.subscribe(&pattern).await.unwrap();
    let mut shared = listener.subscribe(&pattern).await.unwrap();
    listener.sync().await.unwrap();
    for i in 0..100 {
        let env = Envelope::new("pub", serde_json::json!({ "n": i }));
        publisher.publish("chat.slow.x", &env).await.unwrap();
    }
    publisher.sync().await.unwrap();
    listener.sync().await.unwrap();
    // Each queue kept its first 8; the rest were dropped.
    for sub in [&mut direct, &mut shared] {
        for i in 0..8 {
            let d = next(sub).await;
            assert_eq!(d.body_json(), format!("{{\"n\":{i}}}"));
        }
    }
    // The shared copies are counted exactly; async-nats reports the direct
    // ones through a bounded event queue (some may go uncounted).
    let stats = listener.stats().snapshot();
    assert!(stats.dropped >= 92, "{stats:?}");
    assert_eq!((stats.reconnects, stats.extra["disconnects"]), (0, 0));

    // Read again, both get the next message.
    let after = Envelope::new("pub", serde_json::json!({ "n": "after" }));
    publisher.publish("chat.slow.y", &after).await.unwrap();
    assert_eq!(next(&mut direct).await.id(), after.id());
    assert_eq!(next(&mut shared).await.id(), after.id());

    // Given back: a new pair on the same pattern works as the first did.
    drop((direct, shared));
    let mut again = listener.subscribe(&pattern).await.unwrap();
    let mut again2 = listener.subscribe(&pattern).await.unwrap();
    listener.sync().await.unwrap();
    let last = Envelope::new("pub", serde_json::json!({ "n": "last" }));
    publisher.publish("chat.slow.z", &last).await.unwrap();
    assert_eq!(next(&mut again).await.id(), last.id());
    assert_eq!(next(&mut again2).await.id(), last.id());
}

/// The next delivery within 5 s.
async fn next(sub: &mut switchboard_bus::Subscription) -> switchboard_bus::Delivery {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a delivery")
        .expect("open")
}

/// A daemon stopped by Ctrl-C gets the signal together with its embedded
/// nats-server (one process group): closing its connection then must not
/// wait for a server that is not coming back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_returns_when_the_server_is_gone() {
    let mut server = NatsServer::start().expect("nats-server");
    let opts = BusOptions::new(&server.url());
    let bus = Bus::connect(&opts, "t").await.unwrap();
    bus.sync().await.unwrap();
    server.kill();
    // Queued while disconnected: what a flush would wait for.
    let _ = bus
        .publish("chat.gone", &Envelope::new("t", serde_json::json!({})))
        .await;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), bus.close())
        .await
        .expect("close returns without a server");
    eprintln!("closed in {:?}", started.elapsed());
}
