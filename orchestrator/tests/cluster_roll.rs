//! Planned moves under chat traffic: three real daemons clustered on
//! loopback, one real ping bot per host, each answering `!ping` in its
//! own room, and a client sending 20 `!ping`s a second to every room
//! throughout. Measured per operator, and checked:
//!
//! - its crash -> ready time on this run (SIGKILL of the bot, to its
//!   next answer), the yardstick;
//! - the longest time without an answer while a host is drained (and
//!   undrained), and while `switchboard rolling-restart` restarts every
//!   host's daemon in place (same pid) one at a time;
//! - that no `!ping` is answered twice, and how many got no answer (the
//!   bots read chat by plain subscription: a ping sent while its bot is
//!   between two hosts reaches nobody; counted, not hidden);
//! - the history of every host's lifecycle events: no id on two hosts at
//!   any instant.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{live, per_host, settle, start_three, History, HOSTS};
use common::{gone, pingbot_manifest, Daemon};
use futures::StreamExt;
use switchboard_bus::Bus;
use switchboard_proto::{headers, ChatAddress, Envelope, Pattern};
use tokio::io::AsyncBufReadExt;

/// One ping bot per host.
const OPS: usize = 3;
/// Pings per bot: one every 50 ms (20 a second).
const EVERY: Duration = Duration::from_millis(50);
/// Time for the cluster to form, elect, register and place.
const SETTLE: Duration = Duration::from_secs(40);
/// What a planned move may cost beyond the bot's own crash -> ready: the
/// stop on the old host (confirmed to its engine as soon as the process
/// is reaped, so the record is handed back without waiting out the 1 s
/// stop budget), a reconciler tick (100 ms) on each side to release and
/// claim, the claim's write, and slack for a loaded 2-core machine. A
/// move that waits out the stop budget (1.1-1.3 s measured before the
/// confirmation) fails it, as does a roll that restarts a host before the
/// previous one is back (no majority of servers: every host fences).
const MOVE_ALLOWANCE: Duration = Duration::from_millis(900);
/// How long the rolling restart may take.
const ROLL_BOUND: Duration = Duration::from_secs(120);

fn ids() -> Vec<String> {
    (0..OPS).map(|k| format!("ping-{k}")).collect()
}

/// Where the test sends `id`'s pings: a room of its own, on the test
/// client's own instance (`test`: the bot answers authentic chat only).
fn room(id: &str) -> ChatAddress {
    ChatAddress::new("t", "test", id)
}

/// A ping bot that listens to its own room only, without answer limits.
fn manifest(id: &str) -> String {
    format!(
        "{}[config]\nlisten = [\"{}\"]\n[config.rate]\nsender = \"off\"\nroom = \"off\"\nnetwork = \"off\"\n",
        pingbot_manifest(id),
        room(id).event_subject("message")
    )
}

/// Every ping sent and every answer seen.
#[derive(Default)]
struct Log {
    /// Ping envelope id -> (operator index, sent at).
    pings: HashMap<String, (usize, Instant)>,
    /// Ping id -> the distinct answers to it (answer envelope ids).
    answers: HashMap<String, HashSet<String>>,
    /// Per operator: when each ping's first answer arrived, in order.
    answered: Vec<Vec<Instant>>,
    /// Answers that named a ping we did not send, or came from another
    /// bot than the room's.
    strays: usize,
}

/// The `!ping` traffic: one sender, listeners on every host's server.
struct Traffic {
    log: Arc<Mutex<Log>>,
    /// The clients pings are sent through, by host index: a host about to
    /// restart is taken out first, so no ping is lost on the way in.
    senders: Arc<Mutex<BTreeMap<usize, Bus>>>,
    stop: Arc<AtomicBool>,
}

impl Traffic {
    fn new() -> Traffic {
        Traffic {
            log: Arc::new(Mutex::new(Log {
                answered: vec![Vec::new(); OPS],
                ..Log::default()
            })),
            senders: Arc::default(),
            stop: Arc::default(),
        }
    }

