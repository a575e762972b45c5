//! An operator that floods its stdout.

use std::time::{Duration, Instant};

use switchboard_proto::api::SupervisedState;

use crate::rig::{peak_rss_mb, start};
use crate::traffic::Traffic;
use crate::{pingbot, Outcome};

/// An operator that writes 100 MB to stdout.
///
/// # Errors
///
/// When the rig fails.
pub async fn flood_of_output(megabytes: u64) -> anyhow::Result<Outcome> {
    let manifest = format!(
        "id = \"loud\"\ncommand = \"/bin/sh\"\ncontrol = \"signals\"\nrestart = \"never\"\n\
         args = [\"-c\", \"head -c {} /dev/zero | tr '\\\\0' x | fold -w 100\"]\n",
        megabytes * 1_000_000
    );
    let rig = start(&[
        ("loud.toml".into(), manifest),
        ("bot.toml".into(), pingbot("bot")),
    ])
    .await?;
    rig.try_wait_for("bot", "running", |o| o.state == SupervisedState::Running)
        .await?;
    let started = Instant::now();
    let traffic = Traffic::start(&rig.bus, Duration::from_millis(5)).await?;
    let done = rig
        .try_wait_for("loud", "exited", |o| o.state == SupervisedState::Exited)
        .await;
    let took = started.elapsed();
    let tally = traffic.stop().await;
    let status = rig.try_status().await?;
    let rss = peak_rss_mb(rig.pid());
    Ok(Outcome {
        fault: "operator writes a flood of stdout",
        expected: "read to the end (no blocked pipe), daemon memory bounded, pings still answered; lines the bus could not take are counted",
        observed: format!(
            "{megabytes} MB read in {} ms; daemon peak RSS {rss:.1} MB; lines not forwarded: {}",
            took.as_millis(),
            status.log_lines_dropped
        ),
        ok: done.is_ok() && rss < 200.0 && tally.answered > 0,
        tally: Some(tally),
        at_most_once: true,
    })
}
