//! The `switchboard.toml` a test daemon runs with, written from typed
//! options instead of format strings: one place knows the key names, and
//! a path with a quote or backslash in it is escaped by the TOML library.

use std::path::{Path, PathBuf};

/// How the test daemon reaches NATS.
#[derive(Debug, Clone)]
pub enum Nats {
    /// Its own nats-server (`[nats.embedded]`), the default.
    Embedded(Embedded),
    /// A server the test started (`[nats] url = ...`).
    External(External),
}

/// `[nats.embedded]`: the daemon starts nats-server itself.
#[derive(Debug, Clone, Default)]
pub struct Embedded {
    /// The binary; the testkit's nats-server when `None`.
    pub binary: Option<PathBuf>,
    /// `jetstream = false` turns the durable stream's store off.
    pub jetstream: Option<bool>,
    /// `monitor_port`: nats-server's HTTP monitoring endpoint.
    pub monitor_port: Option<u16>,
    /// `tls_cert` and `tls_key`: the server accepts TLS only.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `host`, and `allow_remote = true` with it: the client listener on
    /// an address other machines reach (needs `tls`).
    pub remote_host: Option<String>,
}

/// `[nats]` for a server the daemon does not own.
#[derive(Debug, Clone, Default)]
pub struct External {
    /// `url`.
    pub url: String,
    /// `user` (with `password_file`).
    pub user: Option<String>,
    /// `password_file`.
    pub password_file: Option<PathBuf>,
    /// `token_file`.
    pub token_file: Option<PathBuf>,
    /// `token_env`: the variable (in [`DaemonConfig::env`]) holding it.
    pub token_env: Option<String>,
    /// `creds_file`.
    pub creds_file: Option<PathBuf>,
}

/// `[cluster]`: the daemon is one host of a cluster (docs/cluster.md).
#[derive(Debug, Clone, Default)]
pub struct ClusterTable {
    /// `host`.
    pub host: String,
    /// `labels`.
    pub labels: Vec<String>,
    /// `listen`: the route listener, `ip:port`.
    pub listen: String,
    /// `peers`: the other hosts' route listeners.
    pub peers: Vec<String>,
    /// `[cluster.tls]`: mutual TLS on the routes.
    pub tls: Option<RouteTlsFiles>,
}

impl ClusterTable {
    /// Host `i` of `hosts`: named `hosts[i]`, its routes on `route(i)`,
    /// every other host's route as a peer; no labels, no TLS.
    pub fn host_of(hosts: &[&str], i: usize, route: impl Fn(usize) -> String) -> ClusterTable {
        ClusterTable {
            host: hosts[i].to_owned(),
            labels: Vec::new(),
            listen: route(i),
            peers: (0..hosts.len()).filter(|j| *j != i).map(route).collect(),
            tls: None,
        }
    }

    /// One table per name in `hosts` ([`ClusterTable::host_of`]), routes
    /// on free loopback ports: a cluster of daemons on one machine, as in
    /// docs/cluster.md's quick start.
    ///
    /// # Errors
    ///
    /// When no free port can be found.
    pub fn loopback(hosts: &[&str]) -> std::io::Result<Vec<ClusterTable>> {
        let ports = crate::cluster::free_ports(hosts.len())?;
        let route = |i: usize| format!("127.0.0.1:{}", ports[i]);
        Ok((0..hosts.len())
            .map(|i| ClusterTable::host_of(hosts, i, route))
            .collect())
    }

    /// With `[cluster.tls]`: a route certificate from `ca` for this
    /// host's `ip`.
    ///
    /// # Errors
    ///
    /// When the certificate cannot be made.
    pub fn with_tls(
        mut self,
        ca: &crate::TestCa,
        ip: &str,
    ) -> Result<ClusterTable, crate::TlsError> {
        let (cert, key) = ca.route_cert(&self.host, &[ip])?;
        self.tls = Some(RouteTlsFiles {
            cert,
            key,
            ca: ca.ca_file(),
        });
        Ok(self)
    }
}

/// `[cluster.tls]`'s files (see `TestCa::route_cert`).
#[derive(Debug, Clone)]
pub struct RouteTlsFiles {
    /// `cert`: this host's route certificate.
    pub cert: PathBuf,
    /// `key`: its private key.
    pub key: PathBuf,
    /// `ca`: the cluster's CA.
    pub ca: PathBuf,
}

