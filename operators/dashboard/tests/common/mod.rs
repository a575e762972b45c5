//! The testkit's `switchboard run` (embedded nats-server) supervising the
//! ping bot and this dashboard, a plain HTTP/1.1 client for its routes,
//! and a real Prometheus parser for `/metrics`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;
use switchboard_testkit::daemon::{Daemon, DaemonConfig, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The token the tests configure (by secret reference, from a file).
pub const TOKEN: &str = "s3cret-dash-token";
/// The viewer token they configure next to it.
pub const VIEWER: &str = "v1ewer-dash-token";
/// The header that logs a script in with [`TOKEN`].
pub const AUTH: (&str, &str) = ("Authorization", "Bearer s3cret-dash-token");

/// A daemon with `pingbot` and `dashboard`, and the dashboard's address.
pub struct Dash {
    pub daemon: Daemon,
    pub addr: SocketAddr,
}

/// The dashboard manifest as in the example, with fast polling; the
/// token from `token_file` when given, and the viewer token from the
/// file next to it.
pub fn manifest(token_file: Option<&std::path::Path>) -> String {
    let mut m = format!(
        "id = \"dashboard\"\ncommand = {:?}\nheartbeat_interval = \"500ms\"\nmissed_heartbeats = 20\n\
         publish = [\"chat.console.dashboard.#\"]\nsubscribe = [\"chat.#\", \"send.#\", \"sb.event.#\", \"sb.log.#\", \"sb.op.#\"]\n\
         api = [\"status\", \"logs\", \"ctl\"]\nstream = [\"read\"]\n[config]\npoll_interval = \"100ms\"\n",
        switchboard_testkit::bin_path("switchboard-dashboard")
    );
    if let Some(f) = token_file {
        let viewer = f.with_file_name("dashboard-viewer-token");
        m.push_str(&format!(
            "[secrets]\ntoken = {{ file = {f:?} }}\nviewer_token = {{ file = {viewer:?} }}\n"
        ));
    }
    m
}

/// The ping bot, restarted at once when it dies, and lenient with
/// heartbeats: a loaded test machine must not make the daemon restart it
/// for slowness (the tests count restarts).
pub fn pingbot_manifest() -> String {
    format!(
        "id = \"pingbot\"\ncommand = {:?}\nheartbeat_interval = \"500ms\"\nmissed_heartbeats = 20\n\
         stop_timeout = \"2s\"\nrestart = \"always\"\n[backoff]\ninitial = \"10ms\"\nreset_after = \"100ms\"\n",
        switchboard_testkit::bin_path("switchboard-pingbot")
    )
}

/// Start it all; the dashboard with the token when `token` is true.
pub async fn start(token: bool) -> anyhow::Result<Dash> {
    start_with(token, |m| m).await
}

/// [`start`], with the dashboard's manifest text changed by `edit` first
/// (another `listen`, a grant left out).
pub async fn start_with(token: bool, edit: impl FnOnce(String) -> String) -> anyhow::Result<Dash> {
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("dashboard-token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;
    std::fs::write(
        dir.path().join("dashboard-viewer-token"),
        format!("{VIEWER}\n"),
    )?;
    let daemon = DaemonConfig::new()
        .manifest("pingbot.toml", pingbot_manifest())
        .manifest(
            "dashboard.toml",
            edit(manifest(token.then_some(token_file.as_path()))),
        )
        .try_start_in(dir)
        .await?;
    let addr = address_from_log(&daemon).await?;
    Ok(Dash { daemon, addr })
}

/// The address in the dashboard's last start line, read back through the
/// daemon's `logs` API as a person would with `switchboard logs`.
pub async fn address_from_log(daemon: &Daemon) -> anyhow::Result<SocketAddr> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(reply) = daemon.logs("dashboard", 100).await {
            // The last one: a reload logs a new address.
            for l in reply.lines.iter().rev() {
                if let Some(rest) = l.line.split("dashboard on http://").nth(1) {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    return addr
                        .parse()
                        .with_context(|| format!("address in {:?}", l.line));
                }
            }
        }
        if Instant::now() > deadline {
            bail!("the dashboard never logged its address:\n{}", daemon.log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP/1.1 request; the status and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let (code, _, body) = http_full(addr, method, path, headers, body).await?;
    Ok((code, body))
}

/// One HTTP/1.1 request; the status, the head (status line and headers)
/// and the body.
pub async fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<(u16, String, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await??;
    let text = String::from_utf8(out)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    Ok((code, head.to_owned(), body.to_owned()))
}

/// `switchboard status --json` for the daemon.
pub fn cli_status(daemon: &Daemon) -> anyhow::Result<serde_json::Value> {
    let out = daemon.cli(&["status", "--json"]);
    if !out.status.success() {
        bail!(
            "switchboard status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `/metrics` as a real Prometheus text-format parser reads it (PyPI
/// `prometheus-client`, installed by `make tools`): the parser's view,
/// (sample name, sorted labels) -> value.
pub type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"family": fam.name, "type": fam.type, "help": fam.documentation, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// Parse an exposition: the samples by name and labels, and every sample
/// as the parser gave it (`family`, `type`, `help`, `name`, `labels`,
/// `value`), in order.
pub async fn parse(text: &str) -> anyhow::Result<(Samples, Vec<Value>)> {
    let python = switchboard_testkit::workspace_root().join(".tools/venv/bin/python");
    let mut child = tokio::process::Command::new(&python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{} (run `make tools`)", python.display()))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(text.as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!(
            "the Prometheus parser refused the exposition (is prometheus-client installed? `make tools`): {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let all: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    let mut samples = Samples::new();
    for s in &all {
        let mut labels: Vec<(String, String)> = s["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        labels.sort();
        let name = s["name"].as_str().unwrap_or_default().to_owned();
        samples.insert((name, labels), s["value"].as_f64().unwrap_or(f64::NAN));
    }
    Ok((samples, all))
}

/// The sample of `name` with exactly these labels.
pub fn get(s: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    l.sort();
    s.get(&(name.to_owned(), l)).copied()
}
