//! `switchboard run` against an external NATS (`[nats] url`): a real
//! nats-server from testkit with TLS, a token, nkeys or JWTs, a real
//! daemon and the real ping bot.
//!
//! What must hold: the daemon gets in with the credentials `[nats]` names
//! and says plainly why when it cannot; the CLI gets in with what the
//! daemon wrote to its runtime file; an operator gets the URL, the TLS CA
//! and only its manifest's own credentials (`nats_nkey`, `nats_creds`),
//! never the daemon's.
//!
//! The daemon is the testkit's, with `[nats]` naming the test's server.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use switchboard_bus::{Bus, BusOptions, ConnectError, Pattern};
use switchboard_proto::api::{OperatorStatus, StatusReply, StatusRequest, SupervisedState};
use switchboard_proto::{launch, ChatAddress};
use switchboard_testkit::daemon::{Daemon, DaemonConfig, External};
use switchboard_testkit::{JwtOperator, NatsServer, NatsServerOptions, NkeyUser, TestCa};

/// Upper bound for any wait; the tests themselves take a second or two.
const WAIT: Duration = Duration::from_secs(10);

/// How fast a daemon that cannot get in must give up: a refusal is
/// final, so anything near the client's 10 s connect timeout means it
/// retried instead.
const GIVES_UP_WITHIN: Duration = Duration::from_secs(4);

/// A TOML basic string (JSON's escapes are TOML's).
fn toml_str(s: impl AsRef<str>) -> String {
    serde_json::to_string(s.as_ref()).expect("a string serialises")
}

fn path_toml(p: &Path) -> String {
    toml_str(p.display().to_string())
}

fn pingbot() -> PathBuf {
    switchboard_testkit::bin_path("switchboard-pingbot")
}

/// The ping bot with fast health timings and `extra` top-level keys
/// (credentials).
fn pingbot_manifest(id: &str, extra: &str) -> String {
    format!(
        "id = \"{id}\"\ncommand = {}\nheartbeat_interval = \"100ms\"\nmissed_heartbeats = 3\n\
         ready_timeout = \"5s\"\nstop_timeout = \"2s\"\n{extra}",
        path_toml(&pingbot())
    )
}

/// A file the daemon reads a secret from (mode 0600, as it would be).
fn secret_file(dir: &tempfile::TempDir, name: &str, content: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, format!("{content}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

/// A config on the external server at `url`.
fn external(url: String, change: impl FnOnce(&mut External)) -> DaemonConfig {
    let mut nats = External {
        url,
        ..External::default()
    };
    change(&mut nats);
    DaemonConfig::new().external(nats)
}

/// Run a daemon that must fail: its exit status, its stderr and how
/// long it took; it must leave no runtime file.
async fn run_to_exit(config: DaemonConfig) -> (ExitStatus, String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = config.run_to_exit(dir.path()).await;
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !dir.path().join("run/switchboard.json").exists(),
        "a daemon that could not connect left a runtime file: {stderr}"
    );
    (out.status, stderr, took)
}

/// The operator's last lines, from the daemon's `logs` API.
async fn logs(d: &Daemon, id: &str) -> String {
    let reply = d.logs(id, 100).await.expect("logs");
    let lines: Vec<String> = reply.lines.into_iter().map(|l| l.line).collect();
    lines.join("\n")
}

/// The launch environment of process `pid` (what it was exec'd with).
fn environ(pid: u32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_else(|e| panic!("cannot read the environment of {pid}: {e}"));
    raw.split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn env_value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The file a launch variable names, as an absolute path without `..`
/// (a manifest's relative path is joined to its directory as is).
fn same_file(value: Option<&str>) -> Option<PathBuf> {
    let path = Path::new(value?);
    assert!(path.is_absolute(), "{}", path.display());
    Some(std::fs::canonicalize(path).expect("the file exists"))
}

/// `env` holds none of the daemon's credentials: no password or token
/// variable, and `secret` in no value.
fn assert_no_daemon_secret(env: &[(String, String)], secret: &str) {
    for name in [launch::NATS_USER, launch::NATS_PASSWORD, launch::NATS_TOKEN] {
        assert_eq!(env_value(env, name), None, "{name} given: {env:?}");
    }
    for (k, v) in env {
        assert!(!v.contains(secret), "the daemon's secret is in {k}");
    }
}

/// Send `!ping` in a room through `bus` until operator `id` answers
/// `pong` there.
async fn ping_round_trip(bus: &Bus, id: &str) {
    let room = ChatAddress::new("t", bus.source(), "room");
    let mut replies = bus
        .subscribe(&Pattern::parse("send.t.#").unwrap())
        .await
        .unwrap();
    bus.sync().await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let body = json!({"text": "!ping", "sender": "t", "room": room.room});
        bus.send(&room.event_subject("message"), body)
            .await
            .unwrap();
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(300), replies.next()).await
        {
            if r.envelope().source == id {
                assert_eq!(r.envelope().body["text"], "pong", "{:?}", r.envelope());
                return;
            }
        }
        assert!(Instant::now() < deadline, "{id} never answered !ping");
    }
}

