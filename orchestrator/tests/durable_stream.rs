//! The durable stream end to end, through a real daemon: `logs` after a
//! daemon restart, `replay` of a time window, and the logger operator
//! under the daemon with only its `stream = ["consume"]` grant.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{path_str, Daemon, DaemonConfig, WAIT};
use futures::StreamExt as _;
use switchboard_bus::Envelope;

/// `switchboard <args> --config <the daemon's>`: stdout, stderr, success.
fn cli(d: &Daemon, args: &[&str]) -> (String, String, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .arg("--config")
        .arg(d.config_path())
        .output()
        .expect("run switchboard");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn chatty(id: &str, enabled: bool) -> String {
    format!(
        "id = \"{id}\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"echo said-on-stderr-{id} >&2; exec sleep 300\"]\n\
         control = \"signals\"\nenabled = {enabled}\nstop_timeout = \"1s\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_come_from_the_stream_after_a_daemon_restart() {
    let mut d = Daemon::start(&[("chatty.toml", chatty("chatty", true))]).await;
    eventually("the stderr line in `logs`", || {
        cli(&d, &["logs", "chatty"])
            .0
            .contains("said-on-stderr-chatty")
    })
    .await;
    // Disabled in the next daemon: its lines can only come from the stream.
    d.write_manifest("chatty.toml", &chatty("chatty", false));
    d.restart().await;
    let (out, err, ok) = cli(&d, &["logs", "chatty"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("stderr: said-on-stderr-chatty"),
        "{out}\n{err}"
    );
    // Lifecycle events are there too, and `--since` narrows the window.
    // (The first start reads as such, not as `exited -> running`.)
    assert!(out.contains("event: running (first start)"), "{out}");
    assert!(out.contains("-> disabled"), "{out}");
    let (recent, _, _) = cli(&d, &["logs", "chatty", "--since", "1ms"]);
    assert!(!recent.contains("said-on-stderr"), "{recent}");
    let (bad, err, ok) = cli(&d, &["logs", "chatty", "--since", "yesterday"]);
    assert!(!ok && bad.is_empty(), "{bad}");
    assert!(err.contains("neither a duration ago"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_returns_exactly_a_time_window_and_republishes_with_the_same_ids() {
    let d = DaemonConfig::new().start().await;
    let subject = "chat.test.net.room.message";
    let publish = |tag: &'static str| {
        let bus = d.bus.clone();
        async move {
            for i in 0..3 {
                let env = Envelope::new("test", serde_json::json!({"text": format!("{tag}-{i}")}))
                    .with_header("id", format!("{tag}-{i}"));
                bus.publish_stored(subject, &env).await.expect("stored");
            }
        }
    };
    publish("before").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t1 = switchboard_proto::Timestamp::now().to_string();
    publish("inside").await;
    let t2 = switchboard_proto::Timestamp::now().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish("after").await;

    let (out, err, ok) = cli(
        &d,
        &["replay", "chat.#", "--since", &t1, "--until", &t2, "--json"],
    );
    assert!(ok, "{err}");
    let ids: Vec<String> = out
        .lines()
        .map(|l| {
            // One object per line: the subject and the envelope.
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON per line");
            assert!(
                v["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("chat.")),
                "{l}"
            );
            let env = Envelope::from_slice(v["envelope"].to_string().as_bytes())
                .expect("an envelope per line");
            env.id().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids, ["inside-0", "inside-1", "inside-2"], "{out}");

    let mut again = d
        .bus
        .subscribe_raw("chat.replayed.x.y.message")
        .await
        .unwrap();
    d.bus.sync().await.unwrap();
    let (_, err, ok) = cli(
        &d,
        &[
            "replay",
            "chat.test.#",
            "--since",
            &t1,
            "--until",
            &t2,
            "--to",
            "chat.replayed.x.y.message",
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains("republished 3 envelope(s)"), "{err}");
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = tokio::time::timeout(WAIT, again.next())
            .await
            .unwrap()
            .unwrap();
        got.push(
            Envelope::from_slice(&m.payload)
                .unwrap()
                .id()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(got, ["inside-0", "inside-1", "inside-2"]);
}

fn logger_manifest(dir: &std::path::Path, grant: bool) -> String {
    format!(
        "id = \"logger\"\ncommand = \"{}\"\npublish = []\nsubscribe = []\n{}\
         heartbeat_interval = \"200ms\"\n\
         # Its output dir, writable in its sandbox.\nsandbox_binds_rw = [\"{}\"]\n\n\
         [config]\ndir = \"{}\"\n",
        switchboard_testkit::bin_path("switchboard-logger").display(),
        if grant {
            "stream = [\"consume\"]\n"
        } else {
            ""
        },
        path_str(dir),
        path_str(dir)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logger_under_the_daemon_needs_its_stream_grant_and_nothing_more() {
    let logs = tempfile::tempdir().unwrap();
    let d = Daemon::start(&[("logger.toml", logger_manifest(logs.path(), true))]).await;
    d.wait_running("logger").await;
    let env = Envelope::new("test", serde_json::json!({"sender": "ann", "text": "kept"}))
        .with_header("id", "kept-1");
    d.bus
        .publish("chat.test.net.room.message", &env)
        .await
        .unwrap();
    let date = {
        let t = switchboard_proto::Timestamp::now()
            .as_offset_date_time()
            .date();
        format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
    };
    let chat_file = logs
        .path()
        .join("test.net/room")
        .join(format!("{date}.jsonl"));
    eventually("the chat line on disk", || {
        std::fs::read_to_string(&chat_file).is_ok_and(|t| t.contains("\"kept-1\""))
    })
    .await;
    // Status says how full the stream is, and who reads it.
    let stream = d.status().await.stream.expect("stream in status");
    assert_eq!(stream.name, "SWITCHBOARD");
    assert!(stream.messages >= 1 && stream.consumers == 1, "{stream:?}");
    assert!(stream.error.is_none(), "{stream:?}");
    // Its own output and lifecycle went through the stream as well.
    let own = logs
        .path()
        .join("switchboard/logger")
        .join(format!("{date}.jsonl"));
    eventually("the logger's own lines on disk", || {
        std::fs::read_to_string(&own).is_ok_and(|t| t.contains("sb.event.logger"))
    })
    .await;

    // Without the grant the server refuses its consumer: it cannot start,
    // and says why.
    d.write_manifest("logger.toml", &logger_manifest(logs.path(), false));
    d.signal(nix::sys::signal::Signal::SIGHUP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, err, ok) = cli(&d, &["ctl", "restart", "--replace", "logger"]);
    assert!(ok, "{err}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (out, _, _) = cli(&d, &["logs", "logger", "-n", "50"]);
        if out.contains("ermission") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no permission error in:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Rust operator's `tracing` output reaches the bus as fields (and a
/// readable line), without the operator doing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_operators_log_structured_fields() {
    let d = Daemon::start(&[("bot.toml", common::pingbot_manifest("bot"))]).await;
    d.wait_running("bot").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (out, _, _) = cli(&d, &["logs", "bot"]);
        if out.contains("INFO operator{id=bot}: ready") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no readable ready line in:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply: switchboard_proto::api::LogsReply = d
        .bus
        .request_json(
            "sb.api.logs",
            &switchboard_proto::api::LogsRequest {
                id: "bot".into(),
                lines: 100,
            },
            WAIT,
        )
        .await
        .unwrap();
    let ready = reply
        .lines
        .iter()
        .find(|l| l.line.ends_with(": ready"))
        .expect("the ready line");
    let fields = ready.fields.as_ref().expect("structured");
    assert_eq!(fields["level"], "INFO");
    assert_eq!(fields["fields"]["message"], "ready");
    assert_eq!(fields["spans"][0]["id"], "bot");
}

/// `logs -f`: what the stream has, then new lines as they come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_shows_history_then_new_lines() {
    use tokio::io::AsyncBufReadExt as _;
    let d = Daemon::start(&[("chatty.toml", chatty("chatty", true))]).await;
    eventually("the first line in `logs`", || {
        cli(&d, &["logs", "chatty"])
            .0
            .contains("said-on-stderr-chatty")
    })
    .await;
    let mut follow = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["logs", "chatty", "-f", "--config"])
        .arg(d.config_path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut said = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while said < 2 {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("lines while following")
            .unwrap()
            .expect("output");
        if line.contains("said-on-stderr-chatty") {
            said += 1;
            if said == 1 {
                // History is out; a restart prints the line again, live.
                let (_, err, ok) = cli(&d, &["ctl", "restart", "chatty"]);
                assert!(ok, "{err}");
            }
        }
    }
}
