//! The whole product in one test: `switchboard run` supervising the Nostr
//! operator (least-privilege grants, its key by secret reference from a
//! file, its state dir from the daemon) and the ping bot, a real relay,
//! and a person on Nostr. Alice's `!ping` note crosses relay -> nostr
//! operator -> NATS -> pingbot (`ctx.reply`, which knows nothing of Nostr)
//! -> NATS -> nostr operator -> relay and comes back as a `pong` reply in
//! her thread; her private `!ping` (NIP-17) comes back as a private pong.

mod common;

use std::time::Duration;

use common::{Peer, BOT_SECRET};
use serde_json::json;
use switchboard_testkit::bin_path;
use switchboard_testkit::daemon::DaemonConfig;
use switchboard_testkit::nostr::NostrRelay;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_on_nostr_pings_the_bot_through_the_daemon() {
    let relay = NostrRelay::start().expect("nostr-relay (make tools)");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("nostr.key");
    std::fs::write(&secret, format!("{BOT_SECRET}\n")).unwrap();
    let mut daemon = DaemonConfig::new()
        .manifest(
            "nostr.toml",
            format!(
                "id = \"nostr-local\"\ncommand = \"{}\"\nheartbeat_interval = \"500ms\"\n\
                 publish = [\"chat.nostr.nostr-local.#\"]\nsubscribe = [\"send.nostr.nostr-local.#\"]\n\
                 [config]\nrelays = [\"{}\"]\nreconnect = [\"200ms\"]\n\
                 [[config.subscriptions]]\nname = \"notes\"\n\
                 [secrets]\n\"secret_key\" = {{ file = \"{}\" }}\n",
                bin_path("switchboard-nostr").display(),
                relay.url(),
                secret.display()
            ),
        )
        .manifest(
            "pingbot.toml",
            format!(
                "id = \"pingbot\"\ncommand = \"{}\"\n[config]\nlisten = [\"chat.nostr.#.message\"]\n",
                bin_path("switchboard-pingbot").display()
            ),
        )
        .start_in(dir)
        .await;

    // Both operators start at once: ask again every 2 s until a pong is
    // in the thread of one of the pings.
    let alice = Peer::keygen();
    let sk = alice["secret"].as_str().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let (ping, pong) = 'answered: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pong within {WAIT:?}"
        );
        let ping = Peer::publish(&[&relay.url()], sk, "!ping", json!([]));
        let ping_id = ping["id"].as_str().unwrap().to_string();
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let replies = Peer::fetch(&relay.url(), json!({"#e": [ping_id]}));
            if let Some(r) = replies
                .into_iter()
                .find(|r| r["event"]["content"] == "pong")
            {
                break 'answered (ping, r);
            }
        }
    };
    assert_eq!(pong["valid"], true);
    let event = &pong["event"];
    assert_eq!(event["kind"], 1);
    assert_eq!(
        event["tags"],
        json!([["e", ping["id"], "", "root"], ["p", alice["pubkey"]]]),
        "threaded under the ping, mentioning Alice"
    );

    // A private `!ping` (NIP-17) is answered privately by the same
    // `ctx.reply`: a gift-wrapped pong only Alice can open.
    let bot_npub = nostr::prelude::ToBech32::to_bech32(
        &nostr::prelude::Keys::parse(BOT_SECRET)
            .unwrap()
            .public_key(),
    )
    .unwrap();
    let dm = Peer::dm(&[&relay.url()], sk, &bot_npub, "!ping", "nip17", None);
    let deadline = tokio::time::Instant::now() + WAIT;
    let pong = loop {
        let inbox = Peer::inbox(&relay.url(), sk);
        if let Some(m) = inbox.into_iter().find(|m| m["text"] == "pong") {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no private pong within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(pong["sender"], bot_npub.as_str());
    assert_eq!(pong["scheme"], "nip17");
    assert!(
        pong["tags"]
            .as_array()
            .unwrap()
            .contains(&json!(["e", dm["message_id"]])),
        "{pong}"
    );

    // The operator kept its resume state in the state dir the daemon gave
    // it (its journal, folded into a snapshot after a minute).
    let state = daemon
        .dir
        .path()
        .join("state/operators/nostr-local/nostr-resume.log");
    let deadline = tokio::time::Instant::now() + WAIT;
    while std::fs::metadata(&state).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {}",
            state.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The secret never shows in the daemon's status output.
    let out = daemon.cli(&["status", "--json"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(BOT_SECRET));

    assert!(daemon.stop().await.success());
}
