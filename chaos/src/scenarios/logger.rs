//! The logger SIGKILLed, then the nats-server, then the logger again,
//! while pings flow: every stored envelope is in its files exactly once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use switchboard_proto::api::SupervisedState;

use crate::logger;
use crate::rig::{operator, sig, start};
use crate::traffic::with_traffic;
use crate::{pingbot, Outcome, WAIT};
use switchboard_bus::Bus;

/// The envelope ids the stream holds on subjects matching `filter`.
async fn ids_in_stream(bus: &Bus, filter: &str) -> anyhow::Result<HashSet<String>> {
    let mut out = HashSet::new();
    let Some(mut reader) = bus
        .read_stored(
            switchboard_bus::stream::DEFAULT_STREAM,
            &[filter.to_owned()],
            switchboard_bus::stream::StartAt::First,
            false,
        )
        .await?
    else {
        return Ok(out);
    };
    while let Some(m) = reader.next().await {
        if let Some(id) = m?.msg_id {
            out.insert(id);
        }
    }
    Ok(out)
}

/// The logger while pings flow: SIGKILLed, then the nats-server
/// SIGKILLed, then the logger again. Every envelope the stream stored
/// must be in the files exactly once.
///
/// # Errors
///
/// When the rig fails.
pub async fn logger_under_faults() -> anyhow::Result<Outcome> {
    let logs = tempfile::tempdir()?;
    let rig = start(&[
        ("bot.toml".into(), pingbot("bot")),
        ("logger.toml".into(), logger(logs.path())),
    ])
    .await?;
    rig.try_wait_for("bot", "running", |o| o.state == SupervisedState::Running)
        .await?;
    let first = rig
        .try_wait_for("logger", "running", |o| o.state == SupervisedState::Running)
        .await?;
    let tally = with_traffic(&rig, Duration::from_millis(300), || async {
        sig(first.pid.unwrap_or(0), Signal::SIGKILL);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(nats) = rig.nats_pid() {
            sig(nats, Signal::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let again = rig
            .try_wait_for("logger", "a new process", |o| {
                o.state == SupervisedState::Running && o.pid != first.pid
            })
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        sig(again.pid.unwrap_or(0), Signal::SIGKILL);
        Ok(())
    })
    .await?;
    let stored = ids_in_stream(&rig.bus, "*.chaos.>").await?;
    let deadline = Instant::now() + WAIT;
    let mut files = switchboard_logger::read::ids(logs.path());
    while stored.iter().any(|id| !files.contains_key(id)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        files = switchboard_logger::read::ids(logs.path());
    }
    let missing = stored.iter().filter(|id| !files.contains_key(*id)).count();
    let twice = files.values().filter(|n| **n > 1).count();
    let restarts = operator(&rig, "logger").await.map_or(0, |o| o.restarts);
    Ok(Outcome {
        fault: "logger SIGKILL, nats-server SIGKILL, logger SIGKILL",
        expected: "every envelope the stream stored is in the files exactly once",
        observed: format!(
            "stored {}; missing from files {missing}; written twice {twice}; logger restarts {restarts}",
            stored.len()
        ),
        ok: missing == 0 && twice == 0 && !stored.is_empty() && restarts >= 2,
        tally: Some(tally),
        at_most_once: true,
    })
}
