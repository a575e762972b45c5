//! Cluster mode end to end: three real `switchboard run` daemons on
//! loopback, their embedded nats-servers clustered by `[cluster]`, real
//! ping bots. Checked: every operator runs on exactly one host; `drain`
//! moves operators off a host and `undrain` lets them back; a stale
//! `apply` is refused; SIGKILL of a whole host (its daemon's process
//! group, its server, its operators) and its operators run on the two
//! others within [`FAILOVER`]. Throughout, the history of lifecycle
//! events every host publishes on the bus (`sb.event.<id>`, with the
//! host and the time) is recorded and checked: no operator id is ever
//! active on two hosts at the same instant.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{
    bucket_leader, daemons_but, live, per_host, settle, start_three, History, HOSTS,
};
use common::{gone, pingbot_manifest};
use switchboard_orchestrator::conformance::harness::alive;
use switchboard_proto::api::{OperatorEvent, SupervisedState};

/// Operators at the start (one more is applied later).
const OPS: usize = 5;
/// The bound held here for a killed host whose server follows the
/// bucket's Raft group: 3.6 s by the lease arithmetic, 10 s on a loaded
/// 2-core machine (docs/cluster.md, "Measured").
const FAILOVER: Duration = Duration::from_secs(10);
/// Time for the cluster to form, elect, register and place.
const SETTLE: Duration = Duration::from_secs(40);
/// By when a frozen daemon's fence warden has killed its operators: the
/// lease deadline (`FENCE_AFTER` + `STOP_BUDGET` = 2.5 s after the last
/// acknowledged renewal, which was sent before the freeze) plus the
/// warden's check and slack for a loaded machine.
const FENCE_BOUND: Duration = Duration::from_millis(3500);

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|k| format!("ping-{k}")).collect()
}

