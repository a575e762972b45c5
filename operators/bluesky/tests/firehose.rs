//! The firehose strategy, the operator as a real process, against a local
//! relay serving signed frames and the local PDS standing in for the PLC
//! directory: what concerns the bot is published, what fails to decode or
//! verify is dropped and counted, the cursor resumes after a cut and a
//! kill with no gap and no repeat, and the server's cursor errors are
//! handled.

mod common;

use std::time::Duration;

use common::firehose::{self as fh, Create, Key, Relay, Spoil};
use common::{assert_no_secrets, config, Harness, Pds, BOT_DID, WAIT};
use serde_json::{json, Value};

const POST: &str = "app.bsky.feed.post";
const ALICE: &str = "did:plc:alice";
const CAROL: &str = "did:plc:carol";

fn create(collection: &str, rkey: &str, record: Value) -> Create {
    (collection.to_string(), rkey.to_string(), record)
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hose_config(pds: &Pds, relay: &Relay, extra: Value) -> Value {
    let mut firehose = json!({"relay_uri": relay.url, "plc_url": pds.url});
    if let (Value::Object(f), Value::Object(e)) = (&mut firehose, extra) {
        f.extend(e);
    }
    config(pds, json!({"strategy": "firehose", "firehose": firehose}))
}

/// A mention of the bot by `did`, as frame `seq`; its URI.
async fn push_mention(relay: &Relay, seq: i64, did: &str, key: &Key, spoil: Spoil) -> String {
    let rkey = format!("m{seq:04}");
    let frame = fh::commit_frame(
        seq,
        did,
        key,
        &[create(POST, &rkey, fh::mention(BOT_DID, &seq.to_string()))],
        spoil,
    )
    .await;
    relay.push(Some(seq), frame);
    format!("at://{did}/{POST}/{rkey}")
}

async fn uris(h: &mut Harness, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let d = h
            .event(WAIT, |d| d.envelope().body["via"] == "firehose")
            .await;
        got.push(d.envelope().body["uri"].as_str().unwrap().to_string());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_concerns_the_bot_is_published_and_what_fails_is_dropped() {
    let pds = Pds::start().await;
    let relay = Relay::start().await;
    let alice = Key::k256();
    let carol = Key::p256();
    pds.set_did_doc(ALICE, fh::did_doc(ALICE, &alice));
    // carol's document is in the legacy form (uncompressed point, curve
    // named by the type), as older PLC directories serve it.
    pds.set_did_doc(CAROL, fh::legacy_did_doc(CAROL, &carol));
    // The bot's post that carol likes answers a thread rooted elsewhere:
    // the like goes to that thread (getPosts), as with notifications.
    let root = "at://did:plc:dave/app.bsky.feed.post/root";
    let (own, own_cid) = pds.add_post(
        BOT_DID,
        "bot.test",
        "own",
        json!({"$type": POST, "text": "mine", "createdAt": "2026-06-01T00:00:00.000Z",
            "reply": {"root": {"uri": root, "cid": "c"}, "parent": {"uri": root, "cid": "c"}}}),
    );
    let mut h = Harness::new("bsky-hose").await;
    h.start_bot(&hose_config(&pds, &relay, json!({}))).await;
    wait_for("a connection", || relay.connections().len() == 1).await;
    assert_eq!(relay.connections()[0], "", "the first start reads live");

    let m1 = push_mention(&relay, 1, ALICE, &alice, Spoil::Nothing).await;
    let like = fh::commit_frame(
        2,
        CAROL,
        &carol,
        &[create(
            "app.bsky.feed.like",
            "l2",
            json!({"$type": "app.bsky.feed.like", "createdAt": "2026-06-01T00:00:00.000Z",
                "subject": {"uri": own, "cid": own_cid}}),
        )],
        Spoil::Nothing,
    )
    .await;
    relay.push(Some(2), like);
    let follow = fh::commit_frame(
        3,
        CAROL,
        &carol,
        &[create(
            "app.bsky.graph.follow",
            "f3",
            json!({"$type": "app.bsky.graph.follow", "subject": BOT_DID, "createdAt": "2026-06-01T00:00:00.000Z"}),
        )],
        Spoil::Nothing,
    )
    .await;
    relay.push(Some(3), follow);
    let reply = fh::commit_frame(
        4,
        ALICE,
        &alice,
        &[create(
            POST,
            "r4",
            json!({"$type": POST, "text": "answer", "createdAt": "2026-06-01T00:00:00.000Z",
                "reply": {"root": {"uri": root, "cid": "c"}, "parent": {"uri": own, "cid": own_cid}}}),
        )],
        Spoil::Nothing,
    )
    .await;
    relay.push(Some(4), reply);
    // Dropped: noise, garbage, a cut CAR, a wrong signature, a swapped
    // block, a record outside the signed tree, the bot's own commit, an
    // author without a DID document.
    let noise = fh::commit_frame(
        5,
        ALICE,
        &alice,
        &[create(
            POST,
            "n5",
            json!({"$type": POST, "text": "unrelated", "createdAt": "x"}),
        )],
        Spoil::Nothing,
    )
    .await;
    relay.push(Some(5), noise);
    relay.push(Some(6), vec![0xa2, 0x62, 0x6f, 0x70, 0xff]);
    push_mention(&relay, 7, ALICE, &alice, Spoil::TruncatedCar).await;
    push_mention(&relay, 8, ALICE, &alice, Spoil::WrongKey).await;
    push_mention(&relay, 9, ALICE, &alice, Spoil::SwappedRecord).await;
    push_mention(&relay, 10, ALICE, &alice, Spoil::NotInTree).await;
    push_mention(&relay, 11, BOT_DID, &Key::k256(), Spoil::Nothing).await;
    push_mention(&relay, 12, "did:plc:nodoc", &Key::k256(), Spoil::Nothing).await;
    // alice's key rotates: her #identity drops the cached key, and the
    // commit signed with the new one verifies.
    let rotated = Key::p256();
    pds.set_did_doc(ALICE, fh::did_doc(ALICE, &rotated));
    relay.push(Some(13), fh::identity_frame(13, ALICE));
    let m14 = push_mention(&relay, 14, ALICE, &rotated, Spoil::Nothing).await;

    let mut events = Vec::new();
    while events.len() < 5 {
        let d = h
            .event(WAIT, |d| d.envelope().body["via"] == "firehose")
            .await;
        events.push(d);
    }
    let summary: Vec<(String, String, String)> = events
        .iter()
        .map(|d| {
            let b = &d.envelope().body;
            (
                b["reason"].as_str().unwrap().to_string(),
                b["room"].as_str().unwrap().to_string(),
                b["uri"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("mention".into(), m1.clone(), m1.clone()),
            (
                "like".into(),
                root.to_string(),
                format!("at://{CAROL}/app.bsky.feed.like/l2")
            ),
            (
                "follow".into(),
                CAROL.to_string(),
                format!("at://{CAROL}/app.bsky.graph.follow/f3")
            ),
            (
                "reply".into(),
                root.to_string(),
                format!("at://{ALICE}/{POST}/r4")
            ),
            ("mention".into(), m14.clone(), m14.clone()),
        ]
    );
    let first = events[0].envelope();
    assert_eq!(first.body["sender"], ALICE);
    assert_eq!(first.body["author"]["did"], ALICE);
    assert_eq!(first.body["seq"], 1);
    assert_eq!(first.body["text"], "@bot.test 1");
    assert!(first.body["cid"].as_str().unwrap().starts_with("bafyrei"));
    assert_eq!(events[1].envelope().body["subject"], own.as_str());
    assert!(
        events[0].subject.ends_with(".mention"),
        "{}",
        events[0].subject
    );

    let c = h
        .counters_until(|c| {
            c["bluesky_firehose_published"] == 5 && c["bluesky_firehose_unverified"] == 3
        })
        .await;
    assert_eq!(c["bluesky_firehose_malformed"], 3, "{c}");
    assert_eq!(c["bluesky_firehose_verified"], 5, "{c}");
    assert_eq!(c["bluesky_firehose_connects"], 1, "{c}");
    // alice twice (before and after her #identity), carol once (cached),
    // nodoc once.
    assert_eq!(pds.calls(&format!("/{ALICE}")).len(), 2);
    assert_eq!(pds.calls(&format!("/{CAROL}")).len(), 1);
    assert_eq!(c["bluesky_firehose_did_fetches"], 4, "{c}");
    assert!(h.drain(Duration::from_millis(300)).await.is_empty());
    assert_eq!(
        pds.calls("app.bsky.notification.listNotifications").len(),
        0
    );
    assert_no_secrets("log", &h.all_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_and_a_killed_process_resume_without_gap_or_repeat() {
    let pds = Pds::start().await;
    let relay = Relay::start().await;
    let alice = Key::k256();
    pds.set_did_doc(ALICE, fh::did_doc(ALICE, &alice));
    let mut h = Harness::new("bsky-hose-resume").await;
    let cfg = hose_config(&pds, &relay, json!({}));
    h.start_bot(&cfg).await;
    wait_for("a connection", || relay.connections().len() == 1).await;

    let mut expected = Vec::new();
    for seq in 1..=5 {
        expected.push(push_mention(&relay, seq, ALICE, &alice, Spoil::Nothing).await);
    }
    let mut got = uris(&mut h, 5).await;

    // The connection drops (no close frame) after 2 more frames.
    relay.cut_after(2);
    for seq in 6..=10 {
        expected.push(push_mention(&relay, seq, ALICE, &alice, Spoil::Nothing).await);
    }
    got.extend(uris(&mut h, 5).await);
    wait_for("a second connection", || relay.connections().len() == 2).await;
    assert_eq!(
        relay.connections()[1],
        "cursor=7",
        "resumed after the last frame read"
    );

    // Killed while frames keep coming: the saved cursor covers them.
    h.kill_bot().await;
    for seq in 11..=13 {
        expected.push(push_mention(&relay, seq, ALICE, &alice, Spoil::Nothing).await);
    }
    h.start_bot(&cfg).await;
    got.extend(uris(&mut h, 3).await);
    let resumed = relay.connections()[2].clone();
    // 10, or 9 when the kill came between publishing 10 and saving it (10
    // is then on the wire again with the same envelope id, and the
    // subscription's de-duplication drops it).
    assert!(resumed == "cursor=10" || resumed == "cursor=9", "{resumed}");
    let extra = h.drain(Duration::from_millis(1000)).await;
    assert!(
        extra.is_empty(),
        "repeated: {:?}",
        extra
            .iter()
            .map(|d| d.envelope().body["uri"].clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(got, expected, "no gap, no repeat, in order");
    let saved: Value =
        serde_json::from_slice(&std::fs::read(h.state.path().join("firehose.json")).unwrap())
            .unwrap();
    assert_eq!(saved["cursor"], 13, "{saved}");
    assert_eq!(saved["relay"], format!("{}{}", relay.url, fh::PATH));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_cursor_resumes_live_and_an_outdated_one_says_so() {
    let pds = Pds::start().await;
    let relay = Relay::start().await;
    let alice = Key::k256();
    pds.set_did_doc(ALICE, fh::did_doc(ALICE, &alice));
    for seq in 1..=3 {
        push_mention(&relay, seq, ALICE, &alice, Spoil::Nothing).await;
    }
    // A cursor ahead of the relay (it was reset, or it is another one):
    // FutureCursor, then a live connection.
    let mut h = Harness::new("bsky-hose-future").await;
    h.start_bot(&hose_config(&pds, &relay, json!({"cursor": 1000})))
        .await;
    let notice = h.event(WAIT, |d| d.subject.ends_with(".firehose")).await;
    assert_eq!(notice.envelope().body["name"], "FutureCursor");
    wait_for("a live connection", || relay.connections().len() == 2).await;
    assert_eq!(relay.connections(), ["cursor=1000", ""]);
    let m4 = push_mention(&relay, 4, ALICE, &alice, Spoil::Nothing).await;
    assert_eq!(uris(&mut h, 1).await, [m4]);
    let c = h
        .counters_until(|c| c["bluesky_firehose_server_errors"] == 1)
        .await;
    assert_eq!(c["bluesky_firehose_published"], 1, "{c}");
    h.kill_bot().await;

    // A cursor older than the relay keeps: OutdatedCursor, then what it
    // still has.
    relay.forget_before(3);
    let mut h = Harness::new("bsky-hose-outdated").await;
    h.start_bot(&hose_config(&pds, &relay, json!({"cursor": 0})))
        .await;
    let notice = h.event(WAIT, |d| d.subject.ends_with(".firehose")).await;
    assert_eq!(notice.envelope().body["name"], "OutdatedCursor");
    assert_eq!(uris(&mut h, 2).await.len(), 2, "seq 3 and 4");
    let c = h
        .counters_until(|c| c["bluesky_firehose_outdated_cursor"] == 1)
        .await;
    assert_eq!(c["bluesky_firehose_published"], 2, "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_reconnect_a_lost_connection_stays_lost_until_resumed() {
    let pds = Pds::start().await;
    let relay = Relay::start().await;
    let alice = Key::k256();
    pds.set_did_doc(ALICE, fh::did_doc(ALICE, &alice));
    let mut h = Harness::new("bsky-hose-once").await;
    h.start_bot(&hose_config(&pds, &relay, json!({"auto_reconnect": false})))
        .await;
    wait_for("a connection", || relay.connections().len() == 1).await;
    relay.cut_after(1);
    push_mention(&relay, 1, ALICE, &alice, Spoil::Nothing).await;
    push_mention(&relay, 2, ALICE, &alice, Spoil::Nothing).await;
    assert_eq!(uris(&mut h, 1).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(relay.connections().len(), 1, "no reconnect");
    assert!(h.log().contains("auto_reconnect = false"), "{}", h.log());
    // halt + resume reconnects, from the cursor.
    assert!(h.control(json!({"verb": "halt"})).await.ok);
    assert!(h.control(json!({"verb": "resume"})).await.ok);
    wait_for("a second connection", || relay.connections().len() == 2).await;
    assert_eq!(relay.connections()[1], "cursor=1");
    assert_eq!(uris(&mut h, 1).await.len(), 1);
}
