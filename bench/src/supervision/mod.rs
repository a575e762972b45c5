//! The orchestrator's half of `make bench`: a real `switchboard run`
//! supervising real `switchboard-pingbot` operators, beside s6 and
//! supervisord restarting the same crashing program.
//!
//! 1. cold start: spawn `switchboard run` with 50 pingbot manifests, time
//!    until every one is `running` (from the `sb.event.*` events), each in
//!    its sandbox (the default) and without (`sandbox = "none"`);
//! 2. crash: SIGKILL the supervised process N times and time the new
//!    process (`/proc`) and, for the pingbot, its `running` event (with
//!    and without the sandbox; the comparison with s6 and supervisord,
//!    which sandbox nothing, runs unsandboxed);
//! 3. idle footprint: 200 pingbots at 1 s heartbeats, the daemon's RSS and
//!    CPU over a window.
//!
//! Every daemon and rival runs under a guard that stops it (and kills
//! what it left) when dropped, so an error never leaves processes behind.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::Signal;
use switchboard_bus::{Bus, RawSubscription};
use switchboard_proto::api::SupervisedState;

use crate::daemon::{self, toml_str, Binaries, Daemon, ManifestFile, WAIT};
use crate::procfs::{self, NewChild};
use crate::rivals::{program_name, Rival};
use crate::summary::{median, Summary, Target, Unit};
use crate::table::Table;

mod cold;
mod crash;
mod idle;

/// How the supervision half runs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Cold starts measured (the table shows the median).
    pub cold_runs: usize,
    /// SIGKILLs per Switchboard series.
    pub kills: usize,
    /// SIGKILLs for supervisord, which takes ~1 s per restart.
    pub supervisord_kills: usize,
    /// SIGKILLs for s6, which waits ~1 s before each restart.
    pub s6_kills: usize,
    /// SIGKILLs for s6 with readiness notification, ready for over 1 s.
    pub s6_ready_kills: usize,
    /// Operators in the idle-footprint run.
    pub idle_operators: usize,
    /// CPU measurement window of the idle run.
    pub idle_window: Duration,
}

impl Settings {
    /// The defaults (`quick`: fewer samples, for a check that it works).
    pub fn new(quick: bool, kills: Option<usize>) -> Settings {
        let kills = kills.unwrap_or(if quick { 10 } else { 50 }).max(1);
        Settings {
            cold_runs: if quick { 1 } else { 3 },
            kills,
            supervisord_kills: kills.min(if quick { 5 } else { 20 }),
            s6_kills: kills.min(if quick { 3 } else { 10 }),
            s6_ready_kills: kills.min(if quick { 3 } else { 10 }),
            idle_operators: IDLE_OPERATORS,
            idle_window: Duration::from_secs(if quick { 3 } else { 10 }),
        }
    }
}

/// Operators in the cold-start run.
const COLD_OPERATORS: usize = 50;
/// Operators in the idle-footprint run.
const IDLE_OPERATORS: usize = 200;
/// The crashing program every supervisor restarts.
const CRASHER: &str = "/bin/sleep";
const CRASHER_ARGS: &[&str] = &["3600"];
/// Time between a respawn being seen and the next SIGKILL: longer than
/// the manifests' `reset_after` (10 ms), so every crash is a first crash
/// after a stable run for Switchboard.
const GAP: Duration = Duration::from_millis(50);
/// The gap for the "s6, ready for over 1 s" series: s6 restarts at once
/// only a service that has been *ready* for more than a second.
const S6_READY_GAP: Duration = Duration::from_millis(1_100);
/// Settling time between "all running" and the idle measurement.
const IDLE_SETTLE: Duration = Duration::from_secs(2);
/// The manifest line of the unsandboxed variants (the sandboxed ones are
/// the default manifests).
const UNSANDBOXED: &str = "sandbox = \"none\"\n";
/// The variants measured: label and manifest lines.
const VARIANTS: [(&str, &str); 2] = [("bwrap (default)", ""), ("none", UNSANDBOXED)];

/// Backoff and crash-loop settings of the crash manifests (see `GAP`).
const CRASH_SUPERVISION: &str =
    "[backoff]\nreset_after = \"10ms\"\n\n[crash_loop]\nmax_restarts = 1000\n";

