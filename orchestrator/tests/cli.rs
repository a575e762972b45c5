//! The `switchboard` command line against a running daemon.

mod common;

use common::*;
use std::process::Command;

fn sb(d: &Daemon, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(d.config_path())
        .args(args)
        .output()
        .expect("run switchboard")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_ctl_logs_pub_and_validate() {
    let d = Daemon::start(&[("p1.toml", pingbot_manifest("p1"))]).await;
    d.wait_running("p1").await;

    let out = sb(&d, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("p1") && text.contains("running"), "{text}");
    assert!(
        !text.contains(d.info.password.as_deref().unwrap()),
        "password in status"
    );

    let out = sb(&d, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["operators"][0]["id"], "p1");

    let out = sb(&d, &["ctl", "halt", "p1"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("halt ok (halted)"));
    let out = sb(&d, &["ctl", "resume", "--all"]);
    assert!(out.status.success(), "{out:?}");
    let out = sb(&d, &["ctl", "halt", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no operator matches"));

    let out = sb(
        &d,
        &[
            "pub",
            "chat.t.x.y.message",
            r#"{"text":"!ping","sender":"a","room":"y"}"#,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let out = sb(&d, &["pub", "chat.t.x.y.message", "not json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be JSON"));

    let out = sb(&d, &["logs", "p1"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ready"),
        "{out:?}"
    );

    let broken = d.dir.path().join("broken.d");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("a.toml"), "id = \"a\"\ncomand = \"x\"\n").unwrap();
    std::fs::write(broken.join("b.toml"), "id = \"a\"\ncommand = \"x\"\n").unwrap();
    let out = sb(&d, &["validate", broken.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("a.toml:2:"), "{text}");
    let out = sb(&d, &["validate"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn client_commands_say_what_to_do_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let config = DaemonConfig::new().write(dir.path()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(config)
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is `switchboard run` running"), "{err}");
}

#[test]
fn help_and_completions() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "run",
        "status",
        "ctl",
        "logs",
        "tail",
        "pub",
        "chat",
        "validate",
        "completions",
    ] {
        assert!(text.contains(cmd), "--help lacks {cmd}: {text}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success() && out.stdout.len() > 1000);
}

/// A `switchboard tail` child with its output as lines; killed when dropped.
struct Tail {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

fn tail(d: &Daemon, args: &[&str]) -> Tail {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(d.config_path())
        .arg("tail")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("switchboard tail");
    let out = child.stdout.take().expect("stdout");
    Tail {
        child,
        lines: tokio::io::BufReader::new(out).lines(),
    }
}

impl Tail {
    /// The lines printed within `secs` seconds.
    async fn lines_for(&mut self, secs: f64) -> Vec<String> {
        let mut out = Vec::new();
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
        while let Ok(Ok(Some(l))) = tokio::time::timeout_at(until, self.lines.next_line()).await {
            out.push(l);
        }
        out
    }
}

async fn chat(d: &Daemon, text: &str) {
    let env = switchboard_bus::Envelope::new(
        "test",
        serde_json::json!({"text": text, "sender": "t", "room": "r"}),
    );
    d.bus
        .publish("chat.t.x.r.message", &env)
        .await
        .expect("publish");
    d.bus.flush().await.expect("flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_shows_envelopes_and_internal_subjects_only_when_asked() {
    let d = Daemon::start(&[("p1.toml", pingbot_manifest("p1"))]).await;
    d.wait_running("p1").await;
    let mut plain = tail(&d, &["#"]);
    let mut internal = tail(&d, &["--internal", "#"]);
    let mut named = tail(&d, &["sb.op.#"]);
    // Subscribed once each prints its first line: give them a moment.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    chat(&d, "hello tail").await;
    let (plain, internal, named) = (
        plain.lines_for(1.5).await,
        internal.lines_for(1.5).await,
        named.lines_for(1.5).await,
    );
    assert!(
        plain
            .iter()
            .any(|l| l.contains("chat.t.x.r.message") && l.contains("hello tail")),
        "{plain:?}"
    );
    let leaked: Vec<&String> = plain
        .iter()
        .filter(|l| !l.contains(" chat.") && !l.contains(" send."))
        .collect();
    assert!(
        leaked.is_empty(),
        "internal traffic in a plain tail: {leaked:?}"
    );
    // p1 heartbeats every 100 ms on sb.op.p1.heartbeat.
    assert!(
        internal.iter().any(|l| l.starts_with("sb.op.p1.")),
        "{internal:?}"
    );
    assert!(
        named.iter().any(|l| l.starts_with("sb.op.p1.")),
        "{named:?}"
    );
    assert!(
        !named.iter().any(|l| l.contains("not an envelope")),
        "{named:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_the_tail_without_a_panic() {
    let d = Daemon::start(&[("p1.toml", pingbot_manifest("p1"))]).await;
    d.wait_running("p1").await;
    let mut t = tail(&d, &["chat.#"]);
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    chat(&d, "one").await;
    let first = t.lines_for(3.0).await;
    assert!(!first.is_empty(), "tail printed nothing");
    // `| head -1`: the reader goes away, more comes.
    let Tail { mut child, lines } = t;
    drop(lines);
    for i in 0..20 {
        chat(&d, &format!("more {i}")).await;
    }
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("tail ends once its reader is gone")
        .expect("wait");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt as _;
        let _ = e.read_to_string(&mut err).await;
    }
    assert!(!err.contains("panicked"), "{err}");
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(
        status.signal(),
        Some(nix::libc::SIGPIPE),
        "{status:?} {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_is_in_place_unless_replace_and_the_first_start_is_no_crash() {
    let d = Daemon::start(&[("p1.toml", pingbot_manifest("p1"))]).await;
    let before = d.wait_running("p1").await;

    let out = sb(&d, &["logs", "p1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("p1 event: starting (first start)"), "{text}");
    assert!(!text.contains("exited -> starting"), "{text}");

    let out = sb(&d, &["ctl", "restart", "p1"]);
    assert!(out.status.success(), "{out:?}");
    let after = d.wait_running("p1").await;
    assert_eq!(after.pid, before.pid, "in place: the same process");
    assert_eq!(after.restarts, 0);

    let out = sb(&d, &["ctl", "restart", "--replace", "p1"]);
    assert!(out.status.success(), "{out:?}");
    let replaced = d.wait_running("p1").await;
    assert_ne!(replaced.pid, before.pid, "--replace: a new process");
    assert_eq!(replaced.restarts, 1);

    let out = sb(&d, &["ctl", "halt", "--replace", "p1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--replace goes with `restart`"));
}

#[test]
fn validate_takes_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, format!("id = \"g\"\ncommand = \"{}\"\n", pingbot())).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "id = \"b\"\ncomand = \"x\"\n").unwrap();
    let run = |p: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("validate")
            .arg(p)
            .output()
            .unwrap()
    };
    let out = run(&good);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 operator manifest(s) OK"));
    let out = run(&bad);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bad.toml:2:"), "{text}");
    assert!(!text.contains("Not a directory"), "{text}");
}

#[test]
fn without_a_config_the_error_names_the_flag_and_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .current_dir(dir.path())
        .env_remove("SWITCHBOARD_TOML")
        .env_remove("SWITCHBOARD_NATS_URL")
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--config FILE") && err.contains("SWITCHBOARD_TOML"),
        "{err}"
    );
}
