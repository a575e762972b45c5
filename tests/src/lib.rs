//! Helpers shared by the end-to-end tests: spawn real operator processes
//! with the launch environment and watch their lifecycle on the bus.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use futures::StreamExt;
use switchboard_bus::proto::{control_subject, launch, ControlAck, OperatorId};
use switchboard_bus::{Bus, RawSubscription};

/// A running operator, killed (SIGKILL) when dropped if still alive.
pub struct OperatorProcess {
    child: tokio::process::Child,
    /// Its ID.
    pub id: String,
}

impl OperatorProcess {
    /// Spawn the workspace binary `bin` as operator `id` against `nats_url`
    /// with a 100 ms heartbeat and `extra` environment variables.
    pub fn spawn(bin: &str, id: &str, nats_url: &str, extra: &[(&str, &str)]) -> OperatorProcess {
        let path = switchboard_testkit::bin_path(bin);
        Self::spawn_path(&path, id, nats_url, extra)
    }

    /// Like [`OperatorProcess::spawn`] with an explicit program path.
    pub fn spawn_path(
        path: &Path,
        id: &str,
        nats_url: &str,
        extra: &[(&str, &str)],
    ) -> OperatorProcess {
        let mut cmd = tokio::process::Command::new(path);
        for var in launch::ALL {
            cmd.env_remove(var);
        }
        cmd.env(launch::ID, id)
            .env(launch::NATS_URL, nats_url)
            .env(launch::HEARTBEAT_MS, "100")
            .env("SWITCHBOARD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", path.display()));
        OperatorProcess {
            child,
            id: id.to_string(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("process still running")
    }

    /// Send a Unix signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, sig).expect("kill");
    }

    /// Wait for the process to exit, at most `within`.
    pub async fn exit_within(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("operator {} did not exit within {within:?}", self.id))
            .expect("wait")
    }
}

/// The next message on `sub` parsed as JSON, failing the test after
/// `within`.
pub async fn next_json(sub: &mut RawSubscription, within: Duration) -> serde_json::Value {
    let msg = tokio::time::timeout(within, sub.next())
        .await
        .unwrap_or_else(|_| panic!("nothing arrived within {within:?}"))
        .expect("subscription open");
    serde_json::from_slice(&msg.payload).expect("lifecycle payloads are JSON")
}

/// Send a control request to operator `id` and return its ack.
pub async fn control(bus: &Bus, id: &str, request: serde_json::Value) -> ControlAck {
    let subject = control_subject(&OperatorId::new(id).expect("a valid operator id"));
    bus.request_json(&subject, &request, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("control {request} to {id}: {e}"))
}
