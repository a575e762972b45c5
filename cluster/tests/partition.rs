//! True network partitions: three hosts, each in its own network
//! namespace (`switchboard_testkit::cluster::NetnsBed`), each with its
//! nats-server and its engine (the `switchboard-cluster-host` helper, the
//! daemon's stand-in) inside that namespace, so that cutting a host's
//! link cuts its engine off exactly as it cuts its server off: packets
//! dropped, no connection reset, no relay in the way.
//!
//! Shapes, each checked as a history (no operator id on two hosts at any
//! instant, every start at least the stop budget after the stop on the
//! previous host): one host cut off from the two others, first one whose
//! server follows the cluster bucket's Raft group, then the one whose
//! server leads it; each time healed, and the healed host gets operators
//! back only by hand-over (a stop on the holder, then its start).
//!
//! Needs root and `ip`; skips with one line otherwise. 30-60 s: run by
//! `make chaos-cluster`, not `make test`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{per_host, show, wait_for, Mark, Timeline};
use switchboard_cluster::{server_fragment, ClusterConfig};
use switchboard_testkit::cluster::{NatsCluster, NetnsBed, NetnsErrorKind};

const OPS: usize = 6;
/// The promise for a host lost while the bucket's leader survives.
const FAILOVER: Duration = Duration::from_secs(5);
/// Losing the leader costs a Raft election first (docs/cluster.md).
const LEADER_FAILOVER: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_secs(60);
/// How long a cut lasts beyond the takeover: the fenced side must stay
/// quiet however long it is cut off.
const HOLD: Duration = Duration::from_secs(4);

/// Seconds since the test began, for the hosts' logs and the cuts.
fn since_start() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// One host's engine, running in its namespace, its events read into the
/// shared timeline as they are printed.
struct HostProcess {
    name: String,
    child: Child,
    /// The last leader it reported, and when.
    leader: Arc<Mutex<Option<(String, Instant)>>>,
}

