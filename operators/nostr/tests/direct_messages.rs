//! Direct messages with an independent client (PyPI `nostr-sdk`: NIP-17
//! gift wraps, NIP-44, NIP-04; tests/peer/nostr_peer.py) through a real
//! relay (PyPI `nostr-relay`) and a real nats-server, both ways.

mod common;

use std::time::Duration;

use common::{config, Harness, Peer};
use nostr::nips::nip59::GiftWrapBuilder;
use nostr::prelude::{
    EventBuilder, FinalizeEvent, FinalizeUnsignedEvent, Keys, Kind, Tag, ToBech32,
};
use serde_json::{json, Value};
use switchboard_bus::proto::{headers, Envelope};
use switchboard_testkit::nostr::NostrRelay;

fn bot_keys() -> Keys {
    Keys::parse(common::BOT_SECRET).unwrap()
}

fn bot_npub() -> String {
    bot_keys().public_key().to_bech32().unwrap()
}

/// A reply as a bot's `ctx.reply` sends it: the event's room, a fresh
/// envelope with `in-reply-to` naming the event's envelope.
async fn ctx_reply(h: &Harness, to: &switchboard_bus::Delivery, text: &str) -> Value {
    let room = to.envelope().body["room"].as_str().unwrap().to_string();
    let env = Envelope::new("pingbot", json!({"text": text}))
        .with_header(headers::IN_REPLY_TO, to.envelope().id().unwrap())
        .with_header(headers::ROOM, room.as_str());
    h.request_env(&room, "message", env).await
}

