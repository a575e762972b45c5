//! Requests on `send.bluesky.<instance>.<room>.<kind>` against the local
//! XRPC server: reply refs, facet byte offsets, long text, posts, likes,
//! reposts, acks, and a retried createRecord that creates one record.

mod common;

use common::{assert_no_secrets, config, Harness, Pds, BOT_DID, WAIT};
use serde_json::{json, Value};
use switchboard_bus::proto::{headers, Envelope};

fn post(text: &str) -> Value {
    json!({"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-06-01T00:00:00.000Z"})
}

struct Thread {
    root: (String, String),
    reply: (String, String),
}

/// The bot's post, alice's reply to it, and the notification of the
/// reply.
fn thread(pds: &Pds) -> Thread {
    let root = pds.add_post(BOT_DID, "bot.test", "root", post("a thread"));
    let mut record = post("@bot.test what is new?");
    record["reply"] =
        json!({"root": {"uri": root.0, "cid": root.1}, "parent": {"uri": root.0, "cid": root.1}});
    let reply = pds.add_post("did:plc:alice", "alice.test", "r1", record.clone());
    pds.notify(
        "reply",
        &reply.0,
        &reply.1,
        ("did:plc:alice", "alice.test"),
        record,
        "2026-06-01T00:00:01.000Z",
        None,
    );
    Thread { root, reply }
}

fn start_config(pds: &Pds) -> Value {
    config(
        pds,
        json!({"polling": {"process_from": "2026-05-31T00:00:00Z"}}),
    )
}

