//! The page in a real browser (Debian's headless Chromium driven by npm
//! playwright-core, axe-core for accessibility, all installed by `make
//! tools`) against a real daemon with the ping bot: a login (wrong token
//! refused, the viewer token sees no enabled button, the token's cookie is
//! HttpOnly and SameSite=Strict and a second tab needs no login); it lists
//! the operators; a SIGKILL outside the page shows as a restart within a
//! second; the buttons follow the state (halt, resume, stop, start a
//! stopped operator, checked with `switchboard status`); the manifest
//! view; the chart's time axis and units; chat rendered as chat with the
//! bot's reply and a raw toggle; several patterns filter; the replay of
//! the durable stream (the same rendering, a pattern and a sequence range
//! narrow it, a bad bound says so); logs with
//! levels and lifecycle events; the event history; the bus view; the
//! publish box gets the bot's answer; restart all and stop all spare the
//! dashboard itself; a banner while the bus is down.
//! Every view passes axe-core (no serious or critical violation) at
//! 1440x900 and 390x844, without sideways scrolling on the phone. The
//! driver is tests/browser/drive.cjs; this side does what happens outside
//! the page.
//!
//! `DASHBOARD_SCREENSHOTS=docs/dashboard` keeps the screenshots (the ones
//! in docs/ for the README were taken so).

mod common;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use switchboard_bus::{ChatAddress, Envelope};
use switchboard_proto::api::SupervisedState;
use switchboard_testkit::daemon::WAIT;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};

struct Driver {
    out: Lines<BufReader<ChildStdout>>,
    input: ChildStdin,
}

impl Driver {
    /// The driver's next step line, which must start with `word`.
    async fn step(&mut self, word: &str) -> anyhow::Result<String> {
        let line = tokio::time::timeout(WAIT, self.out.next_line())
            .await
            .with_context(|| format!("the browser driver did not reach {word}"))??
            .with_context(|| format!("the browser driver ended before {word}"))?;
        if !line.starts_with(word) {
            bail!("expected {word}, the driver said: {line}");
        }
        Ok(line[word.len()..].trim().to_owned())
    }

    async fn tell(&mut self, word: &str) -> anyhow::Result<()> {
        self.input.write_all(format!("{word}\n").as_bytes()).await?;
        Ok(self.input.flush().await?)
    }
}