/// Everything a test sets in `switchboard.toml`, plus the manifests it
/// puts in `operators.d/`. Relative directories (`operators.d`, `state`,
/// `run`) are inside the daemon's temporary directory.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// `[nats]`.
    pub nats: Nats,
    /// `[nats] tls_ca`: the CA every client of the bus trusts.
    pub tls_ca: Option<PathBuf>,
    /// `[stream]` keys (`max_bytes`, `operator_max_bytes`, ...) with
    /// their TOML values.
    pub stream: Vec<(String, toml::Value)>,
    /// `[sandbox] program`.
    pub sandbox_program: Option<PathBuf>,
    /// `[sandbox] required`.
    pub sandbox_required: Option<bool>,
    /// `[log] format`.
    pub log_format: Option<String>,
    /// Manifests written into `operators.d/`: file name and TOML text.
    pub manifests: Vec<(String, String)>,
    /// Extra environment for the daemon process.
    pub env: Vec<(String, String)>,
    /// Run the daemon as this uid and gid (the test must be root).
    pub run_as: Option<(u32, u32)>,
    /// `[cluster]`.
    pub cluster: Option<ClusterTable>,
    /// The `switchboard` binary to run (default: the build's).
    pub program: Option<PathBuf>,
    /// Run the daemon (and so its nats-server and operators) in this
    /// network namespace (a name under `/run/netns`, see
    /// `cluster::NetnsBed`): a host of its own.
    pub netns: Option<String>,
}

impl Default for DaemonConfig {
    fn default() -> DaemonConfig {
        DaemonConfig {
            nats: Nats::Embedded(Embedded::default()),
            tls_ca: None,
            stream: Vec::new(),
            sandbox_program: None,
            sandbox_required: None,
            log_format: None,
            manifests: Vec::new(),
            env: Vec::new(),
            run_as: None,
            cluster: None,
            program: None,
            netns: None,
        }
    }
}

impl DaemonConfig {
    /// The defaults: an embedded nats-server on a free port, no
    /// manifests.
    pub fn new() -> DaemonConfig {
        DaemonConfig::default()
    }

    /// Add a manifest (file name in `operators.d/`, TOML text).
    pub fn manifest(mut self, name: impl Into<String>, text: impl Into<String>) -> DaemonConfig {
        self.manifests.push((name.into(), text.into()));
        self
    }

    /// Add several manifests.
    pub fn manifests<N: AsRef<str>, T: AsRef<str>>(mut self, files: &[(N, T)]) -> DaemonConfig {
        for (n, t) in files {
            self.manifests
                .push((n.as_ref().to_owned(), t.as_ref().to_owned()));
        }
        self
    }

    /// Run this `switchboard` binary instead of the build's.
    pub fn program(mut self, path: impl Into<PathBuf>) -> DaemonConfig {
        self.program = Some(path.into());
        self
    }

    /// Add an environment variable for the daemon.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> DaemonConfig {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Use a server the test runs instead of an embedded one.
    pub fn external(mut self, nats: External) -> DaemonConfig {
        self.nats = Nats::External(nats);
        self
    }

    /// Change the embedded server's options (no effect on an external
    /// one: the test that sets both is wrong, and says so by panicking).
    pub fn embedded(mut self, change: impl FnOnce(&mut Embedded)) -> DaemonConfig {
        match &mut self.nats {
            Nats::Embedded(e) => change(e),
            Nats::External(_) => panic!("embedded options on a daemon with an external server"),
        }
        self
    }

    /// `[nats] tls_ca`.
    pub fn tls_ca(mut self, ca: impl Into<PathBuf>) -> DaemonConfig {
        self.tls_ca = Some(ca.into());
        self
    }

    /// One `[stream]` key.
    pub fn stream(mut self, key: &str, value: impl Into<toml::Value>) -> DaemonConfig {
        self.stream.push((key.to_owned(), value.into()));
        self
    }

    /// `[sandbox] program` (and `required`, when `Some`).
    pub fn sandbox(mut self, program: impl Into<PathBuf>, required: Option<bool>) -> DaemonConfig {
        self.sandbox_program = Some(program.into());
        self.sandbox_required = required;
        self
    }

    /// `[log] format`.
    pub fn log_format(mut self, format: &str) -> DaemonConfig {
        self.log_format = Some(format.to_owned());
        self
    }

    /// `[cluster]`: make the daemon one host of a cluster.
    pub fn cluster(mut self, table: ClusterTable) -> DaemonConfig {
        self.cluster = Some(table);
        self
    }

    /// Run the daemon in the network namespace `name` (see
    /// [`DaemonConfig::netns`]).
    pub fn in_netns(mut self, name: impl Into<String>) -> DaemonConfig {
        self.netns = Some(name.into());
        self
    }

    /// Run the daemon as `uid`:`gid`.
    pub fn run_as(mut self, ids: Option<(u32, u32)>) -> DaemonConfig {
        self.run_as = ids;
        self
    }

