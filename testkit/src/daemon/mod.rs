//! A real `switchboard run` in a temporary directory, for every test and
//! tool that needs the whole daemon: the orchestrator's end-to-end tests,
//! the operators' full-stack tests, the fault suite and the benchmarks.
//!
//! [`DaemonConfig`] writes `switchboard.toml` and the manifests;
//! [`Daemon`] spawns the daemon, waits for its runtime file, connects a
//! [`Bus`] with the CLI's credentials from it, and offers what the tests
//! ask of a daemon (status, logs, ctl, SIGHUP, restart). Dropping it
//! SIGKILLs the daemon's process group, also when a test panics, and
//! prints the daemon's log then.
//!
//! The conformance kit (`switchboard conformance`) starts its own daemon
//! in product code, which cannot depend on this test crate: what the two
//! share lives in the orchestrator, where both reach it: the runtime
//! file's format ([`RuntimeInfo`]) and [`alive`].

mod config;
mod process;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use nix::sys::signal::Signal;
use switchboard_bus::{Bus, RawSubscription};
use switchboard_orchestrator::daemon::RuntimeInfo;
use switchboard_proto::api::{
    CtlReply, CtlRequest, LogsReply, LogsRequest, OperatorStatus, StatusReply, StatusRequest,
    SupervisedState,
};
use switchboard_proto::Verb;

pub use config::{ClusterTable, DaemonConfig, Embedded, External, Nats, RouteTlsFiles};
pub use process::{gone, DaemonProcess};
/// Whether a process exists and is not a zombie: the conformance kit's,
/// which judges operators by it in product code this crate cannot serve.
pub use switchboard_orchestrator::conformance::harness::alive;

