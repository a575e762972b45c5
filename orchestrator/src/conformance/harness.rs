//! The temporary world an operator is checked in: a real `switchboard run`
//! (embedded nats-server, per-operator users) in a temporary directory,
//! driven and watched over the bus with the CLI's credentials from the
//! runtime file, as a person's `switchboard` commands would.
//!
//! Not the testkit's daemon harness, which every test uses: this is
//! product code (`switchboard conformance` runs on an author's machine,
//! with the daemon binary it is), and a product crate cannot depend on a
//! test crate that depends on it. What both need lives here, where both
//! reach it: the runtime file's format ([`RuntimeInfo`], beside the
//! daemon that writes it) and [`alive`], which the testkit re-exports.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard_bus::{Bus, RawMessage, RawSubscription};
use switchboard_proto::api::{methods, CtlReply, CtlRequest, OperatorEvent, OperatorStatus};
use switchboard_proto::api::{LogsReply, LogsRequest, StatusReply, StatusRequest};
use switchboard_proto::{
    control_subject, event_subject, heartbeat_subject, ready_subject, OperatorId, Verb,
};

use super::ConformanceError;
use crate::daemon::RuntimeInfo;
use crate::manifest::Manifest;

/// How long the kit waits for the daemon and its API.
const DAEMON_WAIT: Duration = Duration::from_secs(15);

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon and the kit's connection to it.
pub struct Harness {
    dir: TempDir,
    daemon: tokio::process::Child,
    /// The kit's client (the CLI's user).
    pub bus: Bus,
    /// The operator under test, as the kit runs it.
    pub manifest: Manifest,
    /// `sb.op.<id>.ready`.
    pub ready: RawSubscription,
    /// `sb.op.<id>.heartbeat`.
    pub beats: RawSubscription,
    /// `sb.event.<id>`: how each process ended.
    pub events: RawSubscription,
}

