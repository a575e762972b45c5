//! The wire contract is language-neutral: `operators/python-echo/wire_echo.py`
//! (nats-py and the standard library, no Switchboard code) runs under a
//! real `switchboard run` and is driven by the Rust bus and the daemon's
//! API like any Rust operator. Needs `make tools` (the venv with nats-py).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use switchboard_bus::{Envelope, RawSubscription};
use switchboard_proto::api::{CtlOutcome, CtlReply, SupervisedState as S};
use switchboard_proto::{
    control_subject, headers, heartbeat_subject, ready_subject, ChatAddress, ControlAck,
    FailureCode, Heartbeat, OperatorId, OperatorState, Ready, Verb,
};

const ID: &str = "py";

fn id() -> OperatorId {
    OperatorId::new(ID).expect("a valid id")
}

/// The project's Python, with nats-py: fail (never skip) without it.
fn python() -> PathBuf {
    let python = switchboard_testkit::workspace_root().join(".tools/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `make tools` (it installs nats-py into .tools/venv)",
        python.display()
    );
    let import = std::process::Command::new(&python)
        .args(["-c", "import nats"])
        .output()
        .expect("run the venv's python");
    assert!(
        import.status.success(),
        "nats-py is not installed in .tools/venv: run `make tools` ({})",
        String::from_utf8_lossy(&import.stderr).trim()
    );
    python
}

fn script() -> PathBuf {
    let script = switchboard_testkit::workspace_root().join("operators/python-echo/wire_echo.py");
    assert!(script.is_file(), "{} is missing", script.display());
    script
}

/// A manifest for the Python operator: the interpreter is the command,
/// the script its argument, control over NATS, fast heartbeats.
fn manifest() -> String {
    format!(
        "id = \"{ID}\"\ncommand = {:?}\nargs = [\"-u\", {:?}]\ncontrol = \"nats\"\n\
         heartbeat_interval = \"200ms\"\nmissed_heartbeats = 10\nready_timeout = \"10s\"\n\
         stop_timeout = \"5s\"\n\n[config]\nprefix = \"!py \"\nlisten = [\"chat.*.*.*.message\"]\n",
        path_str(&python()),
        path_str(&script()),
    )
}

fn room() -> ChatAddress {
    ChatAddress::new("t", "x", "#room")
}

/// A chat message from "ferris" in `room()`, built by the Rust side.
fn chat(text: &str) -> Envelope {
    Envelope::new(
        "x", // the instance's own operator (PROTOCOL.md, "Authentic source")
        json!({"text": text, "sender": "ferris", "room": "#room", "private": false}),
    )
    .with_header(headers::ROOM, "#room")
}

async fn replies(d: &Daemon) -> RawSubscription {
    let sub = d
        .bus
        .subscribe_raw(&room().send_subject("message"))
        .await
        .unwrap();
    d.bus.sync().await.unwrap();
    sub
}

/// Publish `text` as a chat message; return the envelope sent.
async fn say(d: &Daemon, text: &str) -> Envelope {
    let env = chat(text);
    d.bus
        .publish(&room().event_subject("message"), &env)
        .await
        .unwrap();
    env
}

/// The next reply, decoded and validated by the Rust envelope parser.
async fn next_reply(sub: &mut RawSubscription) -> Envelope {
    let m = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a reply from the Python operator")
        .expect("subscription open");
    assert_eq!(m.subject, "send.t.x.=23room.message");
    Envelope::from_slice(&m.payload).unwrap_or_else(|e| {
        panic!(
            "the Python operator's envelope is invalid: {e}: {}",
            String::from_utf8_lossy(&m.payload)
        )
    })
}

/// Assert `reply` answers `request` with `text`, as the contract says.
fn assert_answers(reply: &Envelope, request: &Envelope, text: &str) {
    assert_eq!(reply.source, ID);
    assert_eq!(
        reply.header(headers::IN_REPLY_TO),
        request.id(),
        "{reply:?}"
    );
    assert_eq!(reply.header(headers::ROOM), Some("#room"));
    let id = reply.id().expect("the reply has an id");
    assert!(!id.is_empty() && Some(id) != request.id());
    assert_eq!(reply.body, json!({"text": text}));
}

async fn no_reply_for(sub: &mut RawSubscription, wait: Duration) {
    if let Ok(Some(m)) = tokio::time::timeout(wait, sub.next()).await {
        panic!("unexpected reply: {}", String::from_utf8_lossy(&m.payload));
    }
}

fn one(reply: CtlReply) -> CtlOutcome {
    assert!(reply.error.is_none(), "{reply:?}");
    assert_eq!(reply.results.len(), 1, "{reply:?}");
    reply.results.into_iter().next().unwrap()
}

fn ok(reply: CtlReply) -> CtlOutcome {
    let o = one(reply);
    assert!(o.ok, "{o:?}");
    o
}

