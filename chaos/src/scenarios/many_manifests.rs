//! Many manifests at once, then SIGTERM.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use switchboard_proto::api::SupervisedState;

use crate::rig::{sig, start};
use crate::{Outcome, WAIT};

/// Many manifests at once.
///
/// # Errors
///
/// When the rig fails.
pub async fn many_manifests(n: usize) -> anyhow::Result<Outcome> {
    let manifests: Vec<(String, String)> = (0..n)
        .map(|i| {
            (
                format!("s{i:04}.toml"),
                format!(
                    "id = \"s{i:04}\"\ncommand = \"/bin/sleep\"\nargs = [\"1000\"]\ncontrol = \"signals\"\nstop_timeout = \"1s\"\n"
                ),
            )
        })
        .collect();
    let started = Instant::now();
    let mut rig = start(&manifests).await?;
    let deadline = Instant::now() + WAIT * 3;
    let running = loop {
        let s = rig.try_status().await?;
        let running = s
            .operators
            .iter()
            .filter(|o| o.state == SupervisedState::Running)
            .count();
        if running == n || Instant::now() > deadline {
            break running;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = started.elapsed();
    let stop_started = Instant::now();
    sig(rig.pid(), Signal::SIGTERM);
    let stopped = rig.process.wait(WAIT * 3).await;
    Ok(Outcome {
        fault: "many manifests at once",
        expected: "all running (each with its own NATS user: reloads are coalesced), then all stopped by SIGTERM",
        observed: format!(
            "{running}/{n} running after {} ms; stopped in {} ms",
            took.as_millis(),
            stop_started.elapsed().as_millis()
        ),
        ok: running == n && matches!(stopped, Ok(s) if s.success()),
        tally: None,
        at_most_once: false,
    })
}
