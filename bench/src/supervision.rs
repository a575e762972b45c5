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
    cold_start(&bins, settings, summary).await?;
    crash(&bins, settings, summary).await?;
    idle(&bins, settings, summary).await?;
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

/// `took=Some(12.3ms)` of the daemon's "ready" log lines: each operator's
/// spawn -> ready as the daemon saw it.
fn ready_took_from_log(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains(" ready"))
        .filter_map(|l| {
            let rest = l.split("took=Some(").nth(1)?;
            let text = &rest[..rest.find(')')?];
            parse_debug_duration(text)
        })
        .collect()
}

/// `12.3ms` / `1.2s` / `950µs` (Duration's Debug) in seconds.
fn parse_debug_duration(text: &str) -> Option<f64> {
    let units = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)];
    units.iter().find_map(|(unit, scale)| {
        text.strip_suffix(unit)
            .and_then(|n| n.parse::<f64>().ok())
            .map(|n| n * scale)
    })
}

struct ColdRun {
    to_api: Duration,
    first: Duration,
    all: Duration,
    total: Duration,
    took: Vec<f64>,
}

async fn cold_once(bins: &Binaries, extra: &str) -> anyhow::Result<(ColdRun, Vec<u32>)> {
    let manifests: Vec<ManifestFile> = (0..COLD_OPERATORS)
        .map(|i| pingbot_manifest(bins, &format!("ping-{i:03}"), extra))
        .collect();
    let mut d = Daemon::spawn(bins, &manifests)?;
    let (info, api) = d.runtime_info().await?;
    let bus = daemon::connect(&info).await?;
    let mut sub = daemon::events(&bus, "sb.event.*").await?;
    let running = wait_all_running(&bus, &mut sub, COLD_OPERATORS).await?;
    confirm_running(&bus, COLD_OPERATORS).await?;
    let last = running.values().max().copied().unwrap_or(api);
    let first = running.values().min().copied().unwrap_or(api);
    let took = ready_took_from_log(&std::fs::read_to_string(d.log_path()).unwrap_or_default());
    let run = ColdRun {
        to_api: api.saturating_duration_since(d.spawned),
        first: first.saturating_duration_since(api),
        all: last.saturating_duration_since(api),
        total: last.saturating_duration_since(d.spawned),
        took,
    };
    drop(sub);
    bus.close().await;
    let left = d.stop().await?;
    Ok((run, left))
}