fn dm_subject(h: &Harness, npub: &str) -> String {
    format!("chat.nostr.{}.=40{npub}.message", h.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip17_and_nip04_messages_arrive_privately_and_are_answered_in_kind() {
    let a = NostrRelay::start().expect("nostr-relay (make tools)");
    let mut h = Harness::new("nostr-dm").await;
    let cfg = config(std::slice::from_ref(&a.url()), json!({}));
    h.start_bot(cfg.clone()).await;
    h.relay_state(&a.url(), "connected").await;
    let alice = Peer::keygen();
    let sk = alice["secret"].as_str().unwrap();
    let npub = alice["npub"].as_str().unwrap();

    // NIP-17 in: on Alice's private room, decrypted, sender authenticated.
    let sent = Peer::dm(&[&a.url()], sk, &bot_npub(), "hello bot", "nip17", None);
    let subject = dm_subject(&h, npub);
    let d = h.event(common::WAIT, |d| d.subject == subject).await;
    let body = &d.envelope().body;
    assert_eq!(body["text"], "hello bot", "{body}");
    assert_eq!(body["sender"], npub);
    assert_eq!(body["room"], format!("@{npub}"));
    assert_eq!(body["private"], true);
    assert_eq!(body["encryption"], "nip17");
    assert_eq!(body["kind"], 14);
    assert_eq!(body["id"], sent["message_id"]);
    assert_eq!(body["carrier"], sent["id"], "the gift wrap's id");
    assert_eq!(
        d.envelope().header("room"),
        Some(format!("@{npub}").as_str())
    );

    // Answered with ctx.reply: a NIP-17 message only Alice can open,
    // naming the message it answers.
    let ack = ctx_reply(&h, &d, "pong").await;
    assert_eq!(ack["ok"], true, "{ack}");
    let inbox = Peer::inbox(&a.url(), sk);
    let pong = inbox
        .iter()
        .find(|m| m["text"] == "pong")
        .unwrap_or_else(|| panic!("Alice got no pong: {inbox:?}"));
    assert_eq!(pong["sender"], bot_npub().as_str());
    assert_eq!(pong["scheme"], "nip17");
    assert_eq!(pong["kind"], 14);
    let answered = json!(["e", sent["message_id"]]);
    assert!(
        pong["tags"].as_array().unwrap().contains(&answered),
        "{pong}"
    );
    // What the relay stores says nothing of it: a kind-1059 wrap from a
    // throwaway key, not from the bot.
    let wrap = Peer::fetch(&a.url(), json!({"ids": [ack["id"]]}));
    assert_eq!(wrap[0]["event"]["kind"], 1059);
    assert_ne!(wrap[0]["event"]["pubkey"], bot_keys().public_key().to_hex());
    assert!(!wrap[0]["event"]["content"]
        .as_str()
        .unwrap()
        .contains("pong"));

    // An older client's NIP-04 message is read, and answered in NIP-04.
    let old = Peer::dm(&[&a.url()], sk, &bot_npub(), "old client", "nip04", None);
    let d = h
        .event(common::WAIT, |d| d.envelope().body["text"] == "old client")
        .await;
    assert_eq!(d.subject, subject);
    assert_eq!(d.envelope().body["encryption"], "nip04");
    assert_eq!(d.envelope().body["id"], old["id"]);
    let ack = ctx_reply(&h, &d, "pong 04").await;
    assert_eq!(ack["ok"], true, "{ack}");
    let inbox = Peer::inbox(&a.url(), sk);
    let pong = inbox
        .iter()
        .find(|m| m["text"] == "pong 04")
        .unwrap_or_else(|| panic!("Alice got no NIP-04 pong: {inbox:?}"));
    assert_eq!(pong["scheme"], "nip04");
    // A message to the room without a reply is NIP-17; `encryption` can
    // choose.
    let ack = h
        .request(&format!("@{npub}"), "message", json!({"text": "unasked"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let ack = h
        .request(
            &format!("@{npub}"),
            "message",
            json!({"text": "unasked 04", "encryption": "nip04"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let inbox = Peer::inbox(&a.url(), sk);
    let scheme = |t: &str| {
        inbox
            .iter()
            .find(|m| m["text"] == t)
            .map(|m| m["scheme"].clone())
    };
    assert_eq!(scheme("unasked"), Some(json!("nip17")), "{inbox:?}");
    assert_eq!(scheme("unasked 04"), Some(json!("nip04")), "{inbox:?}");

    // A wrap that names the bot but is sealed for someone else does not
    // open: dropped and counted, never published.
    let carol = Keys::generate();
    let rumor = EventBuilder::new(Kind::PrivateDirectMessage, "for carol")
        .tag(Tag::public_key(carol.public_key()))
        .finalize_unsigned(carol.public_key());
    let stray = GiftWrapBuilder::new(carol.public_key(), rumor)
        .extra_tags([Tag::public_key(bot_keys().public_key())])
        .finalize(&Keys::generate())
        .unwrap();
    let raw: Value = serde_json::from_str(&stray.as_json()).unwrap();
    let ack = h.request("_", "raw", json!({"event": raw})).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let c = h.counter_reaches("nostr_dropped_undecryptable", 1).await;
    assert_eq!(c["nostr_dms_published"], 2, "{c}");

    // A restart looks two days back for gift wraps: what it brings again
    // is recognised, nothing is published twice.
    h.drain(Duration::from_millis(300)).await;
    h.kill_bot().await;
    let later = Peer::dm(&[&a.url()], sk, &bot_npub(), "while down", "nip17", None);
    h.start_bot(cfg).await;
    h.event(common::WAIT, |d| d.envelope().body["text"] == "while down")
        .await;
    h.drain(Duration::from_secs(1)).await;
    let counts = h.counts();
    for id in [&sent["message_id"], &old["id"], &later["message_id"]] {
        assert_eq!(
            counts.get(id.as_str().unwrap()),
            Some(&1),
            "{id}: {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_bot_does_not_answer_messages_from_before_its_first_start() {
    let a = NostrRelay::start().expect("nostr-relay (make tools)");
    let alice = Peer::keygen();
    let sk = alice["secret"].as_str().unwrap();
    let before = Peer::dm(&[&a.url()], sk, &bot_npub(), "old news", "nip17", None);
    // Its rumor is stamped before the first start less the overlap (1s).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut h = Harness::new("nostr-dm-first").await;
    let cfg = config(
        std::slice::from_ref(&a.url()),
        json!({"resume_overlap": "1s"}),
    );
    h.start_bot(cfg.clone()).await;
    let c = h.counter_reaches("nostr_dms_skipped_before_start", 1).await;
    assert_eq!(c["nostr_dms_published"], 0, "{c}");
    let after = Peer::dm(&[&a.url()], sk, &bot_npub(), "news", "nip17", None);
    h.event(common::WAIT, |d| d.envelope().body["text"] == "news")
        .await;
    // A restart keeps the first start: the old message stays unpublished,
    // the new one is not published again.
    h.drain(Duration::from_millis(300)).await;
    h.kill_bot().await;
    h.start_bot(cfg).await;
    // Both come again with the look-back, and are known by id.
    h.counter_reaches("nostr_dropped_duplicate", 2).await;
    h.drain(Duration::from_secs(1)).await;
    let counts = h.counts();
    assert!(!counts.contains_key(before["message_id"].as_str().unwrap()));
    assert_eq!(counts.get(after["message_id"].as_str().unwrap()), Some(&1));

    // With direct_messages = false there is no such subscription.
    let off = config(
        std::slice::from_ref(&a.url()),
        json!({"direct_messages": false}),
    );
    assert!(h.control(json!({"verb": "reload", "config": off})).await.ok);
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let reply = h.request("_", "relays", json!({})).await;
        if reply["marks"].get("direct-messages").is_none() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Peer::dm(&[&a.url()], sk, &bot_npub(), "unheard", "nip17", None);
    h.drain(Duration::from_millis(800)).await;
    assert!(
        !h.seen
            .iter()
            .any(|d| d.envelope().body["text"] == "unheard"),
        "a DM arrived with direct_messages = false"
    );
}
