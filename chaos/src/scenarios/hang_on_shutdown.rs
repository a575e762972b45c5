//! An operator that ignores SIGTERM when the daemon stops.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use switchboard_proto::api::SupervisedState;

use crate::rig::{gone, sig, start};
use crate::{Outcome, WAIT};

/// An operator that ignores SIGTERM, and a daemon asked to stop.
///
/// # Errors
///
/// When the rig fails.
pub async fn hang_on_shutdown() -> anyhow::Result<Outcome> {
    let manifest = "id = \"stubborn\"\ncommand = \"/bin/sh\"\ncontrol = \"signals\"\nstop_timeout = \"500ms\"\n\
                    args = [\"-c\", \"trap '' TERM; while :; do sleep 1; done\"]\n";
    let mut rig = start(&[("stubborn.toml".into(), manifest.into())]).await?;
    let pid = rig
        .try_wait_for("stubborn", "running", |o| {
            o.state == SupervisedState::Running
        })
        .await?
        .pid;
    let started = Instant::now();
    sig(rig.pid(), Signal::SIGTERM);
    let status = rig.process.wait(WAIT).await;
    let took = started.elapsed();
    let gone = gone(pid).await;
    Ok(Outcome {
        fault: "operator ignores SIGTERM at shutdown",
        expected: "SIGKILL to its group after stop_timeout (500 ms); the daemon exits 0",
        observed: format!(
            "daemon exited after {} ms; operator gone: {gone}",
            took.as_millis()
        ),
        ok: matches!(status, Ok(s) if s.success()) && gone && took < Duration::from_secs(5),
        tally: None,
        at_most_once: false,
    })
}