/// Prints the server's log if the test fails: a client only hears
/// "authorization violation", the server says why.
struct ServerLogOnPanic<'a>(&'a NatsServer);

impl Drop for ServerLogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- nats-server log ----\n{}---- end of nats-server log ----",
                self.0.log()
            );
        }
    }
}

fn tls_server() -> NatsServer {
    NatsServer::start_with(NatsServerOptions {
        tls: true,
        no_jetstream: true,
        ..Default::default()
    })
    .expect("nats-server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_with_its_ca_daemon_cli_and_pingbot_connect() {
    let server = tls_server();
    let _log = ServerLogOnPanic(&server);
    let ca = server.ca_file().expect("a CA");
    let d = external(server.url(), |_| {})
        .tls_ca(&ca)
        .manifest("p1.toml", pingbot_manifest("p1", ""))
        .start()
        .await;

    // The server takes nothing but TLS, so every connection below is one.
    let plain = Bus::connect(
        &BusOptions::new(&server.url()).connect_timeout(Duration::from_secs(2)),
        "t",
    )
    .await
    .expect_err("without the CA nothing gets in");
    assert!(matches!(plain, ConnectError::Tls { .. }), "{plain:?}");

    // The runtime file: the URL and the CA, and nothing secret to give.
    assert_eq!(d.info.url, server.url());
    assert_eq!(d.info.tls_ca.as_deref(), Some(ca.as_path()));
    assert_eq!(d.info.password, None);
    assert_eq!(d.info.token, None);

    let op = d.wait_running("p1").await;
    let env = environ(op.pid.expect("a pid"));
    assert_eq!(
        env_value(&env, launch::NATS_URL),
        Some(server.url().as_str())
    );
    assert_eq!(
        env_value(&env, launch::NATS_TLS_CA),
        Some(ca.display().to_string().as_str())
    );
    assert_eq!(
        env_value(&env, launch::NATS_INBOX_PREFIX),
        Some("_INBOX_p1")
    );
    ping_round_trip(&d.bus, "p1").await;

    let status = d.status().await;
    assert!(!status.nats_embedded);
    assert_eq!(status.nats_url, server.url());
    // The CLI reads the same runtime file.
    let out = d.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("p1") && text.contains("running"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_with_another_ca_daemon_exits_naming_the_ca_file() {
    let server = tls_server();
    let _log = ServerLogOnPanic(&server);
    let stranger = TestCa::new().expect("openssl");
    let (status, stderr, took) =
        run_to_exit(external(server.url(), |_| {}).tls_ca(stranger.ca_file())).await;
    assert!(!status.success(), "{status}: {stderr}");
    assert!(took < GIVES_UP_WITHIN, "took {took:?}: {stderr}");
    let ca = stranger.ca_file().display().to_string();
    let line = last_word(&stderr);
    for word in [
        "TLS",
        "certificate",
        "not signed by the CA",
        &ca,
        &server.url(),
    ] {
        assert!(line.contains(word), "`{word}` missing from: {line}");
    }
    assert_eq!(line.matches(&server.url()).count(), 1, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_server_daemon_gets_in_operators_never_get_its_token() {
    let token = format!("sb-test-token-{}", nuid_like());
    let server = NatsServer::start_with(NatsServerOptions {
        token: Some(token.clone()),
        no_jetstream: true,
        ..Default::default()
    })
    .expect("nats-server");
    let _log = ServerLogOnPanic(&server);
    let dir = tempfile::tempdir().unwrap();
    let token_file = secret_file(&dir, "token", &token);
    // A shell that waits before becoming the ping bot, so the launch
    // environment can be read before the bot fails to connect and exits.
    let p1 = (
        "p1.toml",
        format!(
            "id = \"p1\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"sleep 0.5; exec \\\"$0\\\"\", {}]\n\
             ready_timeout = \"5s\"\nstop_timeout = \"2s\"\n",
            path_toml(&pingbot())
        ),
    );
    assert!(token_file.is_file());
    // Relative to the config file's directory.
    let d = external(server.url(), |n| n.token_file = Some("token".into()))
        .manifests(&[p1])
        .start_in(dir)
        .await;
    assert_eq!(d.info.token.as_deref(), Some(token.as_str()));
    assert!(d.status().await.operators.iter().any(|o| o.id == "p1"));
    let out = d.cli(&["status"]);
    assert!(out.status.success(), "the CLI with the token: {out:?}");

    let was_running = std::cell::Cell::new(false);
    let seen = |o: &OperatorStatus| {
        was_running.set(was_running.get() || o.state == SupervisedState::Running)
    };
    let first = d
        .wait_for("p1", "a process", |o| {
            seen(o);
            o.pid.is_some()
        })
        .await;
    let env = environ(first.pid.unwrap());
    assert_eq!(
        env_value(&env, launch::NATS_URL),
        Some(server.url().as_str())
    );
    assert_no_daemon_secret(&env, &token);

    // Without credentials of its own the bot is refused, exits, and is
    // started again; it never gets to run.
    let after = d
        .wait_for("p1", "a failed start and a restart", |o| {
            seen(o);
            o.restarts >= 1 && o.last_exit.is_some()
        })
        .await;
    assert!(!was_running.get(), "p1 ran without credentials: {after:?}");
    assert_ne!(after.state, SupervisedState::Running, "{after:?}");
    let exit = after.last_exit.clone().unwrap_or_default();
    assert!(exit.contains("exited with"), "{after:?}");
    let logs = logs(&d, "p1").await;
    assert!(
        logs.contains("refused the credentials (no credentials given)"),
        "{logs}"
    );
    assert!(!logs.contains(&token), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_server_wrong_token_daemon_exits_with_authorization() {
    let server = NatsServer::start_with(NatsServerOptions {
        token: Some(format!("sb-test-token-{}", nuid_like())),
        no_jetstream: true,
        ..Default::default()
    })
    .expect("nats-server");
    let _log = ServerLogOnPanic(&server);
    let wrong = "not-the-token-0451";
    let (status, stderr, took) = run_to_exit(
        external(server.url(), |n| {
            n.token_env = Some("SB_TEST_NATS_TOKEN".into());
        })
        .env("SB_TEST_NATS_TOKEN", wrong),
    )
    .await;
    assert!(!status.success(), "{status}: {stderr}");
    assert!(took < GIVES_UP_WITHIN, "took {took:?}: {stderr}");
    let line = last_word(&stderr);
    for word in [
        "refused the credentials",
        "a token",
        "authorization violation",
        &server.url(),
    ] {
        assert!(line.contains(word), "`{word}` missing from: {line}");
    }
    assert!(!stderr.contains(wrong), "the token is in the log: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_users_and_a_daemon_password_on_one_server() {
    let bot = NkeyUser::new();
    let client = NkeyUser::new();
    let password = format!("sb-test-password-{}", nuid_like());
    let server = NatsServer::start_with(NatsServerOptions {
        user_password: Some(("switchboard".into(), password.clone())),
        nkeys: vec![bot.public_key().into(), client.public_key().into()],
        no_jetstream: true,
        ..Default::default()
    })
    .expect("nats-server");
    let _log = ServerLogOnPanic(&server);
    let dir = tempfile::tempdir().unwrap();
    let password_file = secret_file(&dir, "password", &password);
    let bot_seed = dir.path().join("p1.nk");
    bot.write_seed_file(&bot_seed).unwrap();
    let client_seed = dir.path().join("client.nk");
    client.write_seed_file(&client_seed).unwrap();
    // Relative to the manifest's directory.
    let d = external(server.url(), |n| {
        n.user = Some("switchboard".into());
        n.password_file = Some(password_file);
    })
    .manifest(
        "p1.toml",
        pingbot_manifest("p1", "nats_nkey = \"../p1.nk\"\n"),
    )
    .start_in(dir)
    .await;

    let op = d.wait_running("p1").await;
    let env = environ(op.pid.unwrap());
    assert_eq!(
        same_file(env_value(&env, launch::NATS_NKEY)),
        Some(std::fs::canonicalize(&bot_seed).unwrap())
    );
    assert_eq!(env_value(&env, launch::NATS_CREDS), None);
    assert_no_daemon_secret(&env, &password);

    // Another nkey user talks to the bot: no daemon credentials involved.
    let other = Bus::connect(
        &BusOptions::new(&server.url()).nkey_file(&client_seed),
        "client",
    )
    .await
    .expect("the second nkey user gets in");
    ping_round_trip(&other, "p1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_operator_mode_daemon_and_pingbot_use_their_own_creds() {
    let op = JwtOperator::new("switchboard-test").expect("JWTs");
    let server = NatsServer::start_with(NatsServerOptions {
        extra_config: op.server_config(),
        no_jetstream: true,
        ..Default::default()
    })
    .expect("nats-server in operator mode");
    let _log = ServerLogOnPanic(&server);
    let dir = tempfile::tempdir().unwrap();
    let daemon_creds = dir.path().join("switchboard.creds");
    op.user("switchboard")
        .unwrap()
        .write_creds_file(&daemon_creds)
        .unwrap();
    let bot_creds = dir.path().join("p1.creds");
    op.user("p1").unwrap().write_creds_file(&bot_creds).unwrap();
    // Both relative: to the manifest's directory and to the config's.
    let d = external(server.url(), |n| {
        n.creds_file = Some("switchboard.creds".into());
    })
    .manifest(
        "p1.toml",
        pingbot_manifest("p1", "nats_creds = \"../p1.creds\"\n"),
    )
    .start_in(dir)
    .await;
    assert_eq!(d.info.creds_file.as_deref(), Some(daemon_creds.as_path()));
    let out = d.cli(&["status"]);
    assert!(out.status.success(), "the CLI with the creds file: {out:?}");

    let running = d.wait_running("p1").await;
    let env = environ(running.pid.unwrap());
    assert_eq!(
        same_file(env_value(&env, launch::NATS_CREDS)),
        Some(std::fs::canonicalize(&bot_creds).unwrap())
    );
    assert_eq!(env_value(&env, launch::NATS_NKEY), None);
    let daemon_creds = daemon_creds.display().to_string();
    for (k, v) in &env {
        assert!(!v.contains(&daemon_creds), "the daemon's creds in {k}");
    }
    ping_round_trip(&d.bus, "p1").await;

    // A user of another operator is refused, and the daemon says so.
    let stranger = JwtOperator::new("stranger").expect("JWTs");
    let elsewhere = tempfile::tempdir().unwrap();
    let creds = elsewhere.path().join("stranger.creds");
    stranger
        .user("switchboard")
        .unwrap()
        .write_creds_file(&creds)
        .unwrap();
    let (status, stderr, took) = run_to_exit(external(server.url(), |n| {
        n.creds_file = Some(creds.clone())
    }))
    .await;
    assert!(!status.success(), "{status}: {stderr}");
    assert!(took < GIVES_UP_WITHIN, "took {took:?}: {stderr}");
    let line = last_word(&stderr);
    for word in [
        "refused the credentials",
        "authorization violation",
        &creds.display().to_string(),
    ] {
        assert!(line.contains(word), "`{word}` missing from: {line}");
    }
}

/// The daemon's last word before a failed exit: one line, `switchboard:
/// <what failed>: <why>`, after whatever it logged.
fn last_word(stderr: &str) -> &str {
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("switchboard: "),
        "the last line is not the error: {stderr}"
    );
    last
}

/// A short unique suffix for secrets, so a leak check cannot match
/// anything by chance.
fn nuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:x}", std::process::id(), nanos)
}

/// A chatty operator during a NATS outage: its output lines wait in the
/// daemon's bounded queue (the oldest shed and counted), nothing waits for
/// the bus, so a crashed operator is still restarted and SIGTERM still
/// stops everything promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_operator_during_an_outage_stalls_nothing() {
    let mut server = NatsServer::start_with(NatsServerOptions::default()).expect("nats-server");
    let mut d = external(server.url(), |_| {})
        .manifest(
        "chatty.toml",
        "id = \"chatty\"\ncommand = \"/bin/sh\"\ncontrol = \"signals\"\nstop_timeout = \"1s\"\n\
         args = [\"-c\", \"while :; do echo line-of-output-from-a-chatty-operator; done\"]\n",
    )
    .manifest(
        "crashy.toml",
        "id = \"crashy\"\ncommand = \"/bin/sh\"\ncontrol = \"signals\"\nrestart = \"always\"\n\
         args = [\"-c\", \"sleep 0.3\"]\n[backoff]\ninitial = \"10ms\"\nreset_after = \"10ms\"\n\
         [crash_loop]\nmax_restarts = 1000\n",
    )
    .start()
    .await;
    d.wait_running("chatty").await;
    let restarts_before = d.operator("crashy").await.unwrap().restarts;

    // The bus goes away for a while: the chatty operator keeps writing,
    // `crashy` keeps crashing.
    server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart().expect("nats-server back on its port");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Ok(s) = d
            .bus
            .request_json::<_, StatusReply>(
                "sb.api.status",
                &StatusRequest {},
                Duration::from_secs(1),
            )
            .await
        {
            break s;
        }
        assert!(Instant::now() < deadline, "the daemon never answered again");
    };
    let crashy = status.operators.iter().find(|o| o.id == "crashy").unwrap();
    assert!(
        crashy.restarts >= restarts_before + 3,
        "crashy was not restarted during the outage: {} -> {}",
        restarts_before,
        crashy.restarts
    );
    assert!(
        status.log_lines_dropped > 0,
        "a full queue must be counted: {status:?}"
    );

    // And SIGTERM still stops everything at once.
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let exit = d
        .process
        .wait(Duration::from_secs(8))
        .await
        .expect("SIGTERM does not hang");
    assert!(exit.success(), "{exit}");
}
