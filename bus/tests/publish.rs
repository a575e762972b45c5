//! `Bus::publish` reuses its encoding buffers and its last checked subject
//! (so that a publish allocates nothing of its own, issue 21). What must
//! not change: every message arrives on its own subject with exactly its
//! own bytes, also when a large envelope makes the buffers grow and when
//! messages are still held while the next ones are encoded, and a bad
//! subject is refused whatever was published before it.

use std::time::Duration;

use futures::StreamExt;
use switchboard_bus::{Bus, BusOptions, Envelope, PublishError};
use switchboard_testkit::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_publish_arrives_with_its_own_subject_and_bytes() {
    let server = NatsServer::start().expect("nats-server");
    let url = server.url();
    let bus = Bus::connect(&BusOptions::new(&url), "pub").await.unwrap();
    let raw = async_nats::connect(&url).await.unwrap();
    let mut seen = raw.subscribe("t.>").await.unwrap();
    raw.flush().await.unwrap();
    bus.sync().await.unwrap();

    let small = |n: usize| Envelope::new("pub", serde_json::json!(format!("small {n}")));
    // Over the 64 KiB the publish buffer takes at a time.
    let large = Envelope::new("pub", serde_json::json!("x".repeat(200 * 1024)));
    let mut sent: Vec<(&str, Envelope)> = Vec::new();
    for (n, subject) in ["t.a", "t.a", "t.b", "t.a", "t.b.c"]
        .into_iter()
        .enumerate()
    {
        sent.push((subject, small(n)));
    }
    sent.push(("t.a", large.clone()));
    sent.push(("t.a", small(10)));
    sent.push(("t.c", large));
    // Enough small ones to use up several buffers while the first
    // payloads are still held by the subscriber below.
    for n in 0..600 {
        sent.push((if n % 7 == 0 { "t.d" } else { "t.a" }, small(n)));
    }
    for (subject, envelope) in &sent {
        bus.publish(subject, envelope).await.unwrap();
    }
    // A bad subject is refused even right after a good one was cached.
    for bad in ["t.a.", "t..a", "t. a", "t.*", ""] {
        bus.publish("t.a", &sent[0].1).await.unwrap();
        let err = bus.publish(bad, &sent[0].1).await.unwrap_err();
        assert!(
            matches!(err, PublishError::BadSubject { .. }),
            "{bad:?}: {err}"
        );
    }
    bus.sync().await.unwrap();

    let expected = sent.len() + 5;
    let mut got = Vec::with_capacity(expected);
    while got.len() < expected {
        let m = tokio::time::timeout(Duration::from_secs(10), seen.next())
            .await
            .expect("every message arrives")
            .expect("subscription open");
        got.push(m);
    }
    // Compared only now, with every payload held: a buffer reused under
    // a payload still in use would show here.
    for (i, (m, (subject, envelope))) in got.iter().zip(&sent).enumerate() {
        assert_eq!(m.subject.as_str(), *subject, "message {i}");
        assert_eq!(&m.payload[..], &envelope.to_vec()[..], "message {i}");
    }
    for m in &got[sent.len()..] {
        assert_eq!(m.subject.as_str(), "t.a");
        assert_eq!(&m.payload[..], &sent[0].1.to_vec()[..]);
    }
}
