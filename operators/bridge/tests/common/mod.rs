//! Shared pieces of the bridge's end-to-end tests: the real daemon in a
//! temporary directory supervising IRC operators and bridges, and a plain
//! raw-socket IRC client playing a person.

#![allow(dead_code)] // each test uses a different part

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use switchboard_testkit::{bin_path, nats_server_bin};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub const WAIT: Duration = Duration::from_secs(20);

/// `switchboard run` over a directory of manifests; killed on drop, its
/// output printed when a test fails.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    child: tokio::process::Child,
}

impl Daemon {
    /// Starts the daemon with `manifests` (file name, TOML text).
    pub fn start(manifests: &[(String, String)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let ops = dir.path().join("operators.d");
        std::fs::create_dir_all(&ops).unwrap();
        for (name, text) in manifests {
            std::fs::write(ops.join(name), text).unwrap();
        }
        std::fs::write(
            dir.path().join("switchboard.toml"),
            format!(
                "state_dir = \"state\"\nruntime_dir = \"run\"\n[nats.embedded]\nport = 0\nbinary = \"{}\"\n",
                nats_server_bin().expect("nats-server (make tools)").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let child = tokio::process::Command::new(bin_path("switchboard"))
            .args(["run", "--config"])
            .arg(dir.path().join("switchboard.toml"))
            .env("SWITCHBOARD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn switchboard");
        Daemon { dir, child }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("switchboard.toml")
    }

    /// `switchboard status --json`.
    pub fn status(&self) -> serde_json::Value {
        let out = std::process::Command::new(bin_path("switchboard"))
            .args(["status", "--json", "--config"])
            .arg(self.config())
            .output()
            .expect("switchboard status");
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// Waits until every operator in `ids` is running.
    pub async fn running(&self, ids: &[&str]) {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.status();
            let all = ids.iter().all(|id| {
                status["operators"].as_array().is_some_and(|ops| {
                    ops.iter()
                        .any(|o| o["id"] == *id && o["state"] == "running")
                })
            });
            if all {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not all of {ids:?} running: {status:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the daemon with SIGTERM and checks it exits cleanly.
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("daemon exits")
            .unwrap();
        assert!(status.success(), "{status:?}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(80)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            eprintln!("---- daemon log (tail) ----\n{}\n----", tail.join("\n"));
        }
    }
}

/// The manifest of an IRC operator `id` on 127.0.0.1:`port` in `channel`,
/// with flood control opened up for a 100-line burst (the servers in
/// these tests do not throttle).
pub fn irc_manifest(id: &str, port: u16, nick: &str, channel: &str) -> (String, String) {
    (
        format!("{id}.toml"),
        format!(
            "id = \"{id}\"\ncommand = {:?}\nheartbeat_interval = \"500ms\"\nstop_timeout = \"2s\"\n\
             publish = [\"chat.irc.{id}.#\"]\nsubscribe = [\"send.irc.{id}.#\"]\n\
             [config]\nserver = \"127.0.0.1\"\nport = {port}\nnick = \"{nick}\"\nchannels = [\"{channel}\"]\n\
             [config.flood]\nburst = 200\nper_second = 200.0\nwindow_bytes = 0\n",
            bin_path("switchboard-irc")
        ),
    )
}

/// The manifest of a bridge `id` with one gateway over `rooms` (instance,
/// channel), granted exactly the subjects it reads and writes.
pub fn bridge_manifest(id: &str, rooms: &[(&str, &str)], relay_joins: bool) -> (String, String) {
    let escape = |c: &str| c.replace('#', "=23");
    let kinds: &[&str] = if relay_joins {
        &["message", "join", "part", "quit"]
    } else {
        &["message"]
    };
    let subscribe: Vec<String> = rooms
        .iter()
        .flat_map(|(i, c)| {
            kinds
                .iter()
                .map(move |k| format!("\"chat.irc.{i}.{}.{k}\"", escape(c)))
        })
        .collect();
    let publish: Vec<String> = rooms
        .iter()
        .map(|(i, c)| format!("\"send.irc.{i}.{}.message\"", escape(c)))
        .collect();
    let members: String = rooms
        .iter()
        .map(|(i, c)| {
            format!("[[config.gateways.members]]\nprotocol = \"irc\"\ninstance = \"{i}\"\nroom = \"{c}\"\n")
        })
        .collect();
    (
        format!("{id}.toml"),
        format!(
            "id = \"{id}\"\ncommand = {:?}\nheartbeat_interval = \"500ms\"\n\
             publish = [{}]\nsubscribe = [{}]\n\
             [[config.gateways]]\nname = \"lobby\"\nrelay_joins = {relay_joins}\n\
             rate = {{ burst = 200, per_second = 200.0 }}\n{members}",
            bin_path("switchboard-bridge"),
            publish.join(", "),
            subscribe.join(", "),
        ),
    )
}

/// A plain IRC client on a raw socket (no library), answering PINGs.
pub struct RawClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    pub nick: String,
    /// Every line received, in order.
    pub seen: Vec<String>,
}

impl RawClient {
    /// Connects and registers as `nick`.
    pub async fn connect(port: u16, nick: &str) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the IRC server");
        let (r, w) = stream.into_split();
        let mut c = RawClient {
            reader: BufReader::new(r),
            writer: w,
            nick: nick.to_string(),
            seen: Vec::new(),
        };
        c.send(&format!("NICK {nick}")).await;
        c.send(&format!("USER {nick} 0 * :raw test client")).await;
        c.expect(WAIT, |l| l.contains(" 376 ") || l.contains(" 422 "))
            .await;
        c
    }

    pub async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write to the IRC server");
    }

    /// The next line (PINGs are answered and skipped), or None.
    pub async fn next(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let mut buf = Vec::new();
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.reader.read_until(b'\n', &mut buf)).await {
                Ok(Ok(n)) if n > 0 => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    if let Some(rest) = line.strip_prefix("PING ") {
                        self.send(&format!("PONG {rest}")).await;
                        continue;
                    }
                    self.seen.push(line.clone());
                    return Some(line);
                }
                _ => return None,
            }
        }
    }

    /// The next line matching `pred`; panics with the recent lines after
    /// `within`.
    pub async fn expect(&mut self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(l) if pred(&l) => return l,
                Some(_) => continue,
                None => {
                    let tail: Vec<_> = self.seen.iter().rev().take(30).rev().collect();
                    panic!(
                        "{}: no matching line within {within:?}; last lines: {tail:#?}",
                        self.nick
                    )
                }
            }
        }
    }

    /// Every line that arrives within `within`.
    pub async fn drain(&mut self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while let Some(l) = self
            .next(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            out.push(l);
        }
        out
    }
}

/// The text of a `PRIVMSG` line from `nick` to `target`, if it is one.
pub fn privmsg_text<'a>(line: &'a str, nick: &str, target: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(&format!(":{nick}!"))?;
    let (_, rest) = rest.split_once(' ')?;
    rest.strip_prefix(&format!("PRIVMSG {target} :"))
}
