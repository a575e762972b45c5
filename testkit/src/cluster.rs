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
    /// The address it listens on: 127.0.0.1, or its namespace's own
    /// address in a [`NetnsBed`].
    pub addr: String,
    /// Client port on `addr`.
    pub client_port: u16,
    /// Route (cluster) port on `addr`.
    pub cluster_port: u16,
    /// The network namespace it runs in (`None`: the test's own).
    pub netns: Option<String>,
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
    /// How many times it was spawned (a restart's listener line is the
    /// n-th in the log).
    starts: usize,
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
                addr: "127.0.0.1".into(),
                client_port: ports[2 * i],
                cluster_port: ports[2 * i + 1],
                netns: None,
            })
            .collect();
        NatsCluster::start_planned(bin, plans, fragment)
    }

    /// Start three nodes, node `i` in `bed`'s namespace `i`, listening on
    /// that namespace's address (client port 4222, routes 6222: each
    /// namespace has its own ports). The test process cannot reach them;
    /// clients run in the namespaces too (`NetnsBed::command`).
    pub fn start_in(
        bed: &NetnsBed,
        fragment: impl Fn(&ClusterNodePlan, &[ClusterNodePlan]) -> String,
    ) -> Result<NatsCluster, HarnessError> {
        let bin = nats_server_bin()?;
        let plans: Vec<ClusterNodePlan> = (0..NODES)
            .map(|i| ClusterNodePlan {
                name: format!("n{i}"),
                addr: bed.addr(i).to_string(),
                client_port: 4222,
                cluster_port: 6222,
                netns: Some(bed.netns(i).to_owned()),
            })
            .collect();
        NatsCluster::start_planned(bin, plans, fragment)
    }

    fn start_planned(
        bin: PathBuf,
        plans: Vec<ClusterNodePlan>,
        fragment: impl Fn(&ClusterNodePlan, &[ClusterNodePlan]) -> String,
    ) -> Result<NatsCluster, HarnessError> {
        let mut nodes = Vec::new();
        for plan in &plans {
            let dir = tempfile::Builder::new()
                .prefix("sb-cluster-")
                .tempdir()
                .map_err(HarnessError::TempDir)?;
            let store = dir.path().join("jetstream");
            let conf = dir.path().join("nats-server.conf");
            let text = format!(
                "host: {}\nport: {}\njetstream {{ store_dir: {} }}\n{}\n",
                quote(&plan.addr),
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
                starts: 0,
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

    /// `nats://<addr>:<client port>`.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.plan.addr, self.plan.client_port)
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
        // `ip netns exec` execs the server in place: the child's pid is
        // the server's, so kill and freeze reach the server itself.
        let mut command = match &self.plan.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let mut child = command
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
        self.starts += 1;
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
            // A node in a namespace is out of the test's reach: its log
            // says when it listens (nats-server logs the listener line at
            // its default level).
            let up = match self.plan.netns {
                Some(_) => {
                    let log = self.log();
                    let marker = format!("Listening for client connections on {}:", self.plan.addr);
                    // Only this run's listener line counts after a restart.
                    log.matches(&marker).count() >= self.starts
                }
                None => std::net::TcpStream::connect(("127.0.0.1", self.plan.client_port)).is_ok(),
            };
            if up {
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

/// `n` distinct free loopback ports (bound at once, then let go: a
/// small race with other processes, acceptable in tests). For listeners
/// whose port must be known before anything starts, such as cluster
/// routes.
///
/// # Errors
///
/// When the ports cannot be bound.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
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

/// Three network namespaces joined by a bridge: one "host" per namespace,
/// for true partitions (packets dropped, no connection reset), which a
/// closed TCP connection on loopback does not give.
///
/// Layout, all private to namespaces this bed creates (nothing is added
/// to the test's own namespace, so concurrent beds cannot collide):
/// namespace `<id>-br` holds a bridge `br0`; namespace `<id>-h<i>` holds
/// `eth0` with 10.231.0.<i+1>/24, the other end of its veth pair (`h<i>`)
/// a port of the bridge. [`NetnsBed::cut`] takes the bridge's port of one
/// host down: that host reaches nobody, the two others still reach each
/// other. Everything is deleted on drop (deleting a namespace deletes
/// the interfaces in it), also when a test panics; namespaces left by a
/// test process that was killed are deleted by the next bed.
///
/// A fourth namespace, the observer (`<id>-obs`, 10.231.0.100), is on
/// the same bridge for the test itself: a thread that
/// [`NetnsBed::enter_observer`] reaches every host as a client on
/// another machine would, and the processes it starts stay in it.
#[derive(Debug)]
pub struct NetnsBed {
    id: String,
    created: Vec<String>,
}

/// Why a [`NetnsBed`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    /// This machine or user cannot create namespaces (not root, no `ip`,
    /// no kernel support): tests skip.
    #[error("network namespaces unavailable: {0}")]
    Unavailable(String),
    /// A step of the setup failed.
    #[error("`ip {args}` failed: {stderr}")]
    Step {
        /// The `ip` arguments.
        args: String,
        /// What `ip` printed.
        stderr: String,
    },
}

/// The kinds of [`NetnsError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetnsErrorKind {
    /// [`NetnsError::Unavailable`].
    Unavailable,
    /// [`NetnsError::Step`].
    Step,
}

impl NetnsError {
    /// What kind of failure.
    pub fn kind(&self) -> NetnsErrorKind {
        match self {
            NetnsError::Unavailable(_) => NetnsErrorKind::Unavailable,
            NetnsError::Step { .. } => NetnsErrorKind::Step,
        }
    }
}

/// The observer's address on the bed's bridge.
pub const OBSERVER_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 231, 0, 100);

/// Every bed's namespace names start with this, then the creating
/// process's pid.
const NETNS_PREFIX: &str = "sbtest-";

fn ip(args: &[&str]) -> Result<(), NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetnsError::Unavailable(format!("cannot run `ip`: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Step {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

impl NetnsBed {
    /// Build the bed for three hosts. [`NetnsError::Unavailable`] when
    /// namespaces cannot be created here (the caller skips with one line).
    pub fn create() -> Result<NetnsBed, NetnsError> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        reap_orphans();
        let id = format!(
            "{NETNS_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let mut bed = NetnsBed {
            id,
            created: Vec::new(),
        };
        let br = format!("{}-br", bed.id);
        match ip(&["netns", "add", &br]) {
            Ok(()) => bed.created.push(br.clone()),
            Err(NetnsError::Step { stderr, .. }) => return Err(NetnsError::Unavailable(stderr)),
            Err(e) => return Err(e),
        }
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        ip(&["-n", &br, "link", "set", "lo", "up"])?;
        for i in 0..NODES {
            let ns = bed.netns(i).to_owned();
            ip(&["netns", "add", &ns])?;
            bed.created.push(ns.clone());
            let port = format!("h{i}");
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &br, "link", "set", &port, "up"])?;
            let cidr = format!("{}/24", bed.addr(i));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let obs = bed.observer();
        ip(&["netns", "add", &obs])?;
        bed.created.push(obs.clone());
        ip(&[
            "-n", &br, "link", "add", "obs", "type", "veth", "peer", "name", "eth0", "netns", &obs,
        ])?;
        ip(&["-n", &br, "link", "set", "obs", "master", "br0"])?;
        ip(&["-n", &br, "link", "set", "obs", "up"])?;
        let cidr = format!("{}/24", OBSERVER_ADDR);
        ip(&["-n", &obs, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &obs, "link", "set", "eth0", "up"])?;
        ip(&["-n", &obs, "link", "set", "lo", "up"])?;
        Ok(bed)
    }

    /// The observer's namespace (see the type's docs).
    pub fn observer(&self) -> String {
        format!("{}-obs", self.id)
    }

    /// Move the calling thread into the observer's namespace: the
    /// sockets it opens from now on, and the threads and processes it
    /// starts, are there. Run a test's body on a thread of its own that
    /// calls this first (a current-thread runtime keeps every task on
    /// it).
    ///
    /// # Errors
    ///
    /// When the namespace cannot be entered.
    pub fn enter_observer(&self) -> Result<(), NetnsError> {
        let path = format!("/run/netns/{}", self.observer());
        let file = std::fs::File::open(&path)
            .map_err(|e| NetnsError::Unavailable(format!("cannot open {path}: {e}")))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetnsError::Unavailable(format!("cannot enter {path}: {e}")))
    }

    /// Host `i`'s namespace.
    pub fn netns(&self, i: usize) -> String {
        format!("{}-h{i}", self.id)
    }

    /// Host `i`'s address, 10.231.0.<i+1>.
    pub fn addr(&self, i: usize) -> std::net::Ipv4Addr {
        let last = u8::try_from(i + 1).unwrap_or(u8::MAX);
        std::net::Ipv4Addr::new(10, 231, 0, last)
    }

    /// `program` to run in host `i`'s namespace.
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns(i)]).arg(program);
        c
    }

    /// Partition host `i` from the others: its bridge port goes down, so
    /// its packets go nowhere (no reset: connections time out).
    pub fn cut(&self, i: usize) -> Result<(), NetnsError> {
        ip(&[
            "-n",
            &format!("{}-br", self.id),
            "link",
            "set",
            &format!("h{i}"),
            "down",
        ])
    }

    /// Undo [`NetnsBed::cut`].
    pub fn heal(&self, i: usize) -> Result<(), NetnsError> {
        ip(&[
            "-n",
            &format!("{}-br", self.id),
            "link",
            "set",
            &format!("h{i}"),
            "up",
        ])
    }
}