/// Run all three; tables to stdout, progress to stderr.
pub async fn run(settings: Settings, summary: &mut Summary) -> anyhow::Result<()> {
    let bins = Binaries::find()?;
    println!(
        "supervision: {} run, operators {}, embedded {}",
        bins.switchboard.display(),
        program_name(&bins.pingbot.display().to_string()),
        bins.nats_server.display()
    );
    println!();
    cold::cold_start(&bins, settings, summary).await?;
    crash::crash(&bins, settings, summary).await?;
    idle::idle(&bins, settings, summary).await?;
    Ok(())
}

fn pingbot_manifest(bins: &Binaries, id: &str, extra: &str) -> ManifestFile {
    (
        format!("{id}.toml"),
        format!(
            "id = \"{id}\"\ncommand = {}\n{extra}",
            toml_str(&bins.pingbot.display().to_string())
        ),
    )
}

fn record_leftovers(summary: &mut Summary, what: &str, killed: Vec<u32>) {
    if !killed.is_empty() {
        summary.cleanup.push(format!(
            "{what}: processes left after stopping, killed: {killed:?}"
        ));
    }
}

/// Wait until `n` operators are `running`: events as they come, plus one
/// status query right after subscribing for those that were quicker.
/// Returns when each first became running.
async fn wait_all_running(
    bus: &Bus,
    sub: &mut RawSubscription,
    n: usize,
) -> anyhow::Result<HashMap<String, Instant>> {
    let mut running: HashMap<String, Instant> = HashMap::new();
    let status = daemon::status(bus).await?;
    let now = Instant::now();
    for op in status.operators {
        if op.state == SupervisedState::Running {
            running.entry(op.id).or_insert(now);
        }
    }
    let deadline = Instant::now() + WAIT;
    while running.len() < n {
        match daemon::next_event(sub, deadline).await? {
            None => bail!(
                "only {} of {n} operators running after {WAIT:?}",
                running.len()
            ),
            Some((ev, at)) => match ev.state {
                SupervisedState::Running => {
                    running.entry(ev.id).or_insert(at);
                }
                SupervisedState::Failed | SupervisedState::Backoff | SupervisedState::Exited => {
                    bail!(
                        "operator {} went {}: {}",
                        ev.id,
                        ev.state.as_str(),
                        ev.reason.unwrap_or_default()
                    )
                }
                _ => {}
            },
        }
    }
    Ok(running)
}

/// Check with `sb.api.status` that `n` operators run.
async fn confirm_running(bus: &Bus, n: usize) -> anyhow::Result<()> {
    let status = daemon::status(bus).await?;
    let up = status
        .operators
        .iter()
        .filter(|o| o.state == SupervisedState::Running)
        .count();
    if up != n || status.operators.len() != n {
        bail!(
            "sb.api.status: {up} of {} operators running, expected {n}",
            status.operators.len()
        );
    }
    Ok(())
}

/// Nearest-rank percentile (`q` in 0..=1) of the values; 0 when empty.
fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A duration as people read it: `2.31 ms`, `41.2 ms`, `951 ms`.
fn millis(d: Duration) -> String {
    millis_f(d.as_secs_f64())
}

fn millis_f(secs: f64) -> String {
    let ms = secs * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::cold::{parse_debug_duration, ready_took_from_log};
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), 50.0);
        assert_eq!(percentile(&v, 0.5), 25.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn took_from_daemon_log() {
        let log = "2026-11-21T16:00:00Z  INFO operator=ping-001 pid=12 took=Some(31.2ms) ready\n\
                   2026-11-21T16:00:00Z  INFO operator=ping-002 pid=13 took=Some(1.5s) ready\n\
                   2026-11-21T16:00:00Z  INFO operator=ping-002 state\n";
        assert_eq!(ready_took_from_log(log), vec![0.0312, 1.5]);
        assert_eq!(parse_debug_duration("950µs"), Some(0.00095));
    }

    #[test]
    fn millis_format() {
        assert_eq!(millis(Duration::from_micros(2_310)), "2.31 ms");
        assert_eq!(millis(Duration::from_micros(41_230)), "41.2 ms");
        assert_eq!(millis(Duration::from_millis(951)), "951 ms");
    }
}
