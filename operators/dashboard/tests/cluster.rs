//! The dashboard of a cluster: three real daemons on loopback, their
//! embedded nats-servers clustered by `[cluster]`, the dashboard and two
//! ping bots placed by the cluster, and one operator no host may run (it
//! needs a label none has). Checked from outside, against the daemons'
//! own `status`: `/metrics` (parsed) has every operator of the cluster
//! once with the host that runs it, the hosts up, drained, their
//! heartbeat age and how many operators each runs, the unplaced operator;
//! a drain shows in it; `/api/snapshot` carries the leases; and the page
//! in Chromium (tests/browser/cluster.cjs) shows the hosts card and the
//! HOST column, passes axe-core and is photographed
//! (`DASHBOARD_SCREENSHOTS=docs/dashboard` keeps the pictures). Runs alone
//! (`.config/nextest.toml`): three daemons and their servers are the
//! whole of a 2-core machine.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use common::{get as value, parse, Samples};
use serde_json::Value;
use switchboard_proto::api::{StatusReply, SupervisedState};
use switchboard_testkit::daemon::{ClusterTable, Daemon, DaemonConfig};

const HOSTS: [&str; 3] = ["alpha", "beta", "gamma"];
/// Time for the cluster to form, elect, register and place.
const SETTLE: Duration = Duration::from_secs(60);
/// The operator no host may run.
const NOWHERE: &str = "gpu-bot";
/// The operators that run.
const RUNS: [&str; 3] = ["dashboard", "ping-a", "ping-b"];

/// Which host runs each operator and in what state, from one daemon's
/// status: its own operators, then the cluster part.
fn placement(status: &StatusReply) -> BTreeMap<String, (String, SupervisedState)> {
    let mut out = BTreeMap::new();
    let Some(c) = &status.cluster else {
        return out;
    };
    for o in &status.operators {
        out.insert(o.id.clone(), (c.host.clone(), o.state));
    }
    for p in &c.operators {
        if let (Some(host), Some(o)) = (&p.host, &p.status) {
            out.entry(p.id.clone()).or_insert((host.clone(), o.state));
        }
    }
    out
}

