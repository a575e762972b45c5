//! A real 3-node NATS cluster, one engine per node, and the event
//! timeline every test checks.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_cluster::lease::STOP_BUDGET;
use switchboard_cluster::{
    server_fragment, ClusterConfig, DesiredOperator, DesiredSet, Engine, EngineOptions, Event,
    PlacementSpec,
};
use switchboard_testkit::cluster::NatsCluster;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Start the cluster with the crate's own config fragment.
pub fn cluster() -> NatsCluster {
    // The engine's log, when a failing run needs it: RUST_LOG=info.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    NatsCluster::start(|node, all| {
        let config = ClusterConfig {
            host: node.name.clone(),
            labels: BTreeSet::new(),
            name: "sbtest".into(),
            listen: format!("127.0.0.1:{}", node.cluster_port)
                .parse()
                .expect("addr"),
            peers: all
                .iter()
                .filter(|n| n.name != node.name)
                .map(|n| format!("127.0.0.1:{}", n.cluster_port))
                .collect(),
            tls: None,
        };
        config.validate().expect("valid [cluster]");
        server_fragment(&config)
    })
    .expect("3-node cluster")
}

/// A host's connection: to its own server only (the servers advertise
/// their peers, and a client that followed them would keep renewing the
/// heartbeat of a host whose own server, which its operators use, is gone).
pub async fn connect(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .ignore_discovered_servers()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(url)
        .await
        .expect("connect")
}

/// What happened, in order, on one monotonic clock.
#[derive(Debug, Clone)]
pub struct Mark {
    pub at: Instant,
    pub host: String,
    pub id: String,
    pub start: bool,
    pub why: String,
}

#[derive(Debug, Clone, Default)]
pub struct Timeline(pub Arc<Mutex<Vec<Mark>>>);

impl Timeline {
    pub fn push(&self, mark: Mark) {
        self.0.lock().expect("timeline").push(mark);
    }

    pub fn marks(&self) -> Vec<Mark> {
        self.0.lock().expect("timeline").clone()
    }

    /// Who runs what now, by the timeline (a host's operators stop when
    /// told, at once).
    pub fn running(&self) -> BTreeMap<String, String> {
        let mut now = BTreeMap::new();
        for m in self.marks() {
            if m.start {
                now.insert(m.id, m.host);
            } else if now.get(&m.id) == Some(&m.host) {
                now.remove(&m.id);
            }
        }
        now
    }

    /// The history check: no operator id is ever running on two hosts,
    /// even if each stop took the whole stop budget: every start of an
    /// id on a host comes at least STOP_BUDGET after its stop on any
    /// other host, and never while another host runs it.
    pub fn assert_exclusive(&self) {
        let marks = self.marks();
        let mut running: BTreeMap<String, String> = BTreeMap::new();
        let mut last_stop: BTreeMap<String, (String, Instant)> = BTreeMap::new();
        for m in &marks {
            if m.start {
                if let Some(other) = running.get(&m.id) {
                    panic!(
                        "{} started on {} while running on {other}\n{}",
                        m.id,
                        m.host,
                        show(&marks)
                    );
                }
                if let Some((host, at)) = last_stop.get(&m.id) {
                    if host != &m.host {
                        let gap = m.at - *at;
                        assert!(
                            gap >= STOP_BUDGET,
                            "{} started on {} only {gap:?} after its stop on {host}\n{}",
                            m.id,
                            m.host,
                            show(&marks)
                        );
                    }
                }
                running.insert(m.id.clone(), m.host.clone());
            } else {
                assert_eq!(
                    running.get(&m.id),
                    Some(&m.host),
                    "{} stopped on {} where it did not run\n{}",
                    m.id,
                    m.host,
                    show(&marks)
                );
                running.remove(&m.id);
                last_stop.insert(m.id.clone(), (m.host.clone(), m.at));
            }
        }
    }
}

pub fn show(marks: &[Mark]) -> String {
    let t0 = marks.first().map(|m| m.at);
    marks
        .iter()
        .map(|m| {
            format!(
                "{:>8.3}s {} {} {} {}",
                t0.map_or(0.0, |t| (m.at - t).as_secs_f64()),
                m.host,
                if m.start { "start" } else { "stop " },
                m.id,
                m.why
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One host: an engine and the task recording its events.
pub struct Host {
    pub name: String,
    pub engine: Option<Engine>,
    recorder: JoinHandle<()>,
    timeline: Timeline,
}

impl Host {
    /// Start an engine for `name` on `client`, retrying while the cluster
    /// elects its JetStream leader.
    pub async fn start(name: &str, client: async_nats::Client, timeline: &Timeline) -> Host {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (engine, mut events) = loop {
            match Engine::start(
                client.clone(),
                EngineOptions {
                    host: name.into(),
                    labels: BTreeSet::new(),
                },
            )
            .await
            {
                Ok(started) => break started,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("engine {name}: {e}"),
            }
        };
        let tl = timeline.clone();
        let host = name.to_owned();
        let recorder = tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let (id, start, why) = match ev {
                    Event::Start { id, .. } => (id, true, String::new()),
                    Event::Stop { id, reason } => (id, false, format!("{reason:?}")),
                };
                tl.push(Mark {
                    at: Instant::now(),
                    host: host.clone(),
                    id,
                    start,
                    why,
                });
            }
        });
        Host {
            name: name.into(),
            engine: Some(engine),
            recorder,
            timeline: timeline.clone(),
        }
    }

    /// Kill the "daemon": the engine's tasks end with no goodbye, and its
    /// operators die with it (marked stopped now).
    pub fn kill(&mut self) {
        self.engine.take();
        self.recorder.abort();
        let now = Instant::now();
        for (id, host) in self.timeline.running() {
            if host == self.name {
                self.timeline.push(Mark {
                    at: now,
                    host,
                    id,
                    start: false,
                    why: "killed".into(),
                });
            }
        }
    }

    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine alive")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.recorder.abort();
    }
}

pub fn ops(n: usize) -> DesiredSet {
    DesiredSet {
        operators: (0..n)
            .map(|i| {
                (
                    format!("op{i}"),
                    DesiredOperator {
                        placement: PlacementSpec::default(),
                        manifest: format!("id = \"op{i}\"\n"),
                    },
                )
            })
            .collect(),
    }
}

/// Wait until `check` holds on the timeline's running set.
pub async fn wait_for(
    timeline: &Timeline,
    within: Duration,
    what: &str,
    check: impl Fn(&BTreeMap<String, String>) -> bool,
) -> Duration {
    let t0 = Instant::now();
    loop {
        if check(&timeline.running()) {
            return t0.elapsed();
        }
        if t0.elapsed() > within {
            panic!(
                "not within {within:?}: {what}\nrunning: {:?}\n{}",
                timeline.running(),
                show(&timeline.marks())
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn per_host(running: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for h in running.values() {
        *n.entry(h.clone()).or_default() += 1;
    }
    n
}

/// A TCP relay in front of a nats-server that a test can cut (existing
/// connections dropped, new ones refused at once) and heal: a lost
/// connection without touching the server.
pub struct Relay {
    pub port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    pub async fn start(upstream_port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (c, cs) = (Arc::clone(&cut), Arc::clone(&conns));
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if c.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(down);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream_port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                cs.lock().expect("conns").push(task);
            }
        });
        Relay {
            port,
            cut,
            conns,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.conns.lock().expect("conns").drain(..) {
            t.abort();
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
