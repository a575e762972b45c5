//! A Nostr relay killed and restarted while notes flow: an independent
//! client (the Nostr operator's test peer, PyPI nostr-sdk) posts a note
//! every 100 ms to two real relays (PyPI nostr-relay); relay A is killed
//! and started again on its port. Every note a relay accepted must reach
//! the bus exactly once, and the operator must reconnect by itself (same
//! process).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use switchboard_bus::Pattern;
use switchboard_proto::api::SupervisedState;

use crate::rig::{operator, start};
use crate::{Outcome, Tally, WAIT};

/// A throwaway key for the bot (hex); only ever used on loopback relays.
const BOT_SECRET: &str = "7f3b0e0d4c5a1f2e9d8c7b6a5f4e3d2c1b0a99887766554433221100ffeeddcc";

fn manifest(relays: &[String], secret_file: &std::path::Path) -> String {
    let relays: Vec<String> = relays.iter().map(|r| format!("{r:?}")).collect();
    format!(
        "id = \"nostr-chaos\"\ncommand = {:?}\nheartbeat_interval = \"100ms\"\nmissed_heartbeats = 5\n\
         stop_timeout = \"1s\"\npublish = [\"chat.nostr.nostr-chaos.#\"]\nsubscribe = [\"send.nostr.nostr-chaos.#\"]\n\
         [config]\nrelays = [{}]\nreconnect = [\"200ms\", \"400ms\"]\n\
         [[config.subscriptions]]\nname = \"notes\"\nkinds = [1]\n\
         [secrets]\n\"secret_key\" = {{ file = {:?} }}\n",
        switchboard_testkit::bin_path("switchboard-nostr"),
        relays.join(", "),
        secret_file
    )
}

fn peer(args: &[&str]) -> tokio::process::Command {
    let root = switchboard_testkit::workspace_root();
    let mut cmd = tokio::process::Command::new(root.join(".tools/venv/bin/python"));
    cmd.arg(root.join("operators/nostr/tests/peer/nostr_peer.py"))
        .args(args)
        .kill_on_drop(true);
    cmd
}

/// Relay A killed and restarted while notes flow to A and B.
///
/// # Errors
///
/// When the rig fails.
pub async fn nostr_relay_restart() -> anyhow::Result<Outcome> {
    let mut a = switchboard_testkit::nostr::NostrRelay::start()?;
    let b = switchboard_testkit::nostr::NostrRelay::start()?;
    let keys = tempfile::tempdir()?;
    let secret = keys.path().join("nostr.key");
    std::fs::write(&secret, BOT_SECRET)?;
    let rig = start(&[("nostr.toml".into(), manifest(&[a.url(), b.url()], &secret))]).await?;
    let before = rig
        .try_wait_for("nostr-chaos", "running", |o| {
            o.state == SupervisedState::Running
        })
        .await?;
    let mut events = rig.bus.subscribe(&Pattern::parse("chat.nostr.#")?).await?;
    rig.bus.sync().await?;
    let out = peer(&["keygen"]).output().await?;
    let alice: serde_json::Value = serde_json::from_slice(&out.stdout).context("peer keygen")?;
    let secret_hex = alice["secret"].as_str().context("a secret key")?.to_owned();

    let notes = 40;
    let relays = format!("{},{}", a.url(), b.url());
    let trickle = peer(&["trickle", &relays, &secret_hex, &notes.to_string(), "100"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    // Killed after a second of traffic, back a second and a half later.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    a.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut a = tokio::task::spawn_blocking(move || a.restart().map(|()| a)).await??;
    let sent: serde_json::Value =
        serde_json::from_slice(&trickle.wait_with_output().await?.stdout).context("trickle")?;
    let accepted: Vec<String> = sent
        .as_array()
        .context("trickle's answer")?
        .iter()
        .filter(|n| n["accepted"].as_array().is_some_and(|a| !a.is_empty()))
        .filter_map(|n| n["id"].as_str().map(str::to_owned))
        .collect();
    let only_b = sent.as_array().map_or(0, |s| {
        s.iter()
            .filter(|n| n["accepted"].as_array().is_some_and(|a| a.len() == 1))
            .count()
    });

    // Every accepted note on the bus, each once (its `nostr-id` header).
    let mut seen: HashMap<String, usize> = HashMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while accepted.iter().any(|id| !seen.contains_key(id)) {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(d)) => {
                if let Some(id) = d.header("nostr-id") {
                    *seen.entry(id.to_owned()).or_default() += 1;
                }
            }
            _ => break,
        }
    }
    // Late copies would show now.
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(700), events.next()).await {
        if let Some(id) = d.header("nostr-id") {
            *seen.entry(id.to_owned()).or_default() += 1;
        }
    }
    let missing = accepted.iter().filter(|id| !seen.contains_key(*id)).count();
    let twice = seen.values().filter(|n| **n > 1).count();
    let after = operator(&rig, "nostr-chaos").await?;
    let same = after.pid == before.pid;
    a.stop();
    Ok(Outcome {
        fault: "Nostr relay SIGKILL and restart",
        expected: "every note a relay accepted reaches the bus exactly once; the operator reconnects by itself (same process)",
        observed: format!(
            "{} notes accepted ({only_b} by B alone while A was down for 1.5 s); missing {missing}; twice {twice}; same process: {same}",
            accepted.len()
        ),
        ok: missing == 0 && twice == 0 && same && only_b > 0,
        tally: Some(Tally {
            sent: accepted.len(),
            answered: accepted.len() - missing,
            longest_gap: Duration::ZERO,
        }),
        at_most_once: false,
    })
}