    /// The text of `switchboard.toml`, with `runtime_dir` as given (two
    /// daemons on one directory need two).
    ///
    /// # Errors
    ///
    /// When no nats-server is installed for an embedded one.
    pub fn toml(&self, runtime_dir: &str) -> Result<String, crate::HarnessError> {
        use toml::{Table, Value};
        let path = |p: &Path| Value::String(p.display().to_string());
        let mut root = Table::new();
        root.insert("manifests".into(), "operators.d".into());
        root.insert("state_dir".into(), "state".into());
        root.insert("runtime_dir".into(), runtime_dir.into());
        let mut nats = Table::new();
        match &self.nats {
            Nats::Embedded(e) => {
                let mut t = Table::new();
                t.insert("port".into(), Value::Integer(0));
                let binary = match &e.binary {
                    Some(b) => b.clone(),
                    None => crate::nats_server_bin()?,
                };
                t.insert("binary".into(), path(&binary));
                if let Some(j) = e.jetstream {
                    t.insert("jetstream".into(), Value::Boolean(j));
                }
                if let Some(p) = e.monitor_port {
                    t.insert("monitor_port".into(), Value::Integer(i64::from(p)));
                }
                if let Some((cert, key)) = &e.tls {
                    t.insert("tls_cert".into(), path(cert));
                    t.insert("tls_key".into(), path(key));
                }
                if let Some(host) = &e.remote_host {
                    t.insert("host".into(), host.clone().into());
                    t.insert("allow_remote".into(), Value::Boolean(true));
                }
                nats.insert("embedded".into(), Value::Table(t));
            }
            Nats::External(x) => {
                nats.insert("url".into(), x.url.clone().into());
                if let Some(u) = &x.user {
                    nats.insert("user".into(), u.clone().into());
                }
                if let Some(v) = &x.token_env {
                    nats.insert("token_env".into(), v.clone().into());
                }
                for (key, file) in [
                    ("password_file", &x.password_file),
                    ("token_file", &x.token_file),
                    ("creds_file", &x.creds_file),
                ] {
                    if let Some(f) = file {
                        nats.insert(key.into(), path(f));
                    }
                }
            }
        }
        if let Some(ca) = &self.tls_ca {
            nats.insert("tls_ca".into(), path(ca));
        }
        root.insert("nats".into(), Value::Table(nats));
        if !self.stream.is_empty() {
            let t: Table = self.stream.iter().cloned().collect();
            root.insert("stream".into(), Value::Table(t));
        }
        if self.sandbox_program.is_some() || self.sandbox_required.is_some() {
            let mut t = Table::new();
            if let Some(p) = &self.sandbox_program {
                t.insert("program".into(), path(p));
            }
            if let Some(r) = self.sandbox_required {
                t.insert("required".into(), Value::Boolean(r));
            }
            root.insert("sandbox".into(), Value::Table(t));
        }
        if let Some(c) = &self.cluster {
            let strings =
                |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
            let mut t = Table::new();
            t.insert("host".into(), c.host.clone().into());
            t.insert("labels".into(), strings(&c.labels));
            t.insert("listen".into(), c.listen.clone().into());
            t.insert("peers".into(), strings(&c.peers));
            if let Some(tls) = &c.tls {
                let mut files = Table::new();
                files.insert("cert".into(), path(&tls.cert));
                files.insert("key".into(), path(&tls.key));
                files.insert("ca".into(), path(&tls.ca));
                t.insert("tls".into(), Value::Table(files));
            }
            root.insert("cluster".into(), Value::Table(t));
        }
        if let Some(f) = &self.log_format {
            let mut t = Table::new();
            t.insert("format".into(), f.clone().into());
            root.insert("log".into(), Value::Table(t));
        }
        Ok(root.to_string())
    }

    /// Write `switchboard.toml` (runtime dir `run`) and the manifests
    /// into `dir`.
    ///
    /// # Errors
    ///
    /// When a file cannot be written or no nats-server is installed.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, super::DaemonError> {
        let prepare = |path: &Path| {
            let path = path.to_owned();
            move |source| super::DaemonError::Prepare { path, source }
        };
        let ops = dir.join("operators.d");
        std::fs::create_dir_all(&ops).map_err(prepare(&ops))?;
        for (name, text) in &self.manifests {
            let file = ops.join(name);
            std::fs::write(&file, text).map_err(prepare(&file))?;
        }
        let config = dir.join("switchboard.toml");
        std::fs::write(&config, self.toml("run")?).map_err(prepare(&config))?;
        Ok(config)
    }
}
