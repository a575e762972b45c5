//! A real `switchboard run` in a temporary directory, for the end-to-end
//! tests: embedded nats-server on a free port, manifests written by the
//! test, and a client connected through the daemon's runtime file.

#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use switchboard_bus::{Bus, RawSubscription};
use switchboard_orchestrator::daemon::RuntimeInfo;
use switchboard_proto::api::{
    CtlReply, CtlRequest, OperatorStatus, StatusReply, StatusRequest, SupervisedState,
};
use switchboard_proto::Verb;

pub const WAIT: Duration = Duration::from_secs(15);

pub fn pingbot() -> String {
    switchboard_testkit::bin_path("switchboard-pingbot")
        .display()
        .to_string()
}

/// A manifest for the ping bot with fast health timings.
pub fn pingbot_manifest(id: &str) -> String {
    format!(
        "id = \"{id}\"\ncommand = \"{}\"\nheartbeat_interval = \"100ms\"\nmissed_heartbeats = 3\nready_timeout = \"5s\"\nstop_timeout = \"2s\"\n",
        pingbot()
    )
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<tokio::process::Child>,
    pub bus: Bus,
    pub info: RuntimeInfo,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- daemon log ----\n{}\n---- end of daemon log ----",
                self.log()
            );
        }
    }
}

