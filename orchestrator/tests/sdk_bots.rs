//! The dice bots written on the SDKs (`operators/py-dice/dice.py` on
//! sdk/python, `operators/ts-dice/dice.ts` on sdk/typescript) under a real
//! `switchboard run`: each answers `!roll` in a room, and a `!roll` sent
//! while the daemon has them halted is answered after `resume`, not
//! dropped. Their conformance is in tests/conformance.rs; the SDKs' own
//! tests are `make sdk-check`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::json;
use switchboard_bus::{Envelope, RawSubscription};
use switchboard_proto::{headers, ChatAddress, Verb};

fn room() -> ChatAddress {
    ChatAddress::new("t", "x", "#dice")
}

async fn roll(d: &Daemon, text: &str) -> String {
    let env = Envelope::new(
        "x", // the instance's own operator (PROTOCOL.md, "Authentic source")
        json!({"text": text, "sender": "ferris", "room": "#dice", "private": false}),
    )
    .with_header(headers::ROOM, "#dice");
    let id = env.id().expect("an id").to_owned();
    d.bus
        .publish(&room().event_subject("message"), &env)
        .await
        .unwrap();
    id
}

/// The answers to envelope `id`, by source, until each of `from` has
/// answered (or `within` passes).
async fn answers(
    sub: &mut RawSubscription,
    id: &str,
    from: &[&str],
    within: Duration,
) -> BTreeMap<String, String> {
    let mut got = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + within;
    while got.len() < from.len() {
        let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await else {
            break;
        };
        assert_eq!(m.subject, "send.t.x.=23dice.message");
        let env = Envelope::from_slice(&m.payload).expect("a valid envelope");
        if env.header(headers::IN_REPLY_TO) == Some(id) {
            assert_eq!(env.header(headers::ROOM), Some("#dice"));
            let text = env.body["text"].as_str().expect("a text").to_owned();
            got.insert(env.source.clone(), text);
        }
    }
    got
}

/// "ferris rolled 2 + 5 + 1 = 8": `count` dice of 1..=6 and their sum.
fn check_roll(text: &str, count: usize) {
    let rest = text
        .strip_prefix("ferris rolled ")
        .unwrap_or_else(|| panic!("{text:?}"));
    let (dice, sum) = rest.split_once(" = ").unwrap_or_else(|| panic!("{text:?}"));
    let dice: Vec<u32> = dice.split(" + ").map(|d| d.parse().unwrap()).collect();
    assert_eq!(dice.len(), count, "{text:?}");
    assert!(dice.iter().all(|d| (1..=6).contains(d)), "{text:?}");
    assert_eq!(
        dice.iter().sum::<u32>(),
        sum.parse::<u32>().unwrap(),
        "{text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_dice_bots_answer_in_a_room_and_hold_a_roll_while_halted() {
    let root = switchboard_testkit::workspace_root();
    let ts = ts_project(&root.join("operators/ts-dice/dice.ts"));
    let grants = "subscribe = [\"chat.*.*.*.message\"]\npublish = [\"send.*.*.*.message\"]\n\
                  heartbeat_interval = \"200ms\"\nmissed_heartbeats = 10\nready_timeout = \"10s\"\n";
    let py = format!(
        "id = \"py-dice\"\ncommand = {:?}\nargs = [\"-u\", {:?}]\n{grants}\n[env]\nPYTHONPATH = {:?}\n",
        path_str(&venv_python()),
        path_str(&root.join("operators/py-dice/dice.py")),
        path_str(&python_sdk()),
    );
    let node = format!(
        "id = \"ts-dice\"\ncommand = \"node\"\nargs = [{:?}]\n{grants}",
        path_str(&ts.join("dice.js")),
    );
    let d = Daemon::start(&[("py-dice.toml", py), ("ts-dice.toml", node)]).await;
    d.wait_running("py-dice").await;
    d.wait_running("ts-dice").await;
    let mut sub = d.bus.subscribe_raw("send.t.x.*.message").await.unwrap();
    d.bus.sync().await.unwrap();
    let both = ["py-dice", "ts-dice"];

    let id = roll(&d, "!roll 2d6").await;
    let got = answers(&mut sub, &id, &both, WAIT).await;
    assert_eq!(got.keys().map(String::as_str).collect::<Vec<_>>(), both);
    for text in got.values() {
        check_roll(text, 2);
    }

    let reply = d.ctl(Verb::Halt, "*-dice", None).await;
    assert_eq!(reply.results.len(), 2, "{reply:?}");
    assert!(reply.results.iter().all(|r| r.ok), "{reply:?}");
    let id = roll(&d, "!roll 3d6").await;
    let early = answers(&mut sub, &id, &both, Duration::from_secs(1)).await;
    assert!(early.is_empty(), "answered while halted: {early:?}");
    let reply = d.ctl(Verb::Resume, "*-dice", None).await;
    assert!(reply.results.iter().all(|r| r.ok), "{reply:?}");
    let got = answers(&mut sub, &id, &both, WAIT).await;
    assert_eq!(
        got.keys().map(String::as_str).collect::<Vec<_>>(),
        both,
        "the roll held while halted was not answered by each after resume"
    );
    for text in got.values() {
        check_roll(text, 3);
    }
}
