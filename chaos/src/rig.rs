//! What the scenarios ask of the testkit's daemon beyond its own API,
//! as fallible calls: a scenario reports a failed expectation as its
//! outcome, and only a broken rig as an error.

use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use switchboard_proto::api::OperatorStatus;
use switchboard_testkit::daemon::{alive, Daemon, DaemonConfig};

pub use switchboard_testkit::daemon::WAIT;

/// A daemon with these manifests (file name, TOML text).
///
/// # Errors
///
/// When it does not come up.
pub async fn start(manifests: &[(String, String)]) -> anyhow::Result<Daemon> {
    Ok(DaemonConfig::new().manifests(manifests).try_start().await?)
}

/// One operator's status.
///
/// # Errors
///
/// When the daemon does not answer or does not know it.
pub async fn operator(rig: &Daemon, id: &str) -> anyhow::Result<OperatorStatus> {
    rig.try_status()
        .await?
        .operators
        .into_iter()
        .find(|o| o.id == id)
        .with_context(|| format!("no operator {id}"))
}

/// Peak resident memory of process `pid` so far, in MB.
pub fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1000.0)
}

/// Wait (up to a second) for `pid` to be gone.
pub async fn gone(pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return true };
    for _ in 0..50 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Send `s` to `pid`, whatever became of it.
pub fn sig(pid: u32, s: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), s);
}
