//! The engine against a real 3-node NATS cluster: placement, stale
//! applies, drain, and the faults (a cut connection, a frozen server, a
//! killed server, a dead host), each checked as a history: no operator id
//! ever runs on two hosts, the fenced host stops first, and the survivors
//! take over within [`FAILOVER`].

mod common;

use std::time::{Duration, Instant};

use common::{cluster, connect, ops, per_host, wait_for, Host, Relay, Timeline};
use switchboard_cluster::lease::LEASE_TTL;
use switchboard_cluster::{ApplyError, ApplyErrorKind, DesiredStore};
use switchboard_testkit::cluster::NatsCluster;

const OPS: usize = 6;
/// What is held in every run today: a host's operators run elsewhere
/// within this after it can no longer act. The target is 5 s (issue 22);
/// most runs take 2.8-3.1 s, but about one in four runs of the frozen and
/// killed server shapes took 6.2 s on an idle machine: a survivor's KV
/// watch (an R1 consumer) can sit on the failed server and is restarted
/// only after it falls silent (docs/cluster.md, "Partitions"). Until the
/// watch is replaced by reads any replica answers, the test holds the
/// bound that is met, and prints what each run took.
const FAILOVER: Duration = Duration::from_secs(10);
/// Time for a fresh cluster to elect leaders, register hosts and place.
const SETTLE: Duration = Duration::from_secs(30);

/// Three hosts; host 0 reaches its server through a relay the test can
/// cut. Every operator placed, two per host.
async fn three_hosts(cluster: &NatsCluster) -> (Vec<Host>, Timeline, Relay, DesiredStore) {
    let timeline = Timeline::default();
    let relay = Relay::start(cluster.nodes()[0].plan().client_port).await;
    let mut hosts = Vec::new();
    for (i, node) in cluster.nodes().iter().enumerate() {
        let url = if i == 0 { relay.url() } else { node.url() };
        hosts.push(Host::start(&node.plan().name, connect(&url).await, &timeline).await);
    }
    let store = DesiredStore::new(hosts[1].engine().buckets().desired.clone());
    let deadline = Instant::now() + SETTLE;
    loop {
        match store.load().await {
            Ok(None) => {
                store.apply(&ops(OPS), None).await.expect("first apply");
                break;
            }
            Ok(Some(_)) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("desired state: {e}"),
        }
    }
    wait_for(&timeline, SETTLE, "two operators per host", |r| {
        r.len() == OPS && per_host(r).values().all(|&n| n == OPS / 3) && per_host(r).len() == 3
    })
    .await;
    (hosts, timeline, relay, store)
}

