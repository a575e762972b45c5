//! What one hostile operator, with the default grants, cannot do to the
//! others (issue 19, items 5 to 7): pass for another operator
//! (authentic `source`), make the ping bot flood a room, or wipe the
//! stored history. Real daemon, real nats-server with JetStream, real
//! operator processes (`switchboard-flooder` plays the hostile one).
//!
//! Each test would fail on a bus without the guarantee: the forged
//! envelopes would arrive and be answered, the 20,000 pings would get
//! 20,000 pongs, and the flood would empty `switchboard logs pingbot`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use switchboard_bus::stream::{OperatorStreams, StartAt, StreamErrorKind, DEFAULT_STREAM};
use switchboard_bus::{Bus, Envelope, RawSubscription};
use switchboard_proto::ChatAddress;

fn sb(d: &Daemon, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(d.config_path())
        .args(args)
        .output()
        .expect("run switchboard")
}

/// The ping bot, with room for a busy machine: a flood of 20,000 pings on
/// 2 shared cores may hold a heartbeat back longer than the common 300 ms,
/// and a restart would reset its rate limits (checked: no restart).
fn steady_pingbot() -> String {
    pingbot_manifest("pingbot").replace("missed_heartbeats = 3", "missed_heartbeats = 50")
}

/// A `switchboard-flooder` manifest with default grants: no `publish` or
/// `subscribe` key, as a careless administrator would install it.
fn flooder(id: &str, config: Value) -> (String, String) {
    let mut toml = format!(
        "id = \"{id}\"\ncommand = \"{}\"\nheartbeat_interval = \"500ms\"\nmissed_heartbeats = 40\n[config]\n",
        switchboard_testkit::bin_path("switchboard-flooder").display()
    );
    for (k, v) in config.as_object().expect("an object") {
        toml.push_str(&format!("{k} = {v}\n"));
    }
    (format!("{id}.toml"), toml)
}

/// Add a manifest to a running daemon (SIGHUP) and wait until the
/// operator says it published everything; returns how many.
async fn add_and_wait_done(d: &Daemon, (file, manifest): (String, String)) -> u64 {
    let id = file.trim_end_matches(".toml").to_owned();
    let mut done = d
        .bus
        .subscribe_raw(&format!("sb.op.{id}.done"))
        .await
        .unwrap();
    d.bus.sync().await.unwrap();
    d.write_manifest(&file, &manifest);
    d.signal(Signal::SIGHUP);
    let report = tokio::time::timeout(WAIT * 2, done.next())
        .await
        .unwrap_or_else(|_| panic!("{id} never finished"))
        .unwrap();
    let report: Value = serde_json::from_slice(&report.payload).unwrap();
    report["published"].as_u64().unwrap()
}

/// The operator's heartbeat counter `name` (0 when not reported yet).
async fn counter(d: &Daemon, id: &str, name: &str) -> u64 {
    d.operator(id)
        .await
        .and_then(|o| o.counters)
        .and_then(|c| c.extra.get(name).copied())
        .unwrap_or(0)
}

/// `!ping` from the test client's own instance until `pingbot` answers.
async fn pingbot_answers_others(d: &Daemon) {
    let room = ChatAddress::new("t", d.bus.source(), "lobby");
    let mut replies = d
        .bus
        .subscribe(&format!("send.t.{}.#", d.bus.source()))
        .await
        .unwrap();
    d.bus.sync().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = json!({"text": "!ping", "sender": "ann", "room": "lobby"});
        d.bus
            .send(&room.event_subject("message"), body)
            .await
            .unwrap();
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(500), replies.next()).await
        {
            assert_eq!(r.source(), "pingbot");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pingbot never answered an authentic ping"
        );
    }
}

