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
    std::fs::write(
        dir.path().join("switchboard.toml"),
        "runtime_dir = \"run\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(dir.path().join("switchboard.toml"))
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
