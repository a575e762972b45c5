//! A real `nats-server` child process for tests.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Why the harness could not give a test its server.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No binary anywhere we look.
    #[error(
        "nats-server not found (looked at $SWITCHBOARD_NATS_SERVER, {local} and $PATH): \
         run `make tools` to install it into the project"
    )]
    BinaryMissing {
        /// The project-local path that was tried.
        local: String,
    },
    /// Spawning failed (permissions, exec format...).
    #[error("could not start {bin}: {source}")]
    Spawn {
        /// Binary that was run.
        bin: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The server ran but never said it was listening.
    #[error("nats-server did not start listening within {waited:?}; its output was:\n{output}")]
    NotListening {
        /// How long we waited.
        waited: Duration,
        /// Everything it printed.
        output: String,
    },
    /// Temporary store directory could not be made.
    #[error("could not create a temporary JetStream store: {0}")]
    TempDir(std::io::Error),
}

/// Locate the `nats-server` binary (see the crate docs for the order).
pub fn nats_server_bin() -> Result<PathBuf, HarnessError> {
    if let Some(p) = std::env::var_os("SWITCHBOARD_NATS_SERVER") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
    }
    let local = crate::workspace_root().join(".tools/venv/bin/nats-server");
    if local.is_file() {
        return Ok(local);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(HarnessError::BinaryMissing {
        local: local.display().to_string(),
    })
}

/// Options for [`NatsServer`]; the defaults suit most tests.
#[derive(Debug, Clone, Default)]
pub struct NatsServerOptions {
    /// Require this user/password from clients.
    pub user_password: Option<(String, String)>,
    /// Require this token from clients.
    pub token: Option<String>,
    /// Turn JetStream off (on by default, as in production).
    pub no_jetstream: bool,
}

/// A running `nats-server` on `127.0.0.1`, killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    bin: PathBuf,
    opts: NatsServerOptions,
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

const START_TIMEOUT: Duration = Duration::from_secs(10);

impl NatsServer {
    /// Start a server with default options on a port it picks itself.
    pub fn start() -> Result<NatsServer, HarnessError> {
        Self::start_with(NatsServerOptions::default())
    }

    /// Start a server with `opts` on a port it picks itself.
    pub fn start_with(opts: NatsServerOptions) -> Result<NatsServer, HarnessError> {
        let bin = nats_server_bin()?;
        let store = tempfile::Builder::new()
            .prefix("sb-nats-")
            .tempdir()
            .map_err(HarnessError::TempDir)?;
        let mut server = NatsServer {
            bin,
            opts,
            child: None,
            port: 0,
            store,
        };
        server.spawn(None)?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (stable across [`NatsServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Process id of the running server, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kill the server (SIGKILL, no goodbye to clients) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port after [`NatsServer::kill`].
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill();
        // The old listener may take a moment to be released.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn(Some(self.port)) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn spawn(&mut self, port: Option<u16>) -> Result<(), HarnessError> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-a").arg("127.0.0.1");
        cmd.arg("-p")
            .arg(port.map_or("-1".to_string(), |p| p.to_string()));
        if !self.opts.no_jetstream {
            cmd.arg("-js").arg("-sd").arg(self.store.path());
        }
        if let Some((user, pass)) = &self.opts.user_password {
            cmd.arg("--user").arg(user).arg("--pass").arg(pass);
        }
        if let Some(token) = &self.opts.token {
            cmd.arg("--auth").arg(token);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            bin: self.bin.display().to_string(),
            source,
        })?;
        let stderr = child.stderr.take().expect("stderr is piped");
        // Drain the server's log forever (a full pipe would freeze it) and
        // hand lines to us until we have seen the listening line.
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(t) = &tx {
                    if t.send(line).is_err() {
                        tx = None;
                    }
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut output = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    output.push_str(&line);
                    output.push('\n');
                    if let Some(p) = parse_listen_port(&line) {
                        self.port = p;
                        self.child = Some(child);
                        return Ok(());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(HarnessError::NotListening {
                        waited: START_TIMEOUT,
                        output,
                    });
                }
            }
        }
    }
}

/// Extract the port from "Listening for client connections on 127.0.0.1:4222".
fn parse_listen_port(line: &str) -> Option<u16> {
    let rest = line.split("Listening for client connections on ").nth(1)?;
    rest.trim().rsplit(':').next()?.parse().ok()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_line() {
        let l =
            "[1] 2026/11/21 15:40:20.1 [INF] Listening for client connections on 127.0.0.1:41235";
        assert_eq!(parse_listen_port(l), Some(41235));
        assert_eq!(parse_listen_port("[INF] Server is ready"), None);
    }

    #[test]
    fn starts_kills_and_restarts_on_the_same_port() {
        let mut s = NatsServer::start().expect("start");
        let port = s.port();
        assert_ne!(port, 0);
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("listening");
        s.kill();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        s.restart().expect("restart");
        assert_eq!(s.port(), port);
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("listening again");
    }
}