/// A control request straight to the operator (no daemon in between).
async fn direct(d: &Daemon, payload: &[u8]) -> ControlAck {
    let bytes = d
        .bus
        .request_bytes(&control_subject(&id()), payload.to_vec().into(), WAIT)
        .await
        .expect("an ack");
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not a ControlAck: {e}: {}", String::from_utf8_lossy(&bytes)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_operator_runs_answers_and_counts_bad_input() {
    let d = Daemon::start(&[("py.toml", manifest())]).await;
    let first = d.wait_running(ID).await;
    let pid = first.pid.expect("a pid");
    assert_eq!(first.control, "nats");

    // Heartbeats arrive, carry counters, and keep it running: after
    // longer than heartbeat_interval x missed_heartbeats (2 s) it is
    // still the same process, never restarted.
    d.wait_for(ID, "a heartbeat with counters", |o| o.counters.is_some())
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let st = d.operator(ID).await.unwrap();
    assert_eq!((st.state, st.pid, st.restarts), (S::Running, Some(pid), 0));
    let since = st.last_heartbeat_ms.expect("last_heartbeat_ms");
    assert!(
        since < 2000,
        "last heartbeat {since} ms ago (200 ms interval)"
    );
    let mut beats = d
        .bus
        .subscribe_raw(&heartbeat_subject(&id()))
        .await
        .unwrap();
    let hb: Heartbeat = serde_json::from_value(next_json(&mut beats).await).unwrap();
    assert_eq!((hb.id.as_str(), hb.state), (ID, OperatorState::Running));
    let next: Heartbeat = serde_json::from_value(next_json(&mut beats).await).unwrap();
    assert_eq!(next.seq, hb.seq + 1, "seq counts heartbeats");

    // A chat envelope from the Rust bus, non-ASCII text and an escaped
    // room: the answer is a valid envelope for the Rust parser.
    let mut sub = replies(&d).await;
    let request = say(&d, "!py héllo ✓").await;
    assert_eq!(room().event_subject("message"), "chat.t.x.=23room.message");
    assert_answers(&next_reply(&mut sub).await, &request, "héllo ✓");

    // Garbage on its subject is counted, a repeat is dropped, texts
    // without the prefix are ignored, and it keeps answering.
    let subject = room().event_subject("message");
    for garbage in [
        &b"\xff\xfe not json"[..],
        b"[1,2,3]",
        br#"{"source":"","timestamp":"2024-05-01T12:00:00Z","body":null}"#,
        br#"{"source":"x","timestamp":"2024-05-01 12:00:00Z","body":null}"#,
        br#"{"source":"x","timestamp":"2024-05-01T12:00:00Z","headers":{"id":1},"body":null}"#,
        br#"{"source":"x","timestamp":"2024-05-01T12:00:00Z"}"#,
    ] {
        d.bus
            .publish_bytes(&subject, garbage.to_vec().into())
            .await
            .unwrap();
    }
    d.bus.publish(&subject, &request).await.unwrap(); // same id again
    say(&d, "no prefix here").await;
    let again = say(&d, "!py still here").await;
    assert_answers(&next_reply(&mut sub).await, &again, "still here");
    let st = d
        .wait_for(ID, "counters from a later heartbeat", |o| {
            o.counters
                .as_ref()
                .is_some_and(|c| c.malformed == 6 && c.duplicates == 1 && c.received == 3)
        })
        .await;
    let c = st.counters.unwrap();
    assert_eq!(c.handler_errors, 0, "{c:?}");
    assert!(c.published >= 3, "two replies and ready at least: {c:?}");
    assert_eq!((st.pid, st.restarts), (Some(pid), 0), "it never crashed");

    // Halted, it holds messages (and heartbeats say so); resumed, it
    // answers them.
    assert_eq!(ok(d.ctl(Verb::Halt, ID, None).await).state, S::Halted);
    let held = say(&d, "!py held").await;
    no_reply_for(&mut sub, Duration::from_millis(600)).await;
    assert_eq!(d.operator(ID).await.unwrap().state, S::Halted);
    assert_eq!(ok(d.ctl(Verb::Resume, ID, None).await).state, S::Running);
    assert_answers(&next_reply(&mut sub).await, &held, "held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_operator_obeys_every_control_verb_and_stops_cleanly() {
    let mut d = Daemon::start(&[("py.toml", manifest())]).await;
    let pid = d.wait_running(ID).await.pid.unwrap();
    let mut sub = replies(&d).await;

    // reload with a new prefix: the new one works, the old one does not
    // (its message goes first, so an answer to it would come first).
    ok(d.ctl(Verb::Reload, ID, Some(json!({"prefix": "?e "})))
        .await);
    say(&d, "!py old").await;
    let new = say(&d, "?e new").await;
    assert_answers(&next_reply(&mut sub).await, &new, "new");

    // reload with an unknown key: refused with the operator's message,
    // the old config stays.
    let bad = one(d
        .ctl(Verb::Reload, ID, Some(json!({"prefix": "!x ", "nope": 1})))
        .await);
    assert!(!bad.ok, "{bad:?}");
    assert_eq!(bad.code, Some(FailureCode::InvalidConfig), "{bad:?}");
    let msg = bad.error.unwrap();
    assert!(msg.contains("unknown field `nope`"), "{msg}");
    let still = say(&d, "?e kept").await;
    assert_answers(&next_reply(&mut sub).await, &still, "kept");

    // Requests straight to the operator: bad requests are answered
    // without a verb, in the Rust runtime's words.
    let ack = direct(&d, br#"{"verb":"pause"}"#).await;
    assert!(!ack.ok && ack.verb.is_none(), "{ack:?}");
    let err = ack.error.unwrap();
    assert_eq!(err.code, FailureCode::BadRequest);
    assert!(
        err.message.contains("unknown control verb `pause`"),
        "{err:?}"
    );
    for bad in [
        &b"nope"[..],
        b"[]",
        b"{}",
        br#"{"verb":1}"#,
        br#"{"verb":"reload"}"#,
    ] {
        let ack = direct(&d, bad).await;
        assert!(!ack.ok && ack.verb.is_none(), "{ack:?}");
        assert_eq!(ack.error.unwrap().code, FailureCode::BadRequest);
        assert_eq!(ack.state, OperatorState::Running);
    }

    // An in-place restart: same process, ready again, config kept.
    let mut ready = d.bus.subscribe_raw(&ready_subject(&id())).await.unwrap();
    d.bus.sync().await.unwrap();
    let ack = direct(&d, br#"{"verb":"restart"}"#).await;
    assert!(ack.ok, "{ack:?}");
    assert_eq!(
        (ack.verb, ack.state),
        (Some(Verb::Restart), OperatorState::Running)
    );
    let r: Ready = serde_json::from_value(next_json(&mut ready).await).unwrap();
    // Same process: the pid it has in its sandbox's namespace.
    let inner = switchboard_orchestrator::sandbox::inner_pid(pid).unwrap_or(pid);
    assert_eq!((r.id.as_str(), r.pid, r.protocol), (ID, inner, 1));
    let after = say(&d, "?e restarted").await;
    assert_answers(&next_reply(&mut sub).await, &after, "restarted");

    // SIGHUP: reload from SWITCHBOARD_CONFIG_FILE.
    let file = d.dir.path().join(format!("run/operators/{ID}/config.json"));
    assert!(file.is_file(), "the daemon writes {}", file.display());
    std::fs::write(&file, r#"{"prefix": "%% "}"#).unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut sent = Vec::new();
    loop {
        sent.push(say(&d, "%% hup").await);
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
            let reply = Envelope::from_slice(&m.payload).unwrap();
            let to = reply.header(headers::IN_REPLY_TO);
            let hup = sent
                .iter()
                .find(|e| e.id() == to)
                .expect("answers a `%% hup`");
            assert_answers(&reply, hup, "hup");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP never applied the config file"
        );
    }
    // Late answers to earlier tries, if any.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {}

    // The daemon's restart replaces the process; the reloaded config
    // (`?e `) goes to the new one.
    ok(d.ctl(Verb::Restart, ID, None).await);
    let pid2 = d
        .wait_for(ID, "a new process", |o| {
            o.state == S::Running && o.pid.is_some_and(|p| p != pid)
        })
        .await
        .pid
        .unwrap();
    gone(pid).await;
    assert_eq!(
        d.operator(ID).await.unwrap().last_exit.as_deref(),
        Some("exited with code 0"),
        "SIGTERM is a clean exit"
    );
    let fresh = say(&d, "?e fresh").await;
    assert_answers(&next_reply(&mut sub).await, &fresh, "fresh");

    // The shutdown verb straight to the operator: ack, final heartbeat
    // (state stopping), exit 0, and the daemon leaves it stopped.
    let mut beats = d
        .bus
        .subscribe_raw(&heartbeat_subject(&id()))
        .await
        .unwrap();
    d.bus.sync().await.unwrap();
    let ack = direct(&d, br#"{"verb":"shutdown"}"#).await;
    assert!(ack.ok, "{ack:?}");
    assert_eq!(
        (ack.verb, ack.state),
        (Some(Verb::Shutdown), OperatorState::Stopping)
    );
    loop {
        let hb: Heartbeat = serde_json::from_value(next_json(&mut beats).await).unwrap();
        if hb.state == OperatorState::Stopping {
            break;
        }
    }
    gone(pid2).await;
    let st = d.wait_for(ID, "exited", |o| o.state == S::Exited).await;
    assert_eq!(st.last_exit.as_deref(), Some("exited with code 0"));

    // Back with ctl restart; ctl shutdown (SIGTERM) stops it cleanly.
    ok(d.ctl(Verb::Restart, ID, None).await);
    let pid3 = d.wait_running(ID).await.pid.unwrap();
    assert_eq!(ok(d.ctl(Verb::Shutdown, ID, None).await).state, S::Exited);
    gone(pid3).await;
    assert_eq!(
        d.operator(ID).await.unwrap().last_exit.as_deref(),
        Some("exited with code 0")
    );

    // And once more, stopped with the daemon itself.
    ok(d.ctl(Verb::Restart, ID, None).await);
    let pid4 = d.wait_running(ID).await.pid.unwrap();
    let status = d.stop().await;
    assert!(status.success(), "daemon exit: {status:?}");
    gone(pid4).await;
}