fn write_dir(dir: &std::path::Path, ids: &[String]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for id in ids {
        std::fs::write(dir.join(format!("{id}.toml")), pingbot_manifest(id)).expect("write");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_run_each_operator_once_drain_refuse_stale_and_take_over() {
    let t0 = Instant::now();
    // Only h0 brings manifests: the others join with empty directories
    // and follow the cluster's desired state.
    let manifests: Vec<(String, String)> = ids(OPS)
        .iter()
        .map(|id| (format!("{id}.toml"), pingbot_manifest(id)))
        .collect();
    let mut daemons = start_three(&manifests, |_, config| config).await;
    let history = History::default();
    for d in daemons.iter().flatten() {
        history.follow(d).await;
    }

    // Every operator on exactly one host, spread over all three.
    let (placed, took) = settle(&live(&daemons), &ids(OPS), SETTLE, "first placement", |r| {
        per_host(&r.iter().map(|(k, v)| (k.clone(), v[0].clone())).collect()).len() == 3
    })
    .await;
    println!("formed and placed {OPS} operators in {took:?}: {placed:?}");

    // Every operator has its own stream, and every stream keeps three
    // copies (a lost host loses no history).
    let d0 = daemons[0].as_ref().expect("h0");
    for name in std::iter::once("SWITCHBOARD".to_owned())
        .chain(ids(OPS).iter().map(|id| format!("SWITCHBOARD_{id}")))
    {
        let started = Instant::now();
        loop {
            let info = d0.stream_info(&name).await.ok();
            let replicas = info
                .as_ref()
                .and_then(|i| i["config"]["num_replicas"].as_u64());
            if replicas == Some(3) {
                break;
            }
            assert!(
                started.elapsed() < SETTLE,
                "stream {name} not there with 3 replicas: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // status on any host shows the whole cluster with a HOST column.
    let h1 = daemons[1].as_ref().expect("h1");
    let status = h1.status().await;
    let cluster = status.cluster.expect("cluster section in status");
    assert_eq!(cluster.host, "h1");
    assert_eq!(cluster.hosts.len(), 3, "{:?}", cluster.hosts);
    for p in &cluster.operators {
        assert_eq!(
            p.host.as_deref(),
            placed.get(&p.id).map(String::as_str),
            "{p:?}"
        );
        // Operators of the other hosts come with their details, from the
        // host that runs them.
        if p.host.as_deref() != Some("h1") {
            let details = p.status.as_ref().expect("details from the owner");
            assert_eq!(details.state, SupervisedState::Running, "{p:?}");
            assert!(details.pid.is_some(), "{p:?}");
        }
    }
    let table = String::from_utf8_lossy(&h1.cli(&["status"]).stdout).to_string();
    assert!(table.contains("HOST"), "{table}");
    for (id, host) in &placed {
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("{id} missing from:\n{table}"));
        assert!(line.contains(&format!(" {host} ")), "{line}");
        assert!(line.contains(" running "), "{line}");
    }

    // drain h1: its operators move to h0 and h2; undrain: it gets its
    // share back.
    let d0 = daemons[0].as_ref().expect("h0");
    let out = d0.cli(&["drain", "h1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, took) = settle(&live(&daemons), &ids(OPS), SETTLE, "drain h1", |r| {
        r.values().all(|h| h[0] != "h1")
    })
    .await;
    println!("drain of h1: its operators ran elsewhere after {took:?}");
    let out = d0.cli(&["drain", "nosuchhost"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no host `nosuchhost`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d0.cli(&["undrain", "h1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, took) = settle(&live(&daemons), &ids(OPS), SETTLE, "undrain h1", |r| {
        r.values().any(|h| h[0] == "h1")
    })
    .await;
    println!("undrain of h1: back to running operators after {took:?}");

    // apply from h0 (based on what h0 wrote) adds an operator; the same
    // apply from h2, which never read that revision, is refused.
    let scratch = tempfile::tempdir().expect("tempdir");
    let six = scratch.path().join("six");
    write_dir(&six, &ids(OPS + 1));
    let out = d0.cli(&["apply", six.to_str().expect("utf-8")]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("desired state revision"), "{said}");
    let five = scratch.path().join("five");
    write_dir(&five, &ids(OPS));
    let d2 = daemons[2].as_ref().expect("h2");
    let out = d2.cli(&["apply", five.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "a stale apply must be refused");
    assert!(err.contains("won") && err.contains("--based-on"), "{err}");
    let (placed, took) = settle(
        &live(&daemons),
        &ids(OPS + 1),
        SETTLE,
        "sixth operator",
        |_| true,
    )
    .await;
    println!("apply of a sixth operator: running after {took:?}; stale apply refused: {err}");

    // An edited manifest reaches the operator where it runs: restarted
    // there with the new text (a new process, same host).
    let edited = &ids(1)[0];
    let host_of = |placed: &BTreeMap<String, String>| {
        HOSTS
            .iter()
            .position(|h| *h == placed[edited])
            .expect("a host")
    };
    let runs_on = host_of(&placed);
    let pid_of = |status: &switchboard_proto::api::StatusReply| {
        status
            .operators
            .iter()
            .find(|o| &o.id == edited)
            .and_then(|o| o.pid)
    };
    let old_pid = pid_of(&daemons[runs_on].as_ref().expect("host").status().await);
    std::fs::write(
        six.join(format!("{edited}.toml")),
        format!("{}env = {{ EDITED = \"1\" }}\n", pingbot_manifest(edited)),
    )
    .expect("edit");
    let out = d0.cli(&["apply", six.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    loop {
        let status = daemons[runs_on].as_ref().expect("host").status().await;
        let new_pid = pid_of(&status);
        let running = status
            .operators
            .iter()
            .any(|o| &o.id == edited && o.state == SupervisedState::Running);
        if running && new_pid.is_some() && new_pid != old_pid {
            break;
        }
        assert!(
            started.elapsed() < SETTLE,
            "{edited} not restarted: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (placed, _) = settle(
        &live(&daemons),
        &ids(OPS + 1),
        SETTLE,
        "after the edit",
        |_| true,
    )
    .await;
    assert_eq!(
        host_of(&placed),
        runs_on,
        "an edit does not move an operator"
    );
    println!(
        "edited manifest of {edited}: restarted on {} after {:?}",
        HOSTS[runs_on],
        started.elapsed()
    );

    // ctl and logs from a host that does not run the operator reach it
    // where it runs (the daemon passes them on to its peers).
    let other = (0..3).find(|&i| i != runs_on).expect("another host");
    let asker = daemons[other].as_ref().expect("other");
    let state_of = |status: &switchboard_proto::api::StatusReply| {
        status
            .operators
            .iter()
            .find(|o| &o.id == edited)
            .map(|o| o.state)
    };
    for (verb, want) in [
        ("halt", SupervisedState::Halted),
        ("resume", SupervisedState::Running),
    ] {
        let out = asker.cli(&["ctl", verb, edited]);
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains(&format!("{verb} ok")), "{said}");
        // The state follows the operator's answer, or its next heartbeat
        // when the answer does not carry it: waited for, not sampled.
        let asked = Instant::now();
        loop {
            let status = daemons[runs_on].as_ref().expect("host").status().await;
            if state_of(&status) == Some(want) {
                break;
            }
            assert!(
                asked.elapsed() < Duration::from_secs(5),
                "after {verb} from {}: {:?}",
                HOSTS[other],
                state_of(&status)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let logs = asker.logs(edited, 20).await.expect("logs");
    assert!(logs.error.is_none() && !logs.lines.is_empty(), "{logs:?}");
    let out = asker.cli(&["ctl", "halt", "no-such-op"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no operator matches"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGHUP on a host whose manifests directory is empty proposes
    // nothing: the desired state stays as it is.
    let before = d0.status().await.cluster.expect("cluster").revision;
    daemons[1].as_ref().expect("h1").reload();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after_hup = d0.status().await.cluster.expect("cluster").revision;
    assert_eq!(
        before, after_hup,
        "an empty directory's SIGHUP changed the desired state"
    );
    let (placed, _) = settle(
        &live(&daemons),
        &ids(OPS + 1),
        SETTLE,
        "after SIGHUP",
        |_| true,
    )
    .await;

    // SIGTERM of a host: it leaves cleanly (Engine::shutdown hands its
    // operators over and deletes its heartbeat), so the others run them
    // without waiting for the lease to run out; started again with an
    // empty manifests directory, it follows the cluster's desired state
    // and gets its share back.
    let leader = bucket_leader(d0).await;
    let leaving = (1..3)
        .find(|&i| Some(HOSTS[i]) != leader.as_deref() && per_host(&placed).contains_key(HOSTS[i]))
        .expect("a non-leader host running operators");
    let left = Instant::now();
    let exit = daemons[leaving].as_mut().expect("leaving").stop().await;
    assert!(exit.success(), "{exit:?}");
    let stopped_after = left.elapsed();
    let (_, _) = settle(
        &daemons_but(&daemons, leaving),
        &ids(OPS + 1),
        SETTLE,
        "clean leave",
        |r| r.values().all(|h| h[0] != HOSTS[leaving]),
    )
    .await;
    let handed_over = left.elapsed();
    println!(
        "SIGTERM of {}: daemon exited after {stopped_after:?}, its operators ran on the others \
         after {handed_over:?}",
        HOSTS[leaving]
    );
    daemons[leaving]
        .as_mut()
        .expect("left")
        .try_start_again()
        .await
        .expect("the host comes back");
    history
        .follow(daemons[leaving].as_ref().expect("back"))
        .await;
    let (placed, took) = settle(&live(&daemons), &ids(OPS + 1), SETTLE, "host back", |r| {
        r.values().any(|h| h[0] == HOSTS[leaving])
    })
    .await;
    println!(
        "{} back: running its share again after {took:?}",
        HOSTS[leaving]
    );

    // SIGKILL a whole host: one whose server does not lead the heartbeat
    // bucket (the leader's loss costs a Raft election, 4-9 s more:
    // docs/cluster.md, measured in the cluster crate's tests).
    let d0 = daemons[0].as_ref().expect("h0");
    let leader = bucket_leader(d0).await;
    // Among those, the one leading the durable stream (3 replicas) when
    // it can be: the survivors' status then waits on the lost stream.
    let durable = d0.stream_leader("SWITCHBOARD").await;
    let candidates: Vec<usize> = (0..3)
        .filter(|&i| {
            Some(HOSTS[i]) != leader.as_deref() && per_host(&placed).contains_key(HOSTS[i])
        })
        .collect();
    let victim = candidates
        .iter()
        .copied()
        .find(|&i| Some(HOSTS[i]) == durable.as_deref())
        .or(candidates.first().copied())
        .expect("a non-leader host running operators");
    let victim_pids: Vec<u32> = {
        let d = daemons[victim].as_ref().expect("victim");
        d.status()
            .await
            .operators
            .iter()
            .filter_map(|o| o.pid)
            .collect()
    };
    assert!(!victim_pids.is_empty());
    let killed_at = switchboard_proto::Timestamp::now().unix_nanos();
    let lost = Instant::now();
    let mut dead = daemons[victim].take().expect("victim");
    dead.kill_group().await;
    for pid in &victim_pids {
        gone(*pid).await;
    }
    let moved: Vec<String> = placed
        .iter()
        .filter(|(_, h)| *h == HOSTS[victim])
        .map(|(id, _)| id.clone())
        .collect();
    // Polling every daemon's status is coarse (a status may wait 2 s on
    // the durable stream's figures when its server was the lost one): the
    // figure is taken from the history, the time each operator reported
    // `running` on its new host.
    let (after, _) = settle(
        &live(&daemons),
        &ids(OPS + 1),
        FAILOVER + Duration::from_secs(10),
        "failover",
        |_| true,
    )
    .await;
    let seen = lost.elapsed();
    assert!(after.values().all(|h| h != HOSTS[victim]), "{after:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let failover = history.running_again(&moved, HOSTS[victim], killed_at);
    println!(
        "SIGKILL of {} (leader of sb_cluster: {leader:?}, durable stream on {durable:?}): its \
         operators {moved:?} ran on the \
         others after {failover:?} (status polls saw it after {seen:?}): {after:?}",
        HOSTS[victim],
    );
    let failover = failover.expect("every moved operator reported running elsewhere");
    assert!(
        failover < FAILOVER,
        "failover took {failover:?}, more than {FAILOVER:?}"
    );

    // The killed host stays listed as gone until it is forgotten; a live
    // host cannot be forgotten.
    let survivor = (0..3).find(|&i| i != victim).expect("a survivor");
    let sd = daemons[survivor].as_ref().expect("survivor");
    let out = sd.cli(&["forget", HOSTS[survivor]]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is alive"),
        "forget of a live host: {err}"
    );
    let listed = |status: &switchboard_proto::api::StatusReply, host: &str| {
        status
            .cluster
            .as_ref()
            .is_some_and(|c| c.hosts.iter().any(|h| h.name == host))
    };
    assert!(listed(&sd.status().await, HOSTS[victim]));
    let out = sd.cli(&["forget", HOSTS[victim]]);
    assert!(
        out.status.success(),
        "forget {}: {}",
        HOSTS[victim],
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    while listed(&sd.status().await, HOSTS[victim]) {
        assert!(
            started.elapsed() < SETTLE,
            "{} still listed after forget",
            HOSTS[victim]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Freeze a daemon (SIGSTOP of the daemon alone: its server and its
    // operators run on). It cannot fence; its fence warden kills its
    // operators by the lease deadline (the last renewal + FENCE_AFTER +
    // STOP_BUDGET), before the other host may take them over (the last
    // renewal + LEASE_TTL).
    let frozen = (0..3)
        .find(|&i| i != victim && after.values().any(|h| h == HOSTS[i]))
        .expect("a live host running operators");
    let fd = daemons[frozen].as_ref().expect("frozen");
    let frozen_pids: Vec<u32> = fd
        .status()
        .await
        .operators
        .iter()
        .filter_map(|o| o.pid)
        .collect();
    assert!(!frozen_pids.is_empty());
    let froze = Instant::now();
    fd.signal(nix::sys::signal::Signal::SIGSTOP);
    let dead_at = loop {
        if frozen_pids.iter().all(|pid| !alive(*pid)) {
            break switchboard_proto::Timestamp::now().unix_nanos();
        }
        assert!(
            froze.elapsed() < FENCE_BOUND + Duration::from_secs(5),
            "the frozen daemon's operators still run after {:?}: no fence warden?",
            froze.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let killed_after = froze.elapsed();
    let (taken, took) = settle(
        &daemons_but(&daemons, frozen),
        &ids(OPS + 1),
        FAILOVER + Duration::from_secs(5),
        "frozen daemon",
        |_| true,
    )
    .await;
    let takeover = froze.elapsed();
    println!(
        "SIGSTOP of {}'s daemon: its operators killed by its fence warden after \
         {killed_after:?}, running on the other host after {takeover:?} (last poll {took:?}): \
         {taken:?}",
        HOSTS[frozen]
    );
    assert!(
        killed_after < FENCE_BOUND,
        "the warden killed the frozen daemon's operators after {killed_after:?}, more than {FENCE_BOUND:?}"
    );
    assert!(
        takeover < FAILOVER,
        "takeover from a frozen daemon took {takeover:?}"
    );
    // Thawed, it finds itself declared gone, registers anew and gets a
    // share back; no crash restart of its own runs beside the other host.
    fd.signal(nix::sys::signal::Signal::SIGCONT);
    let (_, took) = settle(
        &live(&daemons),
        &ids(OPS + 1),
        SETTLE,
        "thawed daemon back",
        |r| r.values().any(|h| h[0] == HOSTS[frozen]),
    )
    .await;
    println!(
        "{} thawed: running its share again after {took:?}",
        HOSTS[frozen]
    );

    // The history: every host's start/stop events, never an id on two
    // hosts at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = history.check(&[(HOSTS[victim], killed_at), (HOSTS[frozen], dead_at)]);
    println!(
        "history: {n} lifecycle events checked ({}); whole test {:?}",
        history.summary(),
        t0.elapsed()
    );
    drop(dead);
}

/// The history check finds an id active on two hosts at once (so the
/// test above can fail).
#[test]
#[should_panic(expected = "active on")]
fn the_history_check_sees_an_overlap() {
    let history = History::default();
    let event = |host: &str, state: SupervisedState, at: i128| OperatorEvent {
        id: "ping-0".into(),
        state,
        previous: SupervisedState::Exited,
        pid: Some(1),
        restarts: 0,
        reason: None,
        timestamp: switchboard_proto::Timestamp::from_unix_nanos(at).expect("time"),
        host: Some(host.into()),
    };
    {
        let mut h = history.0.lock().expect("history");
        h.events.push(event("h0", SupervisedState::Starting, 1_000));
        h.events.push(event("h1", SupervisedState::Starting, 2_000));
        h.events.push(event("h0", SupervisedState::Exited, 3_000));
    }
    history.check(&[]);
}
