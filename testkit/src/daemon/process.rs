//! The `switchboard run` process itself: spawned in its own process
//! group, its stderr appended to `daemon.log`, its runtime file awaited,
//! and the whole group SIGKILLed when the guard is dropped (also when a
//! test panics), so no test leaves a daemon or its nats-server behind.
//! Operators live in their own groups and die with the daemon through
//! their parent-death signal (orchestrator/src/process.rs).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use switchboard_orchestrator::conformance::harness::alive;
use switchboard_orchestrator::daemon::RuntimeInfo;

use super::{DaemonError, WAIT};

/// A spawned `switchboard run`; SIGKILLs its process group when dropped.
#[derive(Debug)]
pub struct DaemonProcess {
    child: Option<tokio::process::Child>,
    pid: u32,
    log: PathBuf,
    /// When it was spawned (just before `spawn`), for startup timings.
    pub spawned: Instant,
}

impl DaemonProcess {
    /// Run `switchboard run --config <config>` with `env` added (and
    /// `SWITCHBOARD_LOG=info` unless `env` says otherwise), its stderr
    /// appended to `daemon.log` beside the config. The stale runtime
    /// file under `runtime_dir` is removed first, so
    /// [`DaemonProcess::runtime_info`] waits for this run's. With
    /// `netns`, it runs in that network namespace: `nsenter` enters it and
    /// execs the daemon (no fork, so the pid and the process group stay
    /// the daemon's).
    ///
    /// # Errors
    ///
    /// When the log cannot be opened or the binary cannot be started.
    pub fn spawn(
        config: &Path,
        runtime_dir: &Path,
        env: &[(String, String)],
        run_as: Option<(u32, u32)>,
        netns: Option<&str>,
    ) -> Result<DaemonProcess, DaemonError> {
        DaemonProcess::spawn_program(
            &crate::bin_path("switchboard"),
            config,
            runtime_dir,
            env,
            run_as,
            netns,
        )
    }

    /// [`DaemonProcess::spawn`] of `program`, a `switchboard` binary
    /// elsewhere than the build's (a copy a test replaces, as a package
    /// upgrade would).
    ///
    /// # Errors
    ///
    /// When the log cannot be opened or the binary cannot be started.
    pub fn spawn_program(
        program: &Path,
        config: &Path,
        runtime_dir: &Path,
        env: &[(String, String)],
        run_as: Option<(u32, u32)>,
        netns: Option<&str>,
    ) -> Result<DaemonProcess, DaemonError> {
        let dir = config.parent().unwrap_or(Path::new("."));
        let _ = std::fs::remove_file(runtime_dir.join("switchboard.json"));
        let log = dir.join("daemon.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| DaemonError::Prepare {
                path: log.clone(),
                source,
            })?;
        let program = program.to_path_buf();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(&program);
                c
            }
            None => tokio::process::Command::new(&program),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            // The defaults users get, whatever the test's shell has set.
            .env_remove("RUST_LOG")
            .env_remove("SWITCHBOARD_LOG_FORMAT")
            .env_remove("NOTIFY_SOCKET")
            .env("SWITCHBOARD_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            // Its own group: Drop ends it and its nats-server at once.
            .process_group(0)
            .kill_on_drop(true);
        if let Some((uid, gid)) = run_as {
            cmd.uid(uid).gid(gid).current_dir(dir);
        }
        let spawned = Instant::now();
        let child = cmd.spawn().map_err(|source| DaemonError::Spawn {
            program: program.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        Ok(DaemonProcess {
            child: Some(child),
            pid,
            log,
            spawned,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether it has not been waited for yet.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Everything in `daemon.log` (this run and earlier ones in the
    /// same directory).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Poll (every `poll`) for the runtime file under `runtime_dir`;
    /// its contents and when it was first seen.
    ///
    /// # Errors
    ///
    /// When the daemon exits first, or nothing comes within [`WAIT`].
    pub async fn runtime_info(
        &mut self,
        runtime_dir: &Path,
        poll: Duration,
    ) -> Result<(RuntimeInfo, Instant), DaemonError> {
        let path = runtime_dir.join("switchboard.json");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(bytes) = std::fs::read(&path) {
                if let Ok(info) = serde_json::from_slice::<RuntimeInfo>(&bytes) {
                    return Ok((info, Instant::now()));
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(DaemonError::Exited {
                        status,
                        log: tail(&self.log()),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(DaemonError::NoRuntimeFile {
                    path,
                    waited: WAIT,
                    log: tail(&self.log()),
                });
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Send `sig` to the daemon alone.
    ///
    /// # Panics
    ///
    /// When it is already gone (a test that signals a dead daemon is
    /// wrong).
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid as i32), sig)
            .unwrap_or_else(|e| panic!("{sig} to the daemon {}: {e}", self.pid));
    }

    /// Wait at most `within` for it to exit.
    ///
    /// # Errors
    ///
    /// When it is still running then (it is left running, for the guard).
    pub async fn wait(
        &mut self,
        within: Duration,
    ) -> Result<std::process::ExitStatus, DaemonError> {
        let Some(child) = self.child.as_mut() else {
            return Err(DaemonError::NotRunning);
        };
        match tokio::time::timeout(within, child.wait()).await {
            Ok(Ok(status)) => {
                self.child = None;
                Ok(status)
            }
            Ok(Err(source)) => Err(DaemonError::Wait(source)),
            Err(_) => Err(DaemonError::StillRunning { waited: within }),
        }
    }

    /// SIGKILL the daemon alone (a crash: operators die with it by their
    /// parent-death signal, what they forked may not) and reap it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

impl DaemonProcess {
    /// SIGKILL the daemon's process group (the daemon and its
    /// nats-server) in one signal, and reap the daemon.
    pub async fn kill_group(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- daemon log ({}) ----\n{}\n---- end of daemon log ----",
                self.log.display(),
                tail(&self.log())
            );
        }
        if self.child.is_some() && self.pid != 0 {
            // The group, whose id is the daemon's pid: the daemon and its
            // nats-server (operators have their own groups and a
            // parent-death signal). Child's kill_on_drop reaps the daemon.
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
    }
}

/// The last 200 lines of a log, for messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(200)..].join("\n")
}

/// Wait until `pid` is gone.
///
/// # Panics
///
/// When it is still alive after [`WAIT`].
pub async fn gone(pid: u32) {
    let deadline = Instant::now() + WAIT;
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
