//! The Nostr operator against real relays (PyPI `nostr-relay`, started by
//! the testkit on free loopback ports) and an independent client (PyPI
//! `nostr-sdk` + `websockets`, tests/peer/nostr_peer.py), on a real
//! nats-server.

mod common;

use std::time::Duration;

use common::{config, Harness, Peer, WAIT};
use serde_json::json;
use switchboard_testkit::nostr::{NostrRelay, NostrRelayOptions};

fn bot_pubkey() -> String {
    let c: switchboard_nostr::NostrConfig =
        serde_json::from_value(config(&["ws://h:1".to_string()], json!({}))).unwrap();
    c.keys.public_key().to_hex()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_on_two_relays_reaches_the_bus_once() {
    let a = NostrRelay::start().expect("nostr-relay (make tools)");
    let b = NostrRelay::start().expect("nostr-relay (make tools)");
    let mut h = Harness::new("nostr-once").await;
    h.start_bot(config(&[a.url(), b.url()], json!({"collect": "1s"})))
        .await;
    h.relay_state(&a.url(), "connected").await;
    h.relay_state(&b.url(), "connected").await;

    let alice = Peer::keygen();
    let sent = Peer::publish(
        &[&a.url(), &b.url()],
        alice["secret"].as_str().unwrap(),
        "hello from two relays",
        json!([["t", "switchboard"]]),
    );
    let id = sent["id"].as_str().unwrap();
    let d = h.event_with_id(id).await;
    let npub = alice["npub"].as_str().unwrap();
    assert_eq!(d.subject, format!("chat.nostr.nostr-once.{npub}.message"));
    let body = &d.envelope().body;
    assert_eq!(body["pubkey"], alice["pubkey"]);
    assert_eq!(body["npub"], npub);
    assert_eq!(body["kind"], 1);
    assert_eq!(body["content"], "hello from two relays");
    assert_eq!(body["tags"], json!([["t", "switchboard"]]));
    assert_eq!(body["event"], sent["event"]);
    assert_eq!(d.envelope().header("room"), Some(npub));
    let relays = d.envelope().header("nostr-relays").unwrap();
    assert!(
        relays.contains(&a.url()) && relays.contains(&b.url()),
        "{relays}"
    );

    h.drain(Duration::from_secs(1)).await;
    assert_eq!(h.counts()[id], 1, "published more than once");
    let c = h.counter_reaches("nostr_dropped_duplicate", 1).await;
    assert_eq!(c["nostr_events_in"], 2, "{c}");
    assert_eq!(c["nostr_events_published"], 1, "{c}");
    // Each relay's state is in the heartbeat too (2: connected).
    for url in [a.url(), b.url()] {
        assert_eq!(c[format!("relay.{url}.state")], 2, "{c}");
        assert_eq!(c[format!("relay.{url}.backoff_until_ms")], 0, "{c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_operator_publishes_are_accepted_and_read_back_signed() {
    let a = NostrRelay::start().expect("nostr-relay (make tools)");
    let b = NostrRelay::start().expect("nostr-relay (make tools)");
    let mut h = Harness::new("nostr-write").await;
    h.start_bot(config(&[a.url(), b.url()], json!({}))).await;

    // A top-level note: OK true from both relays.
    let ack = h
        .request("_", "note", json!({"text": "a note", "hashtags": ["sb"]}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let results = ack["relays"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{ack}");
    assert!(results.iter().all(|r| r["accepted"] == true), "{ack}");
    let note_id = ack["id"].as_str().unwrap().to_string();
    for relay in [a.url(), b.url()] {
        let got = Peer::fetch(&relay, json!({"ids": [note_id]}));
        assert_eq!(got.len(), 1, "{relay}: {got:?}");
        assert_eq!(got[0]["valid"], true, "{relay}: bad signature {got:?}");
        assert_eq!(got[0]["event"]["pubkey"], bot_pubkey());
        assert_eq!(got[0]["event"]["tags"], json!([["t", "sb"]]));
    }

    // A reply in Alice's thread: NIP-10 root and reply markers, her p tag.
    let alice = Peer::keygen();
    let root = Peer::publish(
        &[&a.url()],
        alice["secret"].as_str().unwrap(),
        "root",
        json!([]),
    );
    let root_id = root["id"].as_str().unwrap();
    h.event_with_id(root_id).await;
    let ack = h
        .request(root_id, "message", json!({"text": "a reply"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let got = Peer::fetch(&b.url(), json!({"ids": [ack["id"]]}));
    assert_eq!(got[0]["valid"], true);
    assert_eq!(
        got[0]["event"]["tags"],
        json!([["e", root_id, "", "root"], ["p", alice["pubkey"]]])
    );
    // The bot does not hear itself (own_events is off).
    let reply_id = ack["id"].as_str().unwrap().to_string();

    // A reaction (NIP-25) and a pre-signed event.
    let ack = h
        .request(root_id, "reaction", json!({"content": "🤙"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let got = Peer::fetch(&a.url(), json!({"ids": [ack["id"]]}));
    assert_eq!(got[0]["event"]["kind"], 7);
    assert_eq!(
        got[0]["event"]["tags"],
        json!([["e", root_id], ["p", alice["pubkey"]]])
    );
    let ack = h.request("_", "raw", json!({"event": root["event"]})).await;
    assert_eq!(
        ack["ok"], true,
        "a relay refused a valid pre-signed event: {ack}"
    );
    let mut forged = root["event"].clone();
    forged["content"] = json!("changed");
    let ack = h.request("_", "raw", json!({"event": forged})).await;
    assert_eq!(ack["ok"], false);
    assert!(
        ack["error"].as_str().unwrap().contains("does not verify"),
        "{ack}"
    );
    let c = h.counter_reaches("nostr_ok_accepted", 8).await;
    assert_eq!(c["nostr_ok_refused"], 0, "{c}");
    h.drain(Duration::from_millis(300)).await;
    assert!(!h.counts().contains_key(&reply_id), "the bot heard itself");
    assert!(c["nostr_skipped_own"].as_u64().unwrap() >= 1, "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_own_events_the_bots_replies_come_back_in_the_thread() {
    let a = NostrRelay::start().expect("nostr-relay (make tools)");
    let mut h = Harness::new("nostr-own").await;
    h.start_bot(config(&[a.url()], json!({"own_events": true})))
        .await;
    let alice = Peer::keygen();
    let root = Peer::publish(
        &[&a.url()],
        alice["secret"].as_str().unwrap(),
        "root",
        json!([]),
    );
    let root_id = root["id"].as_str().unwrap();
    h.event_with_id(root_id).await;
    let ack = h
        .request(root_id, "message", json!({"text": "a reply"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let ours = h.event_with_id(ack["id"].as_str().unwrap()).await;
    assert_eq!(ours.envelope().body["root"], root_id);
    assert_eq!(ours.envelope().body["reply_to"], root_id);
    assert_eq!(
        ours.subject,
        format!("chat.nostr.nostr-own.{root_id}.message")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_relay_is_reconnected_on_schedule_with_no_gap_and_no_duplicate() {
    let mut a = NostrRelay::start().expect("nostr-relay (make tools)");
    let b = NostrRelay::start().expect("nostr-relay (make tools)");
    let mut h = Harness::new("nostr-reconnect").await;
    h.start_bot(config(
        &[a.url(), b.url()],
        json!({"reconnect": ["300ms", "600ms"]}),
    ))
    .await;
    h.relay_state(&a.url(), "connected").await;
    let alice = Peer::keygen();
    let sk = alice["secret"].as_str().unwrap();
    let e1 = Peer::publish(&[&a.url(), &b.url()], sk, "before", json!([]));
    h.event_with_id(e1["id"].as_str().unwrap()).await;

    a.stop();
    let backoff = h.relay_state(&a.url(), "backoff").await;
    // The heartbeat says it too: 4 (backoff) or 1 (connecting, between
    // two waits), never 2 while the relay is down.
    let c = h.counters().await;
    let state = c[format!("relay.{}.state", a.url())].as_u64().unwrap();
    assert!(state == 4 || state == 1, "{c}");
    // The wait is the configured schedule's (at most 600 ms here), not
    // some built-in interval.
    let until = backoff["backoff_until_ms"].as_u64().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        until > 0 && until <= now_ms + 600,
        "{backoff} (now {now_ms})"
    );
    assert!(backoff["last_error"].is_string(), "{backoff}");
    // While A is down: to B only.
    let e2 = Peer::publish(&[&b.url()], sk, "while a is down", json!([]));
    h.event_with_id(e2["id"].as_str().unwrap()).await;
    // Attempts go on at the last step of the schedule.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let relays = h.relays().await;
    assert!(
        relays[&a.url()]["attempts"].as_u64().unwrap() >= 2,
        "{relays:?}"
    );

    a.restart().expect("relay restarts on the same port");
    // To A only, as soon as it is back (the operator may still be waiting).
    let e3 = Peer::publish(&[&a.url()], sk, "a is back", json!([]));
    h.event_with_id(e3["id"].as_str().unwrap()).await;
    let back = h.relay_state(&a.url(), "connected").await;
    assert!(back["connects"].as_u64().unwrap() >= 2, "{back}");
    let e4 = Peer::publish(&[&a.url(), &b.url()], sk, "after", json!([]));
    h.event_with_id(e4["id"].as_str().unwrap()).await;

    h.drain(Duration::from_secs(1)).await;
    let counts = h.counts();
    for e in [&e1, &e2, &e3, &e4] {
        assert_eq!(
            counts.get(e["id"].as_str().unwrap()),
            Some(&1),
            "{counts:?}"
        );
    }
    assert_eq!(counts.len(), 4, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_and_restart_nothing_is_missed_or_repeated() {
    let a = NostrRelay::start().expect("nostr-relay (make tools)");
    let b = NostrRelay::start().expect("nostr-relay (make tools)");
    let mut h = Harness::new("nostr-kill").await;
    let cfg = config(&[a.url(), b.url()], json!({}));
    h.start_bot(cfg.clone()).await;
    h.relay_state(&a.url(), "connected").await;
    h.relay_state(&b.url(), "connected").await;
    let alice = Peer::keygen();
    let sk = alice["secret"].as_str().unwrap();
    let e1 = Peer::publish(&[&a.url(), &b.url()], sk, "before the kill", json!([]));
    h.event_with_id(e1["id"].as_str().unwrap()).await;
    h.drain(Duration::from_millis(300)).await;

    h.kill_bot().await;
    let e2 = Peer::publish(&[&a.url()], sk, "while dead, on a", json!([]));
    let e3 = Peer::publish(&[&b.url()], sk, "while dead, on b", json!([]));

    h.start_bot(cfg).await;
    h.event_with_id(e2["id"].as_str().unwrap()).await;
    h.event_with_id(e3["id"].as_str().unwrap()).await;
    // The resumed REQ overlaps e1 (within resume_overlap): not again.
    h.drain(Duration::from_secs(1)).await;
    let counts = h.counts();
    for e in [&e1, &e2, &e3] {
        assert_eq!(
            counts.get(e["id"].as_str().unwrap()),
            Some(&1),
            "{counts:?}"
        );
    }
    let c = h.counter_reaches("nostr_dropped_duplicate", 1).await;
    assert_eq!(c["nostr_events_published"], 2, "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_a_bad_signature_is_dropped_and_counted() {
    // A relay told not to check signatures: the only way to make a real
    // relay serve a forged event.
    let lax = NostrRelay::start_with(NostrRelayOptions {
        accept_bad_signatures: true,
        ..Default::default()
    })
    .expect("nostr-relay (make tools)");
    let mut h = Harness::new("nostr-badsig").await;
    h.start_bot(config(&[lax.url()], json!({}))).await;
    h.relay_state(&lax.url(), "connected").await;
    let alice = Peer::keygen();
    let sk = alice["secret"].as_str().unwrap();
    let bad = Peer::publish_bad_signature(&[&lax.url()], sk, "forged");
    assert_eq!(
        bad["ok"][lax.url()][0],
        true,
        "the lax relay stored it: {bad}"
    );
    let good = Peer::publish(&[&lax.url()], sk, "genuine", json!([]));
    h.event_with_id(good["id"].as_str().unwrap()).await;
    h.drain(Duration::from_millis(500)).await;
    assert!(
        !h.counts().contains_key(bad["id"].as_str().unwrap()),
        "a forged event reached the bus"
    );
    let c = h.counter_reaches("nostr_dropped_bad_signature", 1).await;
    assert_eq!(c["nostr_dropped_bad_signature"], 1, "{c}");
    assert_eq!(c["nostr_events_published"], 1, "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_requires_auth_is_answered_and_accepts_writes() {
    let mut strict = NostrRelay::start_with(NostrRelayOptions {
        writers_with_auth: Some(vec![bot_pubkey()]),
        ..Default::default()
    })
    .expect("nostr-relay (make tools)");
    // Without NIP-42 the relay refuses writes (so the test can fail).
    let alice = Peer::keygen();
    let refused = Peer::try_publish(
        &[&strict.url()],
        alice["secret"].as_str().unwrap(),
        "x",
        json!([]),
    );
    assert_eq!(refused["ok"][strict.url()][0], false, "{refused}");

    // The relay is down when the bot asks to write, so the event goes out
    // the moment the connection opens, before the challenge is answered:
    // refused for auth, then sent again once authenticated.
    strict.stop();
    let mut h = Harness::new("nostr-auth").await;
    // Generous: nostr-relay sleeps 2 s before it answers a refused write.
    h.start_bot(config(&[strict.url()], json!({"publish_timeout": "18s"})))
        .await;
    let (ack, ()) = tokio::join!(
        h.request("_", "note", json!({"text": "authenticated note"})),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            tokio::task::block_in_place(|| strict.restart()).expect("relay restarts");
        }
    );
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["relays"][0]["accepted"], true, "{ack}");
    let got = Peer::fetch(&strict.url(), json!({"ids": [ack["id"]]}));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["valid"], true);
    assert_eq!(got[0]["event"]["pubkey"], bot_pubkey());
    // Later writes on the authenticated connection go straight through.
    let ack = h.request("_", "note", json!({"text": "second"})).await;
    assert_eq!(ack["relays"][0]["accepted"], true, "{ack}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.relays().await[&strict.url()]["auth"] != "done" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            h.relays().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = h.counter_reaches("nostr_auth_sent", 1).await;
    assert_eq!(c["nostr_ok_refused"], 0, "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_third_relay_and_removes_one_without_a_restart() {
    let a = NostrRelay::start().expect("nostr-relay (make tools)");
    let b = NostrRelay::start().expect("nostr-relay (make tools)");
    let c = NostrRelay::start().expect("nostr-relay (make tools)");
    let mut h = Harness::new("nostr-reload").await;
    h.start_bot(config(&[a.url(), b.url()], json!({}))).await;
    h.relay_state(&a.url(), "connected").await;
    let pid = h.bot.as_ref().unwrap().child.id();

    let ack = h
        .control(json!({"verb": "reload", "config": config(&[b.url(), c.url()], json!({}))}))
        .await;
    assert!(ack.ok, "{ack:?}");
    h.relay_state(&c.url(), "connected").await;
    let relays = h.relays().await;
    assert!(!relays.contains_key(&a.url()), "{relays:?}");
    assert_eq!(relays.len(), 2, "{relays:?}");
    assert_eq!(
        h.bot.as_ref().unwrap().child.id(),
        pid,
        "the operator restarted"
    );

    // Writes go to B and C only; reads come from C, not from A.
    let ack = h
        .request("_", "note", json!({"text": "after reload"}))
        .await;
    let urls: Vec<&str> = ack["relays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), 2, "{ack}");
    assert!(
        urls.contains(&b.url().as_str()) && urls.contains(&c.url().as_str()),
        "{ack}"
    );
    let alice = Peer::keygen();
    let sk = alice["secret"].as_str().unwrap();
    let on_a = Peer::publish(&[&a.url()], sk, "only on the removed relay", json!([]));
    let on_c = Peer::publish(&[&c.url()], sk, "only on the new relay", json!([]));
    h.event_with_id(on_c["id"].as_str().unwrap()).await;
    h.drain(Duration::from_millis(800)).await;
    assert!(
        !h.counts().contains_key(on_a["id"].as_str().unwrap()),
        "read from a removed relay"
    );

    // A filter change applies too: only #t=sb from now on.
    let cfg = config(
        &[b.url(), c.url()],
        json!({"subscriptions": [{"name": "tagged", "hashtags": ["sb"]}]}),
    );
    assert!(h.control(json!({"verb": "reload", "config": cfg})).await.ok);
    // The new REQ (sent after the CLOSE of the old one) records its mark.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = h.request("_", "relays", json!({})).await;
        if reply["marks"]["tagged"].get(c.url()).is_some() && reply["marks"].get("notes").is_none()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no REQ for the new filter: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let plain = Peer::publish(&[&c.url()], sk, "untagged", json!([]));
    let tagged = Peer::publish(&[&c.url()], sk, "tagged", json!([["t", "sb"]]));
    h.event_with_id(tagged["id"].as_str().unwrap()).await;
    h.drain(Duration::from_millis(500)).await;
    assert!(
        !h.counts().contains_key(plain["id"].as_str().unwrap()),
        "old filter still active"
    );
    assert_eq!(h.bot.as_ref().unwrap().child.id(), pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_before_any_event_resumes_from_the_first_start() {
    let a = NostrRelay::start().expect("nostr-relay (make tools)");
    let mut h = Harness::new("nostr-kill-early").await;
    let cfg = config(&[a.url()], json!({}));
    h.start_bot(cfg.clone()).await;
    h.relay_state(&a.url(), "connected").await;
    h.kill_bot().await;
    let alice = Peer::keygen();
    // Stamped a little before the restart, as an event written while the
    // bot was down is: the restarted bot must still ask for it.
    let e = Peer::publish(
        &[&a.url()],
        alice["secret"].as_str().unwrap(),
        "while dead",
        json!([]),
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.start_bot(cfg).await;
    h.event_with_id(e["id"].as_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_relay_behind_a_private_ca_is_read_and_written() {
    let ca = switchboard_testkit::TestCa::new().expect("openssl");
    let relay = NostrRelay::start_with(NostrRelayOptions {
        tls: Some((ca.server_cert_file(), ca.server_key_file())),
        ..Default::default()
    })
    .expect("nostr-relay (make tools)");
    assert!(relay.url().starts_with("wss://"));
    let mut h = Harness::new("nostr-wss").await;
    // Without the CA the certificate is not trusted: no connection.
    let untrusted = config(&[relay.url()], json!({}));
    h.start_bot(untrusted).await;
    let down = h.relay_state(&relay.url(), "backoff").await;
    assert!(
        down["last_error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("certificate"),
        "{down}"
    );
    h.kill_bot().await;

    let trusted = config(&[relay.url()], json!({"tls_ca": ca.ca_file()}));
    h.start_bot(trusted).await;
    h.relay_state(&relay.url(), "connected").await;
    // Alice's note, handed to the bot pre-signed: written over TLS, then
    // read back over TLS through the subscription.
    let alice = Peer::keygen();
    let note = Peer::sign(alice["secret"].as_str().unwrap(), "over tls");
    let ack = h.request("_", "raw", json!({"event": note})).await;
    assert_eq!(ack["relays"][0]["accepted"], true, "{ack}");
    let d = h.event_with_id(note["id"].as_str().unwrap()).await;
    assert_eq!(
        d.envelope().header("nostr-relays"),
        Some(relay.url().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_halted_events_wait_and_arrive_on_resume() {
    let a = NostrRelay::start().expect("nostr-relay (make tools)");
    let mut h = Harness::new("nostr-halt").await;
    h.start_bot(config(&[a.url()], json!({}))).await;
    h.relay_state(&a.url(), "connected").await;
    assert!(h.control(json!({"verb": "halt"})).await.ok);
    let alice = Peer::keygen();
    let e = Peer::publish(
        &[&a.url()],
        alice["secret"].as_str().unwrap(),
        "held",
        json!([]),
    );
    h.drain(Duration::from_millis(800)).await;
    assert!(
        !h.counts().contains_key(e["id"].as_str().unwrap()),
        "published while halted"
    );
    assert!(h.control(json!({"verb": "resume"})).await.ok);
    h.event_with_id(e["id"].as_str().unwrap()).await;
}

/// With every relay it reads from down, the operator says so in its
/// health (degraded, with each relay's error) and is ok again once one is
/// back; one relay down among several is not trouble.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_while_no_read_relay_is_connected() {
    let mut a = NostrRelay::start().expect("nostr-relay (make tools)");
    let mut h = Harness::new("nostr-health").await;
    h.start_bot(config(&[a.url()], json!({"reconnect": ["200ms", "400ms"]})))
        .await;
    h.relay_state(&a.url(), "connected").await;
    a.stop();
    let hb = h.heartbeat_until(|hb| hb["health"] == "degraded").await;
    let reason = hb["health_reason"].as_str().unwrap_or("");
    assert!(
        reason.contains(&a.url()) && reason.contains("no relay to read from"),
        "{hb}"
    );
    a.restart().expect("relay restarts on the same port");
    h.relay_state(&a.url(), "connected").await;
    h.heartbeat_until(|hb| hb.get("health").is_none()).await;
}
