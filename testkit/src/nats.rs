//! A real `nats-server` child process for tests.
//!
//! The server runs from a config file the harness writes (rewritten on
//! every start, since the port is only known after the first): TLS, nkey
//! users and permission blocks cannot all be said with command-line flags.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
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
    /// The server's config file could not be written.
    #[error("could not write the nats-server config {path}: {source}")]
    Config {
        /// The file.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The TLS certificates could not be made.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
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
///
/// `user_password`, `token` and `nkeys` each add to one `authorization`
/// block; nats-server refuses a token together with users. For users
/// with permissions, leave them empty and write the whole
/// `authorization { users = [...] }` block in `extra_config`.
#[derive(Debug, Clone, Default)]
pub struct NatsServerOptions {
    /// Require this user/password from clients.
    pub user_password: Option<(String, String)>,
    /// Require this token from clients.
    pub token: Option<String>,
    /// Let in clients that sign with one of these nkeys (public keys,
    /// `U…`; see [`crate::NkeyUser`]).
    pub nkeys: Vec<String>,
    /// Accept TLS connections only, with a certificate for `127.0.0.1`
    /// and `localhost` from a throwaway CA ([`NatsServer::ca_file`]).
    pub tls: bool,
    /// Config text appended to the generated config file, e.g. an
    /// `authorization { users = [...] }` block with `permissions`.
    pub extra_config: String,
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
    /// Holds the config file and the JetStream store.
    store: tempfile::TempDir,
    /// The certificates, when started with `tls`.
    ca: Option<crate::TestCa>,
    /// Everything the server printed, across restarts (see
    /// [`NatsServer::log`]).
    log: Arc<Mutex<String>>,
}

/// Past this much, the server's output is no longer kept: a test's server
/// prints a few kilobytes, and a runaway one must not eat the memory.
const LOG_KEPT: usize = 1 << 20;

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
        let ca = if opts.tls {
            Some(crate::TestCa::new()?)
        } else {
            None
        };
        let mut server = NatsServer {
            bin,
            opts,
            child: None,
            port: 0,
            store,
            ca,
            log: Arc::default(),
        };
        server.spawn(None)?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`, or `tls://127.0.0.1:<port>` for a server
    /// started with `tls`.
    ///
    /// async-nats would also do TLS with the `nats://` form (it upgrades
    /// when the server's INFO says TLS is required, and verifies the
    /// certificate all the same); `tls://` says it in the URL and makes a
    /// client refuse a server that does not offer TLS, whatever its other
    /// options say.
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA certificate (PEM) that signed the server's certificate,
    /// when started with `tls`: what a client must trust.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.ca.as_ref().map(crate::TestCa::ca_file)
    }

    /// The port it listens on (stable across [`NatsServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the server printed so far (its log goes to stderr),
    /// for a test to show when the server refused something: a client
    /// only hears "authorization violation", the server says why.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
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
        let conf = config_text(
            &self.opts,
            port,
            self.store.path(),
            self.ca
                .as_ref()
                .map(|ca| (ca.server_cert_file(), ca.server_key_file())),
        );
        let conf_path = self.store.path().join("nats-server.conf");
        std::fs::write(&conf_path, conf).map_err(|source| HarnessError::Config {
            path: conf_path.display().to_string(),
            source,
        })?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&conf_path);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            bin: self.bin.display().to_string(),
            source,
        })?;
        let stderr = child.stderr.take().expect("stderr is piped");
        // Drain the server's log forever (a full pipe would freeze it),
        // keep it for `log()`, and hand lines to us until we have seen the
        // listening line.
        let (tx, rx) = mpsc::channel::<String>();
        let log = Arc::clone(&self.log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                {
                    let mut kept = log.lock().unwrap_or_else(|p| p.into_inner());
                    if kept.len() < LOG_KEPT {
                        kept.push_str(&line);
                        kept.push('\n');
                    }
                }
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

/// The config file for `opts`: listen on 127.0.0.1 at `port` (`-1`: any
/// free port, read back from the log), JetStream in `dir`, then TLS,
/// authorization and the caller's extra text.
fn config_text(
    opts: &NatsServerOptions,
    port: Option<u16>,
    dir: &Path,
    tls: Option<(PathBuf, PathBuf)>,
) -> String {
    let port = port.map_or(-1, i32::from);
    let mut c = format!("host: \"127.0.0.1\"\nport: {port}\n");
    if !opts.no_jetstream {
        let store = dir.join("jetstream");
        let _ = writeln!(
            c,
            "jetstream {{ store_dir: {} }}",
            quote(&store.display().to_string())
        );
    }
    if let Some((cert, key)) = tls {
        let _ = writeln!(
            c,
            "tls {{\n  cert_file: {}\n  key_file: {}\n}}",
            quote(&cert.display().to_string()),
            quote(&key.display().to_string())
        );
    }
    let mut users = Vec::new();
    if let Some((user, pass)) = &opts.user_password {
        users.push(format!(
            "{{ user: {}, password: {} }}",
            quote(user),
            quote(pass)
        ));
    }
    for nkey in &opts.nkeys {
        users.push(format!("{{ nkey: {} }}", quote(nkey)));
    }
    if opts.token.is_some() || !users.is_empty() {
        c.push_str("authorization {\n");
        if let Some(token) = &opts.token {
            let _ = writeln!(c, "  token: {}", quote(token));
        }
        if !users.is_empty() {
            let _ = writeln!(c, "  users = [\n    {}\n  ]", users.join(",\n    "));
        }
        c.push_str("}\n");
    }
    if !opts.extra_config.is_empty() {
        c.push_str(&opts.extra_config);
        c.push('\n');
    }
    c
}

/// A double-quoted string for nats-server's config syntax (which reads
/// `\\` and `\"` escapes there, and expands no `$VARIABLE`).
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for ch in s.chars() {
        if ch == '"' || ch == '\\' {
            q.push('\\');
        }
        q.push(ch);
    }
    q.push('"');
    q
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
    fn config_quotes_values_and_lists_every_user() {
        let opts = NatsServerOptions {
            user_password: Some(("bot".into(), r#"pa"ss\word"#.into())),
            nkeys: vec!["UABC".into(), "UDEF".into()],
            extra_config: "# extra".into(),
            no_jetstream: true,
            ..Default::default()
        };
        let c = config_text(&opts, Some(4222), Path::new("/tmp/x"), None);
        assert!(c.starts_with("host: \"127.0.0.1\"\nport: 4222\n"), "{c}");
        assert!(!c.contains("jetstream"), "{c}");
        assert!(!c.contains("tls"), "{c}");
        assert!(
            c.contains(r#"{ user: "bot", password: "pa\"ss\\word" }"#),
            "{c}"
        );
        assert!(c.contains(r#"{ nkey: "UABC" }"#), "{c}");
        assert!(c.contains(r#"{ nkey: "UDEF" }"#), "{c}");
        assert!(c.trim_end().ends_with("# extra"), "{c}");
        let c = config_text(&NatsServerOptions::default(), None, Path::new("/d"), None);
        assert!(c.contains("port: -1\n"), "{c}");
        assert!(
            c.contains(r#"jetstream { store_dir: "/d/jetstream" }"#),
            "{c}"
        );
        assert!(!c.contains("authorization"), "{c}");
    }

    /// The first line a client gets from the server.
    fn info_line(port: u16) -> String {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("listening");
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).expect("INFO");
        line
    }

    #[test]
    fn tls_server_requires_tls_after_a_restart_too() {
        let mut s = NatsServer::start_with(NatsServerOptions {
            tls: true,
            ..Default::default()
        })
        .expect("start");
        assert_eq!(s.url(), format!("tls://127.0.0.1:{}", s.port()));
        let ca = s.ca_file().expect("a CA");
        assert!(ca.is_file(), "{}", ca.display());
        assert!(info_line(s.port()).contains(r#""tls_required":true"#));
        s.restart().expect("restart");
        assert!(info_line(s.port()).contains(r#""tls_required":true"#));
        let plain = NatsServer::start().expect("start");
        assert!(plain.url().starts_with("nats://"));
        assert_eq!(plain.ca_file(), None);
        assert!(!info_line(plain.port()).contains("tls_required"));
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
        // The log covers both runs.
        let log = s.log();
        assert_eq!(
            log.matches("Listening for client connections").count(),
            2,
            "{log}"
        );
    }
}