impl Drop for NetnsBed {
    fn drop(&mut self) {
        for ns in self.created.drain(..).rev() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

/// Delete beds whose creating process is gone (a test run killed before
/// its guards could drop).
fn reap_orphans() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// Which operators run under which daemon, read from `/proc`: for every
/// process with `SWITCHBOARD_ID` in its environment (an operator, or the
/// sandbox that starts it), the index in `daemons` of the daemon it
/// descends from. What "runs" means here is a live process, whatever
/// any daemon believes, so a check built on it catches an operator that
/// a fenced or partitioned host failed to stop. Needs root (or the
/// daemons' user) to read other processes' environments.
pub fn operators_by_daemon(
    daemons: &[u32],
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<usize>> {
    let mut found: std::collections::BTreeMap<String, std::collections::BTreeSet<usize>> =
        Default::default();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let Some(id) = environ
            .split(|b| *b == 0)
            .find_map(|var| var.strip_prefix(b"SWITCHBOARD_ID="))
        else {
            continue;
        };
        if let Some(host) = ancestor_in(pid, daemons) {
            found
                .entry(String::from_utf8_lossy(id).into_owned())
                .or_default()
                .insert(host);
        }
    }
    found
}

/// The index in `daemons` of the first of `pid`'s ancestors that is one.
fn ancestor_in(pid: u32, daemons: &[u32]) -> Option<usize> {
    let mut at = pid;
    for _ in 0..16 {
        let stat = std::fs::read_to_string(format!("/proc/{at}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        let mut fields = rest.split_whitespace();
        // A zombie has exited: it runs nothing.
        if fields.next()? == "Z" {
            return None;
        }
        at = fields.next()?.parse().ok()?;
        if let Some(i) = daemons.iter().position(|d| *d == at) {
            return Some(i);
        }
        if at <= 1 {
            return None;
        }
    }
    None
}
