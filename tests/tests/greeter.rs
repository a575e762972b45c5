//! The README's Greeter as a separate process against a real nats-server:
//! it answers in the room the greeting came from (subject, source, id,
//! in-reply-to, room header), and with no log settings at all its own
//! `info!` lines are in its log although its crate is not `switchboard…`.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use switchboard_bus::proto::{headers, launch, ready_subject, ChatMessage, OperatorId};
use switchboard_bus::{Bus, BusOptions, ChatAddress, Envelope};
use switchboard_testkit::NatsServer;
use tokio::io::AsyncBufReadExt;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_greeter_answers_in_the_room_and_logs_its_own_info() {
    let server = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&BusOptions::new(&server.url()), "irc-libera")
        .await
        .unwrap();
    let id = OperatorId::new("greeter-1").unwrap();
    let mut ready = bus.subscribe_raw(&ready_subject(&id)).await.unwrap();
    let mut requests = bus.subscribe("send.#").await.unwrap();
    bus.sync().await.unwrap();

    // As the orchestrator starts it: an empty environment (so no
    // SWITCHBOARD_LOG or RUST_LOG) plus the launch variables.
    let mut child = tokio::process::Command::new(switchboard_testkit::bin_path("greeter"))
        .env_clear()
        .env(launch::ID, id.as_str())
        .env(launch::NATS_URL, server.url())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn greeter");
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let log_in = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("greeter: {line}");
            log_in.lock().unwrap().push(line);
        }
    });
    tokio::time::timeout(WAIT, ready.next())
        .await
        .expect("ready")
        .unwrap();

    let room = ChatAddress::new("irc", "libera", "#rust.beginners");
    let body = ChatMessage::new("hello bot", "ferris", room.room.clone());
    // From the owner of `chat.irc.libera.…`: the operator `libera`.
    let question = Envelope::new("libera", serde_json::to_value(body).unwrap())
        .with_header(headers::ROOM, room.room.clone());
    bus.publish(&room.event_subject("message"), &question)
        .await
        .unwrap();
    let answer = tokio::time::timeout(WAIT, requests.next())
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(
        answer.subject,
        "send.irc.libera.=23rust=2Ebeginners.message"
    );
    let env = answer.into_envelope();
    assert_eq!(env.source, "greeter-1");
    assert_eq!(env.body, json!({"text": "hello, ferris"}));
    assert!(env.id().is_some_and(|i| Some(i) != question.id()));
    assert_eq!(env.header(headers::IN_REPLY_TO), question.id());
    assert_eq!(env.header(headers::ROOM), Some("#rust.beginners"));

    let ack = switchboard_tests::control(&bus, id.as_str(), json!({"verb": "shutdown"})).await;
    assert!(ack.ok, "{ack:?}");
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status}");
    // stderr closes with the process; give the reader a moment to finish.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let log = log.lock().unwrap().clone();
        let has = |needle: &str| log.iter().any(|l| l.contains("INFO") && l.contains(needle));
        if has("greeting everyone who says hello") && has("stopped") {
            assert!(
                has("ready"),
                "the runtime's own info is there too: {log:#?}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{log:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The binary is the README's code: a change to one shows in the other.
#[test]
fn the_greeter_binary_is_the_readme_code() {
    let root = switchboard_testkit::workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let block = readme
        .split_once("```rust,no_run\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("the README has a rust,no_run block");
    let bin = std::fs::read_to_string(root.join("tests/src/bin/greeter.rs")).unwrap();
    let code: Vec<&str> = bin
        .lines()
        .filter(|l| !l.starts_with("//!") && !l.contains("tracing::"))
        .skip_while(|l| l.is_empty())
        .collect();
    let readme_lines: Vec<&str> = block.lines().collect();
    assert_eq!(code, readme_lines);
}
