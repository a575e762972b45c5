//! Crash -> respawn: SIGKILL the supervised process again and again,
//! Switchboard against s6 and supervisord.

use super::*;

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

pub(super) async fn crash(
    bins: &Binaries,
    settings: Settings,
    summary: &mut Summary,
) -> anyhow::Result<()> {
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