/// Everything `sub` delivers within `within`.
async fn drain(sub: &mut RawSubscription, within: Duration) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await {
        out.push((
            m.subject.clone(),
            serde_json::from_slice(&m.payload).unwrap_or(Value::Null),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_forged_as_the_ping_bot_are_refused_and_not_answered() {
    let d = Daemon::start(&[("pingbot.toml", steady_pingbot())]).await;
    d.wait_running("pingbot").await;
    let mut answers = d.bus.subscribe_raw("send.>").await.unwrap();
    let mut victims = d.bus.subscribe_raw("chat.t.victim.>").await.unwrap();
    d.bus.sync().await.unwrap();

    // mallory claims to be the ping bot: on another operator's chat
    // subjects (the server refuses the publish) and on its own (the ping
    // bot's SDK drops them: the source is not the subject's owner).
    let sent = add_and_wait_done(
        &d,
        flooder(
            "mallory",
            json!({
                "subjects": ["chat.t.victim.r.message", "chat.t.mallory.r.message"],
                "source": "pingbot",
                "text": "!ping",
                "count": 200,
            }),
        ),
    )
    .await;
    assert_eq!(sent, 200, "mallory's client accepted every publish");
    // The ping bot saw the 100 on mallory's own subjects and dropped them.
    d.wait_for("pingbot", "100 forged envelopes counted", |o| {
        o.counters
            .as_ref()
            .and_then(|c| c.extra.get("forged"))
            .is_some_and(|n| *n == 100)
    })
    .await;

    // None of the 100 on the victim's subjects reached the bus, and the
    // ping bot answered nothing. Positive controls: an envelope the CLI
    // puts on the victim's subject arrives first on the same
    // subscription, and an authentic ping is answered.
    let control = Envelope::new(
        "victim",
        json!({"text": "control", "sender": "v", "room": "r"}),
    );
    d.bus
        .publish("chat.t.victim.r.message", &control)
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, victims.next())
        .await
        .expect("the control arrives")
        .unwrap();
    let first: Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(
        first["body"]["text"], "control",
        "a forged envelope reached another operator's subject: {first}"
    );
    let answered = drain(&mut answers, Duration::from_millis(300)).await;
    assert!(
        answered.is_empty(),
        "the ping bot answered forged envelopes: {answered:?}"
    );
    pingbot_answers_others(&d).await;
    assert_eq!(counter(&d, "pingbot", "forged").await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_pings_get_a_bounded_number_of_pongs() {
    let d = Daemon::start(&[("pingbot.toml", steady_pingbot())]).await;
    d.wait_running("pingbot").await;
    let mut pongs = d.bus.subscribe_raw("send.t.mallory.>").await.unwrap();
    d.bus.sync().await.unwrap();
    let started = tokio::time::Instant::now();
    // Authentic pings (mallory's own instance), from 1,000 senders in 50
    // rooms, as fast as mallory can.
    let rooms: Vec<String> = (0..50)
        .map(|i| format!("chat.t.mallory.r{i}.message"))
        .collect();
    let sent = add_and_wait_done(
        &d,
        flooder(
            "mallory",
            json!({"subjects": rooms, "text": "!ping", "count": 20_000, "senders": 1000}),
        ),
    )
    .await;
    assert_eq!(sent, 20_000);
    // Another network still gets answers; and since mallory flushed before
    // saying it was done, and the ping bot reads both on one
    // subscription, the answer also means the flood was handled.
    pingbot_answers_others(&d).await;
    let got = drain(&mut pongs, Duration::from_millis(500)).await;
    let elapsed = started.elapsed().as_secs_f64();
    // The network's bucket: a burst of 20, then 5 a second (+ one for
    // rounding at the edges).
    let most = 20.0 + 5.0 * elapsed + 1.0;
    eprintln!("{} pongs for 20,000 pings in {elapsed:.1} s", got.len());
    assert!(
        got.len() >= 20 && got.len() as f64 <= most,
        "{} pongs in {elapsed:.1} s (expected 20 to {most:.0})",
        got.len()
    );
    assert!(got.iter().all(|(_, e)| e["source"] == "pingbot"));
    let bot = d.operator("pingbot").await.expect("pingbot");
    assert_eq!(bot.restarts, 0, "a restart resets the limits: {bot:?}");
    // Every other ping was counted as rate-limited (heartbeats carry it).
    let dropped = 20_000 - got.len() as u64;
    d.wait_for("pingbot", "the drops counted", |o| {
        o.counters
            .as_ref()
            .and_then(|c| c.extra.get("rate_limited"))
            .is_some_and(|n| *n == dropped)
    })
    .await;
}

/// Messages the stream `stream` holds on `filter` (0 while it does not
/// exist: the daemon makes operators' streams in the background).
async fn stored(bus: &Bus, stream: &str, filter: &str) -> u64 {
    let mut reader = match bus
        .read_stored(stream, &[filter.to_owned()], StartAt::First, false)
        .await
    {
        Ok(Some(r)) => r,
        Ok(None) => return 0,
        Err(e) if e.kind() == StreamErrorKind::NoStream => return 0,
        Err(e) => panic!("cannot read {stream}: {e}"),
    };
    let mut n = 0;
    while let Some(m) = reader.next().await {
        let m = m.expect("a stored message");
        n += 1;
        if m.pending == 0 {
            break;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_evicts_only_the_flooders_history() {
    // A small shared stream, so that the flood below overflows it.
    // The ping bot listens only to the test's own room, not to the flood.
    let pingbot = format!(
        "{}[config]\nlisten = [\"chat.t.test.#\"]\n",
        steady_pingbot()
    );
    let d = DaemonConfig::new()
        .manifest("pingbot.toml", pingbot)
        .stream("max_bytes", "24MiB")
        .stream("operator_max_bytes", "4MiB")
        .start()
        .await;
    d.wait_running("pingbot").await;
    // The victim: a protocol operator with ten lines of chat history.
    let said = add_and_wait_done(
        &d,
        flooder(
            "victim",
            json!({"subjects": ["chat.t.victim.r.message"], "text": "hello from the victim", "count": 10}),
        ),
    )
    .await;
    assert_eq!(said, 10);
    let own = OperatorStreams::name(DEFAULT_STREAM, "victim");
    let deadline = tokio::time::Instant::now() + WAIT;
    while stored(&d.bus, &own, "chat.t.victim.>").await < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "victim's stream never filled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pingbot_logs = |d: &Daemon| {
        let out = sb(d, &["logs", "pingbot", "-n", "0"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let before = loop {
        let lines = pingbot_logs(&d);
        if lines.iter().any(|l| l.contains("ready")) {
            break lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pingbot lines: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // mallory: 560 messages of 1 MiB (over max_message: delivered, not
    // kept); trudy: 560 of 100 KiB, 56 MB into a 24 MiB shared stream.
    let big = add_and_wait_done(
        &d,
        flooder(
            "mallory",
            json!({"subjects": ["chat.t.mallory.r.message"], "text": "spam", "count": 560, "pad": 1_000_000}),
        ),
    )
    .await;
    assert_eq!(big, 560);
    let medium = add_and_wait_done(
        &d,
        flooder(
            "trudy",
            json!({"subjects": ["chat.t.trudy.r.message"], "text": "spam", "count": 560, "pad": 100_000}),
        ),
    )
    .await;
    assert_eq!(medium, 560);
    d.bus.sync().await.unwrap();

    // The flood did evict the victim's lines from the shared stream (so
    // the test can fail), and none of the 1 MiB messages was kept.
    let deadline = tokio::time::Instant::now() + WAIT;
    while stored(&d.bus, DEFAULT_STREAM, "chat.t.trudy.>").await < 100 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "trudy's flood was not stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored(&d.bus, DEFAULT_STREAM, "chat.t.victim.>").await, 0);
    assert_eq!(stored(&d.bus, DEFAULT_STREAM, "chat.t.mallory.>").await, 0);

    // Yet the victim's history and the ping bot's log are whole.
    let out = sb(&d, &["replay", "chat.t.victim.#", "--since", "1h"]);
    assert!(out.status.success(), "{out:?}");
    let replayed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        replayed.matches("hello from the victim").count(),
        10,
        "{replayed}"
    );
    let after = pingbot_logs(&d);
    for line in &before {
        assert!(
            after.contains(line),
            "`{line}` is gone from switchboard logs pingbot"
        );
    }
}