    /// Send through `bus` (host `i`) and listen on it: each host's server
    /// sees every answer, the log keeps each once.
    async fn add(&self, i: usize, bus: &Bus) {
        let mut answers = bus
            .subscribe(&Pattern::parse("send.t.#").expect("pattern"))
            .await
            .expect("subscribe to answers");
        bus.sync().await.expect("sync");
        let log = Arc::clone(&self.log);
        tokio::spawn(async move {
            while let Some(d) = answers.next().await {
                let at = Instant::now();
                let env = d.envelope();
                let (Some(ping), Some(answer)) = (env.header(headers::IN_REPLY_TO), env.id())
                else {
                    continue;
                };
                let mut log = log.lock().expect("log");
                let Some(&(op, _)) = log.pings.get(ping) else {
                    log.strays += 1;
                    continue;
                };
                if env.source != ids()[op] {
                    log.strays += 1;
                    continue;
                }
                let set = log.answers.entry(ping.to_owned()).or_default();
                let first = set.is_empty();
                set.insert(answer.to_owned());
                if first {
                    log.answered[op].push(at);
                }
            }
        });
        self.senders.lock().expect("senders").insert(i, bus.clone());
    }

    /// Stop sending through host `i` (it is about to go away).
    fn remove(&self, i: usize) {
        self.senders.lock().expect("senders").remove(&i);
    }

