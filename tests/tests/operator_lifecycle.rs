//! An SDK operator as a separate process against a real nats-server:
//! ready, heartbeats, every control verb acked, reload in place, signals,
//! garbage input, and a server restart.

use std::time::Duration;

use futures::StreamExt;
use nix::sys::signal::Signal;
use serde_json::json;
use switchboard_bus::proto::{
    headers, heartbeat_subject, kinds, ready_subject, ChatAddress, ChatMessage, FailureCode,
    OperatorId, OperatorState, SendRequest, Verb,
};
use switchboard_bus::{Bus, BusOptions, Envelope, Pattern, Subscription};
use switchboard_testkit::NatsServer;
use switchboard_tests::{control, next_json, spawn_operator};

const WAIT: Duration = Duration::from_secs(10);

struct Harness {
    server: NatsServer,
    bus: Bus,
    ready: switchboard_bus::RawSubscription,
    heartbeats: switchboard_bus::RawSubscription,
    replies: Subscription,
}

impl Harness {
    async fn new(id: &str) -> Harness {
        let server = NatsServer::start().expect("nats-server");
        let bus = Bus::connect(&BusOptions::new(&server.url()), "test")
            .await
            .unwrap();
        let ready = bus
            .subscribe_raw(&ready_subject(&OperatorId::new(id).unwrap()))
            .await
            .unwrap();
        let heartbeats = bus
            .subscribe_raw(&heartbeat_subject(&OperatorId::new(id).unwrap()))
            .await
            .unwrap();
        let replies = bus
            .subscribe(&Pattern::parse("send.#").unwrap())
            .await
            .unwrap();
        bus.sync().await.unwrap();
        Harness {
            server,
            bus,
            ready,
            heartbeats,
            replies,
        }
    }

    /// Say `text` in `room` of the console protocol; returns the envelope.
    async fn say(&self, room: &ChatAddress, text: &str) -> Envelope {
        let body = ChatMessage {
            text: text.to_string(),
            sender: "alice".into(),
            room: room.room.clone(),
            private: false,
            extra: Default::default(),
        };
        // As the room's protocol operator: authentic (its instance).
        let env = Envelope::new(room.instance.as_str(), serde_json::to_value(body).unwrap())
            .with_header(headers::ROOM, room.room.clone());
        self.bus
            .publish(&room.event_subject(kinds::MESSAGE), &env)
            .await
            .unwrap();
        self.bus.flush().await.unwrap();
        env
    }

    async fn next_reply(&mut self) -> (String, Envelope, String) {
        let d = tokio::time::timeout(WAIT, self.replies.next())
            .await
            .expect("a reply arrives")
            .unwrap();
        let text = serde_json::from_value::<SendRequest>(d.envelope().body.clone())
            .expect("reply body is a SendRequest")
            .text;
        (d.subject.clone(), d.into_envelope(), text)
    }

    async fn no_reply_for(&mut self, d: Duration) {
        if let Ok(Some(r)) = tokio::time::timeout(d, self.replies.next()).await {
            panic!("unexpected reply on {}: {:?}", r.subject, r.envelope().body);
        }
    }

    async fn next_heartbeat(&mut self) -> serde_json::Value {
        next_json(&mut self.heartbeats, WAIT).await
    }

    /// The first heartbeat for which `cond` holds, failing after `WAIT`
    /// with the last one seen.
    async fn heartbeat_until(
        &mut self,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let hb = self.next_heartbeat().await;
            if cond(&hb) {
                return hb;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "last heartbeat: {hb}"
            );
        }
    }
}

/// The ping bot without answer limits, for tests that count on it
/// answering every ping (the limits are tested in the orchestrator's
/// `trust` tests).
const UNLIMITED: &[(&str, &str)] = &[(
    switchboard_bus::proto::launch::CONFIG,
    r#"{"rate": {"sender": "off", "room": "off", "network": "off"}}"#,
)];