/// How long any one wait on a daemon may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Why a daemon could not be had, or did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A file or directory of its setup could not be written.
    #[error("preparing {path}: {source}")]
    Prepare {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// No nats-server to embed.
    #[error(transparent)]
    NatsServer(#[from] crate::HarnessError),
    /// The binary could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// `switchboard`.
        program: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// It exited before writing its runtime file.
    #[error("switchboard run exited ({status}) before it was up; its log:\n{log}")]
    Exited {
        /// How it ended.
        status: std::process::ExitStatus,
        /// The end of its log.
        log: String,
    },
    /// It never wrote its runtime file.
    #[error("switchboard run never wrote {path} within {waited:?}; its log:\n{log}")]
    NoRuntimeFile {
        /// The file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
        /// The end of its log.
        log: String,
    },
    /// The test's client could not connect with the runtime file's
    /// credentials.
    #[error("connecting to the daemon's bus: {0}")]
    Connect(#[from] switchboard_bus::ConnectError),
    /// An API request failed (after retries where they make sense).
    #[error("{method}: {source}")]
    Api {
        /// `sb.api.<method>`.
        method: &'static str,
        /// Underlying error.
        source: switchboard_bus::RequestError,
    },
    /// A wait on an operator's status ran out.
    #[error("{id}: waited {waited:?} for {what}; last status: {last:?}")]
    Condition {
        /// The operator.
        id: String,
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// Its last status, if the daemon knew it.
        last: Option<Box<OperatorStatus>>,
    },
    /// The daemon was asked to stop but did not.
    #[error("the daemon still runs after {waited:?}")]
    StillRunning {
        /// How long we waited.
        waited: Duration,
    },
    /// It had already been stopped.
    #[error("the daemon is not running")]
    NotRunning,
    /// Waiting for the process failed.
    #[error("waiting for the daemon: {0}")]
    Wait(std::io::Error),
}

/// What kind of [`DaemonError`] it is, for tests that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonErrorKind {
    /// Setting it up (files, binaries, spawning).
    Setup,
    /// It did not come up.
    Startup,
    /// A request or condition failed while it ran.
    Running,
    /// Stopping it.
    Stop,
}

impl DaemonError {
    /// The kind of failure.
    pub fn kind(&self) -> DaemonErrorKind {
        match self {
            DaemonError::Prepare { .. }
            | DaemonError::NatsServer(_)
            | DaemonError::Spawn { .. } => DaemonErrorKind::Setup,
            DaemonError::Exited { .. }
            | DaemonError::NoRuntimeFile { .. }
            | DaemonError::Connect(_) => DaemonErrorKind::Startup,
            DaemonError::Api { .. } | DaemonError::Condition { .. } => DaemonErrorKind::Running,
            DaemonError::StillRunning { .. } | DaemonError::NotRunning | DaemonError::Wait(_) => {
                DaemonErrorKind::Stop
            }
        }
    }
}

/// A running daemon in a temporary directory, with a client on its bus.
pub struct Daemon {
    /// The process; declared first, so it is killed before the
    /// directory goes.
    pub process: DaemonProcess,
    /// The test's client (the CLI's credentials).
    pub bus: Bus,
    /// The runtime file's contents.
    pub info: RuntimeInfo,
    config: DaemonConfig,
    /// Its directory (`switchboard.toml`, `operators.d/`, `state/`,
    /// `run/`, `daemon.log`), removed last.
    pub dir: tempfile::TempDir,
}

impl DaemonConfig {
    /// Start a daemon with this config in a new temporary directory.
    ///
    /// # Panics
    ///
    /// When it does not come up (with its log).
    pub async fn start(self) -> Daemon {
        self.try_start()
            .await
            .unwrap_or_else(|e| panic!("the daemon did not start: {e}"))
    }

    /// [`DaemonConfig::start`] without panicking.
    ///
    /// # Errors
    ///
    /// When it does not come up.
    pub async fn try_start(self) -> Result<Daemon, DaemonError> {
        let dir = tempfile::tempdir().map_err(|source| DaemonError::Prepare {
            path: std::env::temp_dir(),
            source,
        })?;
        self.try_start_in(dir).await
    }

    /// Start it in `dir`, which may hold files the test put there (a
    /// token, a previous daemon's state).
    ///
    /// # Panics
    ///
    /// When it does not come up.
    pub async fn start_in(self, dir: tempfile::TempDir) -> Daemon {
        self.try_start_in(dir)
            .await
            .unwrap_or_else(|e| panic!("the daemon did not start: {e}"))
    }

    /// [`DaemonConfig::start_in`] without panicking.
    ///
    /// # Errors
    ///
    /// When it does not come up.
    pub async fn try_start_in(self, dir: tempfile::TempDir) -> Result<Daemon, DaemonError> {
        self.write(dir.path())?;
        let (process, bus, info) = up(dir.path(), &self).await?;
        Ok(Daemon {
            process,
            bus,
            info,
            config: self,
            dir,
        })
    }

    /// Write the config into `dir` and run `switchboard run` to its end,
    /// for the tests of a daemon that must refuse to start.
    ///
    /// # Panics
    ///
    /// When it cannot be set up, or still runs after [`WAIT`].
    pub async fn run_to_exit(&self, dir: &Path) -> std::process::Output {
        let config = self.write(dir).unwrap_or_else(|e| panic!("{e}"));
        self.run_config_to_exit(&config).await
    }

    /// Run `switchboard run --config <config>` to its end, with this
    /// config's environment, for a config file the test wrote itself (a
    /// second daemon beside a running one, say).
    ///
    /// # Panics
    ///
    /// When it cannot be started, or still runs after [`WAIT`].
    pub async fn run_config_to_exit(&self, config: &Path) -> std::process::Output {
        let run = tokio::process::Command::new(crate::bin_path("switchboard"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(WAIT, run)
            .await
            .expect("switchboard run gives up in time")
            .expect("run switchboard")
    }
}

/// Spawn the daemon on `dir` and connect once its runtime file is there.
async fn up(
    dir: &Path,
    config: &DaemonConfig,
) -> Result<(DaemonProcess, Bus, RuntimeInfo), DaemonError> {
    let run = dir.join("run");
    let program = match &config.program {
        Some(p) => p.clone(),
        None => crate::bin_path("switchboard"),
    };
    let mut process = DaemonProcess::spawn_program(
        &program,
        &dir.join("switchboard.toml"),
        &run,
        &config.env,
        config.run_as,
        config.netns.as_deref(),
    )?;
    let (info, _) = process
        .runtime_info(&run, Duration::from_millis(10))
        .await?;
    let bus = Bus::connect(&info.bus_options(), "test").await?;
    Ok((process, bus, info))
}

impl Daemon {
    /// A daemon with these manifests (file name, TOML text) and the
    /// default config.
    pub async fn start<N: AsRef<str>, T: AsRef<str>>(manifests: &[(N, T)]) -> Daemon {
        DaemonConfig::new().manifests(manifests).start().await
    }

    /// `switchboard.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("switchboard.toml")
    }

    /// `operators.d/`.
    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("operators.d")
    }

    /// Write (or replace) a manifest in `operators.d/`.
    pub fn write_manifest(&self, name: &str, content: &str) {
        std::fs::write(self.manifests().join(name), content).expect("write a manifest");
    }

    /// Remove a manifest from `operators.d/`.
    pub fn remove_manifest(&self, name: &str) {
        std::fs::remove_file(self.manifests().join(name)).expect("remove a manifest");
    }

    /// The daemon's log so far (all runs in this directory).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Send the daemon a signal.
    pub fn signal(&self, sig: Signal) {
        self.process.signal(sig);
    }

    /// SIGHUP: reread config and manifests.
    pub fn reload(&self) {
        self.signal(Signal::SIGHUP);
    }

    /// Pid of its embedded nats-server (a child of the daemon).
    pub fn nats_pid(&self) -> Option<u32> {
        let me = self.pid();
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == me && head.ends_with("(nats-server")).then_some(pid)
        })
    }

    /// The daemon's status. After a bus outage the test's client can be
    /// back before the daemon's: failures are retried for [`WAIT`].
    ///
    /// # Errors
    ///
    /// When it never answers.
    pub async fn try_status(&self) -> Result<StatusReply, DaemonError> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self
                .bus
                // Status may take its own 2 s bound on the durable
                // stream's figures (a lost stream server): longer than
                // that is a failure, retried.
                .request_json("sb.api.status", &StatusRequest {}, Duration::from_secs(5))
                .await
            {
                Ok(s) => return Ok(s),
                Err(source) if Instant::now() >= deadline => {
                    return Err(DaemonError::Api {
                        method: "status",
                        source,
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }

    /// [`Daemon::try_status`], panicking.
    pub async fn status(&self) -> StatusReply {
        self.try_status().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// One operator's status, if the daemon knows it.
    pub async fn operator(&self, id: &str) -> Option<OperatorStatus> {
        self.status()
            .await
            .operators
            .into_iter()
            .find(|o| o.id == id)
    }

    /// Poll status until `cond` holds for operator `id`.
    ///
    /// # Errors
    ///
    /// After [`WAIT`], with the last status seen.
    pub async fn try_wait_for(
        &self,
        id: &str,
        what: &str,
        cond: impl Fn(&OperatorStatus) -> bool,
    ) -> Result<OperatorStatus, DaemonError> {
        let deadline = Instant::now() + WAIT;
        loop {
            let op = self
                .try_status()
                .await?
                .operators
                .into_iter()
                .find(|o| o.id == id);
            match op {
                Some(op) if cond(&op) => return Ok(op),
                last if Instant::now() >= deadline => {
                    return Err(DaemonError::Condition {
                        id: id.to_owned(),
                        what: what.to_owned(),
                        waited: WAIT,
                        last: last.map(Box::new),
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }

    /// [`Daemon::try_wait_for`], panicking.
    pub async fn wait_for(
        &self,
        id: &str,
        what: &str,
        cond: impl Fn(&OperatorStatus) -> bool,
    ) -> OperatorStatus {
        self.try_wait_for(id, what, cond)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Wait until operator `id` runs.
    pub async fn wait_running(&self, id: &str) -> OperatorStatus {
        self.wait_for(id, "running", |o| o.state == SupervisedState::Running)
            .await
    }

    /// `sb.api.ctl`.
    pub async fn ctl(
        &self,
        verb: Verb,
        target: &str,
        config: Option<serde_json::Value>,
    ) -> CtlReply {
        let req = CtlRequest {
            verb,
            target: target.to_string(),
            config,
            in_place: false,
        };
        self.bus
            .request_json("sb.api.ctl", &req, WAIT)
            .await
            .unwrap_or_else(|e| panic!("ctl {verb:?} {target}: {e}"))
    }

    /// `sb.api.logs`: the last `lines` lines of operator `id`.
    ///
    /// # Errors
    ///
    /// When the daemon does not answer.
    pub async fn logs(&self, id: &str, lines: usize) -> Result<LogsReply, DaemonError> {
        let req = LogsRequest {
            id: id.into(),
            lines,
        };
        self.bus
            .request_json("sb.api.logs", &req, Duration::from_secs(2))
            .await
            .map_err(|source| DaemonError::Api {
                method: "logs",
                source,
            })
    }

    /// JetStream's info on `stream` (`$JS.API.STREAM.INFO`), as this
    /// daemon's server answers it: its config, state, and in a cluster
    /// its Raft group (`cluster.leader`, the replicas).
    ///
    /// # Errors
    ///
    /// When the server does not answer within 2 s.
    pub async fn stream_info(&self, stream: &str) -> Result<serde_json::Value, DaemonError> {
        self.bus
            .request_json(
                &format!("$JS.API.STREAM.INFO.{stream}"),
                &serde_json::json!({}),
                Duration::from_secs(2),
            )
            .await
            .map_err(|source| DaemonError::Api {
                method: "$JS.API.STREAM.INFO",
                source,
            })
    }

    /// The server (a cluster host's name) leading `stream`'s Raft group,
    /// or holding it with one replica; `None` while it has no leader or
    /// the server does not answer.
    pub async fn stream_leader(&self, stream: &str) -> Option<String> {
        let info = self.stream_info(stream).await.ok()?;
        info["cluster"]["leader"].as_str().map(str::to_owned)
    }

    /// `switchboard <args> --config <this daemon's config>`, run to its
    /// end, as a person types it.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(crate::bin_path("switchboard"))
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .output()
            .expect("run the switchboard CLI")
    }

    /// `switchboard status --json` (null when it printed no JSON).
    pub fn cli_status(&self) -> serde_json::Value {
        serde_json::from_slice(&self.cli(&["status", "--json"]).stdout).unwrap_or_default()
    }

    /// Subscribe to `sb.event.<id>`, the subscription in place on return.
    pub async fn events(&self, id: &str) -> RawSubscription {
        let sub = self
            .bus
            .subscribe_raw(&format!("sb.event.{id}"))
            .await
            .expect("subscribe to events");
        self.bus.sync().await.expect("bus sync");
        sub
    }

    /// SIGTERM and wait for the exit.
    ///
    /// # Panics
    ///
    /// When it does not exit within [`WAIT`].
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(Signal::SIGTERM);
        self.process
            .wait(WAIT)
            .await
            .unwrap_or_else(|e| panic!("after SIGTERM: {e}"))
    }

    /// SIGKILL the daemon alone, as a crash would.
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    /// SIGKILL the daemon's whole process group at once (the daemon and
    /// its nats-server; its operators, in groups of their own, die by
    /// their parent-death signal): a host lost with everything on it.
    pub async fn kill_group(&mut self) {
        self.process.kill_group().await;
    }

    /// Start the daemon again on the same directory (config, manifests,
    /// state), after [`Daemon::stop`] or [`Daemon::kill`].
    ///
    /// # Errors
    ///
    /// When it does not come back.
    pub async fn try_start_again(&mut self) -> Result<(), DaemonError> {
        let (process, bus, info) = up(self.dir.path(), &self.config).await?;
        self.process = process;
        self.bus = bus;
        self.info = info;
        Ok(())
    }

    /// Connect anew after the daemon restarted in place (the `restart`
    /// API method, `switchboard rolling-restart`): the same process wrote
    /// a new runtime file with new passwords once it was up again.
    ///
    /// # Errors
    ///
    /// When it exits, or no new runtime file comes within [`WAIT`].
    pub async fn try_reconnect(&mut self) -> Result<(), DaemonError> {
        let run = self.dir.path().join("run");
        let deadline = Instant::now() + WAIT;
        loop {
            let (info, _) = self
                .process
                .runtime_info(&run, Duration::from_millis(10))
                .await?;
            if info.password != self.info.password {
                self.bus = Bus::connect(&info.bus_options(), "test").await?;
                self.info = info;
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DaemonError::NoRuntimeFile {
                    path: switchboard_orchestrator::daemon::runtime_file(&run),
                    waited: WAIT,
                    log: self.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGTERM, wait, and start again on the same directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.try_start_again()
            .await
            .unwrap_or_else(|e| panic!("the daemon did not come back: {e}"));
    }

    /// SIGKILL, and start again on the same directory.
    ///
    /// # Errors
    ///
    /// When it does not come back.
    pub async fn kill_and_restart(&mut self) -> Result<(), DaemonError> {
        self.kill().await;
        self.try_start_again().await
    }
}

/// Next JSON payload on a raw subscription, within [`WAIT`].
///
/// # Panics
///
/// When nothing comes, or it is not JSON.
pub async fn next_json(sub: &mut RawSubscription) -> serde_json::Value {
    let m = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a message")
        .expect("open");
    serde_json::from_slice(&m.payload).expect("a JSON payload")
}