impl HostProcess {
    fn start(bed: &NetnsBed, i: usize, url: &str, timeline: &Timeline, ops: Option<usize>) -> Self {
        let name = format!("n{i}");
        let mut cmd = bed.command(i, env!("CARGO_BIN_EXE_switchboard-cluster-host"));
        cmd.arg(&name).arg(url);
        if let Some(n) = ops {
            cmd.arg(n.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchboard-cluster-host");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let host = name.clone();
        // The engine's log, each line with its host and the time since
        // the test began (the same clock `partition` prints the cut on).
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{host} {:>8.3}s] {line}", since_start());
            }
        });
        let leader: Arc<Mutex<Option<(String, Instant)>>> = Arc::default();
        let (tl, host, l) = (timeline.clone(), name.clone(), Arc::clone(&leader));
        // A thread per host, stamping each line when it arrives: the
        // helper prints at the event, so the stamp is late by a pipe hop
        // (microseconds), far below the stop budget the check allows.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if let Some(id) = v.get("start").and_then(|s| s.as_str()) {
                    tl.push(Mark {
                        at,
                        host: host.clone(),
                        id: id.into(),
                        start: true,
                        why: String::new(),
                    });
                } else if let Some(id) = v.get("stop").and_then(|s| s.as_str()) {
                    let why = v.get("why").and_then(|s| s.as_str()).unwrap_or_default();
                    tl.push(Mark {
                        at,
                        host: host.clone(),
                        id: id.into(),
                        start: false,
                        why: why.into(),
                    });
                } else if let Some(name) = v.get("leader").and_then(|s| s.as_str()) {
                    *l.lock().expect("leader") = Some((name.into(), at));
                }
            }
        });
        HostProcess {
            name,
            child,
            leader,
        }
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bucket's Raft leader: every report of the last second names the
/// same one, and again a second later (right after forming, or after a
/// heal, leadership may move). Not every host's answer names a leader (a
/// replica that has not heard from it names none).
async fn leader(hosts: &[HostProcess]) -> String {
    let deadline = Instant::now() + SETTLE;
    let agreed = || {
        let fresh: Vec<String> = hosts
            .iter()
            .filter_map(|h| h.leader.lock().expect("leader").clone())
            .filter(|(_, at)| at.elapsed() < Duration::from_secs(1))
            .map(|(l, _)| l)
            .collect();
        match fresh.first() {
            Some(l) if fresh.iter().all(|f| f == l) => Some(l.clone()),
            _ => None,
        }
    };
    loop {
        if let Some(l) = agreed() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if agreed().as_ref() == Some(&l) {
                return l;
            }
        }
        assert!(Instant::now() < deadline, "no agreed bucket leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Cut host `v` off, check the shape's promises, heal, check the rejoin.
/// Returns (fenced after, taken over after).
async fn partition(
    bed: &NetnsBed,
    timeline: &Timeline,
    v: usize,
    within: Duration,
) -> (Duration, Duration) {
    let victim = format!("n{v}");
    let t0 = Instant::now();
    bed.cut(v).expect("cut");
    eprintln!("[test {:>8.3}s] {victim} cut off", since_start());
    let vn = victim.clone();
    wait_for(timeline, within + HOLD, "taken over", move |r| {
        r.len() == OPS && !r.values().any(|h| *h == vn)
    })
    .await;
    tokio::time::sleep(HOLD).await;
    let marks = timeline.marks();
    let after: Vec<&Mark> = marks.iter().filter(|m| m.at > t0).collect();
    let fenced = after
        .iter()
        .filter(|m| m.host == victim && !m.start)
        .map(|m| m.at - t0)
        .max()
        .expect("the cut host stopped its operators");
    let took = after
        .iter()
        .filter(|m| m.start && m.host != victim)
        .map(|m| m.at - t0)
        .max()
        .unwrap_or_default();
    timeline.assert_exclusive();
    assert!(
        after
            .iter()
            .filter(|m| m.host == victim)
            .all(|m| !m.start && m.why == "Fenced"),
        "the cut host may only fence\n{}",
        show(&marks)
    );
    assert!(took <= within, "takeover took {took:?}\n{}", show(&marks));

    // Healed: the host learns it was declared gone, registers a new
    // epoch, and gets its share back only by hand-over: each start after
    // the holder's stop (the history check adds: a stop budget after).
    let t1 = Instant::now();
    bed.heal(v).expect("heal");
    eprintln!("[test {:>8.3}s] {victim} healed", since_start());
    let vn = victim.clone();
    let back = wait_for(timeline, SETTLE, "the healed host back", move |r| {
        r.len() == OPS && per_host(r).get(&vn) == Some(&(OPS / 3))
    })
    .await;
    timeline.assert_exclusive();
    let marks = timeline.marks();
    for m in marks
        .iter()
        .filter(|m| m.at > t1 && m.start && m.host == victim)
    {
        let handed = marks
            .iter()
            .filter(|s| !s.start && s.id == m.id && s.at > t1 && s.at < m.at)
            // Moved by placement, or Fenced: a heal can disturb the
            // bucket's Raft group (the cut server campaigned alone and
            // comes back with a higher term), so the holder may fence and
            // lose the operator to anyone, the healed host included.
            .any(|s| s.host != victim && (s.why == "Moved" || s.why == "Fenced"));
        assert!(
            handed,
            "{} started on the healed {victim} without a hand-over\n{}",
            m.id,
            show(&marks)
        );
    }
    eprintln!(
        "partition of {victim}: fenced after {fenced:?}, taken over after {took:?}, \
         its share back {back:?} after the heal"
    );
    (fenced, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root; 30-60 s: make chaos-cluster"]
async fn a_partitioned_host_fences_the_majority_takes_over_and_the_healed_host_rejoins() {
    since_start();
    let bed = match NetnsBed::create() {
        Ok(bed) => bed,
        Err(e) if e.kind() == NetnsErrorKind::Unavailable => {
            eprintln!("skipped: {e} (needs root and `ip`)");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let cluster = NatsCluster::start_in(&bed, |node, all| {
        let config = ClusterConfig {
            host: node.name.clone(),
            labels: Default::default(),
            name: "sbtest".into(),
            listen: format!("{}:{}", node.addr, node.cluster_port)
                .parse()
                .expect("addr"),
            peers: all
                .iter()
                .filter(|n| n.name != node.name)
                .map(|n| format!("{}:{}", n.addr, n.cluster_port))
                .collect(),
            tls: None,
        };
        config.validate().expect("valid [cluster]");
        server_fragment(&config)
    })
    .expect("3-node cluster in namespaces");
    let timeline = Timeline::default();
    let hosts: Vec<HostProcess> = cluster
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, node)| {
            HostProcess::start(&bed, i, &node.url(), &timeline, (i == 0).then_some(OPS))
        })
        .collect();
    wait_for(&timeline, SETTLE, "two operators per host", |r| {
        r.len() == OPS && per_host(r).len() == 3 && per_host(r).values().all(|&n| n == OPS / 3)
    })
    .await;

    // A follower's host cut off: it fences, the majority takes over.
    let l = leader(&hosts).await;
    let v = hosts.iter().position(|h| h.name != l).expect("a follower");
    partition(&bed, &timeline, v, FAILOVER).await;

    // The leader's host cut off: the majority elects first.
    let l = leader(&hosts).await;
    let v = hosts
        .iter()
        .position(|h| h.name == l)
        .expect("leader is a host");
    let (fenced, took) = partition(&bed, &timeline, v, LEADER_FAILOVER).await;
    eprintln!("leader partition: fenced {fenced:?}, taken over {took:?}");
    drop(hosts);
    drop(cluster);
}
