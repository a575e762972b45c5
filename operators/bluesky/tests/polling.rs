//! The polling strategy against the local XRPC server: pages, order,
//! exactly once across a SIGKILL, reasons, rate limits, server errors.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{assert_no_secrets, config, Harness, Pds, BOT_DID, WAIT};
use futures::StreamExt;
use serde_json::{json, Value};

fn post(text: &str) -> Value {
    json!({"$type": "app.bsky.feed.post", "text": text, "langs": ["en"], "createdAt": "2026-06-01T00:00:00.000Z"})
}

/// `n` notifications from alice, indexed one per 10 ms from `base`
/// (seconds into 2026-06-01), reasons cycling through the ones Bluesky
/// sends plus one it may add; returns their URIs oldest first.
fn add_notifications(pds: &Pds, from: usize, n: usize) -> Vec<String> {
    let reasons = [
        "mention",
        "reply",
        "quote",
        "like",
        "repost",
        "follow",
        "starterpack-joined",
    ];
    let mut uris = Vec::new();
    for i in from..from + n {
        let reason = reasons[i % reasons.len()];
        let at = format!(
            "2026-06-01T00:{:02}:{:02}.{:03}Z",
            i / 6000,
            (i / 100) % 60,
            (i % 100) * 10
        );
        let (uri, cid, record, subject) = match reason {
            "like" | "repost" => {
                let target = format!("at://{BOT_DID}/app.bsky.feed.post/own{i}");
                let record = json!({"$type": format!("app.bsky.feed.{reason}"),
                    "subject": {"uri": target, "cid": "bafyown"}, "createdAt": at});
                (
                    format!("at://did:plc:alice/app.bsky.feed.{reason}/n{i:04}"),
                    "bafyx".to_string(),
                    record,
                    Some(target),
                )
            }
            "follow" => {
                let record =
                    json!({"$type": "app.bsky.graph.follow", "subject": BOT_DID, "createdAt": at});
                (
                    format!("at://did:plc:alice/app.bsky.graph.follow/n{i:04}"),
                    "bafyf".to_string(),
                    record,
                    None,
                )
            }
            "starterpack-joined" => {
                let record =
                    json!({"$type": "app.bsky.graph.starterpack", "name": "x", "createdAt": at});
                (
                    format!("at://did:plc:alice/app.bsky.graph.starterpack/n{i:04}"),
                    "bafys".to_string(),
                    record,
                    None,
                )
            }
            _ => {
                let (uri, cid) = pds.add_post(
                    "did:plc:alice",
                    "alice.test",
                    &format!("n{i:04}"),
                    post(&format!("note {i}")),
                );
                (uri, cid, post(&format!("note {i}")), None)
            }
        };
        pds.notify(
            reason,
            &uri,
            &cid,
            ("did:plc:alice", "alice.test"),
            record,
            &at,
            subject.as_deref(),
        );
        uris.push(uri);
    }
    uris
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_pages_across_a_sigkill_arrive_once_each_in_order() {
    let pds = Pds::start().await;
    let mut h = Harness::new("bsky-poll").await;
    // Before process_from: never published.
    pds.notify(
        "mention",
        "at://did:plc:alice/app.bsky.feed.post/old",
        "bafyold",
        ("did:plc:alice", "alice.test"),
        post("old"),
        "2026-05-01T00:00:00.000Z",
        None,
    );
    // 3 pages of 100; two notifications share an instant.
    let mut expected = add_notifications(&pds, 0, 300);
    pds.notify(
        "mention",
        "at://did:plc:alice/app.bsky.feed.post/twin",
        "bafytwin",
        ("did:plc:alice", "alice.test"),
        post("twin"),
        "2026-06-01T00:00:01.500Z",
        None,
    );
    let twin_at = expected.iter().position(|u| u.ends_with("n0150")).unwrap();
    // At one instant the server lists the twin first (newest first), so
    // oldest first it comes after n0150.
    expected.insert(
        twin_at + 1,
        "at://did:plc:alice/app.bsky.feed.post/twin".to_string(),
    );
    // A raw subscription counts what is on the wire, repeats included.
    let mut wire = h
        .bus
        .subscribe_raw(&format!("chat.bluesky.{}.>", h.id))
        .await
        .unwrap();
    h.bus.sync().await.unwrap();

    let cfg = config(
        &pds,
        json!({"polling": {"process_from": "2026-05-31T00:00:00Z", "page_size": 100}}),
    );
    h.start_bot(&cfg).await;
    let mut got: Vec<String> = Vec::new();
    while got.len() < 40 {
        let d = h.event(WAIT, |_| true).await;
        got.push(d.envelope().body["uri"].as_str().unwrap().to_string());
    }
    h.kill_bot().await;
    let seen_before_restart = pds.calls("app.bsky.notification.updateSeen").len();
    // More while it is down: a fourth page's worth.
    expected.extend(add_notifications(&pds, 300, 30));
    h.start_bot(&cfg).await;
    while got.len() < expected.len() {
        let d = h.event(WAIT, |_| true).await;
        got.push(d.envelope().body["uri"].as_str().unwrap().to_string());
    }
    let extra = h.drain(Duration::from_millis(1500)).await;
    assert!(
        extra.is_empty(),
        "published again: {:?}",
        extra
            .iter()
            .map(|d| d.envelope().body["uri"].clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(got, expected, "every notification once, oldest first");
    eprintln!(
        "killed {} the first batch was done",
        if seen_before_restart == 0 {
            "before"
        } else {
            "after"
        }
    );

    // On the wire: a repeat is possible only for the one notification that
    // was being marked when the process was killed, and it carries the
    // same envelope id (so subscribers drop it, as above).
    let mut ids: HashMap<String, usize> = HashMap::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), wire.next()).await {
        let env: Value = serde_json::from_slice(&m.payload).unwrap();
        if let Some(uri) = env["body"]["uri"].as_str() {
            *ids.entry(format!("{uri} {}", env["headers"]["id"]))
                .or_default() += 1;
        }
    }
    assert_eq!(
        ids.len(),
        expected.len(),
        "one envelope id per notification"
    );
    assert!(ids.values().filter(|&&n| n > 1).count() <= 1, "{ids:?}");

    // Pages were read with the cursor; updateSeen went with the newest.
    let lists = pds.calls("app.bsky.notification.listNotifications");
    assert!(
        lists.iter().any(|c| c.query.contains("cursor=")),
        "{lists:?}"
    );
    assert_eq!(
        pds.lock().seen_at.as_deref(),
        Some("2026-06-01T00:00:03.290Z")
    );
    assert_eq!(
        pds.calls("com.atproto.server.createSession").len(),
        1,
        "the restart reused the saved session"
    );
    assert_no_secrets("log", &h.all_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_subjects_reasons_and_filter() {
    let pds = Pds::start().await;
    let mut h = Harness::new("bsky-body").await;
    let (root, root_cid) = pds.add_post(BOT_DID, "bot.test", "root", post("a thread"));
    let record = json!({"$type": "app.bsky.feed.post", "text": "hey @bot.test 👋", "langs": ["en"],
        "createdAt": "2026-06-01T00:00:00.000Z",
        "reply": {"root": {"uri": root, "cid": root_cid}, "parent": {"uri": root, "cid": root_cid}},
        "facets": [{"index": {"byteStart": 4, "byteEnd": 13}, "features": [{"$type": "app.bsky.richtext.facet#mention", "did": BOT_DID}]}]});
    let (uri, cid) = pds.add_post("did:plc:alice", "alice.test", "r1", record.clone());
    pds.notify(
        "reply",
        &uri,
        &cid,
        ("did:plc:alice", "alice.test"),
        record.clone(),
        "2026-06-01T00:00:01.000Z",
        None,
    );
    let like = json!({"$type": "app.bsky.feed.like", "subject": {"uri": uri, "cid": cid}, "createdAt": "2026-06-01T00:00:02.000Z"});
    // A like of a post in the thread lands in the thread (getPosts).
    pds.notify(
        "like",
        "at://did:plc:alice/app.bsky.feed.like/l1",
        "bafyl",
        ("did:plc:alice", "alice.test"),
        like,
        "2026-06-01T00:00:02.000Z",
        Some(&uri),
    );
    let follow = json!({"$type": "app.bsky.graph.follow", "subject": BOT_DID, "createdAt": "x"});
    pds.notify(
        "follow",
        "at://did:plc:alice/app.bsky.graph.follow/f1",
        "bafyf",
        ("did:plc:alice", "alice.test"),
        follow,
        "2026-06-01T00:00:03.000Z",
        None,
    );
    // reasons = reply, like: the follow is skipped (and counted).
    let cfg = config(
        &pds,
        json!({"polling": {"process_from": "2026-05-31T00:00:00Z"}, "reasons": ["reply", "like"]}),
    );
    h.start_bot(&cfg).await;
    let d = h.event(WAIT, |_| true).await;
    let escaped_root = switchboard_bus::proto::ChatAddress::new("bluesky", "bsky-body", &root)
        .event_subject("reply");
    assert_eq!(d.subject, escaped_root);
    assert_eq!(d.envelope().header("room"), Some(root.as_str()));
    let b = &d.envelope().body;
    assert_eq!(b["text"], "hey @bot.test 👋");
    assert_eq!(b["sender"], "alice.test");
    assert_eq!(
        b["author"],
        json!({"did": "did:plc:alice", "handle": "alice.test"})
    );
    assert_eq!(b["uri"], uri);
    assert_eq!(b["cid"], cid);
    assert_eq!(b["langs"], json!(["en"]));
    assert_eq!(b["reply"], record["reply"]);
    assert_eq!(b["facets"], record["facets"]);
    assert_eq!(b["record"], record);
    assert_eq!(b["reason"], "reply");
    let chat = d.chat().unwrap();
    assert_eq!(
        (chat.room(), chat.sender(), chat.text()),
        (root.as_str(), "alice.test", "hey @bot.test 👋")
    );
    let d = h.event(WAIT, |_| true).await;
    assert_eq!(
        d.subject,
        switchboard_bus::proto::ChatAddress::new("bluesky", "bsky-body", &root)
            .event_subject("like")
    );
    assert_eq!(d.envelope().body["subject"], uri);
    assert!(
        h.drain(Duration::from_millis(800)).await.is_empty(),
        "the follow is filtered out"
    );
    let c = h
        .counters_until(|c| {
            c["bluesky_notifications_published"] == 2 && c["bluesky_notifications_skipped"] == 1
        })
        .await;
    assert_eq!(c["bluesky_notifications_skipped"], 1, "{c}");
    assert_eq!(c["bluesky_logins"], 1, "{c}");

    // Reload: reasons change without a new login.
    let mut cfg2 = cfg.clone();
    cfg2["reasons"] = json!(["follow", "mention"]);
    cfg2["polling"]["interval"] = json!("100ms");
    let ack = h.control(json!({"verb": "reload", "config": cfg2})).await;
    assert!(ack.ok, "{ack:?}");
    let m = json!({"$type": "app.bsky.feed.post", "text": "@bot.test hi"});
    pds.notify(
        "mention",
        "at://did:plc:alice/app.bsky.feed.post/m2",
        "bafym2",
        ("did:plc:alice", "alice.test"),
        m,
        "2026-06-01T00:00:09.000Z",
        None,
    );
    let d = h.event(WAIT, |_| true).await;
    assert!(d.subject.ends_with(".mention"), "{}", d.subject);
    assert_eq!(
        d.envelope().body["room"],
        "at://did:plc:alice/app.bsky.feed.post/m2"
    );
    assert_eq!(
        pds.calls("com.atproto.server.createSession").len(),
        1,
        "no new login on reload"
    );
    assert_no_secrets("log", &h.all_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_waits_until_ratelimit_reset_and_says_so() {
    let pds = Pds::start().await;
    let mut h = Harness::new("bsky-rl").await;
    let cfg = config(
        &pds,
        json!({"polling": {"process_from": "2026-05-31T00:00:00Z", "interval": "100ms"}}),
    );
    h.start_bot(&cfg).await;
    // Let one poll pass, then limit listNotifications for 2 s.
    h.counters_until(|_| true).await;
    let list = "app.bsky.notification.listNotifications";
    let reset = pds.rate_limit(list, 2);
    let notice = h.event(WAIT, |d| d.subject.ends_with(".ratelimit")).await;
    let b = &notice.envelope().body;
    assert_eq!(b["endpoint"], list);
    assert_eq!(b["reset"], reset);
    add_notifications(&pds, 0, 3);
    let d = h.event(WAIT, |d| !d.subject.ends_with(".ratelimit")).await;
    assert!(d.envelope().body["uri"]
        .as_str()
        .unwrap()
        .ends_with("n0000"));
    let calls = pds.calls(list);
    let limited = calls.iter().position(|c| c.status == 429).expect("a 429");
    assert_eq!(
        calls.iter().filter(|c| c.status == 429).count(),
        1,
        "nothing asked again before the reset: {calls:?}"
    );
    let next = &calls[limited + 1];
    assert!(
        next.at >= reset as f64,
        "asked at {} before the reset at {reset}",
        next.at
    );
    let c = h
        .counters_until(|c| c["bluesky_notifications_published"] == 3)
        .await;
    assert_eq!(c["bluesky_rate_limit_waits"], 1, "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_back_off_and_publish_nothing_twice() {
    let pds = Pds::start().await;
    let mut h = Harness::new("bsky-5xx").await;
    add_notifications(&pds, 0, 5);
    // The first page fails twice, updateSeen once.
    pds.fail_next("app.bsky.notification.listNotifications", &[502, 503]);
    pds.fail_next("app.bsky.notification.updateSeen", &[500]);
    let cfg = config(
        &pds,
        json!({"polling": {"process_from": "2026-05-31T00:00:00Z"}}),
    );
    h.start_bot(&cfg).await;
    let mut got = Vec::new();
    while got.len() < 5 {
        got.push(h.event(WAIT, |_| true).await.envelope().body["uri"].clone());
    }
    assert!(h.drain(Duration::from_secs(1)).await.is_empty());
    let c = h
        .counters_until(|c| c["bluesky_retries"].as_u64() >= Some(3))
        .await;
    assert_eq!(c["bluesky_notifications_published"], 5, "{c}");
    assert!(pds.lock().seen_at.is_some(), "updateSeen was retried");
}
