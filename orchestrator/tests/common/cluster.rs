//! What the cluster tests share (`cluster.rs`, `cluster_roll.rs`): three
//! real daemons on loopback, clustered; where each operator runs, by
//! every daemon's own status; and the history of every host's lifecycle
//! events, checked for an operator id active on two hosts at once.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchboard_proto::api::{OperatorEvent, SupervisedState};
use switchboard_testkit::daemon::ClusterTable;

use super::{Daemon, DaemonConfig};

pub const HOSTS: [&str; 3] = ["h0", "h1", "h2"];

/// Three daemons `h0`, `h1`, `h2` on loopback, their embedded servers
/// clustered by `[cluster]`; only h0 brings `manifests` (file name, TOML
/// text), the others join with empty directories and follow the
/// cluster's desired state. `tweak` adds to host `i`'s config.
pub async fn start_three(
    manifests: &[(String, String)],
    tweak: impl Fn(usize, DaemonConfig) -> DaemonConfig,
) -> Vec<Option<Daemon>> {
    let tables = ClusterTable::loopback(&HOSTS).expect("free ports");
    let mut daemons = Vec::new();
    for (i, table) in tables.into_iter().enumerate() {
        let mut config = DaemonConfig::new().cluster(table);
        if i == 0 {
            for (name, text) in manifests {
                config = config.manifest(name.clone(), text.clone());
            }
        }
        daemons.push(Some(tweak(i, config).start().await));
    }
    daemons
}

/// Which host runs each operator, from every live daemon's own status:
/// ids listed `running` per host, and every id any host lists at all.
pub async fn where_running(daemons: &[Option<&Daemon>]) -> (BTreeMap<String, Vec<String>>, usize) {
    // Asked at once: a status may take a while (see the failover step).
    let asked = daemons
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.map(|d| async move { (i, d.try_status().await) }));
    let mut running: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut listed = 0;
    for (i, status) in futures::future::join_all(asked).await {
        let Ok(status) = status else { continue };
        for o in status.operators {
            listed += 1;
            if o.state == SupervisedState::Running {
                running.entry(o.id).or_default().push(HOSTS[i].to_owned());
            }
        }
    }
    (running, listed)
}

