//! Least privilege on the bus, enforced by nats-server: each operator has
//! its own NATS user with the permissions its manifest grants; whatever
//! else it tries is refused by the server while the daemon and the other
//! operators keep working. Real daemon, real nats-server, real operator
//! processes.

mod common;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use switchboard_bus::{Bus, BusOptions, Pattern};
use switchboard_proto::api::SupervisedState as S;
use switchboard_proto::{launch, ChatAddress, Heartbeat, Verb};

/// The launch environment of a running process (we are its owner).
fn environ(pid: u32) -> HashMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    raw.split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// A bus connection with the credentials an operator process was given
/// (its password is in the file its environment names).
async fn connect_as(pid: u32) -> Bus {
    let env = environ(pid);
    assert!(
        !env.contains_key(launch::NATS_PASSWORD),
        "a password in the environment"
    );
    let password =
        std::fs::read_to_string(&env[launch::NATS_PASSWORD_FILE]).expect("password file");
    let opts = BusOptions::new(&env[launch::NATS_URL])
        .user_password(&env[launch::NATS_USER], password)
        .inbox_prefix(&env[launch::NATS_INBOX_PREFIX]);
    Bus::connect(&opts, "forger")
        .await
        .expect("connect as the operator")
}

/// `!ping` in a room until `id` answers.
async fn ping_answered(d: &Daemon, id: &str) {
    let room = ChatAddress::new("t", d.bus.source(), "room");
    let mut replies = d
        .bus
        .subscribe(&Pattern::parse("send.t.#").unwrap())
        .await
        .unwrap();
    d.bus.sync().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = json!({"text": "!ping", "sender": "t", "room": "room"});
        d.bus
            .send(&room.event_subject("message"), body)
            .await
            .unwrap();
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(300), replies.next()).await
        {
            if r.envelope().source == id {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never answered"
        );
    }
}

