//! The logger as a real process against a real nats-server with
//! JetStream: crashes, unwritable directories and server restarts lose no
//! acknowledged message and write none twice.

use std::collections::HashMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_bus::stream::{StreamSpec, DEFAULT_STREAM};
use switchboard_bus::{Bus, BusOptions, Envelope};
use switchboard_testkit::NatsServer;

const WAIT: Duration = Duration::from_secs(60);

fn spec() -> StreamSpec {
    StreamSpec {
        name: DEFAULT_STREAM.into(),
        max_age: Duration::from_secs(3600),
        max_bytes: 256 << 20,
        duplicate_window: Duration::from_secs(120),
        max_message_bytes: 0,
        replicas: 1,
    }
}

async fn bus(server: &NatsServer) -> Bus {
    // As an operator under a daemon that keeps the stream: envelope ids go
    // in the Nats-Msg-Id header, which the logger writes as `id`.
    let bus = Bus::connect(&BusOptions::new(&server.url()).stream_ids(true), "test")
        .await
        .expect("connect");
    bus.ensure_stream(&spec()).await.expect("stream");
    bus
}

struct Logger {
    child: Option<Child>,
    log: PathBuf,
}

impl Logger {
    fn start(
        server: &NatsServer,
        root: &Path,
        config: serde_json::Value,
        uid: Option<u32>,
    ) -> Logger {
        let log = root.join(format!("logger-{}.log", fastrand_suffix()));
        let mut cmd = Command::new(switchboard_testkit::bin_path("switchboard-logger"));
        cmd.env_clear()
            .env("SWITCHBOARD_ID", "logger")
            .env("SWITCHBOARD_NATS_URL", server.url())
            .env("SWITCHBOARD_STREAM", DEFAULT_STREAM)
            .env("SWITCHBOARD_STATE_DIR", root.join("state"))
            .env("SWITCHBOARD_HEARTBEAT_MS", "200")
            .env("SWITCHBOARD_CONFIG", config.to_string())
            .env("SWITCHBOARD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt as _;
            cmd.uid(uid).gid(uid);
        }
        Logger {
            child: Some(cmd.spawn().expect("spawn switchboard-logger")),
            log,
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- logger stderr ----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        self.kill();
    }
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn ids_in(dir: &Path) -> HashMap<String, usize> {
    switchboard_logger::read::ids(dir)
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config(dir: &Path) -> serde_json::Value {
    serde_json::json!({ "dir": dir, "subjects": ["chat.#"], "batch": 200 })
}

fn envelope(i: usize) -> Envelope {
    Envelope::new(
        "test",
        serde_json::json!({ "sender": "ann", "text": format!("line {i}"), "private": false }),
    )
    .with_header("id", format!("msg-{i:06}"))
}

/// Every id exactly once: none missing, none twice.
fn assert_exactly_once(dir: &Path, ids: &[String]) {
    let found = ids_in(dir);
    let missing: Vec<&String> = ids.iter().filter(|i| !found.contains_key(*i)).collect();
    let twice: Vec<(&String, &usize)> = found.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty(),
        "{} missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert!(
        twice.is_empty(),
        "{} written more than once, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    assert_eq!(found.len(), ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_a_burst_loses_and_repeats_nothing() {
    let server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("logs");
    let mut logger = Logger::start(&server, root.path(), config(&dir), None);
    let ids: Vec<String> = (0..10_000).map(|i| format!("msg-{i:06}")).collect();
    for i in 0..10_000 {
        bus.publish("chat.test.net.room.message", &envelope(i))
            .await
            .unwrap();
    }
    bus.flush().await.unwrap();
    wait_until("a part of the burst on disk", || {
        ids_in(&dir).len() >= 2_000
    })
    .await;
    logger.kill();
    let before = ids_in(&dir).len();
    assert!(
        before < 10_000,
        "the kill came too late to test anything ({before})"
    );
    let _again = Logger::start(&server, root.path(), config(&dir), None);
    wait_until("the whole burst on disk", || ids_in(&dir).len() >= 10_000).await;
    // A moment more: a line written twice would show now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_exactly_once(&dir, &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_directory_holds_messages_in_the_stream_until_it_is_writable() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(root.path().join("state")).unwrap();
    // Root writes anywhere: as root, the logger runs as `nobody` so that
    // the permission bits bite.
    let uid = nix::unistd::Uid::effective().is_root().then_some(65_534);
    if let Some(uid) = uid {
        for p in [root.path(), &dir, &root.path().join("state")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
            nix::unistd::chown(
                p,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(uid)),
            )
            .unwrap();
        }
    }
    let mut heartbeats = bus.subscribe_raw("sb.op.logger.heartbeat").await.unwrap();
    let _logger = Logger::start(&server, root.path(), config(&dir), uid);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let ids: Vec<String> = (0..1_000).map(|i| format!("msg-{i:06}")).collect();
    for i in 0..1_000 {
        bus.publish("chat.test.net.room.message", &envelope(i))
            .await
            .unwrap();
    }
    bus.flush().await.unwrap();
    // It says so in its heartbeat, and writes nothing.
    let deadline = Instant::now() + WAIT;
    loop {
        use futures::StreamExt as _;
        let msg = tokio::time::timeout_at(deadline.into(), heartbeats.next())
            .await
            .expect("a degraded heartbeat")
            .expect("heartbeats");
        let hb: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        if hb["health"] == "degraded" {
            let reason = hb["health_reason"].as_str().unwrap_or("");
            assert!(reason.contains("ermission denied"), "{reason}");
            break;
        }
    }
    assert!(ids_in(&dir).is_empty());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    wait_until("the held messages on disk", || ids_in(&dir).len() >= 1_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_exactly_once(&dir, &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_the_stream_acknowledged_survives_a_server_sigkill() {
    let mut server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("logs");
    let mut logger = Logger::start(&server, root.path(), config(&dir), None);
    let mut acked = Vec::new();
    let mut i = 0;
    let mut killed = false;
    while acked.len() < 3_000 {
        if acked.len() == 1_000 && !killed {
            server.kill();
            killed = true;
            // Publishes fail while it is down; they are not acknowledged
            // and so not promised. Back after a moment.
            tokio::time::sleep(Duration::from_millis(300)).await;
            server.restart().expect("restart nats-server");
        }
        let env = envelope(i);
        match tokio::time::timeout(
            Duration::from_secs(2),
            bus.publish_stored("chat.test.net.room.message", &env),
        )
        .await
        {
            Ok(Ok(_)) => acked.push(format!("msg-{i:06}")),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        i += 1;
    }
    wait_until("every acknowledged message on disk", || {
        let found = ids_in(&dir);
        acked.iter().all(|id| found.contains_key(id))
    })
    .await;
    let found = ids_in(&dir);
    assert!(found.values().all(|n| *n == 1), "a line was written twice");
    logger.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_line_in_an_existing_file_does_not_stop_it() {
    let server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("logs");
    let env = envelope(1);
    let stored = bus
        .publish_stored("chat.test.net.room.message", &env)
        .await
        .unwrap();
    assert!(stored > 0);
    // The file it will append to already has garbage, without a newline.
    let date = switchboard_logger::layout::date_of(switchboard_proto::Timestamp::now());
    let file = dir.join("test.net/room").join(format!("{date}.jsonl"));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"{not json\x00\xff").unwrap();
    let _logger = Logger::start(&server, root.path(), config(&dir), None);
    wait_until("the message on disk", || {
        ids_in(&dir).contains_key("msg-000001")
    })
    .await;
    let text = std::fs::read(&file).unwrap();
    assert!(text.starts_with(b"{not json\x00\xff"));
    for i in 2..5 {
        bus.publish("chat.test.net.room.message", &envelope(i))
            .await
            .unwrap();
    }
    wait_until("later messages too", || ids_in(&dir).len() == 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_format_reads_like_a_chat_log() {
    let server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("logs");
    let cfg = serde_json::json!({ "dir": dir, "format": "text", "subjects": ["chat.#"] });
    let _logger = Logger::start(&server, root.path(), cfg, None);
    let env = Envelope::new(
        "irc-x",
        serde_json::json!({ "sender": "ann", "text": "hello\nworld", "private": false }),
    )
    .with_header("id", "t1");
    bus.publish("chat.irc.x.=23rust.message", &env)
        .await
        .unwrap();
    let date = switchboard_logger::layout::date_of(switchboard_proto::Timestamp::now());
    let file = dir.join("irc.x/#rust").join(format!("{date}.log"));
    wait_until("the text line", || file.exists()).await;
    let line = std::io::BufReader::new(std::fs::File::open(&file).unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    assert!(line.ends_with("] <ann> hello\\nworld"), "{line}");
    assert!(line.starts_with('['), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_rotate_by_size_and_closed_ones_are_gzipped() {
    let server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("logs");
    // A file of a past day, left uncompressed (the logger was down at
    // midnight): gzipped at start.
    let old = dir.join("test.net/room/2026-01-01.jsonl");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    std::fs::write(&old, "{\"id\":\"old-1\"}\n").unwrap();
    let yesterday = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(yesterday)
        .unwrap();
    let cfg = serde_json::json!({
        "dir": dir, "subjects": ["chat.#"], "rotate_size": "4KiB", "batch": 20
    });
    let _logger = Logger::start(&server, root.path(), cfg, None);
    let ids: Vec<String> = (0..300).map(|i| format!("msg-{i:06}")).collect();
    for i in 0..300 {
        bus.publish("chat.test.net.room.message", &envelope(i))
            .await
            .unwrap();
    }
    bus.flush().await.unwrap();
    wait_until("every message on disk", || ids_in(&dir).len() >= 301).await;
    let names: Vec<String> = std::fs::read_dir(old.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"2026-01-01.jsonl.gz".to_owned()),
        "{names:?}"
    );
    assert!(!names.contains(&"2026-01-01.jsonl".to_owned()), "{names:?}");
    let rotated = names.iter().filter(|n| n.ends_with(".jsonl.gz")).count();
    assert!(
        rotated >= 5,
        "300 lines of ~300 B in 4 KiB files: {names:?}"
    );
    let mut all = ids.clone();
    all.push("old-1".into());
    assert_exactly_once(&dir, &all);
}
