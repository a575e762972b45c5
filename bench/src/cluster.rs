//! Cluster mode (issue 22): three real `switchboard run` daemons on
//! loopback, their embedded nats-servers clustered by `[cluster]`, real
//! ping bots; started by the testkit's daemon harness as the cluster test
//! starts them. Three figures:
//!
//! - **failover**: SIGKILL of a whole host (its daemon's process group:
//!   daemon and server; its operators die with them) -> every operator it
//!   ran is running on another host, as the survivors' own status says;
//!   then the host comes back and gets its share again before the next
//!   kill. Hosts are killed in turn, so about one kill in three takes the
//!   server that leads the heartbeat bucket's Raft group, which costs an
//!   election (docs/cluster.md, "The leader-loss case"): both kinds are
//!   shown apart and together.
//! - **placement**: `switchboard apply` of many operators on one host ->
//!   all of them running, spread over the three.
//! - **lease traffic**: writes to the heartbeat bucket per second while
//!   those operators run, per operator.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt as _;
use switchboard_proto::api::{OperatorEvent, SupervisedState};
use switchboard_testkit::cluster::free_ports;
use switchboard_testkit::daemon::{ClusterTable, Daemon, DaemonConfig};

use crate::daemon::{toml_str, Binaries};
use crate::summary::{Summary, Target, Unit};

const HOSTS: [&str; 3] = ["h0", "h1", "h2"];
/// Operators during the failover series.
const FAILOVER_OPS: usize = 6;
/// Longest a failover, a placement or a host's return may take before
/// the run is called broken.
const SETTLE: Duration = Duration::from_secs(60);

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Host kills in the failover series.
    pub kills: usize,
    /// Operators placed at once.
    pub operators: usize,
}

impl Settings {
    /// 20 kills and 300 operators; 5 and 60 with `--quick`.
    pub fn new(quick: bool, kills: Option<usize>, operators: Option<usize>) -> Settings {
        Settings {
            kills: kills.unwrap_or(if quick { 5 } else { 20 }).max(1),
            operators: operators.unwrap_or(if quick { 60 } else { 300 }).max(1),
        }
    }
}

fn manifest(bins: &Binaries, id: &str) -> String {
    format!(
        "id = \"{id}\"\ncommand = {}\nheartbeat_interval = \"1s\"\nstop_timeout = \"1s\"\n",
        toml_str(&bins.pingbot.display().to_string())
    )
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|k| format!("{prefix}-{k}")).collect()
}

/// Which hosts run each operator, from every live daemon's own status
/// (`running` only): an id with two hosts shows as two entries.
async fn where_running(daemons: &[Option<Daemon>]) -> BTreeMap<String, Vec<usize>> {
    let mut running: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, d) in daemons.iter().enumerate() {
        let Some(d) = d else { continue };
        let Ok(status) = d.try_status().await else {
            continue;
        };
        for o in status.operators {
            if o.state == SupervisedState::Running {
                running.entry(o.id).or_default().push(i);
            }
        }
    }
    running
}

