//! Cold start: `switchboard run` with 50 ping bots until all run, with
//! and without their sandboxes.

use super::*;

/// `took=Some(12.3ms)` of the daemon's "ready" log lines: each operator's
/// spawn -> ready as the daemon saw it.
pub(super) fn ready_took_from_log(log: &str) -> Vec<f64> {
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
pub(super) fn parse_debug_duration(text: &str) -> Option<f64> {
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

pub(super) async fn cold_start(
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
