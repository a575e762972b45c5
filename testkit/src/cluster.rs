//! Three real `nats-server`s forming one cluster with JetStream, on
//! loopback, for the scale-out tests.
//!
//! Routes need every node's cluster port before any node starts, so the
//! launcher reserves the ports first (bind to port 0, note the port, let
//! go: a small race with other processes, acceptable in tests). Each node
//! can be killed (SIGKILL), frozen (SIGSTOP) and thawed, and restarted on
//! the same ports with the same store.
//!
//! The cluster part of each node's config comes from the caller (the
//! function under test in `switchboard-cluster`), so the fragment the
//! daemon will write is the one these servers run; the launcher writes
//! only the listener and the JetStream store.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::nats::{nats_server_bin, HarnessError};

/// One node as the launcher planned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNodePlan {
    /// `n0`, `n1`, `n2`.
    pub name: String,
    /// Client port on 127.0.0.1.
    pub client_port: u16,
    /// Route (cluster) port on 127.0.0.1.
    pub cluster_port: u16,
}

/// A running 3-node cluster; every node is killed on drop.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<ClusterNode>,
}

/// One node of a [`NatsCluster`].
#[derive(Debug)]
pub struct ClusterNode {
    plan: ClusterNodePlan,
    bin: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
    frozen: bool,
    log: Arc<Mutex<String>>,
    /// Holds the config and the JetStream store.
    _dir: tempfile::TempDir,
}

const NODES: usize = 3;
const START_TIMEOUT: Duration = Duration::from_secs(15);
const LOG_KEPT: usize = 1 << 20;

impl NatsCluster {
    /// Start three nodes. `fragment(node, all)` returns the cluster part
    /// of `node`'s config (server name, `cluster { ... }` with routes to
    /// the others' `cluster_port`s). Returns once every node listens for
    /// clients; the cluster may still be electing its JetStream leader
    /// (callers retry their first JetStream request).
    pub fn start(
        fragment: impl Fn(&ClusterNodePlan, &[ClusterNodePlan]) -> String,
    ) -> Result<NatsCluster, HarnessError> {
        let bin = nats_server_bin()?;
        let ports = free_ports(NODES * 2).map_err(HarnessError::TempDir)?;
        let plans: Vec<ClusterNodePlan> = (0..NODES)
            .map(|i| ClusterNodePlan {
                name: format!("n{i}"),
                client_port: ports[2 * i],
                cluster_port: ports[2 * i + 1],
            })
            .collect();
        let mut nodes = Vec::new();
        for plan in &plans {
            let dir = tempfile::Builder::new()
                .prefix("sb-cluster-")
                .tempdir()
                .map_err(HarnessError::TempDir)?;
            let store = dir.path().join("jetstream");
            let conf = dir.path().join("nats-server.conf");
            let text = format!(
                "host: \"127.0.0.1\"\nport: {}\njetstream {{ store_dir: {} }}\n{}\n",
                plan.client_port,
                quote(&store.display().to_string()),
                fragment(plan, &plans)
            );
            std::fs::write(&conf, text).map_err(|source| HarnessError::Config {
                path: conf.display().to_string(),
                source,
            })?;
            nodes.push(ClusterNode {
                plan: plan.clone(),
                bin: bin.clone(),
                conf,
                child: None,
                frozen: false,
                log: Arc::default(),
                _dir: dir,
            });
        }
        // All at once: each waits for its routes anyway.
        for node in &mut nodes {
            node.spawn()?;
        }
        for node in &mut nodes {
            node.wait_listening()?;
        }
        Ok(NatsCluster { nodes })
    }

    /// The nodes.
    pub fn nodes(&self) -> &[ClusterNode] {
        &self.nodes
    }

    /// Node `i` (0, 1 or 2), to kill, freeze or restart it.
    ///
    /// # Panics
    ///
    /// When `i` is not a node.
    pub fn node(&mut self, i: usize) -> &mut ClusterNode {
        &mut self.nodes[i]
    }

    /// Every node's client URL, comma-separated (what a client that may
    /// use any node connects to).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(ClusterNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl ClusterNode {
    /// Its plan (name and ports).
    pub fn plan(&self) -> &ClusterNodePlan {
        &self.plan
    }

    /// `nats://127.0.0.1:<client port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.plan.client_port)
    }

    /// Process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything it printed, across restarts.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// SIGKILL and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.frozen = false;
    }

    /// SIGSTOP: the process stays, its sockets stay open, nothing answers.
    pub fn freeze(&mut self) {
        if self.signal("STOP") {
            self.frozen = true;
        }
    }

    /// SIGCONT after [`ClusterNode::freeze`].
    pub fn thaw(&mut self) {
        if self.signal("CONT") {
            self.frozen = false;
        }
    }

    /// Start it again (same ports, same store) after [`ClusterNode::kill`].
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.spawn()?;
            match self.wait_listening() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                // The old listener may take a moment to be released.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// `kill -<sig> <pid>`: the `kill` command, as testkit has no signal
    /// crate and a test needs nothing more.
    fn signal(&self, sig: &str) -> bool {
        let Some(pid) = self.pid() else { return false };
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        let mut child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                bin: self.bin.display().to_string(),
                source,
            })?;
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&self.log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut kept = log.lock().unwrap_or_else(|p| p.into_inner());
                    if kept.len() < LOG_KEPT {
                        kept.push_str(&line);
                        kept.push('\n');
                    }
                }
            });
        }
        self.child = Some(child);
        Ok(())
    }

    /// Wait until the client port accepts connections (or the process
    /// exits, e.g. a port taken).
    fn wait_listening(&mut self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.plan.client_port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        Err(HarnessError::NotListening {
            waited: START_TIMEOUT,
            output: self.log(),
        })
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` distinct free loopback ports.
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// A double-quoted nats-server config string.
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
