//! The daemon itself SIGKILLed and started again on its directory.

use std::time::{Duration, Instant};

use switchboard_proto::api::SupervisedState;

use crate::rig::{gone, start};
use crate::traffic::with_traffic;
use crate::{pingbot, Outcome};

/// SIGKILL of the daemon itself, and a new one on the same directory.
///
/// # Errors
///
/// When the rig fails.
pub async fn daemon_sigkill() -> anyhow::Result<Outcome> {
    let mut rig = start(&[("bot.toml".into(), pingbot("bot"))]).await?;
    let pid = rig
        .try_wait_for("bot", "running", |o| o.state == SupervisedState::Running)
        .await?
        .pid;
    let started = Instant::now();
    rig.kill_and_restart().await?;
    let after = rig
        .try_wait_for("bot", "running", |o| o.state == SupervisedState::Running)
        .await;
    let back = started.elapsed();
    let old_gone = gone(pid).await;
    let tally = with_traffic(&rig, Duration::from_millis(300), || async { Ok(()) }).await?;
    Ok(Outcome {
        fault: "daemon SIGKILL, then restart",
        expected:
            "operators die with it; the new daemon starts one set (no duplicates) and answers",
        observed: format!(
            "old bot gone: {old_gone}; bot running again after {} ms",
            back.as_millis()
        ),
        ok: after.is_ok() && old_gone && tally.answered == tally.sent,
        tally: Some(tally),
        at_most_once: false,
    })
}
