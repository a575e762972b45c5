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
//! The harness is this file's own (the one in `common` runs the embedded
//! server): a daemon in a temporary directory, stderr in `daemon.log`,
//! stopped with SIGTERM when dropped so its operators go with it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use switchboard_bus::{Bus, BusOptions, ConnectError, Pattern};
use switchboard_orchestrator::daemon::RuntimeInfo;
use switchboard_proto::api::{
    LogsReply, LogsRequest, OperatorStatus, StatusReply, StatusRequest, SupervisedState,
};
use switchboard_proto::{launch, ChatAddress};
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

/// A daemon's directory before it starts: write credentials and
/// manifests into it, then [`Setup::start`] or [`Setup::run_to_exit`].
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("operators.d")).unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A file the daemon reads a secret from (mode 0600, as it would be).
    fn secret_file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, format!("{content}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        path
    }

    fn manifest(&self, name: &str, content: &str) {
        std::fs::write(self.path("operators.d").join(name), content).unwrap();
    }

    /// Write switchboard.toml with `nats` as its `[nats]` table and spawn
    /// `switchboard run`.
    fn spawn(&self, nats: &str, env: &[(&str, &str)]) -> Child {
        std::fs::write(
            self.path("switchboard.toml"),
            format!(
                "manifests = \"operators.d\"\nstate_dir = \"state\"\nruntime_dir = \"run\"\n\n\
                 [nats]\n{nats}\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.path("daemon.log")).unwrap();
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("run")
            .arg("--config")
            .arg(self.path("switchboard.toml"))
            .env("SWITCHBOARD_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn switchboard")
    }

    /// Start the daemon and connect to the bus the way the CLI does, with
    /// the options from its runtime file.
    async fn start(self, nats: &str) -> Daemon {
        let child = self.spawn(nats, &[]);
        let mut daemon = Daemon {
            setup: self,
            child: Some(child),
            bus: None,
            info: RuntimeInfo::default(),
        };
        let runtime = daemon.setup.path("run/switchboard.json");
        let deadline = Instant::now() + WAIT;
        daemon.info = loop {
            if let Ok(bytes) = std::fs::read(&runtime) {
                if let Ok(info) = serde_json::from_slice(&bytes) {
                    break info;
                }
            }
            if let Some(status) = daemon.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("the daemon exited ({status}) before writing its runtime file");
            }
            assert!(
                Instant::now() < deadline,
                "daemon never wrote {}",
                runtime.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        daemon.bus = Some(
            Bus::connect(&daemon.info.bus_options(), "test")
                .await
                .expect("the runtime file's options connect"),
        );
        daemon
    }

    /// Run a daemon that must fail: its exit status, its stderr and how
    /// long it took.
    async fn run_to_exit(self, nats: &str, env: &[(&str, &str)]) -> (ExitStatus, String, Duration) {
        let started = Instant::now();
        let mut child = self.spawn(nats, env);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > WAIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the daemon still runs after {WAIT:?}; its log:\n{}",
                    std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let took = started.elapsed();
        let stderr = std::fs::read_to_string(self.path("daemon.log")).unwrap();
        assert!(
            !self.path("run/switchboard.json").exists(),
            "a daemon that could not connect left a runtime file: {stderr}"
        );
        (status, stderr, took)
    }
}

struct Daemon {
    setup: Setup,
    child: Option<Child>,
    bus: Option<Bus>,
    info: RuntimeInfo,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- daemon log ----\n{}\n---- end of daemon log ----",
                self.log()
            );
        }
        // SIGTERM, so the daemon stops its operators (they run in their
        // own process groups and would outlive a SIGKILLed daemon).
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + WAIT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Daemon {
    fn bus(&self) -> &Bus {
        self.bus.as_ref().expect("connected")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.setup.path("daemon.log")).unwrap_or_default()
    }

    async fn status(&self) -> StatusReply {
        self.bus()
            .request_json("sb.api.status", &StatusRequest {}, WAIT)
            .await
            .expect("status")
    }

    async fn operator(&self, id: &str) -> Option<OperatorStatus> {
        self.status()
            .await
            .operators
            .into_iter()
            .find(|o| o.id == id)
    }

    /// Poll status until `cond` holds for operator `id`; every status seen
    /// on the way goes to `seen`.
    async fn wait_for(
        &self,
        id: &str,
        what: &str,
        mut seen: impl FnMut(&OperatorStatus),
        cond: impl Fn(&OperatorStatus) -> bool,
    ) -> OperatorStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            let op = self.operator(id).await;
            if let Some(op) = &op {
                seen(op);
                if cond(op) {
                    return op.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{id}: waited {WAIT:?} for {what}; last status: {op:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_running(&self, id: &str) -> OperatorStatus {
        self.wait_for(
            id,
            "running",
            |_| {},
            |o| o.state == SupervisedState::Running,
        )
        .await
    }

    async fn logs(&self, id: &str) -> Vec<String> {
        let reply: LogsReply = self
            .bus()
            .request_json(
                "sb.api.logs",
                &LogsRequest {
                    id: id.to_string(),
                    lines: 100,
                },
                WAIT,
            )
            .await
            .expect("logs");
        reply.lines.into_iter().map(|l| l.line).collect()
    }

    /// `switchboard <args>` with this daemon's config: the CLI finds the
    /// bus through the runtime file.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg(self.setup.path("switchboard.toml"))
            .args(args)
            .output()
            .expect("run switchboard")
    }
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
    let setup = Setup::new();
    setup.manifest("p1.toml", &pingbot_manifest("p1", ""));
    let d = setup
        .start(&format!(
            "url = {}\ntls_ca = {}",
            toml_str(server.url()),
            path_toml(&ca)
        ))
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
    ping_round_trip(d.bus(), "p1").await;

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
    let (status, stderr, took) = Setup::new()
        .run_to_exit(
            &format!(
                "url = {}\ntls_ca = {}",
                toml_str(server.url()),
                path_toml(&stranger.ca_file())
            ),
            &[],
        )
        .await;
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
    let setup = Setup::new();
    let token_file = setup.secret_file("token", &token);
    // A shell that waits before becoming the ping bot, so the launch
    // environment can be read before the bot fails to connect and exits.
    setup.manifest(
        "p1.toml",
        &format!(
            "id = \"p1\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"sleep 0.5; exec \\\"$0\\\"\", {}]\n\
             ready_timeout = \"5s\"\nstop_timeout = \"2s\"\n",
            path_toml(&pingbot())
        ),
    );
    assert!(token_file.is_file());
    // Relative to the config file's directory.
    let d = setup
        .start(&format!(
            "url = {}\ntoken_file = \"token\"",
            toml_str(server.url())
        ))
        .await;
    assert_eq!(d.info.token.as_deref(), Some(token.as_str()));
    assert!(d.status().await.operators.iter().any(|o| o.id == "p1"));
    let out = d.cli(&["status"]);
    assert!(out.status.success(), "the CLI with the token: {out:?}");

    let mut was_running = false;
    let first = d
        .wait_for(
            "p1",
            "a process",
            |o| was_running |= o.state == SupervisedState::Running,
            |o| o.pid.is_some(),
        )
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
        .wait_for(
            "p1",
            "a failed start and a restart",
            |o| was_running |= o.state == SupervisedState::Running,
            |o| o.restarts >= 1 && o.last_exit.is_some(),
        )
        .await;
    assert!(!was_running, "p1 ran without credentials: {after:?}");
    assert_ne!(after.state, SupervisedState::Running, "{after:?}");
    let exit = after.last_exit.clone().unwrap_or_default();
    assert!(exit.contains("exited with"), "{after:?}");
    let logs = d.logs("p1").await.join("\n");
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
    let (status, stderr, took) = Setup::new()
        .run_to_exit(
            &format!(
                "url = {}\ntoken_env = \"SB_TEST_NATS_TOKEN\"",
                toml_str(server.url())
            ),
            &[("SB_TEST_NATS_TOKEN", wrong)],
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
    let setup = Setup::new();
    let password_file = setup.secret_file("password", &password);
    let bot_seed = setup.path("p1.nk");
    bot.write_seed_file(&bot_seed).unwrap();
    let client_seed = setup.path("client.nk");
    client.write_seed_file(&client_seed).unwrap();
    // Relative to the manifest's directory.
    setup.manifest(
        "p1.toml",
        &pingbot_manifest("p1", "nats_nkey = \"../p1.nk\"\n"),
    );
    let d = setup
        .start(&format!(
            "url = {}\nuser = \"switchboard\"\npassword_file = {}",
            toml_str(server.url()),
            path_toml(&password_file)
        ))
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
    let setup = Setup::new();
    let daemon_creds = setup.path("switchboard.creds");
    op.user("switchboard")
        .unwrap()
        .write_creds_file(&daemon_creds)
        .unwrap();
    let bot_creds = setup.path("p1.creds");
    op.user("p1").unwrap().write_creds_file(&bot_creds).unwrap();
    // Both relative: to the manifest's directory and to the config's.
    setup.manifest(
        "p1.toml",
        &pingbot_manifest("p1", "nats_creds = \"../p1.creds\"\n"),
    );
    let d = setup
        .start(&format!(
            "url = {}\ncreds_file = \"switchboard.creds\"",
            toml_str(server.url())
        ))
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
    ping_round_trip(d.bus(), "p1").await;

    // A user of another operator is refused, and the daemon says so.
    let stranger = JwtOperator::new("stranger").expect("JWTs");
    let setup = Setup::new();
    let creds = setup.path("stranger.creds");
    stranger
        .user("switchboard")
        .unwrap()
        .write_creds_file(&creds)
        .unwrap();
    let (status, stderr, took) = setup
        .run_to_exit(
            &format!(
                "url = {}\ncreds_file = {}",
                toml_str(server.url()),
                path_toml(&creds)
            ),
            &[],
        )
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
    let setup = Setup::new();
    setup.manifest(
        "chatty.toml",
        "id = \"chatty\"\ncommand = \"/bin/sh\"\ncontrol = \"signals\"\nstop_timeout = \"1s\"\n\
         args = [\"-c\", \"while :; do echo line-of-output-from-a-chatty-operator; done\"]\n",
    );
    setup.manifest(
        "crashy.toml",
        "id = \"crashy\"\ncommand = \"/bin/sh\"\ncontrol = \"signals\"\nrestart = \"always\"\n\
         args = [\"-c\", \"sleep 0.3\"]\n[backoff]\ninitial = \"10ms\"\nreset_after = \"10ms\"\n\
         [crash_loop]\nmax_restarts = 1000\n",
    );
    let mut d = setup
        .start(&format!("url = {}", toml_str(server.url())))
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
            .bus()
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
    let started = Instant::now();
    let mut child = d.child.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(8), "SIGTERM hangs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit}");
}