impl Daemon {
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("switchboard.toml")
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("operators.d")
    }

    /// Start a daemon with these manifests (file name, content).
    pub async fn start(manifests: &[(&str, String)]) -> Daemon {
        Self::start_with_env(manifests, &[]).await
    }

    /// The daemon's log so far (stderr goes to `daemon.log`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Like [`Daemon::start`], with extra environment for the daemon.
    pub async fn start_with_env(manifests: &[(&str, String)], env: &[(&str, &str)]) -> Daemon {
        Self::start_with(manifests, env, "").await
    }

    /// Like [`Daemon::start_with_env`], with extra lines for the
    /// `[nats.embedded]` table of switchboard.toml.
    pub async fn start_with(
        manifests: &[(&str, String)],
        env: &[(&str, &str)],
        embedded_extra: &str,
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("operators.d")).unwrap();
        for (name, content) in manifests {
            std::fs::write(dir.path().join("operators.d").join(name), content).unwrap();
        }
        let nats = switchboard_testkit::nats_server_bin().expect("nats-server (make tools)");
        std::fs::write(
            dir.path().join("switchboard.toml"),
            format!(
                "manifests = \"operators.d\"\nstate_dir = \"state\"\nruntime_dir = \"run\"\n\n\
                 [nats.embedded]\nport = 0\nbinary = \"{}\"\n{embedded_extra}\n",
                nats.display()
            ),
        )
        .unwrap();
        Self::start_in(dir, env).await
    }

    /// Start a daemon on `dir/switchboard.toml` (with `dir/run` as its
    /// runtime dir, the default), which the caller wrote.
    pub async fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Daemon {
        Self::start_as(dir, env, None).await
    }

    /// Like [`Daemon::start_in`], the daemon running as `run_as` (uid,
    /// gid) instead of the test's user (the test must be root for that).
    pub async fn start_as(
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
        run_as: Option<(u32, u32)>,
    ) -> Daemon {
        let (child, bus, info) = spawn_in(dir.path(), env, run_as).await;
        Daemon {
            dir,
            child: Some(child),
            bus,
            info,
        }
    }

    /// Stop the daemon (SIGTERM) and start a new one on the same
    /// directory: same config, manifests and state.
    pub async fn restart(&mut self) {
        self.stop().await;
        let (child, bus, info) = spawn_in(self.dir.path(), &[], None).await;
        self.child = Some(child);
        self.bus = bus;
        self.info = info;
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .expect("daemon running")
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig).unwrap();
    }

    /// The daemon's status. After a server restart the test's client can
    /// be back before the daemon's: "no responders" is retried a while.
    pub async fn status(&self) -> StatusReply {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match self
                .bus
                .request_json("sb.api.status", &StatusRequest {}, WAIT)
                .await
            {
                Ok(s) => return s,
                Err(e)
                    if e.kind() == switchboard_bus::RequestErrorKind::NoResponders
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(e) => panic!("status: {e:?}"),
            }
        }
    }

    pub async fn operator(&self, id: &str) -> Option<OperatorStatus> {
        self.status()
            .await
            .operators
            .into_iter()
            .find(|o| o.id == id)
    }

    /// Poll status until `cond` holds for operator `id`.
    pub async fn wait_for(
        &self,
        id: &str,
        what: &str,
        cond: impl Fn(&OperatorStatus) -> bool,
    ) -> OperatorStatus {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let op = self.operator(id).await;
            if let Some(op) = &op {
                if cond(op) {
                    return op.clone();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id}: waited {WAIT:?} for {what}; last status: {op:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn wait_running(&self, id: &str) -> OperatorStatus {
        self.wait_for(id, "running", |o| o.state == SupervisedState::Running)
            .await
    }

    pub async fn ctl(
        &self,
        verb: Verb,
        target: &str,
        config: Option<serde_json::Value>,
    ) -> CtlReply {
        self.bus
            .request_json(
                "sb.api.ctl",
                &CtlRequest {
                    verb,
                    target: target.to_string(),
                    config,
                    in_place: false,
                },
                WAIT,
            )
            .await
            .expect("ctl")
    }

    pub fn write_manifest(&self, name: &str, content: &str) {
        std::fs::write(self.manifests().join(name), content).unwrap();
    }

    pub fn remove_manifest(&self, name: &str) {
        std::fs::remove_file(self.manifests().join(name)).unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let mut child = self.child.take().unwrap();
        tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("daemon exits after SIGTERM")
            .unwrap()
    }

    pub async fn events(&self, id: &str) -> RawSubscription {
        let sub = self
            .bus
            .subscribe_raw(&format!("sb.event.{id}"))
            .await
            .unwrap();
        self.bus.sync().await.unwrap();
        sub
    }
}

/// Run `switchboard run` on `dir/switchboard.toml` (its stderr appended
/// to `dir/daemon.log`) and connect once its runtime file is there.
async fn spawn_in(
    dir: &Path,
    env: &[(&str, &str)],
    run_as: Option<(u32, u32)>,
) -> (tokio::process::Child, Bus, RuntimeInfo) {
    let runtime = dir.join("run/switchboard.json");
    let _ = std::fs::remove_file(&runtime);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("daemon.log"))
        .unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.arg("run")
        .arg("--config")
        .arg(dir.join("switchboard.toml"))
        .env("SWITCHBOARD_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid).current_dir(dir);
    }
    let child = cmd.spawn().expect("spawn switchboard");
    let deadline = tokio::time::Instant::now() + WAIT;
    let info: RuntimeInfo = loop {
        if let Ok(bytes) = std::fs::read(&runtime) {
            if let Ok(info) = serde_json::from_slice(&bytes) {
                break info;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "daemon never wrote {}",
            runtime.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let bus = Bus::connect(&info.bus_options(), "test").await.unwrap();
    (child, bus, info)
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Wait until `pid` is gone.
pub async fn gone(pid: u32) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} still alive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Next JSON payload on a raw subscription.
pub async fn next_json(sub: &mut RawSubscription) -> serde_json::Value {
    let m = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a message")
        .expect("open");
    serde_json::from_slice(&m.payload).unwrap()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// The project's Python with nats-py (`make tools`): fail, never skip.
pub fn venv_python() -> PathBuf {
    let python = switchboard_testkit::workspace_root().join(".tools/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `make tools` (it installs nats-py into .tools/venv)",
        python.display()
    );
    python
}

/// The Python SDK's sources, for PYTHONPATH (a user would `pip install` it).
pub fn python_sdk() -> PathBuf {
    switchboard_testkit::workspace_root().join("sdk/python/src")
}

/// A Node project as `npm install switchboard-sdk` would leave a
/// user's: `bot` (a `.ts` file) compiled to `<dir>/<stem>.js`, the SDK
/// compiled beside it as `node_modules/switchboard-sdk`, nats.js linked
/// from `make tools`. One `tsc` run builds both (it costs seconds of CPU),
/// into `target/ts-projects/<stem>-<hash of the sources>`, made once and
/// renamed into place whole: tests running at once, or later, share it
/// and never read a half-written file; an edited source gets a new one.
pub fn ts_project(bot: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let root = switchboard_testkit::workspace_root();
    let modules = root.join("sdk/typescript/node_modules");
    assert!(
        modules.join("typescript").is_dir() && modules.join("nats").is_dir(),
        "{} lacks typescript or nats: run `make tools`",
        modules.display()
    );
    let sdk_src = root.join("sdk/typescript/src");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&sdk_src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ts"))
        .collect();
    sources.sort();
    sources.push(bot.to_owned());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for s in sources
        .iter()
        .chain([&root.join("sdk/typescript/package.json")])
    {
        s.hash(&mut hasher);
        std::fs::read(s).unwrap().hash(&mut hasher);
    }
    let stem = bot.file_stem().unwrap().to_string_lossy().into_owned();
    let cache = root.join("target/ts-projects");
    let dir = cache.join(format!("{stem}-{:016x}", hasher.finish()));
    if dir.join("ok").is_file() {
        return dir;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let tmp = tempfile::tempdir_in(&cache).unwrap();
    let out = tmp.path().join("out");
    let config = serde_json::json!({
        "compilerOptions": {
            "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext",
            "strict": true, "noEmitOnError": true, "skipLibCheck": true,
            "types": ["node"], "typeRoots": [modules.join("@types")],
            "outDir": out, "rootDir": root,
            "paths": {"switchboard-sdk": [sdk_src.join("index.ts")]},
        },
        "files": sources,
    });
    let tsconfig = tmp.path().join("tsconfig.json");
    std::fs::write(&tsconfig, config.to_string()).unwrap();
    let built = std::process::Command::new("node")
        .arg(modules.join("typescript/bin/tsc"))
        .arg("-p")
        .arg(&tsconfig)
        .output()
        .expect("run node (Node 20 or later)");
    assert!(
        built.status.success(),
        "tsc for {}: {}{}",
        bot.display(),
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let bot_js = out
        .join(bot.strip_prefix(&root).expect("a bot in this repository"))
        .with_extension("js");
    std::fs::rename(&bot_js, tmp.path().join(format!("{stem}.js"))).unwrap();
    std::fs::write(tmp.path().join("package.json"), "{\"type\": \"module\"}\n").unwrap();
    let package = tmp.path().join("node_modules/switchboard-sdk");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(
        package.join("package.json"),
        "{\"name\": \"switchboard-sdk\", \"type\": \"module\", \"exports\": \"./dist/index.js\"}\n",
    )
    .unwrap();
    std::fs::rename(out.join("sdk/typescript/src"), package.join("dist")).unwrap();
    // nats.js and its dependencies copied, as `npm install` leaves them: a
    // link out of the project would point where the operator's sandbox
    // shows nothing (it binds the program's own directory).
    for package in ["nats", "nkeys.js", "tweetnacl"] {
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(modules.join(package))
            .arg(tmp.path().join("node_modules"))
            .status()
            .expect("run cp");
        assert!(
            copied.success(),
            "copy {package} from {}",
            modules.display()
        );
    }
    std::fs::write(tmp.path().join("ok"), "").unwrap();
    let tmp = tmp.keep();
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another test made it first: theirs is as good.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dir
}