/// A failed step with the end of the daemon's log, which says what the
/// daemon saw meanwhile.
fn with_log(e: anyhow::Error, d: &common::Dash) -> anyhow::Error {
    let log = d.daemon.log();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    anyhow::anyhow!("{e:#}\n--- daemon log (end) ---\n{}", tail.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_chromium_lists_restarts_halts_and_filters() -> anyhow::Result<()> {
    let root = switchboard_testkit::workspace_root();
    let playwright = root.join(".tools/playwright/node_modules/playwright-core");
    let axe = root.join(".tools/axe/node_modules/axe-core/axe.min.js");
    anyhow::ensure!(
        playwright.exists() && axe.exists() && std::path::Path::new("/usr/bin/chromium").exists(),
        "playwright-core, axe-core or chromium is missing: run `make tools`"
    );
    let d = common::start(true).await?;
    d.daemon
        .try_wait_for("pingbot", "running", |o| {
            o.state == SupervisedState::Running
        })
        .await?;
    let scratch = tempfile::tempdir()?;
    let shots = scratch.path().join("shots");
    std::fs::create_dir_all(&shots)?;
    let mut child = tokio::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/drive.cjs"
        ))
        .arg(&playwright)
        .arg(&axe)
        .arg(format!("http://{}/", d.addr))
        .arg(common::TOKEN)
        .arg(common::VIEWER)
        .arg(scratch.path().join("profile"))
        .arg(&shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("node (Node 18 or later)")?;
    let mut drv = Driver {
        out: BufReader::new(child.stdout.take().context("stdout")?).lines(),
        input: child.stdin.take().context("stdin")?,
    };

    drv.step("LISTED").await.map_err(|e| with_log(e, &d))?;
    let pid = d
        .daemon
        .operator("pingbot")
        .await
        .context("no pingbot")?
        .pid
        .context("pingbot pid")?;
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
        .with_context(|| format!("SIGKILL pingbot {pid}"))?;
    drv.tell("KILLED").await?;
    let ms = drv.step("RESTART_SHOWN").await?;
    eprintln!("the page showed the restart {ms} ms after the SIGKILL");

    drv.step("HALT_CLICKED")
        .await
        .map_err(|e| with_log(e, &d))?;
    let status = common::cli_status(&d.daemon)?;
    let ping = status["operators"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["id"] == "pingbot"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ping["state"], "halted", "{status}");
    let halted_pid = ping["pid"].as_u64();
    drv.tell("HALT_CHECKED").await?;

    drv.step("STARTED").await.map_err(|e| with_log(e, &d))?;
    let status = common::cli_status(&d.daemon)?;
    let ping = status["operators"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["id"] == "pingbot"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ping["state"], "running", "{status}");
    assert_ne!(
        ping["pid"].as_u64(),
        halted_pid,
        "stop then start: a new process"
    );
    drv.tell("START_CHECKED").await?;
    drv.step("OPERATORS").await.map_err(|e| with_log(e, &d))?;

    drv.step("CHAT_READY").await?;
    let env = |t: &str| {
        // The source owns the subject (PROTOCOL.md, "Authentic source"):
        // the ping bot answers only what its instance's operator says.
        Envelope::new(
            "libera",
            json!({"text": t, "sender": "alice", "room": "room"}),
        )
    };
    let room = ChatAddress::new("irc", "libera", "room");
    d.daemon
        .bus
        .publish(&room.event_subject("message"), &env("!ping"))
        .await?;
    d.daemon.bus.flush().await?;
    drv.tell("PINGED").await?;

    drv.step("PATTERN_SET").await.map_err(|e| with_log(e, &d))?;
    for (net, text) in [
        ("beta", "hidden"),
        ("alpha", "shown"),
        ("beta", "hidden too"),
    ] {
        let room = ChatAddress::new(net, "x", "room");
        d.daemon
            .bus
            .publish(&room.event_subject("message"), &env(text))
            .await?;
    }
    d.daemon.bus.flush().await?;
    drv.tell("PUBLISHED").await?;
    drv.step("FILTERED").await?;
    drv.step("REPLAYED").await.map_err(|e| with_log(e, &d))?;
    drv.step("LOGS").await.map_err(|e| with_log(e, &d))?;
    drv.step("VIEWS").await.map_err(|e| with_log(e, &d))?;
    drv.step("PUBLISHED_FROM_PAGE")
        .await
        .map_err(|e| with_log(e, &d))?;
    drv.step("ALL_STOPPED").await.map_err(|e| with_log(e, &d))?;
    let status = common::cli_status(&d.daemon)?;
    let state = |id: &str| {
        status["operators"]
            .as_array()
            .and_then(|a| a.iter().find(|o| o["id"] == id))
            .map(|o| o["state"].clone())
            .unwrap_or_default()
    };
    assert_eq!(state("pingbot"), "exited", "{status}");
    assert_eq!(
        state("dashboard"),
        "running",
        "stop all spares the page's own dashboard"
    );

    let keep = std::env::var("DASHBOARD_SCREENSHOTS").ok();
    let mut count = 0;
    for view in [
        "login",
        "operators",
        "chat",
        "replay",
        "logs",
        "events",
        "bus",
        "publish",
    ] {
        for size in ["wide", "phone"] {
            let name = format!("dashboard-{view}-{size}.png");
            let png = std::fs::read(shots.join(&name)).with_context(|| format!("no {name}"))?;
            assert!(
                png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5_000,
                "{name} is not a screenshot"
            );
            if let Some(dir) = &keep {
                std::fs::create_dir_all(root.join(dir))?;
                std::fs::write(root.join(dir).join(&name), &png)?;
            }
            count += 1;
        }
    }
    eprintln!("{count} screenshots, each view passed axe-core");
    // The daemon, held by SIGSTOP, cannot restart the server it runs.
    let nats = d.daemon.nats_pid().context("the embedded nats-server")?;
    kill(Pid::from_raw(d.daemon.pid() as i32), Signal::SIGSTOP).context("SIGSTOP the daemon")?;
    kill(Pid::from_raw(nats as i32), Signal::SIGKILL).context("SIGKILL nats-server")?;
    drv.tell("BUS_DOWN").await?;
    let shown = drv.step("BANNER_SHOWN").await.map_err(|e| with_log(e, &d));
    kill(Pid::from_raw(d.daemon.pid() as i32), Signal::SIGCONT)?;
    shown?;
    drv.tell("BUS_BACK").await?;
    drv.step("BANNER_GONE").await.map_err(|e| with_log(e, &d))?;
    drv.step("DONE").await?;
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait()).await??;
    assert!(exit.success(), "{exit}");
    Ok(())
}
