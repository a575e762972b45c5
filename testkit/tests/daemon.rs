//! The daemon harness itself: what its config writer writes is what the
//! daemon reads, and a dropped daemon (also one dropped by a panicking
//! test) leaves no process behind.

#![cfg(feature = "daemon")]

use std::path::Path;

use switchboard_orchestrator::config::Config;
use switchboard_testkit::daemon::{alive, gone, DaemonConfig, External};

/// Every typed option lands in the key the daemon's own loader reads.
#[test]
fn the_written_config_is_what_the_daemon_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = DaemonConfig::new()
        .manifest("p.toml", "id = \"p\"\ncommand = \"/bin/true\"\n")
        .embedded(|e| {
            e.binary = Some("/opt/a \"quoted\" nats-server".into());
            e.jetstream = Some(false);
            e.monitor_port = Some(8222);
            e.tls = Some(("c.pem".into(), "k.pem".into()));
        })
        .tls_ca("ca.pem")
        .stream("max_bytes", "24MiB")
        .sandbox("/nonexistent/bwrap", Some(true))
        .log_format("json")
        .write(dir.path())
        .unwrap();
    let c = Config::load_with_env(Some(&path), Vec::new()).expect("a valid config");
    let root = dir.path();
    assert_eq!(c.manifests_dir, root.join("operators.d"));
    assert_eq!(c.state_dir, root.join("state"));
    assert_eq!(c.runtime_dir, root.join("run"));
    let e = &c.nats.embedded;
    assert_eq!(e.port, 0);
    assert_eq!(
        e.binary.as_deref(),
        Some(Path::new("/opt/a \"quoted\" nats-server"))
    );
    assert!(!e.jetstream);
    assert_eq!(e.monitor_port, Some(8222));
    assert_eq!(e.tls_cert.as_deref(), Some(root.join("c.pem").as_path()));
    assert_eq!(
        c.nats.tls_ca.as_deref(),
        Some(root.join("ca.pem").as_path())
    );
    assert_eq!(c.stream.max_bytes.as_u64(), 24 * 1024 * 1024);
    assert!(c.sandbox.required);
    assert_eq!(c.sandbox.program, Path::new("/nonexistent/bwrap"));
    assert_eq!(format!("{:?}", c.log.format).to_lowercase(), "json");
    assert!(root.join("operators.d/p.toml").is_file());

    let external = DaemonConfig::new().external(External {
        url: "nats://127.0.0.1:4222".into(),
        user: Some("sb".into()),
        password_file: Some("secret".into()),
        ..External::default()
    });
    let path = external.write(dir.path()).unwrap();
    let c = Config::load_with_env(Some(&path), Vec::new()).expect("a valid config");
    assert_eq!(c.nats.url.as_deref(), Some("nats://127.0.0.1:4222"));
    assert_eq!(c.nats.user.as_deref(), Some("sb"));
    assert_eq!(
        c.nats.password_file.as_deref(),
        Some(root.join("secret").as_path())
    );
}

/// The pids of the daemon and its embedded nats-server.
async fn started() -> (u32, u32) {
    let d = DaemonConfig::new().start().await;
    let nats = d.nats_pid().expect("the embedded nats-server");
    assert!(alive(d.pid()) && alive(nats));
    (d.pid(), nats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_daemon_takes_its_nats_server_with_it() {
    let (daemon, nats) = started().await;
    gone(daemon).await;
    gone(nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_that_panics_leaves_no_daemon_behind() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let failing = tokio::spawn(async move {
        let d = DaemonConfig::new().start().await;
        let nats = d.nats_pid().expect("the embedded nats-server");
        tx.send((d.pid(), nats)).unwrap();
        panic!("a failing test");
    });
    assert!(failing.await.is_err(), "the task panicked");
    let (daemon, nats) = rx.await.unwrap();
    gone(daemon).await;
    gone(nats).await;
}
