//! The nats.js peer: the same envelopes through the JavaScript client most
//! NATS chat-bot frameworks use (npm `nats`, v2), with `JSON.stringify` and
//! `JSON.parse`, against the same server in the same run.
//!
//! `bench/peer/natsjs.cjs` runs one throughput measurement the way
//! [`crate::throughput`] does (two connections in one process, the same
//! window, first publish to last arrival) and prints one JSON line. The
//! client is installed project-locally by `make bench-tools` into
//! `.tools/nats-js` at a pinned version; when it (or node) is missing the
//! table says so, and the summary lists the target as not measured.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Deserialize;

/// Where `make bench-tools` installs the client, under the workspace.
const MODULE_DIR: &str = ".tools/nats-js/node_modules/nats";

/// The script, under the workspace.
const SCRIPT: &str = "bench/peer/natsjs.cjs";

/// A run longer than this means something hangs.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// What the script found to run with.
#[derive(Debug, Clone)]
pub struct Peer {
    node: PathBuf,
    module: PathBuf,
    script: PathBuf,
}

/// One run's result, as the script prints it.
#[derive(Debug, Clone, Deserialize)]
pub struct Outcome {
    /// Messages published.
    pub sent: u64,
    /// Messages the subscriber decoded.
    pub received: u64,
    /// First publish to last arrival.
    pub elapsed_ns: u64,
    /// CPU time of the node process (user + system) during the run.
    pub cpu_ns: u64,
    /// Bytes of one payload.
    pub wire_bytes: usize,
    /// The nats.js version.
    pub version: String,
}

impl Outcome {
    /// Messages delivered per second.
    pub fn msgs_per_sec(&self) -> f64 {
        if self.elapsed_ns == 0 {
            return 0.0;
        }
        self.received as f64 / (self.elapsed_ns as f64 / 1e9)
    }

    /// CPU ns per delivered message.
    pub fn cpu_per_msg(&self) -> f64 {
        self.cpu_ns as f64 / self.received.max(1) as f64
    }

    /// Whether every published message arrived.
    pub fn complete(&self) -> bool {
        self.received >= self.sent
    }
}

impl Peer {
    /// Finds node, the installed client and the script; `Err` says what is
    /// missing and how to get it.
    pub fn locate() -> Result<Peer, String> {
        let root = switchboard_testkit::workspace_root();
        let module = root.join(MODULE_DIR);
        let script = root.join(SCRIPT);
        let node = PathBuf::from("node");
        match Command::new(&node).arg("--version").output() {
            Ok(out) if out.status.success() => {}
            _ => return Err("node is not on PATH (Node 18 or later is needed)".to_owned()),
        }
        if !module.join("package.json").exists() {
            return Err(format!(
                "nats.js is not installed at {} (run make bench-tools)",
                module.display()
            ));
        }
        if !script.exists() {
            return Err(format!("{} is missing", script.display()));
        }
        Ok(Peer {
            node,
            module,
            script,
        })
    }

    /// One throughput run of `messages` envelopes with `body` bytes.
    pub async fn run(
        &self,
        url: &str,
        subject: &str,
        body: usize,
        messages: u64,
        window: u64,
    ) -> anyhow::Result<Outcome> {
        let child = tokio::process::Command::new(&self.node)
            .arg(&self.script)
            .arg(&self.module)
            .args([url, subject])
            .args([body.to_string(), messages.to_string(), window.to_string()])
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(RUN_LIMIT, child)
            .await
            .with_context(|| format!("the nats.js peer did not finish within {RUN_LIMIT:?}"))?
            .context("running node")?;
        if !output.status.success() {
            bail!(
                "the nats.js peer failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .with_context(|| format!("the nats.js peer printed no result: {stdout}"))?;
        serde_json::from_str(line).with_context(|| format!("the nats.js peer's result: {line}"))
    }
}
