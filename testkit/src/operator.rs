//! An operator binary as a child process, started with a launch
//! environment the way the orchestrator would (every inherited
//! `SWITCHBOARD_*` launch variable removed first), killed on drop, its
//! stderr kept in a file that is printed when a test fails. (Named apart
//! from the orchestrator's own `OperatorProcess`, the supervised one.)

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use switchboard_proto::launch;

/// A running operator process.
pub struct TestOperator {
    /// The process (for its pid, SIGKILL, wait).
    pub child: tokio::process::Child,
    log: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl TestOperator {
    /// Start `program` as operator `id` on `nats_url` with `config` (none:
    /// no `SWITCHBOARD_CONFIG` at all), plus `env` (heartbeat interval,
    /// state dir, log filter, ...; later entries win).
    ///
    /// # Panics
    ///
    /// When the program cannot be started (a test setup error).
    pub fn spawn(
        program: &Path,
        id: &str,
        nats_url: &str,
        config: Option<&serde_json::Value>,
        env: &[(&str, &str)],
    ) -> TestOperator {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("operator.log");
        let file = std::fs::File::create(&log).expect("the operator's log file");
        let mut cmd = tokio::process::Command::new(program);
        for var in launch::ALL {
            cmd.env_remove(var);
        }
        cmd.env(launch::ID, id).env(launch::NATS_URL, nats_url);
        if let Some(config) = config {
            cmd.env(launch::CONFIG, config.to_string());
        }
        cmd.envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        TestOperator {
            child,
            log,
            dir: Some(dir),
        }
    }

    /// Its pid.
    ///
    /// # Panics
    ///
    /// When it has been waited for.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the operator still runs")
    }

    /// Send it a Unix signal.
    ///
    /// # Panics
    ///
    /// When it is gone.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, sig).unwrap_or_else(|e| panic!("{sig} to {pid}: {e}"));
    }

    /// What it wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status, waiting at most `within`.
    ///
    /// # Panics
    ///
    /// When it does not exit in time.
    pub async fn exit_within(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the operator exits in time")
            .expect("wait for the operator")
    }

    /// Keep the log file after the process is gone (a test that starts a
    /// second process and wants the first one's words on failure).
    pub fn keep_log(mut self) {
        if let Some(d) = self.dir.take() {
            let _ = d.keep();
        }
    }
}

impl Drop for TestOperator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- operator log ----\n{}\n---- end of operator log ----",
                self.log()
            );
        }
    }
}
