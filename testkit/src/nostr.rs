//! Real Nostr relays for tests: the PyPI `nostr-relay` package (pure
//! Python, SQLite storage) installed by `make tools` into `.tools/venv`,
//! started per test on a free loopback port with its own configuration
//! and database in a temporary directory, and killed on drop. It can be
//! stopped and started again on the same port with the same database, so
//! reconnect tests cut a relay under a running client.
//!
//! Options: require NIP-42 authentication for writes (only the listed
//! public keys may write, after `AUTH`), store events without checking
//! their signatures (the one way to make a real relay serve a forged
//! event to the operator under test), and serve `wss://` (uvicorn's TLS,
//! with a [`crate::TestCa`] certificate).
//!
//! The program is `$SWITCHBOARD_NOSTR_RELAY`, else
//! `.tools/venv/bin/nostr-relay`.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a test could not get its relay.
#[derive(Debug, thiserror::Error)]
pub enum NostrRelayError {
    /// The program is not installed.
    #[error("nostr-relay not found at {0} (or $SWITCHBOARD_NOSTR_RELAY): run `make tools`")]
    BinaryMissing(PathBuf),
    /// Its directory or configuration could not be written.
    #[error("could not prepare the relay's directory: {0}")]
    Setup(#[source] std::io::Error),
    /// A command failed (spawn, or the role set-up for auth).
    #[error("nostr-relay {what}: {detail}")]
    Command {
        /// What we ran.
        what: &'static str,
        /// What happened.
        detail: String,
    },
    /// It ran but never listened.
    #[error("nostr-relay did not listen on 127.0.0.1:{port} within {waited:?}; its log:\n{log}")]
    NotListening {
        /// The port.
        port: u16,
        /// How long we waited.
        waited: Duration,
        /// What it printed.
        log: String,
    },
}

/// Options for [`NostrRelay`].
#[derive(Debug, Clone, Default)]
pub struct NostrRelayOptions {
    /// Require NIP-42 auth to write; these hex public keys may write once
    /// authenticated (everyone may read).
    pub writers_with_auth: Option<Vec<String>>,
    /// Store events without verifying their signatures.
    pub accept_bad_signatures: bool,
    /// Serve `wss://` with this certificate and key (PEM files, e.g.
    /// [`crate::TestCa::server_cert_file`] and
    /// [`crate::TestCa::server_key_file`]).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A running `nostr-relay` on 127.0.0.1, killed on drop.
#[derive(Debug)]
pub struct NostrRelay {
    port: u16,
    tls: bool,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

const START_TIMEOUT: Duration = Duration::from_secs(20);

fn program() -> PathBuf {
    std::env::var_os("SWITCHBOARD_NOSTR_RELAY")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join(".tools/venv/bin/nostr-relay"))
}

impl NostrRelay {
    /// A plain relay (no auth, signatures checked).
    pub fn start() -> Result<NostrRelay, NostrRelayError> {
        NostrRelay::start_with(NostrRelayOptions::default())
    }

    /// A relay with `opts`.
    pub fn start_with(opts: NostrRelayOptions) -> Result<NostrRelay, NostrRelayError> {
        let bin = program();
        if !bin.is_file() {
            return Err(NostrRelayError::BinaryMissing(bin));
        }
        let dir = tempfile::tempdir().map_err(NostrRelayError::Setup)?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(NostrRelayError::Setup)?
            .port();
        let validators = if opts.accept_bad_signatures {
            "    - nostr_relay.validators.is_not_too_large\n"
        } else {
            "    - nostr_relay.validators.is_not_too_large\n    - nostr_relay.validators.is_signed\n"
        };
        let scheme = if opts.tls.is_some() { "wss" } else { "ws" };
        let auth = match &opts.writers_with_auth {
            None => "authentication:\n  enabled: false\n".to_string(),
            Some(_) => format!(
                "authentication:\n  enabled: true\n  relay_urls:\n    - {scheme}://127.0.0.1:{port}\n    - {scheme}://127.0.0.1:{port}/\n  actions:\n    save: w\n    query: a\n"
            ),
        };
        // uvicorn takes these from the `gunicorn` section as is.
        let tls = match &opts.tls {
            None => String::new(),
            Some((cert, key)) => format!(
                "  ssl_certfile: {}\n  ssl_keyfile: {}\n",
                cert.display(),
                key.display()
            ),
        };
        let config = format!(
            "DEBUG: false\nrelay_name: switchboard-test\nstorage:\n  sqlalchemy.url: sqlite+aiosqlite:///{db}\n  validators:\n{validators}gunicorn:\n  bind: 127.0.0.1:{port}\n  loglevel: warning\n{tls}{auth}message_timeout: 600\n",
            db = dir.path().join("relay.sqlite3").display(),
        );
        std::fs::write(dir.path().join("config.yaml"), config).map_err(NostrRelayError::Setup)?;
        let mut relay = NostrRelay {
            port,
            tls: opts.tls.is_some(),
            dir,
            child: None,
        };
        if let Some(writers) = &opts.writers_with_auth {
            // The database must exist before roles can be stored in it:
            // start once, then grant, then restart (roles are read per AUTH).
            relay.restart()?;
            for pubkey in writers {
                relay.run("role set", &["role", "set", "-p", pubkey, "-r", "w"])?;
            }
        }
        relay.restart()?;
        Ok(relay)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(program());
        cmd.current_dir(self.dir.path())
            .arg("-c")
            .arg(self.dir.path().join("config.yaml"));
        cmd
    }

    fn run(&self, what: &'static str, args: &[&str]) -> Result<(), NostrRelayError> {
        let out = self
            .command()
            .args(args)
            .output()
            .map_err(|e| NostrRelayError::Command {
                what,
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(NostrRelayError::Command {
                what,
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }

    /// `ws://127.0.0.1:<port>` (`wss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it (the database stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again) on the same port with the same database.
    pub fn restart(&mut self) -> Result<(), NostrRelayError> {
        self.stop();
        let log = self.dir.path().join("relay.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(NostrRelayError::Setup)?;
        let err = out.try_clone().map_err(NostrRelayError::Setup)?;
        let mut child = self
            .command()
            .args(["serve", "--use-uvicorn"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| NostrRelayError::Command {
                what: "serve",
                detail: e.to_string(),
            })?;
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if exited || started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NostrRelayError::NotListening {
                    port: self.port,
                    waited: started.elapsed(),
                    log: std::fs::read_to_string(&log).unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// What the relay logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
    }
}

impl Drop for NostrRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_stops_and_restarts_on_the_same_port() {
        let mut r = NostrRelay::start().expect("nostr-relay (make tools)");
        let port = r.port();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        r.stop();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        r.restart().expect("restart");
        assert_eq!(r.port(), port);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(r.url().ends_with(&port.to_string()));
    }
}
