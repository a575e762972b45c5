//! Bad relay input. No real relay sends garbage on purpose, so this one
//! case uses a tiny websocket server in the test (tokio-tungstenite) that
//! speaks NIP-01 frames byte for byte: after the operator's `REQ` it sends
//! a non-JSON frame, an unknown message type, a malformed `EVENT`, an
//! oversize frame, a binary frame, then a genuine signed event.

mod common;

use common::{config, Harness};
use futures::{SinkExt, StreamExt};
use nostr::prelude::{EventBuilder, FinalizeEvent, Keys, Kind};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_counted_and_skipped_and_the_connection_stays() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let keys =
        Keys::parse("1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f").unwrap();
    let good = EventBuilder::new(Kind::TextNote, "genuine")
        .finalize(&keys)
        .unwrap();
    let good_id = good.id.to_hex();
    let good_json = serde_json::to_value(&good).unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        // Wait for the REQ, and answer with the subscription id it used.
        let sub = loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v[0] == "REQ" {
                    break v[1].as_str().unwrap().to_string();
                }
            }
        };
        let frames = [
            "this is not json".to_string(),
            json!(["WHAT", "is this"]).to_string(),
            json!(["EVENT", sub, {"id": 1}]).to_string(),
            json!(["NOTICE", "x".repeat(5000)]).to_string(),
        ];
        for f in frames {
            ws.send(Message::Text(f.into())).await.unwrap();
        }
        ws.send(Message::Binary(vec![0, 1, 2].into()))
            .await
            .unwrap();
        ws.send(Message::Text(
            json!(["EVENT", sub, good_json]).to_string().into(),
        ))
        .await
        .unwrap();
        // Keep the connection open until the test ends.
        while ws.next().await.is_some() {}
    });

    let mut h = Harness::new("nostr-bad-frames").await;
    h.start_bot(config(
        std::slice::from_ref(&url),
        json!({"max_event_bytes": 4096}),
    ))
    .await;
    h.event_with_id(&good_id).await;
    let c = h.counter_reaches("nostr_events_published", 1).await;
    assert_eq!(c["nostr_frames_skipped"], 3, "{c}");
    assert_eq!(c["nostr_dropped_oversize"], 1, "{c}");
    assert_eq!(
        c["nostr_relay_connects"], 1,
        "the connection was dropped: {c}"
    );
    assert!(h.log().contains("skipped a relay frame"), "{}", h.log());
    // Said once per burst: the four bad frames make one warning.
    assert_eq!(
        h.log().matches("skipped a relay frame").count(),
        1,
        "{}",
        h.log()
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_send_requests_are_refused_with_a_reason() {
    let mut h = Harness::new("nostr-bad-requests").await;
    // A relay nobody listens on: requests are still answered.
    h.start_bot(config(&["ws://127.0.0.1:9".to_string()], json!({})))
        .await;
    let ack = h.request("_", "wave", json!({})).await;
    assert_eq!(ack["ok"], false);
    assert!(
        ack["error"].as_str().unwrap().contains("unknown kind"),
        "{ack}"
    );
    let ack = h.request("lobby", "message", json!({"text": "x"})).await;
    assert!(
        ack["error"].as_str().unwrap().contains("root event"),
        "{ack}"
    );
    let ack = h.request("_", "note", json!({"txt": "x"})).await;
    assert!(ack["error"].as_str().unwrap().contains("bad body"), "{ack}");
    // A write relay that is down: refused after publish_timeout, saying so.
    h.kill_bot().await;
    h.start_bot(config(
        &["ws://127.0.0.1:9".to_string()],
        json!({"publish_timeout": "300ms"}),
    ))
    .await;
    let ack = h.request("_", "note", json!({"text": "x"})).await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert!(
        ack["relays"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no OK within"),
        "{ack}"
    );
    let relays = h.relays().await;
    assert!(
        relays["ws://127.0.0.1:9"]["last_error"].is_string(),
        "{relays:?}"
    );
}