/// After a fault on `victim` at `t0`: its operators run on the others
/// within [`FAILOVER`], the victim stopped its own first (the timeline
/// check), and the history is clean.
async fn assert_taken_over(
    timeline: &Timeline,
    victim: &str,
    t0: Instant,
    within: Duration,
) -> Duration {
    let v = victim.to_owned();
    wait_for(timeline, Duration::from_secs(30), "taken over", move |r| {
        r.len() == OPS && !r.values().any(|h| *h == v)
    })
    .await;
    let took = timeline
        .marks()
        .iter()
        .filter(|m| m.start && m.host != victim && m.at > t0)
        .map(|m| m.at - t0)
        .max()
        .unwrap_or_default();
    timeline.assert_exclusive();
    assert!(
        took <= within,
        "takeover took {took:?}\n{}",
        common::show(&timeline.marks())
    );
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_are_placed_once_and_balanced_and_a_stale_apply_is_refused() {
    let cluster = cluster();
    let (hosts, timeline, _relay, store) = three_hosts(&cluster).await;
    let (set, rev) = store.load().await.expect("load").expect("a set");
    assert_eq!(set, ops(OPS));

    // Host 2 edits, based on the current revision: accepted.
    let mut more = ops(OPS + 1);
    let newer = store.apply(&more, Some(rev)).await.expect("apply");
    assert!(newer > rev);
    // Host 1, still on the old revision, tries to remove everything.
    let stale = DesiredStore::new(hosts[0].engine().buckets().desired.clone());
    let err = stale
        .apply(&ops(0), Some(rev))
        .await
        .expect_err("a stale apply must be refused");
    assert_eq!(err.kind(), ApplyErrorKind::Stale);
    assert!(
        matches!(err, ApplyError::Stale { based_on: Some(b), current } if b == rev && current == newer),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("revision {newer} won")),
        "{err}"
    );
    // And a "first apply" when there is one already.
    let err = stale.apply(&ops(0), None).await.expect_err("not the first");
    assert_eq!(err.kind(), ApplyErrorKind::Stale);

    // The newer edit is what runs: the seventh operator starts somewhere.
    wait_for(&timeline, Duration::from_secs(10), "op6 placed", |r| {
        r.len() == OPS + 1
    })
    .await;
    // Removing one stops it.
    more.operators.remove("op0");
    store.apply(&more, Some(newer)).await.expect("apply");
    wait_for(&timeline, Duration::from_secs(10), "op0 stopped", |r| {
        !r.contains_key("op0") && r.len() == OPS
    })
    .await;
    timeline.assert_exclusive();
    assert!(
        timeline
            .marks()
            .iter()
            .any(|m| m.id == "op0" && m.why == "Removed"),
        "{}",
        common::show(&timeline.marks())
    );
    drop(hosts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_hands_every_operator_over_stop_first_and_undrain_rebalances() {
    let cluster = cluster();
    let (hosts, timeline, _relay, _store) = three_hosts(&cluster).await;
    let buckets = hosts[2].engine().buckets().clone();
    buckets.drain("n0").await.expect("drain");
    let t0 = Instant::now();
    wait_for(&timeline, Duration::from_secs(10), "n0 empty", |r| {
        r.len() == OPS && !r.values().any(|h| h == "n0")
    })
    .await;
    let moved = t0.elapsed();
    timeline.assert_exclusive();
    assert!(hosts[0].engine().running().is_empty());
    buckets.undrain("n0").await.expect("undrain");
    wait_for(&timeline, Duration::from_secs(10), "balanced again", |r| {
        r.len() == OPS && per_host(r).get("n0") == Some(&(OPS / 3))
    })
    .await;
    timeline.assert_exclusive();
    eprintln!("drain: every operator of n0 running elsewhere after {moved:?}");
    let err = buckets.drain("no such host").await.expect_err("bad name");
    assert_eq!(err.kind(), switchboard_cluster::BucketErrorKind::BadHost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_fences_its_host_before_the_others_take_over() {
    let cluster = cluster();
    let (hosts, timeline, relay, _store) = three_hosts(&cluster).await;
    let t0 = Instant::now();
    relay.cut();
    let took = assert_taken_over(&timeline, "n0", t0, FAILOVER).await;
    let fenced = timeline
        .marks()
        .iter()
        .filter(|m| m.host == "n0" && !m.start && m.at > t0)
        .map(|m| (m.at - t0, m.why.clone()))
        .collect::<Vec<_>>();
    assert_eq!(fenced.len(), OPS / 3, "{fenced:?}");
    assert!(fenced.iter().all(|(_, why)| why == "Fenced"), "{fenced:?}");
    assert!(hosts[0].engine().is_fenced());
    eprintln!("cut: n0 fenced after {fenced:?}, taken over after {took:?}");

    // Healed: n0 learns it was declared gone, registers anew and gets
    // its share back, still one host per operator.
    relay.heal();
    wait_for(&timeline, Duration::from_secs(20), "n0 back", |r| {
        r.len() == OPS && per_host(r).get("n0") == Some(&(OPS / 3))
    })
    .await;
    timeline.assert_exclusive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_leaves_cleanly_hands_over_without_waiting_for_the_ttl() {
    let cluster = cluster();
    let (mut hosts, timeline, _relay, _store) = three_hosts(&cluster).await;
    let t0 = Instant::now();
    let engine = hosts[2].engine.take().expect("engine");
    engine.shutdown().await;
    let took = assert_taken_over(&timeline, "n2", t0, LEASE_TTL).await;
    assert!(
        timeline
            .marks()
            .iter()
            .filter(|m| m.host == "n2" && !m.start)
            .all(|m| m.why == "Shutdown"),
        "{}",
        common::show(&timeline.marks())
    );
    eprintln!("clean leave of n2: taken over after {took:?}");
}

/// The server leading the cluster bucket's Raft group (`n0`...).
async fn leader(hosts: &[Host]) -> String {
    for _ in 0..50 {
        for h in hosts.iter().filter(|h| h.engine.is_some()) {
            if let Ok(Ok(status)) = tokio::time::timeout(
                Duration::from_millis(500),
                h.engine().buckets().cluster.status(),
            )
            .await
            {
                if let Some(l) = status.info.cluster.and_then(|c| c.leader) {
                    return l;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader for the cluster bucket");
}

/// A host other than node 0 (which sits behind the relay) whose server
/// does not lead the bucket: its loss costs no election.
async fn follower(hosts: &[Host]) -> usize {
    let l = leader(hosts).await;
    (1..3).find(|&i| hosts[i].name != l).expect("two followers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_fences_its_host_before_the_others_take_over() {
    let mut cluster = cluster();
    let (hosts, timeline, _relay, _store) = three_hosts(&cluster).await;
    let v = follower(&hosts).await;
    let name = hosts[v].name.clone();
    let t0 = Instant::now();
    cluster.node(v).freeze();
    let took = assert_taken_over(&timeline, &name, t0, FAILOVER).await;
    assert!(hosts[v].engine().is_fenced());
    eprintln!("SIGSTOP of {name}'s server: taken over after {took:?}");
    cluster.node(v).thaw();
    wait_for(&timeline, Duration::from_secs(30), "back", |r| {
        r.len() == OPS && per_host(r).get(&name) == Some(&(OPS / 3))
    })
    .await;
    timeline.assert_exclusive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_fences_its_host_and_a_dead_host_is_replaced() {
    let mut cluster = cluster();
    let (mut hosts, timeline, _relay, _store) = three_hosts(&cluster).await;
    // The server under a live engine dies.
    let v = follower(&hosts).await;
    let name = hosts[v].name.clone();
    let t0 = Instant::now();
    cluster.node(v).kill();
    let took = assert_taken_over(&timeline, &name, t0, FAILOVER).await;
    assert!(hosts[v].engine().is_fenced());
    eprintln!("SIGKILL of {name}'s server: taken over after {took:?}");
    cluster.node(v).restart().expect("restart");
    wait_for(&timeline, Duration::from_secs(30), "back", |r| {
        r.len() == OPS && per_host(r).get(&name) == Some(&(OPS / 3))
    })
    .await;

    // A whole host dies: its engine, its operators and its server.
    let v = follower(&hosts).await;
    let name = hosts[v].name.clone();
    let t0 = Instant::now();
    hosts[v].kill();
    cluster.node(v).kill();
    let took = assert_taken_over(&timeline, &name, t0, FAILOVER).await;
    eprintln!("SIGKILL of host {name}: taken over after {took:?}");
}

/// Losing the server that leads the bucket's Raft group stops every
/// write until the survivors elect a new leader (nats-server's election
/// timeout is seconds, not configurable): every host fences, since none
/// can prove it is alive. Safety holds; the takeover takes the election
/// plus the TTL. Measured, and bounded loosely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_buckets_leader_host_stays_exclusive() {
    let mut cluster = cluster();
    let (mut hosts, timeline, _relay, _store) = three_hosts(&cluster).await;
    let l = leader(&hosts).await;
    let v = hosts
        .iter()
        .position(|h| h.name == l)
        .expect("leader is a host");
    let t0 = Instant::now();
    hosts[v].kill();
    cluster.node(v).kill();
    let took = assert_taken_over(&timeline, &l, t0, Duration::from_secs(20)).await;
    eprintln!("SIGKILL of host {l}, the bucket's leader: taken over after {took:?}");
}