/// Wait until the `want` ids run, each on exactly one host, no host lists
/// anything else, and `extra` holds; returns the placement and the time
/// it took.
pub async fn settle(
    daemons: &[Option<&Daemon>],
    want: &[String],
    within: Duration,
    what: &str,
    extra: impl Fn(&BTreeMap<String, Vec<String>>) -> bool,
) -> (BTreeMap<String, String>, Duration) {
    let started = Instant::now();
    loop {
        let (running, listed) = where_running(daemons).await;
        let exact = running.len() == want.len()
            && want
                .iter()
                .all(|id| running.get(id).is_some_and(|h| h.len() == 1))
            && listed == want.len();
        if exact && extra(&running) {
            let placed = running
                .into_iter()
                .map(|(id, mut h)| (id, h.remove(0)))
                .collect();
            return (placed, started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "{what}: not settled within {within:?}; running: {running:?}, listed {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every daemon still running.
pub fn live(daemons: &[Option<Daemon>]) -> Vec<Option<&Daemon>> {
    daemons.iter().map(Option::as_ref).collect()
}

/// The daemons without the one at `skip` (stopped, not yet dropped).
pub fn daemons_but(daemons: &[Option<Daemon>], skip: usize) -> Vec<Option<&Daemon>> {
    daemons
        .iter()
        .enumerate()
        .map(|(i, d)| if i == skip { None } else { d.as_ref() })
        .collect()
}

pub fn per_host(placed: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for h in placed.values() {
        *n.entry(h.clone()).or_insert(0) += 1;
    }
    n
}

/// Every lifecycle event any host published, once each.
#[derive(Clone, Default)]
pub struct History(pub Arc<Mutex<Recorded>>);

/// The payloads seen (each host's server delivers every event) and the
/// events they carried.
#[derive(Default)]
pub struct Recorded {
    pub seen: HashSet<Vec<u8>>,
    pub events: Vec<OperatorEvent>,
}

impl History {
    /// Record `sb.event.*` as seen through `daemon`'s server (each host's
    /// server sees every host's events; duplicates are dropped).
    pub async fn follow(&self, daemon: &Daemon) {
        let mut sub = daemon.events("*").await;
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let mut h = me.0.lock().expect("history");
                if !h.seen.insert(msg.payload.to_vec()) {
                    continue;
                }
                if let Ok(e) = serde_json::from_slice::<OperatorEvent>(&msg.payload) {
                    h.events.push(e);
                }
            }
        });
    }

    /// How many events of each state, and how many process starts were
    /// restarts (a crash would show here).
    pub fn summary(&self) -> String {
        let events = &self.0.lock().expect("history").events;
        let mut states: BTreeMap<&str, usize> = BTreeMap::new();
        for e in events {
            *states.entry(e.state.as_str()).or_insert(0) += 1;
        }
        let restarts = events
            .iter()
            .filter(|e| e.state == SupervisedState::Starting && e.restarts > 0)
            .count();
        format!("{states:?}, {restarts} restart(s)")
    }

    /// How long after `since` (unix nanos) the last of `ids` reported
    /// `running` on a host other than `lost`; `None` while one has not.
    pub fn running_again(&self, ids: &[String], lost: &str, since: i128) -> Option<Duration> {
        let events = &self.0.lock().expect("history").events;
        let mut latest = since;
        for id in ids {
            let first = events
                .iter()
                .filter(|e| {
                    &e.id == id
                        && e.state == SupervisedState::Running
                        && e.host.as_deref() != Some(lost)
                        && e.timestamp.unix_nanos() > since
                })
                .map(|e| e.timestamp.unix_nanos())
                .min()?;
            latest = latest.max(first);
        }
        u64::try_from(latest - since).ok().map(Duration::from_nanos)
    }

    /// No id active (spawned and not yet exited) on two hosts at once.
    /// `killed`: hosts whose operators died at that instant (unix nanos)
    /// without their daemon saying so (a SIGKILLed host; a frozen daemon
    /// whose fence warden killed them).
    pub fn check(&self, killed: &[(&str, i128)]) -> usize {
        let events = self.0.lock().expect("history").events.clone();
        let mut by_id: BTreeMap<String, Vec<(i128, String, bool)>> = BTreeMap::new();
        for e in &events {
            let host = e
                .host
                .clone()
                .expect("every event names its host in cluster mode");
            // `stopping` starts nothing: it continues what was active
            // (and a daemon back from a freeze may say it of a process
            // that is already dead).
            let active = match e.state {
                SupervisedState::Starting | SupervisedState::Running | SupervisedState::Halted => {
                    true
                }
                SupervisedState::Stopping => continue,
                _ => false,
            };
            by_id
                .entry(e.id.clone())
                .or_default()
                .push((e.timestamp.unix_nanos(), host, active));
        }
        for (host, at) in killed {
            for marks in by_id.values_mut() {
                marks.push((*at, (*host).to_owned(), false));
            }
        }
        for (id, marks) in &mut by_id {
            marks.sort_by_key(|m| m.0);
            let mut active: BTreeSet<String> = BTreeSet::new();
            for (at, host, on) in marks.iter() {
                if *on {
                    active.insert(host.clone());
                } else {
                    active.remove(host);
                }
                assert!(
                    active.len() <= 1,
                    "{id} active on {active:?} at once (at {at}); history: {marks:?}"
                );
            }
        }
        events.len()
    }
}

/// The server that leads the heartbeat bucket's Raft group.
pub async fn bucket_leader(daemon: &Daemon) -> Option<String> {
    daemon.stream_leader("KV_sb_cluster").await
}