impl Harness {
    /// Start a daemon with no operator, watch the operator's subjects,
    /// then add its manifest (`manifest_text`, already adapted by the
    /// caller) and reload the daemon, so nothing it says is missed.
    pub async fn start(
        manifest: Manifest,
        manifest_text: &str,
    ) -> Result<Harness, ConformanceError> {
        let dir = TempDir(std::env::temp_dir().join(format!(
            "switchboard-conformance-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        )));
        let prepare = |e: std::io::Error| ConformanceError::Prepare {
            dir: dir.0.clone(),
            source: e,
        };
        std::fs::create_dir_all(dir.0.join("operators.d")).map_err(prepare)?;
        std::fs::write(
            dir.0.join("switchboard.toml"),
            "manifests = \"operators.d\"\nstate_dir = \"state\"\nruntime_dir = \"run\"\n\n\
             [nats.embedded]\nport = 0\n",
        )
        .map_err(prepare)?;
        let log = std::fs::File::create(dir.0.join("daemon.log")).map_err(prepare)?;
        let exe = std::env::current_exe().map_err(prepare)?;
        let daemon = tokio::process::Command::new(exe)
            .arg("run")
            .arg("--config")
            .arg(dir.0.join("switchboard.toml"))
            .env("SWITCHBOARD_LOG", "info")
            .env_remove("SWITCHBOARD_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(prepare)?;
        let info = wait_runtime(&dir.0.join("run/switchboard.json"), &dir.0).await?;
        let bus = Bus::connect(
            &info.bus_options().name("switchboard-conformance"),
            "conformance",
        )
        .await
        .map_err(|e| ConformanceError::Daemon(format!("cannot connect to its bus: {e}")))?;
        let id = &manifest.id;
        let sub = |s: String| {
            let bus = bus.clone();
            async move {
                bus.subscribe_raw(&s)
                    .await
                    .map_err(|e| ConformanceError::Daemon(format!("cannot subscribe to {s}: {e}")))
            }
        };
        let ready = sub(ready_subject(id)).await?;
        let beats = sub(heartbeat_subject(id)).await?;
        let events = sub(event_subject(id)).await?;
        bus.sync()
            .await
            .map_err(|e| ConformanceError::Daemon(format!("bus: {e}")))?;
        let file = dir.0.join("operators.d").join(format!("{id}.toml"));
        std::fs::write(&file, manifest_text).map_err(prepare)?;
        let h = Harness {
            dir,
            daemon,
            bus,
            manifest,
            ready,
            beats,
            events,
        };
        h.signal_daemon(nix::sys::signal::Signal::SIGHUP)?;
        Ok(h)
    }

    /// The operator id.
    pub fn id(&self) -> &OperatorId {
        &self.manifest.id
    }

    fn signal_daemon(&self, sig: nix::sys::signal::Signal) -> Result<(), ConformanceError> {
        let pid = self
            .daemon
            .id()
            .ok_or_else(|| ConformanceError::Daemon("it exited".into()))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
            .map_err(|e| ConformanceError::Daemon(format!("cannot signal it: {e}")))
    }

    /// The daemon's log so far (nats-server's warnings included).
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("daemon.log")).unwrap_or_default()
    }

    /// The operator's line in `switchboard status`.
    pub async fn status(&self) -> Option<OperatorStatus> {
        let reply: StatusReply = crate::api::call(&self.bus, methods::STATUS, &StatusRequest {})
            .await
            .ok()?;
        reply
            .operators
            .into_iter()
            .find(|o| o.id == self.id().as_str())
    }

    /// How the operator's process ended and the last lines it printed,
    /// for a reason that tells the author what to fix.
    pub async fn obituary(&self) -> String {
        // The daemon may not have reaped it yet: give it a moment.
        let mut how = None;
        for _ in 0..40 {
            how = self.status().await.and_then(|o| o.last_exit.or(o.reason));
            if how.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let how = how.unwrap_or_else(|| "it ended".into());
        let logs: Option<LogsReply> = crate::api::call(
            &self.bus,
            methods::LOGS,
            &LogsRequest {
                id: self.id().to_string(),
                lines: 5,
            },
        )
        .await
        .ok();
        let lines: Vec<String> = logs
            .map(|l| l.lines.into_iter().map(|l| l.line).collect())
            .unwrap_or_default();
        if lines.is_empty() {
            how
        } else {
            format!("{how}; its last lines: {}", lines.join(" | "))
        }
    }

    /// Wait until status shows a process for the operator; its pid.
    pub async fn wait_pid(&self, within: Duration) -> Option<u32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(pid) = self.status().await.and_then(|o| o.pid) {
                return Some(pid);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A control verb through the daemon (`switchboard ctl`).
    pub async fn ctl(&self, verb: Verb, config: Option<serde_json::Value>) -> Result<(), String> {
        let reply: CtlReply = crate::api::call(
            &self.bus,
            methods::CTL,
            &CtlRequest {
                verb,
                target: self.id().to_string(),
                config,
                in_place: false,
            },
        )
        .await
        .map_err(|e| format!("switchboard ctl {verb}: {e}"))?;
        if let Some(e) = reply.error {
            return Err(format!("switchboard ctl {verb}: {e}"));
        }
        match reply.results.into_iter().next() {
            Some(o) if o.ok => Ok(()),
            Some(o) => Err(format!("switchboard ctl {verb}: {o:?}")),
            None => Err(format!("switchboard ctl {verb}: no result")),
        }
    }

    /// A control request straight to the operator; the raw answer.
    pub async fn request(&self, payload: &[u8], within: Duration) -> Result<Vec<u8>, String> {
        self.bus
            .request_bytes(&control_subject(self.id()), payload.to_vec().into(), within)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| format!("no answer within {within:?}: {e}"))
    }

    /// Forget heartbeats that arrived before now.
    pub async fn drain_beats(&mut self) {
        while tokio::time::timeout(Duration::ZERO, self.beats.next())
            .await
            .is_ok_and(|m| m.is_some())
        {}
    }

    /// The next message on one of the subscriptions, within `within`.
    pub async fn next(sub: &mut RawSubscription, within: Duration) -> Option<RawMessage> {
        tokio::time::timeout(within, sub.next())
            .await
            .ok()
            .flatten()
    }

    /// Wait for the daemon to report that process `pid` ended, within
    /// `within`; the words it used ("exited with code 0").
    pub async fn wait_exit(&mut self, pid: u32, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = Self::next(&mut self.events, left).await else {
                return Err(if alive(pid) {
                    format!("process {pid} still running after {within:?}")
                } else {
                    format!("process {pid} ended, but the daemon said nothing within {within:?}")
                });
            };
            let Ok(ev) = serde_json::from_slice::<OperatorEvent>(&m.payload) else {
                continue;
            };
            if let Some(reason) = ev
                .reason
                .filter(|r| r.contains("exited") || r.contains("killed by"))
            {
                return Ok(reason);
            }
        }
    }

    /// Stop the daemon (and with it anything left of the operator).
    pub async fn stop(mut self) {
        self.bus.close().await;
        let _ = self.signal_daemon(nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(DAEMON_WAIT, self.daemon.wait())
            .await
            .is_err()
        {
            let _ = self.daemon.kill().await;
        }
    }
}

/// SIGTERM to the process group of `pid`, as the daemon stops an
/// operator (a shell script and its children alike).
pub fn terminate(pid: u32) -> Result<(), String> {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::{getpgid, Pid};
    let pid = Pid::from_raw(pid as i32);
    // Only a group the operator leads: never the kit's or the daemon's.
    match getpgid(Some(pid)) {
        Ok(group) if group == pid => killpg(group, Signal::SIGTERM),
        _ => kill(pid, Signal::SIGTERM),
    }
    .map_err(|e| format!("cannot send SIGTERM to {pid}: {e}"))
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    proc_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// The state letter of a process in /proc (`R`, `S`, `T` stopped, `Z`).
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

async fn wait_runtime(path: &Path, dir: &Path) -> Result<RuntimeInfo, ConformanceError> {
    let deadline = Instant::now() + DAEMON_WAIT;
    loop {
        if let Ok(bytes) = std::fs::read(path) {
            if let Ok(info) = serde_json::from_slice(&bytes) {
                return Ok(info);
            }
        }
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
            return Err(ConformanceError::Daemon(format!(
                "it did not start within {DAEMON_WAIT:?}; is nats-server installed \
                 (`make tools`, or SWITCHBOARD_NATS_SERVER)? its log:\n{log}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
