//! The page in a real browser (Debian's headless Chromium driven by npm
//! playwright-core, both installed by `make tools`) against a real daemon
//! with the ping bot: it lists the operators; a SIGKILL outside the page
//! shows as a restart within a second; clicking halt halts (checked with
//! `switchboard status`); the tail's pattern box filters; a banner shows
//! while the bus is down and goes when it is back. The driver is
//! tests/browser/drive.cjs; this side does what happens outside the page.
//!
//! `DASHBOARD_SCREENSHOT=docs/dashboard.png` keeps the screenshot (the one
//! in docs/ for the README was taken so).

mod common;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use switchboard_bus::{ChatAddress, Envelope};
use switchboard_chaos::WAIT;
use switchboard_proto::api::SupervisedState;
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
    let log = d.rig.log();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    anyhow::anyhow!("{e:#}\n--- daemon log (end) ---\n{}", tail.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_chromium_lists_restarts_halts_and_filters() -> anyhow::Result<()> {
    let root = switchboard_testkit::workspace_root();
    let playwright = root.join(".tools/playwright/node_modules/playwright-core");
    anyhow::ensure!(
        playwright.exists() && std::path::Path::new("/usr/bin/chromium").exists(),
        "playwright-core or chromium is missing: run `make tools`"
    );
    let d = common::start(true).await?;
    d.rig
        .wait_for("pingbot", |o| o.state == SupervisedState::Running)
        .await?;
    let scratch = tempfile::tempdir()?;
    let shot = scratch.path().join("dashboard.png");
    let mut child = tokio::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/drive.cjs"
        ))
        .arg(&playwright)
        .arg(format!("http://{}/", d.addr))
        .arg(common::TOKEN)
        .arg(scratch.path().join("profile"))
        .arg(&shot)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("node (Node 18 or later)")?;
    let mut drv = Driver {
        out: BufReader::new(child.stdout.take().context("stdout")?).lines(),
        input: child.stdin.take().context("stdin")?,
    };

    drv.step("LISTED").await?;
    let pid = d
        .rig
        .operator("pingbot")
        .await?
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
    let status = common::cli_status(&d.rig)?;
    let ping = status["operators"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["id"] == "pingbot"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ping["state"], "halted", "{status}");
    drv.tell("HALT_CHECKED").await?;

    drv.step("PATTERN_SET").await?;
    let env = |t: &str| Envelope::new("test", json!({"text": t, "sender": "t", "room": "room"}));
    for (net, text) in [
        ("beta", "hidden"),
        ("alpha", "shown"),
        ("beta", "hidden too"),
    ] {
        let room = ChatAddress::new(net, "x", "room");
        d.rig
            .bus
            .publish(&room.event_subject("message"), &env(text))
            .await?;
    }
    d.rig.bus.flush().await?;
    drv.tell("PUBLISHED").await?;
    drv.step("FILTERED").await?;

    drv.step("SCREENSHOT").await?;
    let png = std::fs::read(&shot)?;
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "not a screenshot"
    );
    if let Ok(keep) = std::env::var("DASHBOARD_SCREENSHOT") {
        std::fs::write(root.join(keep), &png)?;
    }
    // The daemon, held by SIGSTOP, cannot restart the server it runs.
    let nats = d.rig.nats_pid().context("the embedded nats-server")?;
    kill(Pid::from_raw(d.rig.pid() as i32), Signal::SIGSTOP).context("SIGSTOP the daemon")?;
    kill(Pid::from_raw(nats as i32), Signal::SIGKILL).context("SIGKILL nats-server")?;
    drv.tell("BUS_DOWN").await?;
    let shown = drv.step("BANNER_SHOWN").await.map_err(|e| with_log(e, &d));
    kill(Pid::from_raw(d.rig.pid() as i32), Signal::SIGCONT)?;
    shown?;
    drv.tell("BUS_BACK").await?;
    drv.step("BANNER_GONE").await.map_err(|e| with_log(e, &d))?;
    drv.step("DONE").await?;
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait()).await??;
    assert!(exit.success(), "{exit}");
    Ok(())
}