async fn cold_start(
    bins: &Binaries,
    settings: Settings,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let target = Target::Below(1000.0, Unit::Ms);
    let mut t = Table::new(
        format!(
            "cold start: switchboard run with {COLD_OPERATORS} pingbot operators -> all running (median of {})",
            settings.cold_runs
        ),
        &[
            "sandbox",
            "operators",
            "spawn->API",
            "API->first running",
            "API->all running",
            "spawn->all running",
            "target",
        ],
    );
    let mut notes = Vec::new();
    for (label, extra) in VARIANTS {
        let mut runs = Vec::new();
        for i in 1..=settings.cold_runs {
            let (run, left) = cold_once(bins, extra)
                .await
                .with_context(|| format!("cold start {i} (sandbox {label})"))?;
            record_leftovers(summary, &format!("cold start {i} (sandbox {label})"), left);
            eprintln!(
                "  cold start {i}/{} (sandbox {label}): API after {}, all {COLD_OPERATORS} running {} later (total {})",
                settings.cold_runs,
                millis(run.to_api),
                millis(run.all),
                millis(run.total)
            );
            runs.push(run);
        }
        let med = |f: fn(&ColdRun) -> Duration| {
            Duration::from_secs_f64(median(runs.iter().map(|r| f(r).as_secs_f64())))
        };
        let total = med(|r| r.total);
        let total_ms = total.as_secs_f64() * 1e3;
        t.row(vec![
            label.to_owned(),
            COLD_OPERATORS.to_string(),
            millis(med(|r| r.to_api)),
            millis(med(|r| r.first)),
            millis(med(|r| r.all)),
            millis(total),
            target.verdict(total_ms),
        ]);
        let took: Vec<f64> = runs.iter().flat_map(|r| r.took.iter().copied()).collect();
        if !took.is_empty() {
            notes.push(format!(
                "sandbox {label}: each operator's spawn->ready as the daemon logged it (`took`, \
                 all runs): median {}, p99 {}, max {}",
                millis_f(median(took.iter().copied())),
                millis_f(percentile(&took, 0.99)),
                millis_f(took.iter().copied().fold(0.0, f64::max)),
            ));
        }
        notes.push(format!(
            "sandbox {label}, runs (spawn->all running): {}",
            runs.iter()
                .map(|r| millis(r.total))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let name = if extra.is_empty() {
            format!("{COLD_OPERATORS} operators cold start")
        } else {
            format!("{COLD_OPERATORS} operators cold start, no sandbox")
        };
        summary.check(name, total_ms, target);
    }
    t.note(
        "spawn = spawning `switchboard run`; API = its runtime file appears (API and bus \
         live, nats-server started; operators are spawned right after)",
    );
    t.note(
        "running = first `running` event per operator on sb.event.* (its `ready` reached the \
         daemon), checked with sb.api.status",
    );
    t.note(
        "sandbox bwrap = each operator in its own bubblewrap (user, pid, ipc, uts, cgroup \
         namespaces, binds, masks: the default); none = `sandbox = \"none\"` in each manifest",
    );
    for n in notes {
        t.note(n);
    }
    println!("{t}");
    Ok(())
}

/// Kill -> X times of one series, in seconds.
#[derive(Debug, Default)]
struct Series {
    times: Vec<f64>,
}

impl Series {
    fn p50(&self) -> f64 {
        median(self.times.iter().copied())
    }
    fn p99(&self) -> f64 {
        percentile(&self.times, 0.99)
    }
    fn min(&self) -> f64 {
        self.times.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.times.iter().copied().fold(0.0, f64::max)
    }
}

/// The crash series of a Switchboard daemon with one operator `id`.
struct SbCrash {
    /// Kill -> the new process runs the program (`/proc`).
    process: Series,
    /// Kill -> `starting` event with the new pid (nats control only).
    starting: Series,
    /// Kill -> `running` event with the new pid.
    running: Series,
}

/// A daemon supervising one operator; SIGKILL it `kills` times.
async fn switchboard_crash(
    bins: &Binaries,
    manifest: ManifestFile,
    id: &str,
    program: &str,
    kills: usize,
) -> anyhow::Result<(SbCrash, Vec<u32>)> {
    // In a sandbox the program is not the daemon's child (bwrap and its
    // init are between): the new pid comes from the `running` event.
    let watch_proc = manifest.1.contains(UNSANDBOXED);
    let mut d = Daemon::spawn(bins, &[manifest])?;
    let (info, _) = d.runtime_info().await?;
    let bus = daemon::connect(&info).await?;
    let mut sub = daemon::events(&bus, &format!("sb.event.{id}")).await?;
    // The first process, once running.
    let deadline = Instant::now() + WAIT;
    let mut pid = loop {
        let status = daemon::status(&bus).await?;
        if let Some(op) = status.operators.iter().find(|o| o.id == id) {
            if op.state == SupervisedState::Running {
                if let Some(pid) = op.pid {
                    break pid;
                }
            }
        }
        if Instant::now() >= deadline {
            bail!("{id} never ran; daemon log: {}", d.tail_log());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut out = SbCrash {
        process: Series::default(),
        starting: Series::default(),
        running: Series::default(),
    };
    for i in 0..kills {
        tokio::time::sleep(GAP).await;
        daemon::drain(&mut sub);
        let watch = NewChild::new(d.pid, program);
        let seen = tokio::task::spawn_blocking(move || {
            watch_proc
                .then(|| watch.wait(Duration::from_secs(10)))
                .flatten()
        });
        let t0 = Instant::now();
        procfs::signal(pid, Signal::SIGKILL);
        let deadline = t0 + Duration::from_secs(10);
        let mut starting = None;
        let (running, event_pid) = loop {
            let Some((ev, at)) = daemon::next_event(&mut sub, deadline).await? else {
                bail!(
                    "kill {}: no `running` event for a new {id} within 10 s; daemon log: {}",
                    i + 1,
                    d.tail_log()
                );
            };
            if matches!(ev.state, SupervisedState::Failed | SupervisedState::Backoff) {
                bail!(
                    "kill {}: {id} went {} (the measurement wants an immediate restart): {}",
                    i + 1,
                    ev.state.as_str(),
                    ev.reason.unwrap_or_default()
                );
            }
            if ev.pid.is_none() || ev.pid == Some(pid) {
                continue;
            }
            match ev.state {
                SupervisedState::Starting => starting = Some(at),
                SupervisedState::Running => break (at, ev.pid),
                _ => {}
            }
        };
        let new_pid = match (seen.await?, event_pid) {
            (Some((new_pid, at)), _) => {
                out.process.times.push((at - t0).as_secs_f64());
                new_pid
            }
            (None, Some(new_pid)) if !watch_proc => new_pid,
            _ => bail!(
                "kill {}: no new {program} process under the daemon in /proc",
                i + 1
            ),
        };
        out.running.times.push((running - t0).as_secs_f64());
        if let Some(s) = starting {
            out.starting.times.push((s - t0).as_secs_f64());
        }
        pid = new_pid;
    }
    drop(sub);
    bus.close().await;
    let left = d.stop().await?;
    Ok((out, left))
}

/// SIGKILL a rival's service `kills` times, `gap` after each respawn.
fn rival_series(rival: &mut Rival, kills: usize, gap: Duration) -> anyhow::Result<Series> {
    let program = program_name(CRASHER);
    let mut out = Series::default();
    for i in 0..kills {
        std::thread::sleep(gap);
        let watch = NewChild::new(rival.parent, program);
        let t0 = Instant::now();
        procfs::signal(rival.service, Signal::SIGKILL);
        let Some((pid, at)) = watch.wait(Duration::from_secs(10)) else {
            bail!(
                "{}: kill {}: no new {program} within 10 s",
                rival.name,
                i + 1
            );
        };
        out.times.push((at - t0).as_secs_f64());
        rival.service = pid;
    }
    Ok(out)
}

/// What a rival's row says: a series, or why there is none.
enum RivalResult {
    Ran {
        name: String,
        series: Series,
        gap: Duration,
    },
    Skipped {
        name: String,
        why: String,
    },
}

fn run_rival(
    name: &str,
    start: fn(&str, &[&str]) -> Result<anyhow::Result<Rival>, crate::rivals::Missing>,
    series: &[(usize, Duration, &str)],
    summary_problems: &mut Vec<String>,
) -> anyhow::Result<Vec<RivalResult>> {
    let mut rival = match start(CRASHER, CRASHER_ARGS) {
        Err(missing) => {
            return Ok(series
                .iter()
                .map(|(_, _, label)| RivalResult::Skipped {
                    name: format!("{name}{label}"),
                    why: missing.0.clone(),
                })
                .collect())
        }
        Ok(r) => r.with_context(|| format!("starting {name}"))?,
    };
    let mut out = Vec::new();
    for &(kills, gap, label) in series {
        let s = rival_series(&mut rival, kills, gap)?;
        eprintln!(
            "  {}{label}: {kills} kills, respawn p50 {}",
            rival.name,
            millis_f(s.p50())
        );
        out.push(RivalResult::Ran {
            name: format!("{}{label}", rival.name),
            series: s,
            gap,
        });
    }
    let name = rival.name.clone();
    let killed = rival.stop()?;
    if !killed.is_empty() {
        summary_problems.push(format!(
            "{name}: processes left after stopping, killed: {killed:?}"
        ));
    }
    Ok(out)
}

async fn crash(bins: &Binaries, settings: Settings, summary: &mut Summary) -> anyhow::Result<()> {
    let kills = settings.kills;
    // Switchboard, the comparison program under `control = "signals"`
    // (no ready protocol: running as soon as spawned).
    let sleeper = (
        "crasher.toml".to_owned(),
        format!(
            "id = \"crasher\"\ncommand = {}\nargs = [{}]\ncontrol = \"signals\"\n\
             restart = \"always\"\n{UNSANDBOXED}\n{CRASH_SUPERVISION}",
            toml_str(CRASHER),
            CRASHER_ARGS
                .iter()
                .map(|a| toml_str(a))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let (sb_sleep, left) =
        switchboard_crash(bins, sleeper, "crasher", program_name(CRASHER), kills)
            .await
            .context("switchboard crash series (/bin/sleep)")?;
    record_leftovers(summary, "switchboard (sleep)", left);
    eprintln!(
        "  switchboard: {kills} kills of /bin/sleep, respawn p50 {}",
        millis_f(sb_sleep.process.p50())
    );
    // Switchboard with the pingbot: crash -> ready again, without and
    // with its sandbox.
    let bot = pingbot_manifest(
        bins,
        "crashbot",
        &format!("restart = \"always\"\n{UNSANDBOXED}\n{CRASH_SUPERVISION}"),
    );
    let (sb_bot, left) = switchboard_crash(bins, bot, "crashbot", "switchboard-pingbot", kills)
        .await
        .context("switchboard crash series (pingbot)")?;
    record_leftovers(summary, "switchboard (pingbot)", left);
    eprintln!(
        "  switchboard: {kills} kills of pingbot, ready again p50 {}",
        millis_f(sb_bot.running.p50())
    );
    let bot = pingbot_manifest(
        bins,
        "crashbot",
        &format!("restart = \"always\"\n\n{CRASH_SUPERVISION}"),
    );
    let (sb_boxed, left) = switchboard_crash(bins, bot, "crashbot", "switchboard-pingbot", kills)
        .await
        .context("switchboard crash series (sandboxed pingbot)")?;
    record_leftovers(summary, "switchboard (sandboxed pingbot)", left);
    eprintln!(
        "  switchboard: {kills} kills of a sandboxed pingbot, ready again p50 {}",
        millis_f(sb_boxed.running.p50())
    );

    // The rivals, blocking code on a blocking thread.
    let (sd_kills, s6_kills, s6_ready) = (
        settings.supervisord_kills,
        settings.s6_kills,
        settings.s6_ready_kills,
    );
    let (rivals, problems) = tokio::task::spawn_blocking(move || {
        let mut problems = Vec::new();
        let mut out = run_rival(
            "supervisord",
            Rival::supervisord,
            &[(sd_kills, GAP, "")],
            &mut problems,
        )?;
        out.extend(run_rival(
            "s6",
            Rival::s6,
            &[(s6_kills, GAP, " (defaults)")],
            &mut problems,
        )?);
        out.extend(run_rival(
            "s6",
            Rival::s6_ready,
            &[(s6_ready, S6_READY_GAP, ", notification-fd, ready > 1 s")],
            &mut problems,
        )?);
        anyhow::Ok((out, problems))
    })
    .await??;
    summary.cleanup.extend(problems);

    let respawn_target = Target::Below(5.0, Unit::Ms);
    let sb_p50_ms = sb_sleep.process.p50() * 1e3;
    let mut t = Table::new(
        format!(
            "crash -> respawn: SIGKILL `{CRASHER} {}`, time until the new process runs it (/proc)",
            CRASHER_ARGS.join(" ")
        ),
        &[
            "supervisor",
            "kills",
            "uptime",
            "p50",
            "p99",
            "min",
            "max",
            "target",
        ],
    );
    let row = |name: &str, s: &Series, gap: Duration, target: String| {
        vec![
            name.to_owned(),
            s.times.len().to_string(),
            millis(gap),
            millis_f(s.p50()),
            millis_f(s.p99()),
            millis_f(s.min()),
            millis_f(s.max()),
            target,
        ]
    };
    t.row(row(
        "switchboard (control = signals)",
        &sb_sleep.process,
        GAP,
        respawn_target.verdict(sb_p50_ms),
    ));
    summary.check("respawn median", sb_p50_ms, respawn_target);
    let mut s6_default_ms = None;
    let mut s6_ready_ms = None;
    let mut skipped = Vec::new();
    for r in &rivals {
        match r {
            RivalResult::Ran { name, series, gap } => {
                if name.starts_with("s6") && name.contains("(defaults)") {
                    s6_default_ms = Some(series.p50() * 1e3);
                }
                if name.starts_with("s6") && name.contains("ready > 1 s") {
                    s6_ready_ms = Some(series.p50() * 1e3);
                }
                t.row(row(name, series, *gap, String::new()));
            }
            RivalResult::Skipped { name, why } => {
                let mut cells = vec![name.clone()];
                cells.extend(std::iter::repeat_n("-".to_owned(), 6));
                cells.push("skipped (run make bench-tools)".to_owned());
                t.row(cells);
                skipped.push(format!("{name}: {why}"));
            }
        }
    }
    if let Some(s6) = s6_default_ms {
        let target = Target::Below(s6, Unit::Ms);
        summary.check("respawn median vs s6", sb_p50_ms, target);
        t.note(format!(
            "switchboard vs s6 (defaults), p50: {} vs {}  {}",
            millis_f(sb_p50_ms / 1e3),
            millis_f(s6 / 1e3),
            if target.met(sb_p50_ms) {
                "ok (faster)"
            } else {
                "MISSED (not faster)"
            }
        ));
    }
    if s6_default_ms.is_none() {
        t.note("switchboard vs s6: not checked (s6 did not run)");
    }
    for why in skipped {
        t.note(why);
    }
    if let Some(s6) = s6_ready_ms {
        t.note(format!(
            "switchboard vs s6 with readiness (ready > 1 s before the kill), p50: {} vs {} \
             (not a target: a different s6 setup)",
            millis_f(sb_p50_ms / 1e3),
            millis_f(s6 / 1e3),
        ));
    }
    t.note(format!(
        "uptime = how long each new process ran before the next SIGKILL; p99 of {kills} kills \
         is their maximum; the rivals get fewer kills because each of their restarts takes \
         ~1 s (time budget)"
    ));
    t.note(
        "switchboard: [backoff] reset_after = \"10ms\" and [crash_loop] max_restarts = 1000, \
         so every kill is a first crash after a stable run (restarted at once; consecutive \
         quick failures would back off from 100 ms)",
    );
    t.note(
        "supervisord: autorestart=true, startsecs=0; s6: defaults (a service dir with only a \
         `run` script: #!/bin/sh exec ...)",
    );
    t.note(
        "supervisord reaps a dead child at the end of a main-loop turn and restarts it in the \
         next, after a poll() with a fixed 1 s timeout (supervisord.py runforever): ~1 s, \
         no setting changes it",
    );
    t.note(
        "s6-supervise waits 1 s before respawning a service unless it had been *ready* for \
         over 1 s (built in; the knob is readiness: a notification-fd file and a run script \
         that reports it, last row; a plain run script is never ready)",
    );
    t.note(
        "switchboard via its event (kill -> `running` event with the new pid on sb.event.crasher): \
         p50 "
            .to_owned()
            + &millis_f(sb_sleep.running.p50())
            + ", p99 " + &millis_f(sb_sleep.running.p99()),
    );
    println!("{t}");

    let ready_target = Target::Below(50.0, Unit::Ms);
    let ready_ms = sb_boxed.running.p50() * 1e3;
    let unboxed_ready_ms = sb_bot.running.p50() * 1e3;
    let mut t = Table::new(
        format!(
            "crash -> ready again: SIGKILL a switchboard-pingbot operator {kills} times \
             (uptime {} before each kill)",
            millis(GAP)
        ),
        &["kill ->", "p50", "p99", "min", "max", "target"],
    );
    let row = |what: &str, s: &Series, target: String| {
        vec![
            what.to_owned(),
            millis_f(s.p50()),
            millis_f(s.p99()),
            millis_f(s.min()),
            millis_f(s.max()),
            target,
        ]
    };
    t.row(row(
        "no sandbox: new process runs (/proc)",
        &sb_bot.process,
        String::new(),
    ));
    t.row(row(
        "no sandbox: `starting` event, new pid",
        &sb_bot.starting,
        String::new(),
    ));
    t.row(row(
        "no sandbox: `running` event (ready again)",
        &sb_bot.running,
        ready_target.verdict(unboxed_ready_ms),
    ));
    t.row(row(
        "sandbox: `starting` event, new pid",
        &sb_boxed.starting,
        String::new(),
    ));
    t.row(row(
        "sandbox: `running` event (ready again)",
        &sb_boxed.running,
        ready_target.verdict(ready_ms),
    ));
    t.note(
        "ready = the new process connected to NATS, subscribed, sent `ready`, and the daemon \
         published `running`; same backoff settings as above",
    );
    t.note(
        "sandbox = the default bubblewrap per operator (its start: namespaces, binds, masks, \
         the info fd, the init's fork); no sandbox = `sandbox = \"none\"`",
    );
    println!("{t}");
    summary.check("crash->ready median", ready_ms, ready_target);
    summary.check(
        "crash->ready median, no sandbox",
        unboxed_ready_ms,
        ready_target,
    );
    Ok(())
}

/// RSS and CPU of a set of processes over the idle window.
#[derive(Debug, Default)]
struct Usage {
    rss_samples: Vec<f64>,
    peak_kb: u64,
    /// CPU time of all threads (schedstat, ns), seconds.
    cpu_secs: f64,
    /// utime + stime (/proc/<pid>/stat), ticks.
    cpu_ticks: u64,
}

fn rss_mb(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|&p| procfs::status_kb(p, "VmRSS"))
        .sum::<u64>() as f64
        * 1024.0
        / 1e6
}

fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| procfs::stat(p).map(|s| s.cpu_ticks))
        .sum()
}

/// CPU time of every thread of `pids` (ns-precise schedstat), seconds.
fn cpu_secs(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|&p| crate::cpu::process_time(Some(p)))
        .map(|d| d.as_secs_f64())
        .sum()
}

async fn idle(bins: &Binaries, settings: Settings, summary: &mut Summary) -> anyhow::Result<()> {
    let n = settings.idle_operators;
    let manifests: Vec<ManifestFile> = (0..n)
        .map(|i| {
            pingbot_manifest(
                bins,
                &format!("idle-{i:03}"),
                "heartbeat_interval = \"1s\"\nready_timeout = \"60s\"\n",
            )
        })
        .collect();
    let mut d = Daemon::spawn(bins, &manifests)?;
    let (info, _) = d.runtime_info().await?;
    let bus = daemon::connect(&info).await?;
    let mut sub = daemon::events(&bus, "sb.event.*").await?;
    let t0 = Instant::now();
    wait_all_running(&bus, &mut sub, n)
        .await
        .context("idle run: starting the operators")?;
    eprintln!(
        "  idle: {n} operators running after {}; settling {IDLE_SETTLE:?}, then measuring {:?}",
        millis(t0.elapsed()),
        settings.idle_window
    );
    drop(sub);
    tokio::time::sleep(IDLE_SETTLE).await;

    let daemon_pid = [d.pid];
    let nats: Vec<u32> = d.nats_server_pid().into_iter().collect();
    // Each in its sandbox: below bwrap and its init, not the daemon's
    // children.
    let bots: Vec<u32> = procfs::descendants(d.pid)
        .into_iter()
        .filter(|&p| {
            procfs::stat(p).is_some_and(|s| procfs::comm_is(&s.comm, "switchboard-pingbot"))
        })
        .collect();
    if bots.len() != n {
        bail!(
            "idle run: {} pingbot processes under the daemon, expected {n}",
            bots.len()
        );
    }
    let groups: [&[u32]; 3] = [&daemon_pid, &nats, &bots];
    let mut usage: Vec<Usage> = groups.iter().map(|_| Usage::default()).collect();
    let start_ticks: Vec<u64> = groups.iter().map(|g| cpu_ticks(g)).collect();
    let start_secs: Vec<f64> = groups.iter().map(|g| cpu_secs(g)).collect();
    let started = Instant::now();
    let end = started + settings.idle_window;
    loop {
        for (u, g) in usage.iter_mut().zip(groups) {
            u.rss_samples.push(rss_mb(g));
        }
        let now = Instant::now();
        if now >= end {
            break;
        }
        tokio::time::sleep((end - now).min(Duration::from_secs(1))).await;
    }
    let window = started.elapsed().as_secs_f64();
    for (((u, g), t0), s0) in usage
        .iter_mut()
        .zip(groups)
        .zip(&start_ticks)
        .zip(&start_secs)
    {
        u.cpu_ticks = cpu_ticks(g).saturating_sub(*t0);
        u.cpu_secs = (cpu_secs(g) - s0).max(0.0);
        u.peak_kb = g
            .iter()
            .filter_map(|&p| procfs::status_kb(p, "VmHWM"))
            .sum();
    }
    // Idle means nothing restarted meanwhile.
    let status = daemon::status(&bus).await?;
    let restarted: u64 = status.operators.iter().map(|o| o.restarts).sum();
    let up = status
        .operators
        .iter()
        .filter(|o| o.state == SupervisedState::Running)
        .count();
    bus.close().await;
    let left = d.stop().await.context("idle run: stopping the daemon")?;
    record_leftovers(summary, "idle run", left);
    if up != n || restarted != 0 {
        summary.cleanup.push(format!(
            "idle run: {up} of {n} running at the end, {restarted} restarts during the window"
        ));
    }

    let pct = |u: &Usage| u.cpu_secs / window * 100.0;
    let pct_ticks = |u: &Usage| u.cpu_ticks as f64 / procfs::TICKS_PER_SEC / window * 100.0;
    let rss = |u: &Usage| median(u.rss_samples.iter().copied());
    let rss_target = Target::Below(20.0, Unit::Mb);
    let cpu_target = Target::Below(2.0, Unit::PctCore);
    let mut t = Table::new(
        format!(
            "idle footprint: {n} pingbot operators, 1 s heartbeats, {:.0} s window after all running",
            window
        ),
        &["process", "RSS MB", "peak RSS MB", "CPU % of a core", "target"],
    );
    let daemon_rss = rss(&usage[0]);
    let daemon_cpu = pct(&usage[0]);
    let verdicts = format!(
        "RSS {}; CPU {}",
        rss_target.verdict(daemon_rss),
        cpu_target.verdict(daemon_cpu)
    );
    for (i, (name, u)) in [
        "switchboard (daemon)".to_owned(),
        "nats-server (embedded)".to_owned(),
        format!("{n} pingbots (sum)"),
    ]
    .iter()
    .zip(&usage)
    .enumerate()
    {
        t.row(vec![
            name.clone(),
            format!("{:.1}", rss(u)),
            format!("{:.1}", u.peak_kb as f64 * 1024.0 / 1e6),
            format!("{:.2}", pct(u)),
            if i == 0 {
                verdicts.clone()
            } else {
                String::new()
            },
        ]);
    }
    t.note(
        "RSS = VmRSS (median of 1 s samples; MB = 10^6 bytes), peak = VmHWM since start; \
         CPU = run time of all threads over the window (/proc/<pid>/task/*/schedstat, ns)",
    );
    t.note(format!(
        "cross-check, utime+stime (/proc/<pid>/stat, 10 ms ticks): daemon {:.2}%, \
         nats-server {:.2}%",
        pct_ticks(&usage[0]),
        pct_ticks(&usage[1])
    ));
    t.note(format!(
        "pingbots: {:.1} MB per operator on average (RSS counts shared pages in every process)",
        rss(&usage[2]) / n as f64
    ));
    println!("{t}");
    summary.check(format!("idle RSS ({n} operators)"), daemon_rss, rss_target);
    summary.check(format!("idle CPU ({n} operators)"), daemon_cpu, cpu_target);
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