fn created(pds: &Pds) -> Vec<Value> {
    pds.lock().created.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_with_emoji_mention_and_link_has_exact_refs_and_facets() {
    let pds = Pds::start().await;
    let t = thread(&pds);
    let mut h = Harness::new("bsky-out").await;
    h.start_bot(&start_config(&pds)).await;
    let event = h.event(WAIT, |_| true).await;
    let room = event.chat().unwrap().room().to_string();
    assert_eq!(room, t.root.0);

    // Answer the event (in-reply-to its envelope): the reply goes under
    // alice's post, in the thread of the bot's root post.
    let text = "Thanks 👋🏽 @alice.test! Ünïcödé ✨ see https://example.com/a?b=1. 👨‍👩‍👧";
    let env = Envelope::new("test", json!({"text": text}))
        .with_header(headers::IN_REPLY_TO, event.envelope().id().unwrap());
    let ack = h.request(&room, "message", env).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let made = created(&pds);
    assert_eq!(made.len(), 1);
    let input = &made[0];
    assert_eq!(ack["uri"], input["uri"]);
    assert_eq!(ack["cid"], input["cid"]);
    assert!(input["uri"]
        .as_str()
        .unwrap()
        .starts_with(&format!("at://{BOT_DID}/app.bsky.feed.post/")));
    assert_eq!(input["repo"], BOT_DID);
    assert_eq!(input["collection"], "app.bsky.feed.post");
    let record = &input["record"];
    assert_eq!(record["$type"], "app.bsky.feed.post");
    assert_eq!(record["text"], text);
    assert_eq!(record["langs"], json!(["en"]));
    assert_eq!(
        record["reply"]["root"],
        json!({"uri": t.root.0, "cid": t.root.1})
    );
    assert_eq!(
        record["reply"]["parent"],
        json!({"uri": t.reply.0, "cid": t.reply.1})
    );

    // Facets: UTF-8 byte offsets, checked against the bytes themselves.
    let facets = record["facets"].as_array().expect("facets");
    assert_eq!(facets.len(), 2, "{facets:?}");
    let bytes = text.as_bytes();
    let range = |f: &Value| {
        let s = f["index"]["byteStart"].as_u64().unwrap() as usize;
        let e = f["index"]["byteEnd"].as_u64().unwrap() as usize;
        (s, e)
    };
    let (s, e) = range(&facets[0]);
    assert_eq!(
        (s, e),
        (16, 27),
        "after 'Thanks ' (7 bytes), the waving hand with skin tone (8) and a space"
    );
    assert_eq!(&bytes[s..e], "@alice.test".as_bytes());
    assert_eq!(
        facets[0]["features"],
        json!([{"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:alice"}])
    );
    let (s, e) = range(&facets[1]);
    assert_eq!(&bytes[s..e], "https://example.com/a?b=1".as_bytes());
    assert_eq!(s, text.find("https://").unwrap());
    assert_eq!(
        facets[1]["features"],
        json!([{"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com/a?b=1"}])
    );

    // Without in-reply-to the reply answers the room's root; an explicit
    // parent wins; a handle that does not resolve stays plain text.
    let ack = h
        .request(
            &room,
            "message",
            Envelope::new("test", json!({"text": "to the root, @nobody.test"})),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let r = &created(&pds)[1]["record"];
    assert_eq!(
        r["reply"]["parent"],
        json!({"uri": t.root.0, "cid": t.root.1})
    );
    assert_eq!(
        r["reply"]["root"],
        json!({"uri": t.root.0, "cid": t.root.1})
    );
    assert!(r.get("facets").is_none(), "{r}");
    let first = ack["uri"].as_str().unwrap().to_string();
    let ack = h
        .request(
            &room,
            "message",
            Envelope::new(
                "test",
                json!({"text": "under my own", "parent": first, "langs": ["de"]}),
            ),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let r = &created(&pds)[2]["record"];
    assert_eq!(r["reply"]["parent"]["uri"], first);
    assert_eq!(
        r["reply"]["root"]["uri"], t.root.0,
        "the root comes from the parent's own reply refs"
    );
    assert_eq!(r["langs"], json!(["de"]));

    let c = h
        .counters_until(|c| c["bluesky_records_created"] == 3)
        .await;
    assert_eq!(c["bluesky_send_failures"], 0, "{c}");
    assert_no_secrets("log", &h.all_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_text_is_refused_or_split_into_a_thread() {
    let pds = Pds::start().await;
    let t = thread(&pds);
    let mut h = Harness::new("bsky-long").await;
    h.start_bot(&start_config(&pds)).await;
    let room = t.root.0.clone();
    let long = format!("{} {}", "é".repeat(200), "word ".repeat(30));
    let ack = h
        .request(
            &room,
            "message",
            Envelope::new("test", json!({"text": long})),
        )
        .await;
    assert_eq!(ack["ok"], false, "{ack}");
    let error = ack["error"].as_str().unwrap();
    assert!(
        error.contains("351 graphemes") && error.contains("split"),
        "{error}"
    );
    assert!(created(&pds).is_empty());
    let ack = h
        .request(
            &room,
            "message",
            Envelope::new("test", json!({"text": long, "split": true})),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let made = created(&pds);
    assert_eq!(made.len(), 2);
    assert_eq!(ack["records"].as_array().unwrap().len(), 2);
    let (a, b) = (&made[0], &made[1]);
    assert_eq!(a["record"]["reply"]["parent"]["uri"], t.root.0);
    assert_eq!(
        b["record"]["reply"]["parent"],
        json!({"uri": a["uri"], "cid": a["cid"]})
    );
    assert_eq!(b["record"]["reply"]["root"]["uri"], t.root.0);
    let joined = format!(
        "{} {}",
        a["record"]["text"].as_str().unwrap(),
        b["record"]["text"].as_str().unwrap()
    );
    assert_eq!(joined, long.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_likes_reposts_and_refusals() {
    let pds = Pds::start().await;
    let t = thread(&pds);
    let mut h = Harness::new("bsky-kinds").await;
    h.start_bot(&start_config(&pds)).await;
    let ack = h
        .request(
            "",
            "post",
            Envelope::new("test", json!({"text": "hello, network"})),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let r = &created(&pds)[0]["record"];
    assert!(r.get("reply").is_none());
    assert_eq!(r["text"], "hello, network");

    let ack = h
        .request(
            &t.root.0,
            "like",
            Envelope::new("test", json!({"uri": t.reply.0})),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let like = &created(&pds)[1];
    assert_eq!(like["collection"], "app.bsky.feed.like");
    assert_eq!(
        like["record"]["subject"],
        json!({"uri": t.reply.0, "cid": t.reply.1})
    );
    assert!(like["uri"]
        .as_str()
        .unwrap()
        .contains("/app.bsky.feed.like/"));
    let ack = h
        .request(&t.root.0, "repost", Envelope::new("test", Value::Null))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(created(&pds)[2]["record"]["subject"]["uri"], t.root.0);

    let missing = "at://did:plc:alice/app.bsky.feed.post/gone";
    let ack = h
        .request(
            missing,
            "message",
            Envelope::new("test", json!({"text": "x"})),
        )
        .await;
    assert_eq!(ack["ok"], false);
    assert!(
        ack["error"].as_str().unwrap().contains("not found"),
        "{ack}"
    );
    let ack = h
        .request(
            "did:plc:alice",
            "message",
            Envelope::new("test", json!({"text": "x"})),
        )
        .await;
    assert!(
        ack["error"].as_str().unwrap().contains("not a post thread"),
        "{ack}"
    );
    let ack = h
        .request(
            &t.root.0,
            "shout",
            Envelope::new("test", json!({"text": "x"})),
        )
        .await;
    assert!(
        ack["error"].as_str().unwrap().contains("unknown kind"),
        "{ack}"
    );
    pds.fail_next("com.atproto.repo.createRecord", &[400]);
    let ack = h
        .request(
            &t.root.0,
            "message",
            Envelope::new("test", json!({"text": "x"})),
        )
        .await;
    assert_eq!(ack["ok"], false);
    assert!(
        ack["error"].as_str().unwrap().contains("createRecord"),
        "{ack}"
    );
    assert_eq!(created(&pds).len(), 3);
    let c = h.counters_until(|c| c["bluesky_send_failures"] == 4).await;
    assert_eq!(c["bluesky_records_created"], 3, "{c}");
    assert_no_secrets("log", &h.all_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_answer_is_retried_without_a_second_record() {
    let pds = Pds::start().await;
    let t = thread(&pds);
    let mut h = Harness::new("bsky-lost").await;
    h.start_bot(&start_config(&pds)).await;
    pds.lose_next_answer("com.atproto.repo.createRecord");
    let ack = h
        .request(
            &t.root.0,
            "message",
            Envelope::new("test", json!({"text": "once"})),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let made = created(&pds);
    assert_eq!(made.len(), 1, "one record despite the retry");
    assert_eq!(ack["uri"], made[0]["uri"]);
    assert_eq!(ack["cid"], made[0]["cid"]);
    assert_eq!(pds.calls("com.atproto.repo.createRecord").len(), 2);
}