/// Wait until each of `want` runs on exactly one live host and `extra`
/// holds; how long it took.
async fn settle(
    daemons: &[Option<Daemon>],
    want: &[String],
    what: &str,
    extra: impl Fn(&BTreeMap<String, Vec<usize>>) -> bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let running = where_running(daemons).await;
        let once = want
            .iter()
            .all(|id| running.get(id).is_some_and(|h| h.len() == 1));
        if once && extra(&running) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > SETTLE {
            let placed = want.iter().filter(|id| running.contains_key(*id)).count();
            bail!(
                "cluster {what}: {placed} of {} operators running after {SETTLE:?}",
                want.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The heartbeat bucket's stream info (its leader, its last sequence).
async fn bucket_info(d: &Daemon) -> anyhow::Result<serde_json::Value> {
    d.stream_info("KV_sb_cluster")
        .await
        .map_err(|e| anyhow::anyhow!("stream info of the heartbeat bucket: {e}"))
}

/// The server that leads the heartbeat bucket's Raft group.
async fn bucket_leader(d: &Daemon) -> Option<String> {
    d.stream_leader("KV_sb_cluster").await
}

/// The heartbeat bucket's last sequence (every write is one).
async fn bucket_writes(d: &Daemon) -> anyhow::Result<u64> {
    bucket_info(d).await?["state"]["last_seq"]
        .as_u64()
        .context("no last_seq in the bucket's stream info")
}

fn write_dir(dir: &Path, bins: &Binaries, ids: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for id in ids {
        std::fs::write(dir.join(format!("{id}.toml")), manifest(bins, id))?;
    }
    Ok(())
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn show(samples: &[f64]) -> String {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return "-".into();
    }
    format!(
        "{:>5} | {:>8.2} s | {:>8.2} s | {:>8.2} s",
        s.len(),
        quantile(&s, 0.5),
        quantile(&s, 0.99),
        s[s.len() - 1]
    )
}

/// The three figures.
pub async fn run(settings: Settings, summary: &mut Summary) -> anyhow::Result<()> {
    let bins = Binaries::find()?;
    let ports = free_ports(3).context("free ports for the routes")?;
    let route = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let small = ids("ping", FAILOVER_OPS);
    let mut daemons: Vec<Option<Daemon>> = Vec::new();
    for (i, host) in HOSTS.iter().enumerate() {
        let mut config = DaemonConfig::new()
            .embedded(|e| e.binary = Some(bins.nats_server.clone()))
            .cluster(ClusterTable::host_of(&HOSTS, i, route));
        if i == 0 {
            for id in &small {
                config = config.manifest(format!("{id}.toml"), manifest(&bins, id));
            }
        }
        let d = config
            .try_start()
            .await
            .map_err(|e| anyhow::anyhow!("starting cluster host {host}: {e}"))?;
        daemons.push(Some(d));
    }
    let formed = settle(&daemons, &small, "forming", |_| true).await?;
    eprintln!("cluster: 3 hosts formed, {FAILOVER_OPS} operators placed in {formed:?}");

    // Failover: kill the hosts in turn.
    let (mut follower, mut leader) = (Vec::new(), Vec::new());
    for k in 0..settings.kills {
        let running = where_running(&daemons).await;
        let victim = (0..3)
            .map(|j| (k + j) % 3)
            .find(|i| running.values().any(|h| h.contains(i)))
            .context("no host runs anything")?;
        let observer = daemons[(victim + 1) % 3].as_ref().context("observer")?;
        let led = bucket_leader(observer).await.as_deref() == Some(HOSTS[victim]);
        let moved: Vec<String> = running
            .iter()
            .filter(|(_, h)| h.contains(&victim))
            .map(|(id, _)| id.clone())
            .collect();
        // The figure comes from the lifecycle events (every host's reach
        // any host's bus): when each moved operator reported `running`
        // on its new host. Status polls are coarse: a survivor's status
        // waits up to 1.5 s on a stream whose leader was the lost server.
        let mut events = observer.events("*").await;
        let killed_at = switchboard_proto::Timestamp::now().unix_nanos();
        daemons[victim]
            .as_mut()
            .context("victim")?
            .kill_group()
            .await;
        let mut down = std::mem::take(&mut daemons[victim]);
        let polled = settle(&daemons, &small, "failover", |_| true).await?;
        let mut again: BTreeMap<String, i128> = BTreeMap::new();
        while let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_millis(300), events.next()).await
        {
            let Ok(e) = serde_json::from_slice::<OperatorEvent>(&msg.payload) else {
                continue;
            };
            let ts = e.timestamp.unix_nanos();
            let elsewhere = e.host.as_deref().is_some_and(|h| h != HOSTS[victim]);
            if e.state == SupervisedState::Running && elsewhere && ts > killed_at {
                again.entry(e.id).or_insert(ts);
            }
        }
        let took = if moved.iter().all(|id| again.contains_key(id)) {
            let last = moved.iter().filter_map(|id| again.get(id)).max();
            let nanos = last.map_or(0, |t| t.saturating_sub(killed_at));
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
        } else {
            polled
        };
        eprintln!(
            "cluster: kill {}/{}: {} ({}) -> its operators {moved:?} running elsewhere after \
             {took:.2?} (status polls saw it after {polled:.2?})",
            k + 1,
            settings.kills,
            HOSTS[victim],
            if led { "led the bucket" } else { "follower" }
        );
        if led { &mut leader } else { &mut follower }.push(took.as_secs_f64());
        let d = down.as_mut().context("victim")?;
        d.try_start_again()
            .await
            .map_err(|e| anyhow::anyhow!("host {} did not come back: {e}", HOSTS[victim]))?;
        daemons[victim] = down;
        settle(&daemons, &small, "host back", |r| {
            r.values().any(|h| h.contains(&victim))
        })
        .await?;
    }
    let all: Vec<f64> = follower.iter().chain(&leader).copied().collect();
    println!();
    println!(
        "## Cluster: failover after SIGKILL of a whole host (3 hosts, {FAILOVER_OPS} operators)"
    );
    println!();
    println!("| killed host | kills | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "| its server followed the bucket's Raft group | {} |",
        show(&follower)
    );
    println!(
        "| its server led it (a Raft election first) | {} |",
        show(&leader)
    );
    println!("| all | {} |", show(&all));
    let mut sorted = all.clone();
    sorted.sort_by(f64::total_cmp);
    summary.check(
        "cluster failover p50 (all host kills)",
        quantile(&sorted, 0.5) * 1000.0,
        Target::Below(5000.0, Unit::Ms),
    );
    summary.check(
        "cluster failover p99 (all host kills)",
        quantile(&sorted, 0.99) * 1000.0,
        Target::Below(5000.0, Unit::Ms),
    );

    // Placement: many operators at once, applied on h0.
    let many = ids("op", settings.operators);
    let scratch = tempfile::tempdir().context("tempdir")?;
    let dir = scratch.path().join("many");
    write_dir(&dir, &bins, &many)?;
    let h0 = daemons[0].as_ref().context("h0")?;
    let applied = Instant::now();
    let out = h0.cli(&["apply", &dir.display().to_string()]);
    if !out.status.success() {
        bail!(
            "switchboard apply of {} operators failed: {}",
            many.len(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let placed = settle(&daemons, &many, "placement", |_| true).await?;
    let took = applied.elapsed();
    let running = where_running(&daemons).await;
    let mut per_host = [0usize; 3];
    for hosts in running.values() {
        for h in hosts {
            per_host[*h] += 1;
        }
    }
    println!();
    println!("## Cluster: placement");
    println!();
    println!(
        "`switchboard apply` of {} operators on h0 -> all running: {:.2} s (last poll {placed:.2?}); per host {per_host:?}",
        many.len(),
        took.as_secs_f64()
    );

    // Lease traffic while they run.
    let window = Duration::from_secs(10);
    let before = bucket_writes(h0).await?;
    tokio::time::sleep(window).await;
    let after = bucket_writes(h0).await?;
    let writes = after.saturating_sub(before) as f64 / window.as_secs_f64();
    println!(
        "heartbeat bucket writes while they run: {writes:.1}/s for 3 hosts = {:.4} per operator per second ({} operators)",
        writes / many.len() as f64,
        many.len()
    );
    for d in daemons.iter_mut().flatten() {
        let _ = d.stop().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&s, 0.5), 2.0);
        assert_eq!(quantile(&s, 0.99), 4.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