/// Wait until `daemon`'s status shows every operator of [`RUNS`] running
/// and `also` holds; the placement.
async fn settled(
    daemon: &Daemon,
    what: &str,
    also: impl Fn(&BTreeMap<String, (String, SupervisedState)>) -> bool,
) -> anyhow::Result<BTreeMap<String, String>> {
    let started = Instant::now();
    loop {
        if let Ok(status) = daemon.try_status().await {
            let placed = placement(&status);
            let running = RUNS.iter().all(|id| {
                placed
                    .get(*id)
                    .is_some_and(|(_, s)| *s == SupervisedState::Running)
            });
            if running && also(&placed) {
                return Ok(placed.into_iter().map(|(id, (h, _))| (id, h)).collect());
            }
            if started.elapsed() > SETTLE {
                bail!("{what}: not settled within {SETTLE:?}: {placed:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Wait until `/metrics`, read by a real Prometheus parser, satisfies
/// `check` (which says what is missing); the last samples.
async fn metrics_until(
    addr: std::net::SocketAddr,
    what: &str,
    check: impl Fn(&Samples) -> Result<(), String>,
) -> anyhow::Result<(Samples, Vec<Value>)> {
    let started = Instant::now();
    loop {
        let (code, body) = common::http(addr, "GET", "/metrics", &[], "").await?;
        ensure!(code == 200, "/metrics: {code} {body}");
        let (samples, all) = parse(&body).await?;
        match check(&samples) {
            Ok(()) => return Ok((samples, all)),
            Err(missing) if started.elapsed() > SETTLE => {
                // What the dashboard's status poll last said.
                let (_, snapshot) =
                    common::http(addr, "GET", "/api/snapshot", &[common::AUTH], "").await?;
                let snapshot: Value = serde_json::from_str(&snapshot)?;
                bail!(
                    "{what}: {missing}; the dashboard's status poll: {}\n{body}",
                    snapshot["bus_error"]
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_and_measures_the_whole_cluster() -> anyhow::Result<()> {
    let root = switchboard_testkit::workspace_root();
    let playwright = root.join(".tools/playwright/node_modules/playwright-core");
    let axe = root.join(".tools/axe/node_modules/axe-core/axe.min.js");
    ensure!(
        playwright.exists() && axe.exists() && std::path::Path::new("/usr/bin/chromium").exists(),
        "playwright-core, axe-core or chromium is missing: run `make tools`"
    );
    let scratch = tempfile::tempdir()?;
    let token = scratch.path().join("dashboard-token");
    std::fs::write(&token, format!("{}\n", common::TOKEN))?;
    std::fs::write(
        scratch.path().join("dashboard-viewer-token"),
        format!("{}\n", common::VIEWER),
    )?;
    let ping = |id: &str| common::pingbot_manifest().replace("\"pingbot\"", &format!("{id:?}"));
    let mut daemons = Vec::new();
    for (i, mut table) in ClusterTable::loopback(&HOSTS)?.into_iter().enumerate() {
        table.labels = vec![if i == 2 { "us" } else { "eu" }.to_owned()];
        let mut config = DaemonConfig::new().cluster(table);
        // alpha brings the manifests; the others follow the cluster.
        if i == 0 {
            config = config
                .manifest("dashboard.toml", common::manifest(Some(token.as_path())))
                .manifest("ping-a.toml", ping("ping-a"))
                .manifest("ping-b.toml", ping("ping-b"))
                .manifest(
                    format!("{NOWHERE}.toml"),
                    format!("{}[placement]\nlabels = [\"gpu\"]\n", ping(NOWHERE)),
                );
        }
        daemons.push(config.try_start().await?);
    }
    let placed = settled(&daemons[2], "first placement", |_| true).await?;
    let addr = common::address_from_log(&daemons[0]).await?;
    let dash_host = placed["dashboard"].clone();
    println!("placed: {placed:?}; the dashboard on {dash_host} at {addr}");

    // /metrics: the whole cluster from the dashboard's host.
    let (samples, all) = metrics_until(addr, "cluster metrics", |s| {
        for h in HOSTS {
            if value(s, "switchboard_cluster_host_up", &[("host", h)]) != Some(1.0) {
                return Err(format!("{h} not up"));
            }
        }
        for id in RUNS {
            let host = placed[id].as_str();
            let running = [("operator", id), ("host", host), ("state", "running")];
            if value(s, "switchboard_operator_state", &running) != Some(1.0) {
                return Err(format!("{id} not running on {host}"));
            }
        }
        Ok(())
    })
    .await?;
    // Every series once.
    let mut series = BTreeSet::new();
    for s in &all {
        ensure!(
            series.insert((s["name"].to_string(), s["labels"].to_string())),
            "twice: {s}"
        );
    }
    let label = |s: &Value, k: &str| s["labels"][k].as_str().unwrap_or_default().to_owned();
    // Each operator once, on the host its owner's status names, and the
    // unplaced one nowhere.
    for id in RUNS {
        let hosts: BTreeSet<String> = all
            .iter()
            .filter(|s| s["name"] == "switchboard_operator_state" && label(s, "operator") == id)
            .map(|s| label(s, "host"))
            .collect();
        ensure!(
            hosts == BTreeSet::from([placed[id].clone()]),
            "{id} on {hosts:?}"
        );
        ensure!(
            value(
                &samples,
                "switchboard_operator_restarts_total",
                &[("operator", id), ("host", placed[id].as_str())]
            )
            .is_some(),
            "{id}: no restarts counter"
        );
    }
    ensure!(
        !all.iter().any(|s| label(s, "operator") == NOWHERE),
        "{NOWHERE} runs nowhere but has operator metrics"
    );
    ensure!(
        value(
            &samples,
            "switchboard_cluster_operators_unplaced",
            &[("reason", "no_eligible_host")]
        ) == Some(1.0),
        "unplaced: {samples:?}"
    );
    ensure!(value(&samples, "switchboard_cluster_operators", &[]) == Some(4.0));
    for h in HOSTS {
        let runs = placed.values().filter(|p| *p == h).count() as f64;
        let counted = value(
            &samples,
            "switchboard_cluster_host_operators",
            &[("host", h)],
        );
        ensure!(
            counted == Some(runs),
            "{h}: {counted:?} operators, runs {runs}"
        );
        let age = value(
            &samples,
            "switchboard_cluster_host_heartbeat_age_seconds",
            &[("host", h)],
        )
        .context("no heartbeat age")?;
        ensure!((0.0..3.0).contains(&age), "{h}'s heartbeat {age} s old");
        ensure!(value(&samples, "switchboard_cluster_host_drained", &[("host", h)]) == Some(0.0));
    }
    ensure!(
        value(
            &samples,
            "switchboard_cluster_view_info",
            &[("host", dash_host.as_str())]
        ) == Some(1.0)
    );
    ensure!(
        value(
            &samples,
            "switchboard_daemon_uptime_seconds",
            &[("host", dash_host.as_str())]
        )
        .is_some(),
        "the daemon's figures name its host"
    );
    let help = all
        .iter()
        .find(|s| s["family"] == "switchboard_cluster_view_info")
        .map(|s| s["help"].to_string())
        .unwrap_or_default();
    ensure!(help.contains("covers the whole cluster"), "{help}");

    // Drain a host that does not run the dashboard: its operators move,
    // and /metrics says so.
    let drained = *HOSTS
        .iter()
        .find(|h| **h != dash_host)
        .context("another host")?;
    let out = daemons[0].cli(&["drain", drained]);
    ensure!(
        out.status.success(),
        "drain: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let placed = settled(&daemons[1], "drain", |p| {
        p.values().all(|(h, _)| h.as_str() != drained)
    })
    .await?;
    metrics_until(addr, "after the drain", |s| {
        let d = [("host", drained)];
        if value(s, "switchboard_cluster_host_drained", &d) != Some(1.0) {
            return Err(format!("{drained} not drained"));
        }
        if value(s, "switchboard_cluster_host_operators", &d) != Some(0.0) {
            return Err(format!("{drained} still runs operators"));
        }
        for id in RUNS {
            let running = [
                ("operator", id),
                ("host", placed[id].as_str()),
                ("state", "running"),
            ];
            if value(s, "switchboard_operator_state", &running) != Some(1.0) {
                return Err(format!("{id} not running on {}", placed[id]));
            }
        }
        Ok(())
    })
    .await?;

    // The snapshot the page reads carries the leases and why the
    // unplaced operator runs nowhere.
    let (code, body) = common::http(addr, "GET", "/api/snapshot", &[common::AUTH], "").await?;
    ensure!(code == 200, "{code} {body}");
    let snap: Value = serde_json::from_str(&body)?;
    let cluster = &snap["status"]["cluster"];
    ensure!(cluster["lease_ttl_ms"] == 3000, "{cluster}");
    let hosts = cluster["hosts"].as_array().context("hosts")?;
    ensure!(hosts.len() == 3, "{cluster}");
    for h in hosts {
        ensure!(h["alive"] == true && h["heartbeat_age_ms"].is_u64(), "{h}");
        ensure!(h["drained"] == (h["name"] == drained), "{h}");
    }
    let nowhere = cluster["operators"]
        .as_array()
        .and_then(|o| o.iter().find(|p| p["id"] == NOWHERE))
        .context("the unplaced operator")?;
    ensure!(
        nowhere["unowned"] == "no_eligible_host" && nowhere.get("host").is_none(),
        "{nowhere}"
    );

    // The page, in Chromium.
    let shots = scratch.path().join("shots");
    std::fs::create_dir_all(&shots)?;
    let expected: BTreeMap<&str, &str> =
        RUNS.iter().map(|id| (*id, placed[*id].as_str())).collect();
    let run = tokio::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/cluster.cjs"
        ))
        .arg(&playwright)
        .arg(&axe)
        .arg(format!("http://{addr}/"))
        .arg(common::TOKEN)
        .arg(scratch.path().join("profile"))
        .arg(&shots)
        .arg(serde_json::to_string(&serde_json::json!({
            "hosts": HOSTS,
            "drained": drained,
            "placed": expected,
            "nowhere": NOWHERE,
        }))?)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .context("the browser driver took over 2 minutes")??;
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        out.status.success() && said.contains("DONE"),
        "cluster.cjs: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keep = std::env::var("DASHBOARD_SCREENSHOTS").ok();
    for size in ["wide", "phone"] {
        let name = format!("dashboard-cluster-{size}.png");
        let png = std::fs::read(shots.join(&name)).with_context(|| format!("no {name}"))?;
        ensure!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5_000,
            "{name} is not a screenshot"
        );
        if let Some(dir) = &keep {
            std::fs::create_dir_all(root.join(dir))?;
            std::fs::write(root.join(dir).join(&name), &png)?;
        }
    }
    print!("{said}");
    Ok(())
}