fn lobby() -> ChatAddress {
    ChatAddress::new("console", "local", "#rust.beginners")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_round_trips_between_two_processes() {
    let mut h = Harness::new("pingbot").await;
    let _op = spawn_operator("switchboard-pingbot", "pingbot", &h.server.url(), &[]);
    next_json(&mut h.ready, WAIT).await;

    let text = "héllo wörld ✓ \"quoted\" {json} \\ tab\t";
    let sent = h.say(&lobby(), &format!("!echo {text}")).await;
    let (subject, reply, got) = h.next_reply().await;
    assert_eq!(subject, "send.console.local.=23rust=2Ebeginners.message");
    assert_eq!(got, text);
    assert_eq!(reply.source, "pingbot");
    assert_eq!(reply.header(headers::IN_REPLY_TO), sent.id());
    assert_eq!(reply.header(headers::ROOM), Some("#rust.beginners"));
    assert!(reply.timestamp >= sent.timestamp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_announces_heartbeats_acks_every_verb_and_shuts_down() {
    let mut h = Harness::new("bot1").await;
    let mut op = spawn_operator("switchboard-pingbot", "bot1", &h.server.url(), &[]);

    // Ready: who, which process, which protocol.
    let ready = next_json(&mut h.ready, WAIT).await;
    assert_eq!(ready["id"], "bot1");
    assert_eq!(ready["pid"], op.pid());
    assert_eq!(ready["protocol"], 1);

    // Heartbeats at the given interval, with rising sequence numbers.
    let a = h.next_heartbeat().await;
    let b = h.next_heartbeat().await;
    assert_eq!(a["state"], "running");
    assert!(b["seq"].as_u64() > a["seq"].as_u64(), "{a} then {b}");
    assert!(b["counters"]["received"].is_u64());

    // Working: !ping -> pong.
    h.say(&lobby(), "!ping").await;
    assert_eq!(h.next_reply().await.2, "pong");

    // halt: acked, reported, and deliveries are held, not answered.
    let ack = control(&h.bus, "bot1", json!({"verb": "halt"})).await;
    assert!(ack.ok, "{ack:?}");
    assert_eq!(ack.verb, Some(Verb::Halt));
    assert_eq!(ack.state, OperatorState::Halted);
    h.say(&lobby(), "!echo held").await;
    h.no_reply_for(Duration::from_millis(400)).await;
    h.heartbeat_until(|hb| hb["state"] == "halted").await;

    // resume: acked, and the held message is answered.
    let ack = control(&h.bus, "bot1", json!({"verb": "resume"})).await;
    assert!(ack.ok && ack.state == OperatorState::Running, "{ack:?}");
    assert_eq!(h.next_reply().await.2, "held");

    // reload in place: new config applies, same process, no new ready.
    let ack = control(
        &h.bus,
        "bot1",
        json!({"verb": "reload", "config": {"listen": ["chat.other.#"]}}),
    )
    .await;
    assert!(ack.ok, "{ack:?}");
    h.say(&lobby(), "!ping").await;
    h.no_reply_for(Duration::from_millis(400)).await;
    let other = ChatAddress::new("other", "net", "room");
    h.say(&other, "!ping").await;
    let (subject, _, text) = h.next_reply().await;
    assert_eq!(
        (subject.as_str(), text.as_str()),
        ("send.other.net.room.message", "pong")
    );
    assert_eq!(ready["pid"], op.pid());

    // A config the operator cannot take is refused; the old one stays.
    let ack = control(
        &h.bus,
        "bot1",
        json!({"verb": "reload", "config": {"bogus": 1}}),
    )
    .await;
    assert!(!ack.ok);
    assert_eq!(ack.error.as_ref().unwrap().code, FailureCode::InvalidConfig);
    h.say(&other, "!ping").await;
    assert_eq!(h.next_reply().await.2, "pong");

    // A malformed request gets a bad_request ack, not silence.
    let reply: serde_json::Value = h
        .bus
        .request_json("sb.ctl.bot1", &json!({"verb": "explode"}), WAIT)
        .await
        .unwrap();
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["error"]["code"], "bad_request");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("explode"));

    // restart in place: ready again from the same process, config kept.
    let ack = control(&h.bus, "bot1", json!({"verb": "restart"})).await;
    assert!(ack.ok, "{ack:?}");
    let again = next_json(&mut h.ready, WAIT).await;
    assert_eq!(again["pid"], op.pid());
    h.say(&other, "!ping").await;
    assert_eq!(h.next_reply().await.2, "pong");

    // shutdown: acked, then exit 0 within 2 s.
    let ack = control(&h.bus, "bot1", json!({"verb": "shutdown"})).await;
    assert!(ack.ok && ack.verb == Some(Verb::Shutdown), "{ack:?}");
    let status = op.exit_within(Duration::from_secs(2)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_terminate_and_reload() {
    let mut h = Harness::new("sig1").await;
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.json");
    std::fs::write(&config_file, "{}").unwrap();
    let mut op = spawn_operator(
        "switchboard-pingbot",
        "sig1",
        &h.server.url(),
        &[
            ("SWITCHBOARD_CONTROL", "signals"),
            ("SWITCHBOARD_CONFIG_FILE", config_file.to_str().unwrap()),
        ],
    );
    next_json(&mut h.ready, WAIT).await;

    // SIGHUP re-reads the config file.
    std::fs::write(&config_file, r#"{"listen": ["chat.hup.#"]}"#).unwrap();
    op.signal(Signal::SIGHUP);
    let hup = ChatAddress::new("hup", "x", "y");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        h.say(&hup, "!ping").await;
        if let Ok(Some(d)) =
            tokio::time::timeout(Duration::from_millis(200), h.replies.next()).await
        {
            assert_eq!(d.subject, "send.hup.x.y.message");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP reload never applied"
        );
    }

    // SIGTERM: clean exit 0, quickly.
    op.signal(Signal::SIGTERM);
    let status = op.exit_within(Duration::from_secs(2)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_its_subjects_is_counted_and_it_keeps_working() {
    let mut h = Harness::new("g1").await;
    let _op = spawn_operator("switchboard-pingbot", "g1", &h.server.url(), &[]);
    next_json(&mut h.ready, WAIT).await;
    let subject = lobby().event_subject(kinds::MESSAGE);
    let garbage: Vec<&[u8]> = vec![
        b"\x00\x01\x02",
        b"not json",
        b"{}",
        br#"{"source":"x","timestamp":"2026-01-01T00:00:00Z"}"#,
        &[0xff; 2048],
    ];
    for g in &garbage {
        h.bus
            .publish_bytes(&subject, bytes::Bytes::copy_from_slice(g))
            .await
            .unwrap();
    }
    // A well-formed envelope whose body is not a chat message: the handler
    // fails, which is counted too, and nothing crashes.
    // (From the room's owner: a forged one would be dropped before it.)
    let odd = Envelope::new(lobby().instance.as_str(), json!([1, 2, 3]));
    h.bus.publish(&subject, &odd).await.unwrap();
    h.say(&lobby(), "!ping").await;
    assert_eq!(h.next_reply().await.2, "pong");
    let n = garbage.len() as u64;
    let hb = h
        .heartbeat_until(|hb| {
            hb["counters"]["malformed"] == n && hb["counters"]["handler_errors"] == 1
        })
        .await;
    assert_eq!(hb["counters"]["received"], 2, "{hb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_reconnects_after_the_server_restarts() {
    let mut h = Harness::new("r1").await;
    let _op = spawn_operator("switchboard-pingbot", "r1", &h.server.url(), &[]);
    next_json(&mut h.ready, WAIT).await;
    h.say(&lobby(), "!ping").await;
    assert_eq!(h.next_reply().await.2, "pong");

    h.server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.server.restart().expect("restart on the same port");

    // Both clients reconnect by themselves; ask until the bot answers.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        h.say(&lobby(), "!ping").await;
        if let Ok(Some(d)) =
            tokio::time::timeout(Duration::from_millis(300), h.replies.next()).await
        {
            assert_eq!(d.source(), "r1");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer after restart"
        );
    }
    h.heartbeat_until(|hb| hb["counters"]["reconnects"].as_u64() >= Some(1))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_patterns_of_one_operator_deliver_once() {
    let mut h = Harness::new("o1").await;
    let config = json!({"listen": ["chat.#", "chat.*.*.*.message", "#.=23rust=2Ebeginners.*"]});
    let _op = spawn_operator(
        "switchboard-testop",
        "o1",
        &h.server.url(),
        &[("SWITCHBOARD_CONFIG", &config.to_string())],
    );
    next_json(&mut h.ready, WAIT).await;
    h.say(&lobby(), "one").await;
    assert_eq!(h.next_reply().await.2, "seen: one");
    h.no_reply_for(Duration::from_millis(400)).await;
    // The reply on send.console.local.=23rust=2Ebeginners.message matches
    // the third pattern too: one more envelope handed over (and refused
    // by the handler, as it is no chat message).
    let hb = h
        .heartbeat_until(|hb| hb["counters"]["duplicates"] == 2 && hb["counters"]["received"] == 2)
        .await;
    assert_eq!(hb["counters"]["handler_errors"], 1, "{hb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_restores_the_old_config_and_a_failed_restart_exits() {
    let mut h = Harness::new("f1").await;
    let dir = tempfile::tempdir().unwrap();
    let trap = dir.path().join("fail");
    let config = json!({"listen": ["chat.#"], "fail_start_if_exists": trap});
    let mut op = spawn_operator(
        "switchboard-testop",
        "f1",
        &h.server.url(),
        &[("SWITCHBOARD_CONFIG", &config.to_string())],
    );
    next_json(&mut h.ready, WAIT).await;

    // The new config's start fails: handler_failed, and the operator is
    // put back on the old config (ready again, still answering).
    let bad = json!({"listen": ["other.#"], "fail_start_if_exists": dir.path()});
    let ack = control(&h.bus, "f1", json!({"verb": "reload", "config": bad})).await;
    assert!(!ack.ok);
    assert_eq!(ack.error.as_ref().unwrap().code, FailureCode::HandlerFailed);
    assert!(ack.error.unwrap().message.contains("refusing to start"));
    next_json(&mut h.ready, WAIT).await;
    h.say(&lobby(), "still here").await;
    assert_eq!(h.next_reply().await.2, "seen: still here");

    // Now even the current config cannot start: restart is refused and the
    // process exits non-zero so its supervisor starts a fresh one.
    std::fs::write(&trap, "").unwrap();
    let ack = control(&h.bus, "f1", json!({"verb": "restart"})).await;
    assert!(!ack.ok, "{ack:?}");
    assert_eq!(ack.error.as_ref().unwrap().code, FailureCode::HandlerFailed);
    let status = op.exit_within(Duration::from_secs(2)).await;
    assert!(!status.success(), "{status:?}");
}

/// Deliveries held while halted and then dropped with the subscriptions
/// (here by a shutdown) are counted in the final heartbeat, never lost
/// silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_dropped_at_shutdown_are_counted() {
    let mut h = Harness::new("d1").await;
    let mut op = spawn_operator("switchboard-pingbot", "d1", &h.server.url(), &[]);
    next_json(&mut h.ready, WAIT).await;
    let ack = control(&h.bus, "d1", json!({"verb": "halt"})).await;
    assert!(ack.ok, "{ack:?}");
    for _ in 0..20 {
        h.say(&lobby(), "!ping").await;
    }
    h.bus.sync().await.unwrap();
    // Held by the halted operator; give them time to reach its client.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ack = control(&h.bus, "d1", json!({"verb": "shutdown"})).await;
    assert!(ack.ok, "{ack:?}");
    let hb = h.heartbeat_until(|hb| hb["state"] == "stopping").await;
    // Accepted by its subscriptions, never handled (no pong), dropped with
    // them at shutdown, and said.
    assert_eq!(hb["counters"]["discarded"], 20, "{hb}");
    assert_eq!(hb["counters"]["received"], 20, "{hb}");
    assert!(op.exit_within(WAIT).await.success());
}

/// A running operator asked to shut down first handles what arrived
/// before the request (as on SIGTERM): every ping sent before it is
/// answered, none discarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_request_hands_over_what_arrived_before_it() {
    let mut h = Harness::new("d2").await;
    let mut op = spawn_operator("switchboard-pingbot", "d2", &h.server.url(), UNLIMITED);
    next_json(&mut h.ready, WAIT).await;
    for _ in 0..50 {
        h.say(&lobby(), "!ping").await;
    }
    let ack = control(&h.bus, "d2", json!({"verb": "shutdown"})).await;
    assert!(ack.ok, "{ack:?}");
    let hb = h.heartbeat_until(|hb| hb["state"] == "stopping").await;
    assert_eq!(hb["counters"]["received"], 50, "{hb}");
    assert!(
        hb["counters"]["discarded"].as_u64().unwrap_or(0) == 0,
        "{hb}"
    );
    let mut pongs = 0;
    while pongs < 50 {
        assert_eq!(h.next_reply().await.2, "pong");
        pongs += 1;
    }
    assert!(op.exit_within(WAIT).await.success());
}

/// A halted operator holds what arrives for `resume` within a byte bound
/// (64 MiB): past it the oldest are shed and counted, and the newest are
/// answered after `resume`. Without the bound, each subscription's queue
/// could hold 65,536 envelopes of up to 1 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_operator_holds_a_bounded_amount_and_counts_what_it_sheds() {
    let mut h = Harness::new("big").await;
    let mut op = spawn_operator("switchboard-pingbot", "big", &h.server.url(), UNLIMITED);
    next_json(&mut h.ready, WAIT).await;
    let ack = control(&h.bus, "big", json!({"verb": "halt"})).await;
    assert!(ack.ok, "{ack:?}");
    let pad = "x".repeat(1_000_000);
    let subject = lobby().event_subject("message");
    let sent = 100;
    for i in 0..sent {
        let env = Envelope::new(
            lobby().instance.as_str(),
            json!({"text": "!ping", "sender": "alice", "room": lobby().room, "pad": pad, "n": i}),
        );
        h.bus.publish(&subject, &env).await.unwrap();
        if i % 10 == 9 {
            h.bus.sync().await.unwrap();
        }
    }
    h.bus.sync().await.unwrap();
    let hb = h
        .heartbeat_until(|hb| hb["counters"]["received"].as_u64() == Some(sent))
        .await;
    let shed = hb["counters"]["held_shed"].as_u64().unwrap_or(0);
    assert!(
        (30..=40).contains(&shed),
        "100 envelopes of 1 MB, 64 MiB held: {hb}"
    );
    let ack = control(&h.bus, "big", json!({"verb": "resume"})).await;
    assert!(ack.ok, "{ack:?}");
    let mut answered = 0;
    while answered < sent - shed {
        assert_eq!(h.next_reply().await.2, "pong");
        answered += 1;
    }
    h.no_reply_for(Duration::from_millis(300)).await;
    op.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(op.exit_within(WAIT).await.success());
}
