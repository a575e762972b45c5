//! The ping bot killed (SIGKILL) or hung (SIGSTOP) while pings flow:
//! the daemon replaces it and answers resume.

use std::time::Duration;

use nix::sys::signal::Signal;
use switchboard_proto::api::SupervisedState;

use crate::rig::{sig, start};
use crate::traffic::with_traffic;
use crate::{pingbot, Outcome};

/// `signal` to the ping bot while pings flow; it must be replaced by a
/// new process and answers must resume.
async fn operator_signal(
    signal: Signal,
    fault: &'static str,
    expected: &'static str,
) -> anyhow::Result<Outcome> {
    let rig = start(&[("bot.toml".into(), pingbot("bot"))]).await?;
    let pid = rig
        .try_wait_for("bot", "running", |o| o.state == SupervisedState::Running)
        .await?
        .pid;
    let tally = with_traffic(&rig, Duration::from_millis(300), || async {
        sig(pid.unwrap_or(0), signal);
        Ok(())
    })
    .await?;
    let after = rig
        .try_wait_for("bot", "a new process", |o| {
            o.state == SupervisedState::Running && o.pid != pid
        })
        .await;
    Ok(Outcome {
        fault,
        expected,
        observed: match &after {
            Ok(o) => format!(
                "replaced (pid {:?} -> {:?}, restarts {}, last exit: {})",
                pid,
                o.pid,
                o.restarts,
                o.last_exit.clone().unwrap_or_default()
            ),
            Err(e) => format!("not replaced: {e}"),
        },
        ok: after.is_ok() && tally.answered > 0,
        tally: Some(tally),
        at_most_once: true,
    })
}

/// SIGKILL of the ping bot while pings flow.
///
/// # Errors
///
/// When the rig fails (not when the expectation does: that is the outcome).
pub async fn operator_sigkill() -> anyhow::Result<Outcome> {
    operator_signal(
        Signal::SIGKILL,
        "operator SIGKILL",
        "restarted at once; answers resume; pings sent while no bot listened are lost",
    )
    .await
}

/// SIGSTOP of the ping bot (a hang).
///
/// # Errors
///
/// When the rig fails.
pub async fn operator_sigstop() -> anyhow::Result<Outcome> {
    operator_signal(
        Signal::SIGSTOP,
        "operator SIGSTOP (hung)",
        "3 missed heartbeats (300 ms), killed, replaced; answers resume",
    )
    .await
}