    /// Send a `!ping` to every bot's room every [`EVERY`] until dropped.
    fn start(&self) {
        let log = Arc::clone(&self.log);
        let senders = Arc::clone(&self.senders);
        let stop = Arc::clone(&self.stop);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let rooms: Vec<String> = ids()
                .iter()
                .map(|id| room(id).event_subject("message"))
                .collect();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let Some(bus) = senders.lock().expect("senders").values().next().cloned() else {
                    continue;
                };
                for (op, subject) in rooms.iter().enumerate() {
                    let ping = Envelope::new(
                        bus.source(),
                        serde_json::json!({"text": "!ping", "sender": "t", "room": ids()[op]}),
                    );
                    let Some(id) = ping.id().map(str::to_owned) else {
                        continue;
                    };
                    log.lock()
                        .expect("log")
                        .pings
                        .insert(id.clone(), (op, Instant::now()));
                    if bus.publish(subject, &ping).await.is_err() {
                        // Not sent: not a ping the bot could have missed.
                        log.lock().expect("log").pings.remove(&id);
                    }
                }
            }
        });
    }

    /// When `op` first answered after `since`.
    fn answered_after(&self, op: usize, since: Instant) -> Option<Instant> {
        let log = self.log.lock().expect("log");
        log.answered[op].iter().copied().find(|t| *t > since)
    }

    /// Per operator, the longest time without an answer between `from`
    /// and `to` (counted from its last answer before `from`, and up to
    /// `to` if it has not answered since its last one).
    fn longest_gaps(&self, from: Instant, to: Instant) -> Vec<Duration> {
        let log = self.log.lock().expect("log");
        log.answered
            .iter()
            .map(|times| {
                let mut last = times.iter().copied().rfind(|t| *t <= from).unwrap_or(from);
                let mut longest = Duration::ZERO;
                for t in times.iter().copied().filter(|t| *t > from && *t <= to) {
                    longest = longest.max(t - last);
                    last = t;
                }
                longest.max(to.saturating_duration_since(last))
            })
            .collect()
    }

    /// Per operator, the pings sent between `from` and `to` and how many
    /// of them got no answer.
    fn lost(&self, from: Instant, to: Instant) -> Vec<(usize, usize)> {
        let log = self.log.lock().expect("log");
        let mut out = vec![(0, 0); OPS];
        for (id, (op, sent)) in &log.pings {
            if *sent >= from && *sent <= to {
                out[*op].0 += 1;
                if !log.answers.contains_key(id) {
                    out[*op].1 += 1;
                }
            }
        }
        out
    }

    /// Pings answered more than once, and answers that matched nothing.
    fn doubles_and_strays(&self) -> (usize, usize) {
        let log = self.log.lock().expect("log");
        (
            log.answers.values().filter(|a| a.len() > 1).count(),
            log.strays,
        )
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Wait until every bot answered after `since`; when each did.
async fn all_answering(traffic: &Traffic, since: Instant, what: &str) -> Instant {
    let deadline = Instant::now() + SETTLE;
    loop {
        let last = (0..OPS)
            .map(|op| traffic.answered_after(op, since))
            .collect::<Option<Vec<_>>>();
        if let Some(times) = last {
            return times.into_iter().max().unwrap_or(since);
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not every bot answers again within {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Check one fault's window: no bot without an answer longer than its
/// crash -> ready time plus [`MOVE_ALLOWANCE`]; print the figures.
fn verdict(
    traffic: &Traffic,
    what: &str,
    from: Instant,
    to: Instant,
    crash_ready: &[Duration],
) -> Vec<Duration> {
    let gaps = traffic.longest_gaps(from, to);
    let lost = traffic.lost(from, to);
    for (op, id) in ids().iter().enumerate() {
        println!(
            "{what}: {id}: longest without an answer {:?} (crash -> ready {:?}); {} of {} pings \
             unanswered",
            gaps[op], crash_ready[op], lost[op].1, lost[op].0
        );
    }
    for (op, id) in ids().iter().enumerate() {
        assert!(
            gaps[op] <= crash_ready[op] + MOVE_ALLOWANCE,
            "{what}: {id} went {:?} without an answer, more than its crash -> ready ({:?}) plus \
             {MOVE_ALLOWANCE:?}",
            gaps[op],
            crash_ready[op]
        );
    }
    gaps
}

/// A stand-in for systemd's notify socket: every datagram, as text.
struct Notifications {
    dir: tempfile::TempDir,
    received: Arc<Mutex<Vec<String>>>,
}

impl Notifications {
    fn bind() -> Notifications {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = std::os::unix::net::UnixDatagram::bind(dir.path().join("notify.sock"))
            .expect("bind the notify socket");
        let received = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&received);
        // Ends with the test process (a blocking receive on a socket the
        // test owns).
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                into.lock().expect("notifications").push(msg);
            }
        });
        Notifications { dir, received }
    }

    fn path(&self) -> String {
        self.dir.path().join("notify.sock").display().to_string()
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().expect("notifications").clone()
    }
}

/// The index of `host` in [`HOSTS`], from a progress line of
/// `switchboard rolling-restart` (`[   1.2s] h1: restarting ...`).
fn host_of(line: &str) -> Option<usize> {
    let (_, rest) = line.split_once("] ")?;
    let (host, _) = rest.split_once(':')?;
    HOSTS.iter().position(|h| *h == host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_rolling_restart_under_ping_traffic() {
    let t0 = Instant::now();
    let manifests: Vec<(String, String)> = ids()
        .iter()
        .map(|id| (format!("{id}.toml"), manifest(id)))
        .collect();
    // h1 under a stand-in for systemd's notify socket: a restart in
    // place must say RELOADING=1 (not STOPPING=1) and READY=1 again.
    let notify = Notifications::bind();
    let socket = notify.path();
    // h2 runs a copy of the binary, which is "upgraded" (replaced by
    // rename, as a package manager does) before the roll: the restart
    // must run the new file, not the deleted one.
    let bin = tempfile::tempdir().expect("tempdir");
    let program = bin.path().join("switchboard");
    std::fs::copy(switchboard_testkit::bin_path("switchboard"), &program).expect("copy");
    let mut daemons = start_three(&manifests, |i, config| match i {
        1 => config.env("NOTIFY_SOCKET", &socket),
        2 => config.program(&program),
        _ => config,
    })
    .await;
    let history = History::default();
    for d in daemons.iter().flatten() {
        history.follow(d).await;
    }
    let (placed, took) = settle(&live(&daemons), &ids(), SETTLE, "first placement", |r| {
        per_host(&r.iter().map(|(k, v)| (k.clone(), v[0].clone())).collect()).len() == OPS
    })
    .await;
    println!("formed and placed {OPS} bots in {took:?}: {placed:?}");

    let traffic = Traffic::new();
    for (i, d) in daemons.iter().enumerate() {
        traffic.add(i, &d.as_ref().expect("daemon").bus).await;
    }
    traffic.start();
    let warm = Instant::now();
    all_answering(&traffic, warm, "traffic start").await;

    // The yardstick: each bot SIGKILLed, to its next answer (the
    // supervisor restarts it on the same host).
    let mut pids = Vec::new();
    for d in daemons.iter().flatten() {
        for o in d.status().await.operators {
            pids.push((o.id.clone(), o.pid.expect("a running bot has a pid")));
        }
    }
    assert_eq!(pids.len(), OPS, "{pids:?}");
    let killed = Instant::now();
    for (_, pid) in &pids {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(*pid).expect("pid")),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill a bot");
    }
    for (_, pid) in &pids {
        gone(*pid).await;
    }
    all_answering(&traffic, killed, "crash -> ready").await;
    let crash_ready: Vec<Duration> = (0..OPS)
        .map(|op| traffic.answered_after(op, killed).expect("answered") - killed)
        .collect();
    println!("crash -> ready (SIGKILL to the next answer): {crash_ready:?}");
    settle(&live(&daemons), &ids(), SETTLE, "after the crashes", |_| {
        true
    })
    .await;

    // (a) drain of a host, then undrain.
    let d0 = daemons[0].as_ref().expect("h0");
    let from = Instant::now();
    let out = d0.cli(&["drain", "h1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, took) = settle(&live(&daemons), &ids(), SETTLE, "drain h1", |r| {
        r.values().all(|h| h[0] != "h1")
    })
    .await;
    let to = all_answering(&traffic, from + took, "drain").await;
    println!("drain of h1: settled after {took:?}");
    verdict(&traffic, "drain h1", from, to, &crash_ready);
    let from = Instant::now();
    let out = d0.cli(&["undrain", "h1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, took) = settle(&live(&daemons), &ids(), SETTLE, "undrain h1", |r| {
        r.values().any(|h| h[0] == "h1")
    })
    .await;
    let to = all_answering(&traffic, from + took, "undrain").await;
    println!("undrain of h1: settled after {took:?}");
    verdict(&traffic, "undrain h1", from, to, &crash_ready);

    // (b) rolling restart of every host, asked on h0 (so h0 goes last),
    // after h2's binary was replaced.
    let h2 = daemons[2].as_ref().expect("h2").pid();
    let upgrade = bin.path().join("switchboard.new");
    std::fs::copy(switchboard_testkit::bin_path("switchboard"), &upgrade).expect("copy");
    std::fs::rename(&upgrade, &program).expect("replace the binary");
    let exe = || std::fs::read_link(format!("/proc/{h2}/exe")).expect("h2's exe");
    assert!(
        exe().display().to_string().ends_with(" (deleted)"),
        "{:?}",
        exe()
    );
    let d0_config = d0.config_path();
    let pids_before: Vec<u32> = daemons.iter().flatten().map(Daemon::pid).collect();
    let from = Instant::now();
    let mut roll = tokio::process::Command::new(switchboard_testkit::bin_path("switchboard"))
        .args(["rolling-restart", "--timeout", "60", "--config"])
        .arg(&d0_config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run switchboard rolling-restart");
    let mut lines = tokio::io::BufReader::new(roll.stdout.take().expect("stdout")).lines();
    let mut restarted = Vec::new();
    let reading = async {
        while let Some(line) = lines.next_line().await.expect("read the CLI's output") {
            println!("rolling-restart: {line}");
            let Some(i) = host_of(&line) else { continue };
            if line.contains(": restarting") {
                // Pings go through the others while this host is away.
                traffic.remove(i);
                restarted.push(i);
            } else if line.contains(": back in the cluster") {
                let d = daemons[i].as_mut().expect("daemon");
                d.try_reconnect()
                    .await
                    .unwrap_or_else(|e| panic!("{} after its restart: {e}", HOSTS[i]));
                history.follow(d).await;
                traffic.add(i, &d.bus).await;
            }
        }
    };
    tokio::time::timeout(ROLL_BOUND, reading)
        .await
        .expect("the rolling restart ends in time");
    let out = roll.wait_with_output().await.expect("the CLI's exit");
    assert!(
        out.status.success(),
        "rolling-restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        restarted,
        vec![1, 2, 0],
        "others in order, the asked host last"
    );
    let (placed, _) = settle(&live(&daemons), &ids(), SETTLE, "after the roll", |r| {
        per_host(&r.iter().map(|(k, v)| (k.clone(), v[0].clone())).collect()).len() == OPS
    })
    .await;
    let to = all_answering(&traffic, Instant::now(), "rolling restart").await;
    let rolled = from.elapsed();
    // Restarted in place: the same processes, each a new incarnation.
    let pids_after: Vec<u32> = daemons.iter().flatten().map(Daemon::pid).collect();
    assert_eq!(pids_before, pids_after);
    for (i, d) in daemons.iter().flatten().enumerate() {
        assert_eq!(
            d.status().await.pid,
            d.pid(),
            "the daemon answers from the same pid"
        );
        // Executed again, its server started again: two starts in one log.
        let log = d.log();
        assert!(
            log.contains("executing the program again")
                && log.matches("embedded nats-server listening").count() == 2,
            "{} did not restart in place:\n{log}",
            HOSTS[i]
        );
    }
    println!("rolling restart of 3 hosts: {rolled:?}, then {placed:?}");
    // h2 runs the file now at its path: the upgrade, not the deleted one.
    assert_eq!(exe(), program, "h2 executed {:?}", exe());
    let said = notify.received();
    let states: Vec<&str> = said
        .iter()
        .flat_map(|m| m.lines())
        .filter(|l| ["READY=1", "RELOADING=1", "STOPPING=1"].contains(l))
        .collect();
    assert_eq!(
        states,
        ["READY=1", "RELOADING=1", "READY=1"],
        "what h1 told systemd: {said:?}"
    );
    assert!(
        said.iter()
            .any(|m| m.contains("RELOADING=1") && m.contains("MONOTONIC_USEC=")),
        "{said:?}"
    );
    verdict(&traffic, "rolling restart", from, to, &crash_ready);

    // Nothing answered twice; every answer matched a ping of its room.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (doubles, strays) = traffic.doubles_and_strays();
    assert_eq!(doubles, 0, "pings answered twice");
    assert_eq!(
        strays, 0,
        "answers to no ping of the test, or from another bot"
    );
    let n = history.check(&[]);
    println!(
        "history: {n} lifecycle events checked ({}); whole test {:?}",
        history.summary(),
        t0.elapsed()
    );

    // A host that does not come back stops the roll, naming it: h2's
    // program is gone, so its exec fails and it stays down.
    drop(traffic);
    std::fs::remove_file(&program).expect("remove h2's program");
    let out = tokio::process::Command::new(switchboard_testkit::bin_path("switchboard"))
        .args(["rolling-restart", "--timeout", "5", "--config"])
        .arg(d0_config)
        .output()
        .await
        .expect("run switchboard rolling-restart");
    let said = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}{err}");
    assert!(
        err.contains("h2 did not come back within 5s")
            && err.contains("hosts restarted so far: h1")
            && err.contains("hosts left: h2, h0"),
        "{said}{err}"
    );
    let h2_log = daemons[2].as_ref().expect("h2").log();
    assert!(h2_log.contains("cannot execute"), "{h2_log}");
    println!("a host that does not come back: {}", err.trim());
}

/// The gap measure sees an operator that stopped answering (so the
/// verdicts above can fail): answers every 50 ms, then a 3 s hole.
#[test]
fn the_gap_measure_sees_a_hole() {
    let traffic = Traffic::new();
    let from = Instant::now();
    {
        let mut log = traffic.log.lock().expect("log");
        for k in 1..=10u32 {
            log.answered[0].push(from + EVERY * k);
        }
        log.answered[0].push(from + EVERY * 10 + Duration::from_secs(3));
        log.answered[1].push(from + EVERY);
    }
    let to = from + EVERY * 10 + Duration::from_secs(4);
    let gaps = traffic.longest_gaps(from, to);
    assert_eq!(gaps[0], Duration::from_secs(3));
    // One that never answers again is down to the end of the window.
    assert_eq!(gaps[1], to - (from + EVERY));
    assert_eq!(gaps[2], to - from);
}
