//! The whole product in one test: `switchboard run` supervising the IRC
//! operator and the ping bot, a real IRC server, and a person on IRC.
//! A `!ping` typed in a channel crosses IRC -> irc operator -> NATS ->
//! pingbot -> NATS -> irc operator -> IRC and comes back as `pong`.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{privmsg_text, RawClient};
use switchboard_testkit::{bin_path, nats_server_bin, NgIrcd};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_on_irc_pings_the_bot_through_the_daemon() {
    let ircd = NgIrcd::start().expect("ngircd (make tools)");
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("operators.d");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("irc.toml"),
        format!(
            "id = \"irc-local\"\ncommand = \"{}\"\nheartbeat_interval = \"500ms\"\n\
             [config]\nserver = \"127.0.0.1\"\nport = {}\nnick = \"sbbot\"\nchannels = [\"#lobby\"]\n",
            bin_path("switchboard-irc").display(),
            ircd.port()
        ),
    )
    .unwrap();
    std::fs::write(
        manifests.join("pingbot.toml"),
        format!(
            "id = \"pingbot\"\ncommand = \"{}\"\n[config]\nlisten = [\"chat.irc.#.message\"]\n",
            bin_path("switchboard-pingbot").display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("switchboard.toml"),
        format!(
            "state_dir = \"state\"\nruntime_dir = \"run\"\n[nats.embedded]\nport = 0\nbinary = \"{}\"\n",
            nats_server_bin().expect("nats-server").display()
        ),
    )
    .unwrap();
    let mut daemon = tokio::process::Command::new(bin_path("switchboard"))
        .args(["run", "--config"])
        .arg(dir.path().join("switchboard.toml"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn switchboard");

    let mut alice = RawClient::connect(ircd.port(), "alice").await;
    // The bot arrives in the channel once the daemon has started it, or
    // was there first: then the channel's name list on joining shows it
    // (`join` would read past that list, so JOIN is sent by hand).
    alice.send("JOIN #lobby").await;
    alice
        .expect(WAIT, |l| {
            (l.starts_with(":sbbot!") && l.contains(" JOIN "))
                || (l.contains(" 353 alice ") && l.contains("sbbot"))
        })
        .await;

    // The IRC operator may be in the channel before the ping bot has
    // subscribed (both start at once): ask again each second until the
    // answer comes, then let any further answers pass.
    let deadline = tokio::time::Instant::now() + WAIT;
    let line = 'answered: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pong within {WAIT:?}"
        );
        alice.send("PRIVMSG #lobby :!ping").await;
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Some(left) = until.checked_duration_since(tokio::time::Instant::now()) {
            match alice.next(left).await {
                Some(l) if privmsg_text(&l, "sbbot", "#lobby").is_some() => break 'answered l,
                Some(_) => {}
                None => break,
            }
        }
    };
    assert_eq!(privmsg_text(&line, "sbbot", "#lobby"), Some("pong"));
    alice.drain(Duration::from_millis(1500)).await;

    alice.send("PRIVMSG #lobby :!echo héllo wörld ✓").await;
    let line = alice
        .expect(WAIT, |l| privmsg_text(l, "sbbot", "#lobby").is_some())
        .await;
    assert_eq!(
        privmsg_text(&line, "sbbot", "#lobby"),
        Some("héllo wörld ✓")
    );

    // A private message is answered privately.
    alice.send("PRIVMSG sbbot :!ping").await;
    let line = alice
        .expect(WAIT, |l| privmsg_text(l, "sbbot", "alice").is_some())
        .await;
    assert_eq!(privmsg_text(&line, "sbbot", "alice"), Some("pong"));

    // The operator's own counters reach `switchboard status` through its
    // heartbeats.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let out = std::process::Command::new(bin_path("switchboard"))
            .args(["status", "--json", "--config"])
            .arg(dir.path().join("switchboard.toml"))
            .output()
            .expect("switchboard status");
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let irc = status["operators"]
            .as_array()
            .and_then(|ops| ops.iter().find(|o| o["id"] == "irc-local"))
            .cloned()
            .unwrap_or_default();
        let c = &irc["counters"];
        if c["irc_lines_sent"].as_u64() >= Some(3) && c["irc_connects"] == 1 {
            assert!(c["irc_lines_received"].as_u64() > Some(0), "{c}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "counters never showed: {irc}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Stopping the daemon takes the bot off IRC cleanly.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id().expect("running") as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    alice
        .expect(WAIT, |l| l.starts_with(":sbbot!") && l.contains(" QUIT"))
        .await;
    let status = tokio::time::timeout(WAIT, daemon.wait())
        .await
        .expect("daemon exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
