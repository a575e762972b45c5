//! The sandbox attack suite (issue 19, items 1-3): a hostile operator
//! (`switchboard-burglar`, a real process with default grants) under a
//! real daemon with the default config tries what an operator must not
//! manage: read other processes' `/proc/<pid>/environ` and `cmdline` (the
//! other operator's, the daemon's, nats-server's), read the runtime file
//! (the CLI's login), the nats-server config (every password), the
//! JetStream store, another operator's config, credentials and state; see
//! other processes at all; leave a `setsid()` grandchild and a
//! double-forked one running after its operator stops and after the
//! daemon stops. Each must be refused or harmless:
//! - `same_uid_as_the_daemon_and_not_root`: the daemon as an unprivileged
//!   user (`nobody` when the test is root), both operators under its uid;
//! - `root_daemon_with_user_keys`: the daemon as root, each operator with
//!   its own `user`; `root_daemon_without_user_keys`: operators as uid 0
//!   (without capabilities) in their sandboxes;
//! - `without_a_sandbox_the_attack_succeeds`: the same burglar with
//!   `sandbox = "none"` (what every operator got before the sandbox)
//!   steals the secrets, sees the daemon and leaves its `setsid()` child
//!   behind: the suite can fail, and does on a daemon without sandboxes;
//! - a missing bwrap: one clear line and unsandboxed operators, or a
//!   refusal to start with `[sandbox] required = true`.

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;
use switchboard_proto::api::SupervisedState;
use switchboard_proto::Verb;

/// The word in the command line of the burglar's leftovers.
fn marker() -> String {
    format!("sb-attack-orphan-{:08x}", fastrand::u32(..))
}

