//! The embedded nats-server SIGKILLed while pings flow.

use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use switchboard_proto::api::SupervisedState;

use crate::rig::{operator, sig, start};
use crate::traffic::with_traffic;
use crate::{pingbot, Outcome};

/// SIGKILL of the embedded nats-server while pings flow.
///
/// # Errors
///
/// When the rig fails.
pub async fn nats_sigkill() -> anyhow::Result<Outcome> {
    let rig = start(&[("bot.toml".into(), pingbot("bot"))]).await?;
    let pid = rig
        .try_wait_for("bot", "running", |o| o.state == SupervisedState::Running)
        .await?
        .pid;
    let nats = rig.nats_pid().context("no embedded nats-server")?;
    let tally = with_traffic(&rig, Duration::from_millis(300), || async {
        sig(nats, Signal::SIGKILL);
        Ok(())
    })
    .await?;
    let after = operator(&rig, "bot").await;
    let same = after
        .as_ref()
        .is_ok_and(|o| o.pid == pid && o.state == SupervisedState::Running);
    Ok(Outcome {
        fault: "nats-server SIGKILL",
        expected:
            "the daemon restarts it on its port; every client reconnects; no operator is restarted",
        observed: format!(
            "server restarted: {}; bot kept its pid: {same}",
            rig.nats_pid().is_some_and(|p| p != nats)
        ),
        ok: same && tally.answered > 0,
        tally: Some(tally),
        at_most_once: true,
    })
}
