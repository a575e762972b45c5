//! Three hosts as three machines: each daemon in its own network
//! namespace on one bridge (10.231.0.1-3), routes over mutual TLS, the
//! client listener on the namespace's address with TLS; the test itself
//! in a fourth namespace (the observer), a client on another machine.
//! Real daemons, real embedded nats-servers, real ping bots.
//!
//! The fault: one host partitioned from the other two (its bridge port
//! down: packets dropped, no reset), then healed. Checked on the
//! processes themselves (`/proc`, every 20 ms, whatever any daemon
//! believes): no operator id ever runs under two daemons at once; the
//! cut host's operators stop (it cannot renew without a majority); the
//! majority runs all of them; after the heal the cut host rejoins and
//! everything runs exactly once again.
//!
//! Needs root (namespaces); elsewhere it says so and skips. `make test`
//! runs as root in CI.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{pingbot_manifest, Daemon, DaemonConfig};
use switchboard_testkit::cluster::{operators_by_daemon, NetnsBed, NetnsErrorKind};
use switchboard_testkit::daemon::ClusterTable;
use switchboard_testkit::TestCa;

use common::cluster::HOSTS;
const OPS: usize = 6;
/// Formation, and the return to one copy each after the heal.
const SETTLE: Duration = Duration::from_secs(60);
/// From the cut to the cut host's last operator gone: the lease TTL
/// (3 s) and the stop budget (1 s), with room for a loaded machine.
const FENCED_WITHIN: Duration = Duration::from_secs(8);
/// From the cut to every operator running on the majority: the fence,
/// the skew margin, and a Raft election when the cut host led the
/// buckets (nats-server's 4-9 s).
const TAKEN_OVER_WITHIN: Duration = Duration::from_secs(25);

fn ids() -> Vec<String> {
    (0..OPS).map(|k| format!("net-{k}")).collect()
}

/// What the process watcher saw.
#[derive(Default)]
struct Seen {
    /// Every instant an id ran under two daemons: (time since start, id,
    /// daemons).
    overlaps: Vec<(Duration, String, BTreeSet<usize>)>,
    /// The latest sample.
    now: BTreeMap<String, BTreeSet<usize>>,
}

