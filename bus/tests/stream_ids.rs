//! The `Nats-Msg-Id` header goes only where a stream can store a message
//! twice: with `stream_ids` (a daemon that keeps a stream) on captured
//! subjects. Elsewhere it would cost both ends a header map per message
//! for nothing (issue 21).

use std::time::Duration;

use futures::StreamExt;
use switchboard_bus::stream::{StreamSpec, MSG_ID_HEADER};
use switchboard_bus::{Bus, BusOptions, Envelope};
use switchboard_testkit::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_go_in_headers_only_where_a_stream_keeps_the_subject() {
    let server = NatsServer::start().expect("nats-server");
    let url = server.url();
    let with = Bus::connect(&BusOptions::new(&url).stream_ids(true), "with")
        .await
        .unwrap();
    let without = Bus::connect(&BusOptions::new(&url), "without")
        .await
        .unwrap();
    let spec = StreamSpec {
        name: "IDS".into(),
        max_age: Duration::from_secs(600),
        max_bytes: 1 << 20,
        duplicate_window: Duration::from_secs(60),
        max_message_bytes: 0,
        replicas: 1,
    };
    with.ensure_stream(&spec).await.unwrap();
    let raw = async_nats::connect(&url).await.unwrap();
    let mut seen = raw.subscribe(">").await.unwrap();
    raw.flush().await.unwrap();
    with.sync().await.unwrap();

    // Captured subject, stream known: the header, and a republish is
    // stored once.
    let once = Envelope::new("with", serde_json::json!("once"));
    with.publish("chat.t.x.r.message", &once).await.unwrap();
    with.publish("chat.t.x.r.message", &once).await.unwrap();
    // Not captured (`sb.op` heartbeats and control are live only): none.
    with.publish("sb.op.t.note", &once).await.unwrap();
    // No stream known: none, and a republish is stored twice.
    let twice = Envelope::new("without", serde_json::json!("twice"));
    without.publish("chat.t.x.r.message", &twice).await.unwrap();
    without.publish("chat.t.x.r.message", &twice).await.unwrap();
    with.sync().await.unwrap();
    without.sync().await.unwrap();

    let mut headers = Vec::new();
    while headers.len() < 5 {
        let m = tokio::time::timeout(Duration::from_secs(5), seen.next())
            .await
            .expect("a message")
            .expect("open");
        if m.subject.starts_with("_INBOX") || m.subject.starts_with("$JS") {
            continue;
        }
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(MSG_ID_HEADER))
            .map(|v| v.to_string());
        headers.push((m.subject.to_string(), id));
    }
    let once_id = once.id().map(str::to_owned);
    // Two publishers: no order between them.
    headers.sort();
    let mut want = vec![
        ("chat.t.x.r.message".to_string(), once_id.clone()),
        ("chat.t.x.r.message".to_string(), once_id),
        ("sb.op.t.note".to_string(), None),
        ("chat.t.x.r.message".to_string(), None),
        ("chat.t.x.r.message".to_string(), None),
    ];
    want.sort();
    assert_eq!(headers, want);
    let state = with.stream_state("IDS").await.unwrap();
    assert_eq!(state.messages, 3, "once + twice x2: {state:?}");
}

#[test]
fn a_launch_with_a_stream_turns_ids_on() {
    let env = |stream: Option<&'static str>| {
        let launch = switchboard_bus::LaunchEnv::from_lookup(|name| match name {
            "SWITCHBOARD_ID" => Some("op".to_string()),
            "SWITCHBOARD_STREAM" => stream.map(str::to_string),
            _ => None,
        })
        .unwrap();
        format!("{:?}", launch.nats)
    };
    assert!(env(Some("SWITCHBOARD")).contains("stream_ids: true"));
    assert!(env(None).contains("stream_ids: false"));
}
