//! The whole product in one test: `switchboard run` supervising the IRC
//! operator and the ping bot, a real IRC server, and a person on IRC.
//! A `!ping` typed in a channel crosses IRC -> irc operator -> NATS ->
//! pingbot -> NATS -> irc operator -> IRC and comes back as `pong`.

mod common;

use std::time::Duration;

use common::{privmsg_text, RawIrcClient};
use switchboard_testkit::daemon::DaemonConfig;
use switchboard_testkit::{bin_path, NgIrcd};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_on_irc_pings_the_bot_through_the_daemon() {
    let ircd = NgIrcd::start().expect("ngircd (make tools)");
    let mut daemon = DaemonConfig::new()
        .manifest(
            "irc.toml",
            format!(
                "id = \"irc-local\"\ncommand = \"{}\"\nheartbeat_interval = \"500ms\"\n\
                 [config]\nserver = \"127.0.0.1\"\nport = {}\nnick = \"sbbot\"\nchannels = [\"#lobby\"]\n",
                bin_path("switchboard-irc").display(),
                ircd.port()
            ),
        )
        .manifest(
            "pingbot.toml",
            format!(
                "id = \"pingbot\"\ncommand = \"{}\"\n[config]\nlisten = [\"chat.irc.#.message\"]\n",
                bin_path("switchboard-pingbot").display()
            ),
        )
        .start()
        .await;

    let mut alice = RawIrcClient::connect(ircd.port(), "alice").await;
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
        let status = daemon.cli_status();
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
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    alice
        .expect(WAIT, |l| l.starts_with(":sbbot!") && l.contains(" QUIT"))
        .await;
    let status = daemon.process.wait(WAIT).await.expect("daemon exits");
    assert!(status.success(), "{status:?}");
}
