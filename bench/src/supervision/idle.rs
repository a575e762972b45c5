//! Idle footprint: 200 operators running, the supervisor's RSS and CPU
//! over a quiet window.

use super::*;

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

pub(super) async fn idle(
    bins: &Binaries,
    settings: Settings,
    summary: &mut Summary,
) -> anyhow::Result<()> {
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