/// Host processes whose command line holds `marker`.
fn with_marker(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(marker) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// Kills what the burglar left behind when the test ends, passed or not
/// (`make test` leaves no process behind).
struct Sweeper(String);

impl Drop for Sweeper {
    fn drop(&mut self) {
        for pid in with_marker(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

async fn wait_orphans(marker: &str, want: impl Fn(usize) -> bool, what: &str) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = with_marker(marker).len();
        if want(n) {
            return n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {n} process(es) with the marker"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// How each operator runs.
struct Setup {
    /// The daemon's uid and gid (None: the test's own).
    daemon: Option<(u32, u32)>,
    /// `user` keys of the victim and the burglar.
    users: (Option<&'static str>, Option<&'static str>),
    /// `sandbox` key of the burglar.
    sandbox: &'static str,
}

/// A daemon with a victim (holding a secret from the daemon's
/// environment in its `[secrets]`) and a burglar aimed at everything.
struct Scene {
    d: Daemon,
    marker: String,
    secret: String,
    _sweeper: Sweeper,
}

fn user_line(user: Option<&str>) -> String {
    user.map(|u| format!("user = \"{u}\"\n"))
        .unwrap_or_default()
}

async fn scene(setup: Setup) -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let marker = marker();
    let secret = format!("sb-attack-secret-{:016x}", fastrand::u64(..));
    let burglar = switchboard_testkit::bin_path("switchboard-burglar");
    let victim = format!(
        "id = \"victim\"\ncommand = \"{}\"\n{}heartbeat_interval = \"200ms\"\n\n\
         [secrets]\ntoken = {{ env = \"SB_ATTACK_SECRET\" }}\n",
        burglar.display(),
        user_line(setup.users.0),
    );
    let targets: Vec<PathBuf> = [
        "run/switchboard.json",
        "run/nats-server.conf",
        "run/operators/victim",
        "run/config",
        "state/nats",
        "state/operators/victim",
        "operators.d",
        "switchboard.toml",
        "daemon.log",
    ]
    .iter()
    .map(|p| root.join(p))
    .chain([
        root.clone(),
        PathBuf::from("/etc/shadow"),
        PathBuf::from("/root"),
    ])
    .collect();
    let burglar_manifest = format!(
        "id = \"burglar\"\ncommand = \"{}\"\n{}sandbox = \"{}\"\nheartbeat_interval = \"200ms\"\n\
         stop_timeout = \"2s\"\n\n[config]\nmarker = \"{marker}\"\ntargets = {:?}\n",
        burglar.display(),
        user_line(setup.users.1),
        setup.sandbox,
        targets,
    );
    // Written before the tree is handed to the daemon's user.
    let config = DaemonConfig::new()
        .manifest("victim.toml", victim)
        .manifest("burglar.toml", burglar_manifest)
        .env("SB_ATTACK_SECRET", &secret)
        .run_as(setup.daemon);
    config.write(&root).unwrap();
    // Something private in the victim's state.
    let victim_state = root.join("state/operators/victim");
    std::fs::create_dir_all(&victim_state).unwrap();
    std::fs::write(victim_state.join("session"), &secret).unwrap();
    if let Some((uid, gid)) = setup.daemon {
        chown_tree(&root, uid, gid);
    }
    if setup.users.0.is_some() {
        // Traversable by the operators' users, as /var/lib is (tempdirs
        // are 0700); the daemon's own dirs inside stay 0700.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let d = config.start_in(dir).await;
    d.wait_running("victim").await;
    d.wait_running("burglar").await;
    Scene {
        d,
        _sweeper: Sweeper(marker.clone()),
        marker,
        secret,
    }
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            chown_tree(&e.path(), uid, gid);
        }
    }
}

impl Scene {
    fn root(&self) -> &Path {
        self.d.dir.path()
    }

    /// The burglar's report, once written.
    async fn report(&self) -> Value {
        let path = self.root().join("state/operators/burglar/report.json");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return serde_json::from_str(&text).expect("report is JSON");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no report from the burglar"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every secret the burglar must not learn: each password in the
    /// nats-server config but its own (the daemon's, the CLI's, the
    /// victim's), the victim's `[secrets]` value (also in the daemon's
    /// environment and in the victim's state).
    fn secrets(&self) -> Vec<String> {
        let own = std::fs::read_to_string(self.root().join("run/operators/burglar/nats-password"))
            .expect("the burglar's password file");
        let conf = std::fs::read_to_string(self.root().join("run/nats-server.conf")).unwrap();
        let mut out = vec![self.secret.clone()];
        for part in conf.split("\"password\"").skip(1) {
            let value = part.split('"').nth(1).unwrap_or_default().to_owned();
            if !value.is_empty() && value != own {
                out.push(value);
            }
        }
        assert!(
            out.len() >= 4,
            "daemon, CLI, victim passwords and the secret: {out:?}"
        );
        out
    }

    async fn pid(&self, name: &str) -> u32 {
        let op = self.d.operator(name).await;
        op.and_then(|o| o.pid)
            .unwrap_or_else(|| panic!("{name} has no pid"))
    }
}

/// What the report shows that the burglar should never have had: the
/// secrets it contains, the foreign processes it saw, the targets it read.
fn loot(report: &Value, secrets: &[String], root: &Path) -> Vec<String> {
    let text = report.to_string();
    let mut found: Vec<String> = secrets
        .iter()
        .filter(|s| text.contains(s.as_str()))
        .map(|s| format!("secret {}…", &s[..s.len().min(6)]))
        .collect();
    for p in report["processes"].as_array().unwrap() {
        let own = p["environ"]
            .as_str()
            .is_some_and(|e| e.contains("SWITCHBOARD_ID=burglar"));
        if !own {
            found.push(format!("process {} ({})", p["pid"], p["cmdline"]));
        }
    }
    for t in report["targets"].as_array().unwrap() {
        let path = PathBuf::from(t["path"].as_str().unwrap());
        if path == root {
            continue; // judged by the secrets in it
        }
        for f in t["files"].as_array().unwrap() {
            found.push(format!("read {}", f["path"]));
        }
    }
    found
}

/// The environment of a process (the test can read any).
fn environ(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
        .replace('\0', "\n")
}

/// Item 2: no secret in any environment, the files that hold them private.
async fn no_secret_in_environments(s: &Scene, uids: (u32, u32)) {
    let secrets = s.secrets();
    for (name, pid) in [
        ("victim", s.pid("victim").await),
        ("burglar", s.pid("burglar").await),
        ("daemon", s.d.pid()),
    ] {
        let env = environ(pid);
        for secret in &secrets {
            if name == "daemon" && *secret == s.secret {
                continue; // the daemon was given it in its environment
            }
            assert!(
                !env.contains(secret.as_str()),
                "a secret in {name}'s environment"
            );
        }
        if name != "daemon" {
            assert!(
                env.contains("SWITCHBOARD_NATS_PASSWORD_FILE="),
                "{name}: {env}"
            );
            assert!(env.contains("SWITCHBOARD_CONFIG_FILE="), "{name}: {env}");
            assert!(!env.contains("SWITCHBOARD_NATS_PASSWORD="), "{name}: {env}");
            assert!(!env.contains("SWITCHBOARD_CONFIG="), "{name}: {env}");
        }
    }
    for (id, uid) in [("victim", uids.0), ("burglar", uids.1)] {
        let own = s.root().join("run/operators").join(id);
        let meta = std::fs::metadata(&own).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o700,
            "{}",
            own.display()
        );
        assert_eq!(meta.uid(), uid, "{}", own.display());
        for file in ["nats-password", "config.json"] {
            let meta = std::fs::metadata(own.join(file)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o400, "{id}/{file}");
            assert_eq!(meta.uid(), uid, "{id}/{file}");
        }
    }
    // nats-server gets nothing of the daemon's environment.
    let nats = children_named(s.d.pid(), "nats-server");
    assert_eq!(nats.len(), 1, "one nats-server child");
    assert!(
        !environ(nats[0]).contains(s.secret.as_str()),
        "the daemon's secret in nats-server's environment"
    );
}

/// Children of `parent` whose command name is `name`.
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map(|(_, c)| c).unwrap_or_default();
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && comm == name {
            out.push(pid);
        }
    }
    out
}

/// Item 3: the burglar's setsid() child and double-forked grandchild die
/// with it, and with the daemon.
async fn nothing_outlives(mut s: Scene, kill_daemon: bool) {
    wait_orphans(&s.marker, |n| n == 2, "both leftovers started").await;
    let reply = s.d.ctl(Verb::Shutdown, "burglar", None).await;
    assert!(reply.results.iter().all(|r| r.ok), "{reply:?}");
    wait_orphans(
        &s.marker,
        |n| n == 0,
        "leftovers after the burglar's shutdown",
    )
    .await;
    let reply = s.d.ctl(Verb::Restart, "burglar", None).await;
    assert!(reply.results.iter().all(|r| r.ok), "{reply:?}");
    wait_orphans(&s.marker, |n| n == 2, "both leftovers started again").await;
    if kill_daemon {
        s.d.kill().await;
    } else {
        s.d.stop().await;
    }
    wait_orphans(&s.marker, |n| n == 0, "leftovers after the daemon stopped").await;
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_uid_as_the_daemon_and_not_root() {
    // As root, the daemon runs as `nobody`; as anyone else, as them.
    let daemon = is_root().then_some((65534, 65534));
    let s = scene(Setup {
        daemon,
        users: (None, None),
        sandbox: "bwrap",
    })
    .await;
    let op = s.d.operator("burglar").await.unwrap();
    assert_eq!(op.sandbox, "bwrap", "{op:?}");
    let report = s.report().await;
    if std::env::var_os("SB_ATTACK_SHOW").is_some() {
        eprintln!("{report:#}");
    }
    let found = loot(&report, &s.secrets(), s.root());
    assert!(found.is_empty(), "the burglar got: {found:#?}");
    let uid = daemon.map_or_else(|| nix::unistd::geteuid().as_raw(), |(u, _)| u);
    no_secret_in_environments(&s, (uid, uid)).await;
    nothing_outlives(s, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_daemon_with_user_keys() {
    if !is_root() {
        eprintln!("skipped: the daemon must run as root for `user` keys");
        return;
    }
    let s = scene(Setup {
        daemon: None,
        users: (Some("daemon"), Some("nobody")),
        sandbox: "bwrap",
    })
    .await;
    let report = s.report().await;
    let found = loot(&report, &s.secrets(), s.root());
    assert!(found.is_empty(), "the burglar got: {found:#?}");
    no_secret_in_environments(&s, (1, 65534)).await;
    nothing_outlives(s, true).await;
}

/// A root daemon without `user` keys: its operators are uid 0 without
/// capabilities in their sandboxes; root's own files are masked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_daemon_without_user_keys() {
    if !is_root() {
        eprintln!("skipped: the daemon must run as root");
        return;
    }
    let s = scene(Setup {
        daemon: None,
        users: (None, None),
        sandbox: "bwrap",
    })
    .await;
    let report = s.report().await;
    let found = loot(&report, &s.secrets(), s.root());
    assert!(found.is_empty(), "the burglar got: {found:#?}");
    no_secret_in_environments(&s, (0, 0)).await;
    nothing_outlives(s, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_sandbox_the_attack_succeeds() {
    let daemon = is_root().then_some((65534, 65534));
    let s = scene(Setup {
        daemon,
        users: (None, None),
        sandbox: "none",
    })
    .await;
    let op = s.d.operator("burglar").await.unwrap();
    assert_eq!(op.sandbox, "none", "{op:?}");
    assert!(
        s.d.log().contains("runs without a sandbox"),
        "{}",
        s.d.log()
    );
    let report = s.report().await;
    let found = loot(&report, &s.secrets(), s.root());
    for what in ["secret", "process", "read"] {
        assert!(
            found.iter().any(|f| f.starts_with(what)),
            "unsandboxed, the burglar should get a {what}: {found:#?}"
        );
    }
    // Its setsid() child escapes its process group and outlives it.
    wait_orphans(&s.marker, |n| n == 2, "both leftovers started").await;
    s.d.ctl(Verb::Shutdown, "burglar", None).await;
    s.d.wait_for("burglar", "exited", |o| o.state == SupervisedState::Exited)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !with_marker(&s.marker).is_empty(),
        "unsandboxed, the setsid() child should outlive the burglar"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bwrap_is_one_clear_line_or_fatal_when_required() {
    let manifest = format!(
        "id = \"bot\"\ncommand = \"{}\"\nheartbeat_interval = \"200ms\"\n",
        switchboard_testkit::bin_path("switchboard-burglar").display()
    );
    let d = DaemonConfig::new()
        .manifest("bot.toml", manifest)
        .sandbox("/nonexistent/bwrap", None)
        .start()
        .await;
    let op = d.wait_running("bot").await;
    assert_eq!(op.sandbox, "none (bwrap unavailable)", "{op:?}");
    let log = d.log();
    assert_eq!(
        log.matches("operators run WITHOUT a sandbox").count(),
        1,
        "{log}"
    );
    assert!(log.contains("/nonexistent/bwrap"), "{log}");
    // `status` and `validate` say so too.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .arg("--config")
            .arg(d.config_path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status = cli(&["status"]);
    assert!(
        status.contains("SANDBOX") && status.contains("none(!)"),
        "{status}"
    );
    let validate = cli(&["validate"]);
    assert!(
        validate.contains("bot: sandbox none (bwrap unavailable)")
            && validate.contains("WITHOUT a sandbox"),
        "{validate}"
    );

    // Required: the daemon refuses to start, and says what to do.
    let dir = tempfile::tempdir().unwrap();
    let out = DaemonConfig::new()
        .sandbox("/nonexistent/bwrap", Some(true))
        .run_to_exit(dir.path())
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("operators cannot be sandboxed") && err.contains("apt install bubblewrap"),
        "{err}"
    );
}