/// Sample `/proc` every 20 ms until `stop`.
fn watch(daemons: Vec<u32>, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    let started = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let sample = operators_by_daemon(&daemons);
        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
        for (id, hosts) in &sample {
            if hosts.len() > 1 {
                s.overlaps
                    .push((started.elapsed(), id.clone(), hosts.clone()));
            }
        }
        s.now = sample;
        drop(s);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now(seen: &Mutex<Seen>) -> BTreeMap<String, BTreeSet<usize>> {
    seen.lock().unwrap_or_else(|p| p.into_inner()).now.clone()
}

/// Every id running exactly once, on the hosts `allowed`.
fn exactly_once(sample: &BTreeMap<String, BTreeSet<usize>>, allowed: &[usize]) -> bool {
    sample.len() == OPS
        && ids().iter().all(|id| {
            sample
                .get(id)
                .is_some_and(|h| h.len() == 1 && h.iter().all(|i| allowed.contains(i)))
        })
}

async fn wait_until(
    seen: &Mutex<Seen>,
    within: Duration,
    what: &str,
    ok: impl Fn(&BTreeMap<String, BTreeSet<usize>>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let sample = now(seen);
        if ok(&sample) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{what}: not within {within:?}; running (id -> daemon): {sample:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_partitioned_host_stops_its_operators_the_majority_takes_over_and_the_heal_rejoins() {
    let bed = match NetnsBed::create() {
        Ok(bed) => bed,
        Err(e) if e.kind() == NetnsErrorKind::Unavailable => {
            println!("skipped: network namespaces unavailable here (needs root): {e}");
            return;
        }
        Err(e) => panic!("building the namespaces: {e}"),
    };
    // The whole body on one thread in the observer's namespace: its
    // sockets, its runtime's tasks and the daemons it starts (each then
    // enters its own namespace) start there.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                bed.enter_observer()
                    .expect("enter the observer's namespace");
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(partition_and_heal(&bed));
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
    });
}

async fn partition_and_heal(bed: &NetnsBed) {
    let ca = TestCa::new().expect("cluster CA");
    let addr = |i: usize| bed.addr(i).to_string();
    let route = |i: usize| format!("{}:6222", addr(i));
    let mut daemons: Vec<Daemon> = Vec::new();
    for i in 0..HOSTS.len() {
        // One certificate per host for its address: its routes (both
        // ways) and its client listener.
        let table = ClusterTable::host_of(&HOSTS, i, route)
            .with_tls(&ca, &addr(i))
            .expect("certificate");
        let files = table.tls.clone().expect("route TLS");
        let mut config = DaemonConfig::new()
            .in_netns(bed.netns(i))
            .embedded(|e| {
                e.tls = Some((files.cert, files.key));
                e.remote_host = Some(addr(i));
            })
            .tls_ca(ca.ca_file())
            .cluster(table);
        if i == 0 {
            for id in ids() {
                config = config.manifest(format!("{id}.toml"), pingbot_manifest(&id));
            }
        }
        daemons.push(config.start().await);
    }
    let pids: Vec<u32> = daemons.iter().map(Daemon::pid).collect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || watch(pids, seen, stop))
    };

    let took = wait_until(&seen, SETTLE, "first placement", |s| {
        exactly_once(s, &[0, 1, 2]) && s.values().flatten().collect::<BTreeSet<_>>().len() == 3
    })
    .await;
    println!("formed across three namespaces and placed {OPS} operators in {took:?}");
    // The status, asked from the observer's namespace over TLS, agrees.
    let status = daemons[1].status().await;
    let cluster = status.cluster.expect("the cluster part of status");
    assert_eq!(
        cluster.hosts.iter().filter(|h| h.alive).count(),
        3,
        "{cluster:?}"
    );

    // Each round: two partition shapes, a host that does not lead the
    // cluster's bucket (the majority keeps writing at once), then the
    // bucket leader's host (the majority first elects a new leader); then
    // one host's nats-server SIGKILLed under its live daemon. `make
    // chaos-cluster` runs several rounds (SB_CLUSTER_ROUNDS).
    let rounds: usize = std::env::var("SB_CLUSTER_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    for round in 1..=rounds {
        println!("round {round} of {rounds}");
        let leader = bucket_leader(&daemons[0]).await;
        let follower = (0..3)
            .filter(|i| Some(HOSTS[*i]) != leader.as_deref())
            .max_by_key(|i| now(&seen).values().filter(|h| h.contains(i)).count())
            .expect("a host");
        cut_and_heal(bed, &daemons, &seen, follower, "a follower's host").await;
        let leader = bucket_leader(&daemons[(follower + 1) % 3]).await;
        let leader = HOSTS
            .iter()
            .position(|h| Some(*h) == leader.as_deref())
            .expect("the bucket has a leader");
        cut_and_heal(bed, &daemons, &seen, leader, "the bucket leader's host").await;
        kill_server(&daemons, &seen, round % 3).await;
    }

    stop.store(true, Ordering::SeqCst);
    watcher.join().expect("watcher");
    let overlaps = std::mem::take(&mut seen.lock().unwrap_or_else(|p| p.into_inner()).overlaps);
    assert!(
        overlaps.is_empty(),
        "an operator ran under two daemons at once (time, id, daemons): {:?}\nlogs:\n{}",
        &overlaps[..overlaps.len().min(10)],
        daemons
            .iter()
            .map(|d| d.log())
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
}

/// The host (server name) leading the heartbeat bucket's Raft group,
/// waiting while it has none (an election after a heal).
async fn bucket_leader(daemon: &Daemon) -> Option<String> {
    let started = Instant::now();
    loop {
        let leader = common::cluster::bucket_leader(daemon).await;
        if leader.is_some() || started.elapsed() > SETTLE {
            return leader;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Partition host `cut` from the others, check it stops its operators
/// and the majority runs them all, then heal and check it runs its share
/// again and answers with three live hosts.
async fn cut_and_heal(
    bed: &NetnsBed,
    daemons: &[Daemon],
    seen: &Mutex<Seen>,
    cut: usize,
    shape: &str,
) {
    let sample = now(seen);
    let had: Vec<String> = sample
        .iter()
        .filter(|(_, h)| h.contains(&cut))
        .map(|(id, _)| id.clone())
        .collect();
    let majority: Vec<usize> = (0..3).filter(|i| *i != cut).collect();
    println!(
        "{shape}: cutting {} (runs {had:?}) off the bridge",
        HOSTS[cut]
    );
    bed.cut(cut).expect("cut");
    let cut_at = Instant::now();
    wait_until(
        seen,
        FENCED_WITHIN,
        "the cut host stops its operators",
        |s| s.values().all(|h| !h.contains(&cut)),
    )
    .await;
    let fenced = cut_at.elapsed();
    wait_until(
        seen,
        TAKEN_OVER_WITHIN,
        "the majority runs every operator",
        |s| exactly_once(s, &majority),
    )
    .await;
    let taken = cut_at.elapsed();
    println!(
        "{shape}: {}'s operators stopped {fenced:?} after the cut; all {OPS} running on the \
         majority {taken:?} after it",
        HOSTS[cut]
    );
    // While cut off, the host keeps its hands off: nothing starts there.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        now(seen).values().all(|h| !h.contains(&cut)),
        "the cut host started an operator while partitioned: {:?}",
        now(seen)
    );

    bed.heal(cut).expect("heal");
    let back = wait_until(
        seen,
        SETTLE,
        "after the heal, every operator once on three hosts",
        |s| exactly_once(s, &[0, 1, 2]) && s.values().flatten().collect::<BTreeSet<_>>().len() == 3,
    )
    .await;
    println!(
        "{shape}: {} runs its share again {back:?} after the heal",
        HOSTS[cut]
    );
    three_alive(&daemons[cut], "the healed host").await;
}

/// Wait until `daemon` answers a status that shows all three hosts alive.
async fn three_alive(daemon: &Daemon, which: &str) {
    let started = Instant::now();
    loop {
        let status = daemon.try_status().await.ok();
        let alive = status
            .as_ref()
            .and_then(|s| s.cluster.as_ref())
            .map_or(0, |c| c.hosts.iter().filter(|h| h.alive).count());
        if alive == 3 {
            return;
        }
        assert!(
            started.elapsed() < SETTLE,
            "{which}'s status never showed three live hosts: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGKILL host `i`'s embedded nats-server under its live daemon: the
/// daemon restarts it, and the cluster ends with every operator once on
/// three hosts (the host's operators may move or stay, depending on
/// whether the restart beats the lease).
async fn kill_server(daemons: &[Daemon], seen: &Mutex<Seen>, i: usize) {
    let old = daemons[i].nats_pid().expect("the daemon's nats-server");
    let had = now(seen).values().filter(|h| h.contains(&i)).count();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(old).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the server");
    let killed_at = Instant::now();
    let started = Instant::now();
    let new = loop {
        match daemons[i].nats_pid() {
            Some(pid) if pid != old => break pid,
            _ => {}
        }
        assert!(
            common::alive(daemons[i].pid()),
            "the daemon died with its server:\n{}",
            daemons[i].log()
        );
        assert!(
            started.elapsed() < SETTLE,
            "the daemon did not restart its nats-server:\n{}",
            daemons[i].log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let restarted = killed_at.elapsed();
    // Watch past the lease's whole life (TTL and stop budget): whether
    // the host's operators stay or move, the overlap check runs on.
    let mut moved_away = false;
    let watch_until = Instant::now() + FENCED_WITHIN;
    while Instant::now() < watch_until {
        moved_away |= had > 0 && now(seen).values().all(|h| !h.contains(&i));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until(
        seen,
        SETTLE,
        "after the server's restart, every operator once on three hosts",
        |s| exactly_once(s, &[0, 1, 2]) && s.values().flatten().collect::<BTreeSet<_>>().len() == 3,
    )
    .await;
    let settled = killed_at.elapsed();
    three_alive(&daemons[i], "the host whose server was killed").await;
    println!(
        "server kill: {}'s nats-server (pid {old}, {had} operators on the host) restarted as pid \
         {new} {restarted:?} after the kill; its operators moved away meanwhile: {moved_away}; \
         every operator once on three hosts {settled:?} after the kill",
        HOSTS[i],
    );
}
