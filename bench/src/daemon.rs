//! A real `switchboard run` for the supervision benchmarks, started by
//! the testkit's daemon harness as every test starts one: a temporary
//! directory with `switchboard.toml` and `operators.d/`, an embedded
//! nats-server on a free port, and a client connected through the runtime
//! file the daemon writes (`run/switchboard.json`). What is the bench's
//! own: the release binaries, the 1 ms poll that times the startup, and a
//! graceful stop that reports what the daemon left behind.
//!
//! [`Daemon`] is a guard: dropping it (also on error or panic) stops the
//! daemon with SIGTERM, SIGKILLs it if it does not exit, and kills
//! whatever it left behind, so a failed benchmark leaves no process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::{FutureExt as _, StreamExt as _};
use nix::sys::signal::Signal;
use switchboard_bus::{Bus, RawSubscription};
use switchboard_orchestrator::daemon::RuntimeInfo;
use switchboard_proto::api::{OperatorEvent, StatusReply, StatusRequest};
use switchboard_testkit::daemon::{DaemonConfig, DaemonProcess};

use crate::procfs;

/// Longest any single wait in these benchmarks may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// Binaries built by `cargo build --release --workspace --bins`, found
/// next to this benchmark's own executable (`target/release/`).
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `switchboard`, the daemon.
    pub switchboard: PathBuf,
    /// `switchboard-pingbot`, the operator under supervision.
    pub pingbot: PathBuf,
    /// `switchboard-logger`, for the durable path.
    pub logger: PathBuf,
    /// The nats-server the daemon embeds.
    pub nats_server: PathBuf,
}

impl Binaries {
    /// Look them up; an error says what to build.
    pub fn find() -> anyhow::Result<Binaries> {
        let exe = std::env::current_exe().context("where is this benchmark's executable?")?;
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let find = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                bail!(
                    "{} is missing: build it with `cargo build --release --workspace --bins` \
                     (make bench does)",
                    p.display()
                )
            }
        };
        Ok(Binaries {
            switchboard: find("switchboard")?,
            pingbot: find("switchboard-pingbot")?,
            logger: find("switchboard-logger")?,
            nats_server: switchboard_testkit::nats_server_bin()
                .context("looking for nats-server (make tools)")?,
        })
    }
}

/// A manifest file: name and TOML text.
pub type ManifestFile = (String, String);

/// A running `switchboard run` (the testkit's [`DaemonProcess`], in its
/// own process group), stopped gracefully when dropped.
pub struct Daemon {
    /// Declared before the directory: killed before it goes.
    process: DaemonProcess,
    dir: tempfile::TempDir,
    /// Its pid.
    pub pid: u32,
    /// When it was spawned (just before `spawn`).
    pub spawned: Instant,
}

impl Daemon {
    /// Write the config and manifests into a new temporary directory and
    /// spawn the daemon. Returns at once: see [`Daemon::runtime_info`].
    pub fn spawn(bins: &Binaries, manifests: &[ManifestFile]) -> anyhow::Result<Daemon> {
        let dir = tempfile::Builder::new()
            .prefix("sb-bench-")
            .tempdir()
            .context("creating a temporary directory")?;
        let config = DaemonConfig::new()
            .manifests(manifests)
            .embedded(|e| e.binary = Some(bins.nats_server.clone()))
            .write(dir.path())?;
        // The daemon's log (and its operators' output, which it tags and
        // logs) goes to daemon.log: evidence when something looks wrong.
        let process = DaemonProcess::spawn(&config, &dir.path().join("run"), &[], None, None)?;
        Ok(Daemon {
            pid: process.pid(),
            spawned: process.spawned,
            process,
            dir,
        })
    }

    /// The daemon's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// Poll (every 1 ms) for the runtime file the daemon writes once its
    /// API answers; its contents and when it was first seen.
    pub async fn runtime_info(&mut self) -> anyhow::Result<(RuntimeInfo, Instant)> {
        let run = self.dir.path().join("run");
        Ok(self
            .process
            .runtime_info(&run, Duration::from_millis(1))
            .await?)
    }

    /// The last lines of the daemon's log, for error messages.
    pub fn tail_log(&self) -> String {
        let text = self.process.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// The embedded nats-server (a child of the daemon).
    pub fn nats_server_pid(&self) -> Option<u32> {
        procfs::children(self.pid)
            .into_iter()
            .find(|(_, s)| procfs::comm_is(&s.comm, "nats-server"))
            .map(|(pid, _)| pid)
    }

    /// SIGTERM, wait for the daemon to exit, then check that every process
    /// it had started is gone. Returns the leftovers (killed here), which
    /// callers report as a problem.
    pub async fn stop(mut self) -> anyhow::Result<Vec<u32>> {
        if !self.process.running() {
            return Ok(Vec::new());
        }
        let before = procfs::descendants(self.pid);
        procfs::signal(self.pid, Signal::SIGTERM);
        let status = self.process.wait(WAIT).await;
        if status.is_err() {
            self.process.kill().await;
        }
        let pids = before.clone();
        let left =
            tokio::task::spawn_blocking(move || procfs::wait_gone(&pids, Duration::from_secs(5)))
                .await?;
        let killed = procfs::kill_leftovers(&left);
        match status {
            Err(_) => bail!(
                "switchboard run did not exit within {WAIT:?} of SIGTERM (killed); log: {}",
                self.tail_log()
            ),
            Ok(s) if !s.success() => bail!(
                "switchboard run exited with {s} after SIGTERM; log: {}",
                self.tail_log()
            ),
            Ok(_) => Ok(killed),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.process.running() {
            return;
        }
        // Gracefully first, so its operators are stopped as in use; the
        // process guard SIGKILLs the group after, whatever happened.
        let before = procfs::descendants(self.pid);
        procfs::signal(self.pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while procfs::alive(self.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = procfs::wait_gone(&before, Duration::from_secs(3));
        procfs::kill_leftovers(&left);
    }
}

/// A client of the daemon's bus.
pub async fn connect(info: &RuntimeInfo) -> anyhow::Result<Bus> {
    let opts = info.bus_options().name("switchboard-bench");
    Bus::connect(&opts, "bench")
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the daemon's bus at {}: {e}", info.url))
}

/// `sb.api.status`.
pub async fn status(bus: &Bus) -> anyhow::Result<StatusReply> {
    bus.request_json("sb.api.status", &StatusRequest {}, WAIT)
        .await
        .context("sb.api.status")
}

/// Subscribe to `subject` (e.g. `sb.event.*`) and make sure the server
/// has the subscription before returning.
pub async fn events(bus: &Bus, subject: &str) -> anyhow::Result<RawSubscription> {
    let sub = bus.subscribe_raw(subject).await?;
    bus.sync().await?;
    Ok(sub)
}

/// The next operator event, and when it arrived; `None` at `deadline`.
pub async fn next_event(
    sub: &mut RawSubscription,
    deadline: Instant,
) -> anyhow::Result<Option<(OperatorEvent, Instant)>> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, sub.next()).await {
        Err(_) => Ok(None),
        Ok(None) => bail!("the event subscription ended"),
        Ok(Some(msg)) => {
            let at = Instant::now();
            let event: OperatorEvent = serde_json::from_slice(&msg.payload)
                .with_context(|| format!("an event on {} that does not parse", msg.subject))?;
            Ok(Some((event, at)))
        }
    }
}

/// Throw away events already queued.
pub fn drain(sub: &mut RawSubscription) {
    while let Some(Some(_)) = sub.next().now_or_never() {}
}

/// TOML for a string (quoted, escaped).
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}