fn intruder_manifest() -> String {
    format!(
        "id = \"intruder\"\ncommand = \"{}\"\nheartbeat_interval = \"100ms\"\n\
         publish = [\"chat.allowed.#\"]\nsubscribe = [\"chat.allowed.#\"]\n\
         [config]\nvictim = \"victim\"\nforbidden = \"chat.forbidden.x\"\nallowed = \"chat.allowed.x\"\n",
        switchboard_testkit::bin_path("switchboard-intruder").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cannot_control_spy_on_or_impersonate_others() {
    let d = Daemon::start(&[
        ("victim.toml", pingbot_manifest("victim")),
        ("intruder.toml", intruder_manifest()),
    ])
    .await;
    let victim = d.wait_running("victim").await;
    let victim_pid = victim.pid.unwrap();
    // The pid it reports: its own pid namespace's.
    let victim_inner = switchboard_orchestrator::sandbox::inner_pid(victim_pid);
    d.wait_running("intruder").await;

    let mut forbidden = d.bus.subscribe_raw("chat.forbidden.>").await.unwrap();
    let mut allowed = d.bus.subscribe_raw("chat.allowed.>").await.unwrap();
    let mut beats = d.bus.subscribe_raw("sb.op.victim.heartbeat").await.unwrap();
    let mut probe = d.bus.subscribe_raw("sb.op.intruder.probe").await.unwrap();
    d.bus.sync().await.unwrap();

    // Traffic the intruder's subscriptions would see if the server let
    // them through: a control request to the victim, API calls.
    let reload = d
        .ctl(Verb::Reload, "victim", Some(json!({"answer": 42})))
        .await;
    assert!(reload.error.is_none(), "{reload:?}");
    d.status().await;

    // Watch for a while: the intruder tries again every round (about
    // 400 ms); a few rounds after our traffic are enough.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut allowed_seen = 0;
    let mut last_report: Option<Value> = None;
    let rounds = |r: &Option<Value>| r.as_ref().map_or(0, |r| r["round"].as_u64().unwrap_or(0));
    // Reports count from the intruder's start: wait for two rounds after
    // the first one we see, so our traffic has had time to reach it.
    let mut first_round = None;
    while first_round.is_none_or(|f| rounds(&last_report) < f + 2) || allowed_seen < 3 {
        if first_round.is_none() && last_report.is_some() {
            first_round = Some(rounds(&last_report));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the intruder stalled: {last_report:?}, {allowed_seen} allowed publishes seen"
        );
        tokio::select! {
            Some(m) = forbidden.next() => panic!("a publish outside the grants arrived on {}", m.subject),
            Some(_) = allowed.next() => allowed_seen += 1,
            Some(m) = beats.next() => {
                // The intruder forges its heartbeats with a fixed timestamp
                // (in their sandboxes both may be pid 2).
                let hb: Heartbeat = serde_json::from_slice(&m.payload).unwrap();
                let raw: Value = serde_json::from_slice(&m.payload).unwrap();
                assert_ne!(raw["timestamp"], "2026-01-01T00:00:00Z", "a forged heartbeat reached the bus: {hb:?}");
                assert_eq!(Some(hb.pid), victim_inner, "a heartbeat not from the victim: {hb:?}");
            }
            Some(m) = probe.next() => last_report = Some(serde_json::from_slice(&m.payload).unwrap()),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    // The positive control (the loop's condition): the same intruder's
    // granted publishes arrive.
    let report = last_report.expect("the intruder reports");
    assert!(report["round"].as_u64().unwrap() >= 3, "{report}");
    for (subject, n) in report["seen"].as_object().unwrap() {
        assert_eq!(
            n, 0,
            "the intruder received {n} message(s) on {subject}: {report}"
        );
    }
    assert!(
        report["api_ctl"].as_str().unwrap().starts_with("error"),
        "the API answered the intruder: {report}"
    );

    // Everyone still works: same victim process, never restarted, and it
    // answers; the daemon answers.
    let after = d.wait_running("victim").await;
    assert_eq!(after.pid, Some(victim_pid));
    assert_eq!(after.restarts, 0);
    assert_eq!(d.operator("intruder").await.unwrap().state, S::Running);

    // And it was the server that said no (its log, through the daemon's;
    // the subscriptions were refused once, at the intruder's start).
    let expected: Vec<String> = [
        "sb.api.ctl",
        "sb.ctl.victim",
        "sb.op.victim.heartbeat",
        "chat.forbidden.x",
    ]
    .iter()
    .map(|s| format!("Publish Violation - Subject \"{s}\""))
    .chain(
        ["sb.ctl.>", "sb.ctl.victim", "sb.api.>"]
            .iter()
            .map(|s| format!("Subscription Violation - Subject \"{s}\"")),
    )
    .collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let log = d.log();
        let missing: Vec<&String> = expected.iter().filter(|e| !log.contains(*e)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not in the daemon log: {missing:?}\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_heartbeat_does_not_keep_a_stopped_operator_alive() {
    let d = Daemon::start(&[("victim.toml", pingbot_manifest("victim"))]).await;
    let pid = d.wait_running("victim").await.pid.unwrap();
    // With the victim's own credentials (as a helper it forked could),
    // beat for it with a pid that is not its process's.
    let forger = connect_as(pid).await;
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    let beat = tokio::spawn(async move {
        for seq in 1.. {
            let hb = json!({
                "id": "victim", "pid": std::process::id(), "seq": seq, "state": "running",
                "uptime_ms": 1, "counters": {}, "timestamp": "2026-01-01T00:00:00Z"
            });
            if forger
                .publish_json("sb.op.victim.heartbeat", &hb)
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    let replaced = d
        .wait_for("victim", "a new process, running", |o| {
            o.state == S::Running && o.pid.is_some_and(|p| p != pid)
        })
        .await;
    beat.abort();
    assert!(replaced.ignored_lifecycle > 0, "{replaced:?}");
    assert!(
        replaced
            .last_exit
            .as_deref()
            .is_some_and(|e| e.contains("SIGKILL")),
        "{replaced:?}"
    );
    gone(pid).await;
}

/// `GET path` on the embedded server's monitoring port, as JSON.
fn monitor(port: u16, path: &str) -> Value {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("monitor port");
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server's client id and user of each connection, by client name.
fn connections(port: u16) -> HashMap<String, (u64, String)> {
    monitor(port, "/connz?auth=true&limit=1000")["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_owned(),
                (
                    c["cid"].as_u64().unwrap(),
                    c["authorized_user"].as_str().unwrap_or("").to_owned(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_come_and_go_without_dropping_the_others() {
    let port = free_port();
    let d = DaemonConfig::new()
        .manifest("stay.toml", pingbot_manifest("stay"))
        .embedded(|e| e.monitor_port = Some(port))
        .start()
        .await;
    let stay = d.wait_running("stay").await;
    let before = connections(port);
    let (stay_cid, stay_user) = before["stay"].clone();
    assert_eq!(stay_user, "op-stay");
    assert!(!before.values().any(|(_, u)| u == "op-come"));

    // Traffic flows the whole time: pings answered by `stay`.
    let room = ChatAddress::new("t", d.bus.source(), "room");
    let mut replies = d
        .bus
        .subscribe(&Pattern::parse("send.t.#").unwrap())
        .await
        .unwrap();
    d.bus.sync().await.unwrap();
    let bus = d.bus.clone();
    let subject = room.event_subject("message");
    let pinger = tokio::spawn(async move {
        let mut sent = 0u64;
        loop {
            let body = json!({"text": "!ping", "sender": "t", "room": "room"});
            if bus.send(&subject, body).await.is_ok() {
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            if sent > 100_000 {
                break;
            }
        }
    });
    let pongs = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = std::sync::Arc::clone(&pongs);
    let counter = tokio::spawn(async move {
        while replies.next().await.is_some() {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let answered = || pongs.load(std::sync::atomic::Ordering::Relaxed);

    let deadline = tokio::time::Instant::now() + WAIT;
    while answered() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pongs before the reloads"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.write_manifest("come.toml", &pingbot_manifest("come"));
    d.signal(Signal::SIGHUP);
    d.wait_running("come").await;
    let during = connections(port);
    assert!(during.values().any(|(_, u)| u == "op-come"), "{during:?}");
    d.remove_manifest("come.toml");
    d.signal(Signal::SIGHUP);
    let deadline = tokio::time::Instant::now() + WAIT;
    while d.operator("come").await.is_some() {
        assert!(tokio::time::Instant::now() < deadline, "come never removed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let after_removal = answered();
    let deadline = tokio::time::Instant::now() + WAIT;
    while answered() < after_removal + 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pongs after the reloads"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pinger.abort();
    counter.abort();

    // `stay` kept its connection (same server client id), never
    // reconnected, and its process was never touched.
    let after = connections(port);
    assert_eq!(after["stay"].0, stay_cid, "stay's connection was replaced");
    assert!(!after.values().any(|(_, u)| u == "op-come"), "{after:?}");
    let now = d.wait_running("stay").await;
    assert_eq!(now.pid, stay.pid);
    let counters = now.counters.expect("heartbeat counters");
    assert_eq!(counters.reconnects, 0, "{counters:?}");
    // The removed operator's user is gone from the server's config too.
    let conf = std::fs::read_to_string(d.dir.path().join("run/nats-server.conf")).unwrap();
    assert!(!conf.contains("op-come") && conf.contains("op-stay"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_only_the_operator_that_names_it() {
    const SECRET: &str = "tHe-5ecret-v4lue";
    // Each operator checks its own environment and config without
    // printing either.
    let checker = |id: &str, with_secret: bool| {
        let mut m = format!(
            "id = \"{id}\"\ncommand = \"/bin/sh\"\ncontrol = \"signals\"\nstop_timeout = \"1s\"\n\
             args = [\"-c\", \"if env | grep -q {SECRET}; then echo env-secret; elif grep -q {SECRET} \\\"$SWITCHBOARD_CONFIG_FILE\\\"; then echo has-secret; else echo no-secret; fi; exec sleep 30\"]\n"
        );
        if with_secret {
            m.push_str("[secrets]\n\"irc.password\" = { env = \"SB_TEST_IRC_PASS\" }\n");
        }
        m
    };
    let mut d = DaemonConfig::new()
        .manifest("a.toml", checker("a", true))
        .manifest("b.toml", checker("b", false))
        .env("SB_TEST_IRC_PASS", SECRET)
        .start()
        .await;
    let a = d.wait_running("a").await.pid.unwrap();
    let b = d.wait_running("b").await.pid.unwrap();
    let said = |id: &'static str| {
        let d = &d;
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let logs: switchboard_proto::api::LogsReply = d
                    .bus
                    .request_json("sb.api.logs", &json!({"id": id}), WAIT)
                    .await
                    .unwrap();
                if let Some(l) = logs.lines.first() {
                    return l.line.clone();
                }
                assert!(tokio::time::Instant::now() < deadline, "{id} said nothing");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    };
    assert_eq!(said("a").await, "has-secret");
    assert_eq!(said("b").await, "no-secret");
    // a has it inside its config, not as the daemon's variable; b has
    // neither; no operator inherits the daemon's environment.
    let env_a = environ(a);
    let env_b = environ(b);
    assert!(!env_a.contains_key(launch::CONFIG));
    let config_a = std::fs::read_to_string(&env_a[launch::CONFIG_FILE]).unwrap();
    assert!(config_a.contains(SECRET));
    assert!(!env_a.values().any(|v| v.contains(SECRET)));
    for env in [&env_a, &env_b] {
        assert!(!env.contains_key("SB_TEST_IRC_PASS"), "{:?}", env.keys());
        assert!(!env.contains_key("SWITCHBOARD_NATS_SERVER"));
    }
    assert!(!env_b.values().any(|v| v.contains(SECRET)));
    // Operators never hold the daemon's or the CLI's login.
    assert_ne!(env_a[launch::NATS_USER], env_b[launch::NATS_USER]);
    assert!(env_a[launch::NATS_USER].starts_with("op-"));

    // Nowhere else: status, ctl acks, the daemon's log, any file outside
    // the 0700 runtime dir (but the manifests this test wrote, whose
    // check commands name the value).
    let status = serde_json::to_string(&d.status().await).unwrap();
    assert!(!status.contains(SECRET));
    let ack = serde_json::to_string(&d.ctl(Verb::Reload, "a", None).await).unwrap();
    assert!(!ack.contains(SECRET), "{ack}");
    use std::os::unix::fs::PermissionsExt as _;
    let run = d.dir.path().join("run");
    assert_eq!(
        std::fs::metadata(&run).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // Removed: its config file (with the secret) goes.
    d.remove_manifest("a.toml");
    d.signal(Signal::SIGHUP);
    gone(a).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while run.join("config/a.json").exists() {
        assert!(tokio::time::Instant::now() < deadline, "a.json kept");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(d.stop().await.success());
    assert!(!d.log().contains(SECRET), "secret in the daemon log");
    let mut stack = vec![d.dir.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = entry.path();
            if p == d.manifests() {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(text) = std::fs::read(&p) {
                let text = String::from_utf8_lossy(&text);
                assert!(!text.contains(SECRET), "secret in {}", p.display());
            }
        }
    }
    // At shutdown the runtime dir keeps no config and no credentials.
    let left: Vec<_> = std::fs::read_dir(run.join("operators"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert!(!run.join("nats-server.conf").exists());
    assert!(!run.join("switchboard.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_server_with_tls_takes_the_daemon_the_cli_and_operators() {
    let ca = switchboard_testkit::TestCa::new().expect("openssl test CA");
    let d = DaemonConfig::new()
        .manifest("p.toml", pingbot_manifest("p"))
        .tls_ca(ca.ca_file())
        .embedded(|e| e.tls = Some((ca.server_cert_file(), ca.server_key_file())))
        .start()
        .await;
    let p = d.wait_running("p").await;
    // The operator was told to use TLS with the CA, and it did: a plain
    // client is refused by the server.
    let env = environ(p.pid.unwrap());
    assert_eq!(
        std::path::PathBuf::from(&env[launch::NATS_TLS_CA]),
        ca.ca_file()
    );
    ping_answered(&d, "p").await;
    let plain = BusOptions::new(&d.info.url)
        .user_password(
            d.info.user.clone().unwrap(),
            d.info.password.clone().unwrap(),
        )
        .connect_timeout(Duration::from_secs(1));
    assert!(Bus::connect(&plain, "plain").await.is_err());
}

/// `user = ...` runs an operator as another Unix user: it works (its state,
/// scratch and config are its own) and cannot read the daemon's files nor
/// another operator's, nor their environments. Needs root, as the feature
/// does (CI runs as root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_run_as_another_user_cannot_read_what_is_not_its_own() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: running operators as another user needs root");
        return;
    }
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    // Others may pass through the test's directory (as through /var/lib).
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::create_dir_all(dir.path().join("operators.d")).unwrap();
    // The bot, as uid 60001.
    std::fs::write(
        dir.path().join("operators.d/bot.toml"),
        format!(
            "{}user = \"60001\"\ngroup = \"60001\"\n",
            pingbot_manifest("bot"),
        ),
    )
    .unwrap();
    // The snoop, as uid 60002: tries to read everything it should not,
    // and its own files, and says what it could read.
    let snoop = "for f in run/switchboard.json run/nats-server.conf run/operators/bot/config.json \
                 run/operators/snoop/config.json state/operators/bot \"$SWITCHBOARD_STATE_DIR\"; do \
                 if cat \"$f\" >/dev/null 2>&1 || ls \"$f/\" >/dev/null 2>&1; \
                 then echo \"read $f\"; else echo \"denied $f\"; fi; done; \
                 for p in /proc/[0-9]*; do [ -O \"$p\" ] && continue; \
                 if tr '\\0' '\\n' < $p/environ >/dev/null 2>&1; then echo \"environ $p\"; fi; done 2>/dev/null; \
                 echo done; exec sleep 30";
    std::fs::write(
        dir.path().join("operators.d/snoop.toml"),
        format!(
            "id = \"snoop\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", {snoop:?}]\ncontrol = \"signals\"\n\
             user = \"60002\"\ngroup = \"60002\"\nworkdir = {:?}\nstop_timeout = \"1s\"\n",
            dir.path()
        ),
    )
    .unwrap();
    let d = DaemonConfig::new().start_in(dir).await;
    let bot = d.wait_running("bot").await;
    ping_answered(&d, "bot").await;
    let stat = std::fs::metadata(format!("/proc/{}", bot.pid.unwrap())).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(stat.uid(), 60001);

    let deadline = tokio::time::Instant::now() + WAIT;
    let lines = loop {
        let logs: switchboard_proto::api::LogsReply = d
            .bus
            .request_json("sb.api.logs", &json!({"id": "snoop", "lines": 100}), WAIT)
            .await
            .unwrap();
        let lines: Vec<String> = logs.lines.into_iter().map(|l| l.line).collect();
        if lines.iter().any(|l| l == "done") {
            break lines;
        }
        assert!(tokio::time::Instant::now() < deadline, "{lines:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    for denied in [
        "run/switchboard.json",
        "run/nats-server.conf",
        "run/operators/bot/config.json",
        "state/operators/bot",
    ] {
        assert!(
            lines.contains(&format!("denied {denied}")),
            "{denied}: {lines:?}"
        );
    }
    // Its own config and state are readable by it.
    assert!(
        lines.contains(&"read run/operators/snoop/config.json".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("read /") && l.ends_with("operators/snoop")),
        "{lines:?}"
    );
    // No other process's environment (the daemon's, the bot's).
    assert!(!lines.iter().any(|l| l.starts_with("environ")), "{lines:?}");
}

/// The CLI's login (the runtime file) is an administrator's, but it cannot
/// read operators' control requests (configs with secrets), answer the API
/// in the daemon's place, or pose as an operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_login_cannot_read_configs_or_pose_as_the_daemon() {
    let d = Daemon::start(&[("p.toml", pingbot_manifest("p"))]).await;
    d.wait_running("p").await;
    let mut ctl = d.bus.subscribe_raw("sb.ctl.>").await.unwrap();
    let mut api = d.bus.subscribe_raw("sb.api.>").await.unwrap();
    let mut everything = d.bus.subscribe_raw(">").await.unwrap();
    d.bus.sync().await.unwrap();
    let reply = d
        .ctl(Verb::Reload, "p", Some(json!({"listen": ["chat.#"]})))
        .await;
    assert!(reply.results[0].ok, "{reply:?}");
    d.status().await;
    let _ = d
        .bus
        .publish_json(
            "sb.op.p.heartbeat",
            &json!({"id": "p", "pid": 1, "seq": 1, "state": "running", "uptime_ms": 1,
                    "timestamp": "2026-01-01T00:00:00Z"}),
        )
        .await;
    d.bus.sync().await.unwrap();
    let quiet = |sub: &mut switchboard_bus::RawSubscription| {
        futures::FutureExt::now_or_never(sub.next())
            .flatten()
            .is_none()
    };
    assert!(quiet(&mut ctl), "the CLI read a control request");
    assert!(quiet(&mut api), "the CLI saw API requests");
    // A `>` subscription (`switchboard tail '#'`) is allowed, but the
    // server filters out what the CLI may not read.
    while let Some(Some(m)) = futures::FutureExt::now_or_never(everything.next()) {
        assert!(
            !m.subject.starts_with("sb.ctl.") && !m.subject.starts_with("sb.api."),
            "{}",
            m.subject
        );
    }
    // The server's log line reaches the daemon's log a moment later.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !d
        .log()
        .contains("Publish Violation - Subject \"sb.op.p.heartbeat\"")
    {
        assert!(tokio::time::Instant::now() < deadline, "{}", d.log());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every start and stop of an operator reloads the server's users, and a
/// reload makes nats-server forget which inbox replies it allowed. Control
/// acks must not depend on that: they go to the operator's own
/// `sb.op.<id>.ack.…`. Here one operator restarts all the time while
/// another is halted and resumed; every verb is acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_acks_survive_constant_user_reloads() {
    let churn = format!(
        "id = \"churn\"\ncommand = \"{}\"\nrestart = \"always\"\nheartbeat_interval = \"100ms\"\n\
         [backoff]\ninitial = \"1ms\"\nreset_after = \"1ms\"\n[crash_loop]\nmax_restarts = 100000\n\
         [config]\nfail_start_if_exists = \"/\"\n",
        switchboard_testkit::bin_path("switchboard-testop").display()
    );
    let d = Daemon::start(&[
        ("steady.toml", pingbot_manifest("steady")),
        ("churn.toml", churn),
    ])
    .await;
    d.wait_running("steady").await;
    // `churn` exits at once (its start fails), so users reload all the time.
    d.wait_for("churn", "restarting", |o| o.restarts > 3).await;
    let before = d.operator("churn").await.unwrap().restarts;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut round = 0;
    // At least 40 verbs, and at least 20 restarts (reloads) of `churn`
    // while they are in flight.
    while round < 40 || d.operator("churn").await.unwrap().restarts < before + 20 {
        assert!(tokio::time::Instant::now() < deadline, "churn stalled");
        round += 1;
        let verb = if round % 2 == 0 {
            Verb::Halt
        } else {
            Verb::Resume
        };
        let started = std::time::Instant::now();
        let reply = d.ctl(verb, "steady", None).await;
        assert!(
            reply.results.first().is_some_and(|o| o.ok),
            "round {round}: {verb} not acked after {:?}: {reply:?}",
            started.elapsed()
        );
    }
}
