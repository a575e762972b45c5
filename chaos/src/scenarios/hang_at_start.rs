//! An operator that never becomes ready.

use std::time::Instant;

use switchboard_proto::api::SupervisedState;

use crate::rig::start;
use crate::Outcome;

/// An operator that never becomes ready.
///
/// # Errors
///
/// When the rig fails.
pub async fn hang_at_start() -> anyhow::Result<Outcome> {
    let manifest = "id = \"mute\"\ncommand = \"/bin/sleep\"\nargs = [\"1000\"]\nready_timeout = \"300ms\"\n\
                    [backoff]\ninitial = \"10ms\"\n[crash_loop]\nmax_restarts = 3\nwindow = \"1m\"\n";
    let rig = start(&[("mute.toml".into(), manifest.into())]).await?;
    let started = Instant::now();
    let failed = rig
        .try_wait_for("mute", "failed", |o| o.state == SupervisedState::Failed)
        .await;
    Ok(Outcome {
        fault: "operator hangs at start (never ready)",
        expected: "killed after ready_timeout, restarted with backoff, `failed` after the crash-loop limit with the reason",
        observed: match &failed {
            Ok(o) => format!(
                "failed after {} ms: {}",
                started.elapsed().as_millis(),
                o.reason.clone().unwrap_or_default()
            ),
            Err(e) => format!("not failed: {e}"),
        },
        ok: failed.is_ok_and(|o| o.reason.is_some_and(|r| r.contains("not ready within"))),
        tally: None,
        at_most_once: false,
    })
}
