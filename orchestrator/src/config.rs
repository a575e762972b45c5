//! The daemon's own configuration, `switchboard.toml`: where the manifests,
//! state and runtime files live, which NATS to use, how to log.
//!
//! Read with the `config` crate in two layers: the file, then environment
//! overrides named `SWITCHBOARD__<KEY>` with `__` between levels
//! (`SWITCHBOARD__STATE_DIR`, `SWITCHBOARD__NATS__URL`,
//! `SWITCHBOARD__NATS__EMBEDDED__PORT`), so a systemd unit or a container
//! can adjust one key without a second file. (The single-underscore
//! `SWITCHBOARD_…` names belong to operators' launch environment and are
//! never read here.) Every key is optional; with no file at all the
//! defaults describe a self-contained directory: `operators.d/`, `state/`,
//! `run/` and an embedded nats-server on 127.0.0.1:4222.
//!
//! Relative paths, from the file or from the environment, are resolved
//! against the config file's directory (the current directory when there
//! is no file), once, at load time.
//!
//! ```
//! use switchboard_orchestrator::config::Config;
//!
//! let dir = std::env::temp_dir();
//! let config = Config::load_with_env(None, [
//!     ("SWITCHBOARD__NATS__URL".to_owned(), "nats://10.0.0.5:4222".to_owned()),
//! ])?;
//! assert_eq!(config.nats.url.as_deref(), Some("nats://10.0.0.5:4222"));
//! assert!(config.state_dir.is_absolute());
//! assert_eq!(Config::defaults_in(&dir).manifests_dir, dir.join("operators.d"));
//! # Ok::<(), switchboard_orchestrator::config::ConfigError>(())
//! ```

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::manifest::is_valid_env_name;
use crate::manifest::suggest::did_you_mean;

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "SWITCHBOARD__";

/// The whole configuration, with every path absolute (or as given, for
/// [`Config::defaults_in`] with a relative directory).
///
/// Holds no secret values, only where to find them (`password_file`,
/// `password_env`, …), so `Debug` and `Serialize` output is safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of operator manifests (`*.toml`). Key `manifests`;
    /// default `operators.d`.
    #[serde(rename = "manifests", default = "default_manifests")]
    pub manifests_dir: PathBuf,
    /// Persistent state: one directory per operator, kept across restarts,
    /// and the embedded nats-server's JetStream store. Default `state`.
    #[serde(default = "default_state")]
    pub state_dir: PathBuf,
    /// Runtime files wiped at boot: operators' scratch directories, the
    /// embedded server's config and logs. Default `run`.
    #[serde(default = "default_runtime")]
    pub runtime_dir: PathBuf,
    /// Which NATS to use.
    #[serde(default)]
    pub nats: NatsConfig,
    /// How the daemon logs.
    #[serde(default)]
    pub log: LogConfig,
    /// The durable stream (JetStream) that keeps chat, send requests,
    /// operators' output and lifecycle events.
    #[serde(default)]
    pub stream: StreamConfig,
    /// The operators' sandbox (`crate::sandbox`): which bwrap, and
    /// whether running without one is fatal.
    #[serde(default)]
    pub sandbox: crate::sandbox::SandboxConfig,
}

/// `[stream]`: the durable stream the daemon keeps (see
/// `switchboard_bus::stream`). With the embedded server it needs
/// `[nats.embedded] jetstream = true` (the default); with an external
/// server, JetStream there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Keep the stream. Default true.
    pub enabled: bool,
    /// The stream's name. Default `SWITCHBOARD`.
    pub name: String,
    /// Messages older than this are removed ("7d", "12h"). Default 7 days.
    #[serde(with = "switchboard_proto::duration::serde_duration")]
    pub max_age: std::time::Duration,
    /// Past this size the oldest messages are removed. Default 512 MiB;
    /// with the embedded server at most `max_file_store`.
    pub max_bytes: ByteSize,
    /// A message whose envelope id was stored within this window is not
    /// stored again (a republish, a retried publish). Default 2 minutes.
    #[serde(with = "switchboard_proto::duration::serde_duration")]
    pub duplicate_window: std::time::Duration,
    /// The largest message kept; larger ones are delivered but not stored,
    /// so a few huge messages cannot fill the stream. Default 128 KiB (an
    /// IRC line is 512 bytes, a Bluesky post a few KiB; a Nostr note
    /// larger than about 40 KiB is not kept); 1 KiB to 1 MiB.
    pub max_message: ByteSize,
    /// Each operator's own stream (a copy of the chat events of its
    /// instance, its output lines and its lifecycle events, which nobody
    /// else's flood can evict; `switchboard logs` reads it) keeps at most
    /// this much, reserved on the server for each operator. Default 8 MiB;
    /// 0 turns the operators' streams off.
    pub operator_max_bytes: ByteSize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            enabled: true,
            name: switchboard_bus::stream::DEFAULT_STREAM.to_owned(),
            max_age: std::time::Duration::from_secs(7 * 24 * 3600),
            max_bytes: ByteSize::mib(512),
            duplicate_window: std::time::Duration::from_secs(120),
            max_message: ByteSize::kib(128),
            operator_max_bytes: ByteSize::mib(8),
        }
    }
}

impl StreamConfig {
    /// The stream's shape for [`switchboard_bus::Bus::ensure_stream`].
    pub fn spec(&self) -> switchboard_bus::stream::StreamSpec {
        switchboard_bus::stream::StreamSpec {
            name: self.name.clone(),
            max_age: self.max_age,
            max_bytes: self.max_bytes.as_u64(),
            duplicate_window: self.duplicate_window,
            max_message_bytes: u32::try_from(self.max_message.as_u64()).unwrap_or(u32::MAX),
        }
    }

    /// The operators' own streams, unless turned off.
    pub fn operator_streams(&self) -> Option<switchboard_bus::stream::OperatorStreams> {
        (self.operator_max_bytes.as_u64() > 0).then(|| switchboard_bus::stream::OperatorStreams {
            max_bytes: self.operator_max_bytes.as_u64(),
        })
    }
}

fn default_manifests() -> PathBuf {
    PathBuf::from("operators.d")
}
fn default_state() -> PathBuf {
    PathBuf::from("state")
}
fn default_runtime() -> PathBuf {
    PathBuf::from("run")
}

/// NATS connection settings: an external server (or cluster) when `url` is
/// set, otherwise a nats-server the orchestrator runs itself.
///
/// Credentials are references (files, environment variables), never
/// values, so this struct is safe to print; [`NatsConfig::read_password`]
/// and [`NatsConfig::read_token`] fetch the values when connecting.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// External server URL(s), comma-separated
    /// (`nats://a:4222,nats://b:4222`). `None`: run the embedded server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// User name for user/password authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// File holding the password (trailing newline ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// File holding an auth token (trailing newline ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding an auth token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// A NATS `.creds` file (JWT + nkey seed), passed to operators as a path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creds_file: Option<PathBuf>,
    /// CA certificate(s) to trust for TLS to the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// The embedded server, used when `url` is `None`.
    pub embedded: EmbeddedNats,
}

/// The nats-server the orchestrator runs as a child when no external URL
/// is configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedNats {
    /// Address to listen on; loopback by default so the bus is not exposed.
    pub host: String,
    /// Port to listen on; 0 lets the server pick a free one (the
    /// orchestrator reads it back). Default 4222.
    pub port: u16,
    /// The nats-server binary: a path (relative to the config directory
    /// when it has a `/`), or a bare name looked up in `PATH`. `None`:
    /// look up `nats-server`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
    /// Enable JetStream (store under `state_dir`). Default true.
    pub jetstream: bool,
    /// Listening on anything but loopback exposes the bus to the network:
    /// it needs this set to true *and* `tls_cert`/`tls_key`. Default false.
    pub allow_remote: bool,
    /// Server certificate (PEM). With `tls_key`, every client must use
    /// TLS; the daemon, the CLI and operators trust `[nats] tls_ca`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Serve nats-server's HTTP monitoring (`/varz`, `/connz`) on this
    /// port of `host`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor_port: Option<u16>,
    /// JetStream's disk limit ("1GiB", "500MB"); past it JetStream refuses
    /// writes instead of filling the disk. Default 1 GiB.
    pub max_file_store: ByteSize,
    /// JetStream's memory limit. Default 64 MiB.
    pub max_memory_store: ByteSize,
}

impl Default for EmbeddedNats {
    fn default() -> Self {
        EmbeddedNats {
            host: "127.0.0.1".to_owned(),
            port: 4222,
            binary: None,
            jetstream: true,
            allow_remote: false,
            tls_cert: None,
            tls_key: None,
            monitor_port: None,
            max_file_store: ByteSize::gib(1),
            max_memory_store: ByteSize::mib(64),
        }
    }
}

/// How the daemon logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// How much the daemon says: a level for its own events (`info`,
    /// `debug`; libraries stay at `warn`) or a whole `tracing` directive
    /// (`info,async_nats=debug`), see [`LogConfig::filter`].
    /// `SWITCHBOARD_LOG` / `RUST_LOG` win. Default `info`.
    pub level: String,
    /// Line format. Default text.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

impl LogConfig {
    /// The `tracing` filter for `level`: a bare level (`info`, `debug`)
    /// applies to Switchboard's own events, with libraries at `warn`; a
    /// full directive (with `=` or `,`) is used as it is.
    ///
    /// ```
    /// use switchboard_orchestrator::config::LogConfig;
    /// let mut log = LogConfig::default();
    /// assert_eq!(log.filter(), "warn,switchboard=info");
    /// log.level = "debug".into();
    /// assert_eq!(log.filter(), "warn,switchboard=debug");
    /// log.level = "info,async_nats=debug".into();
    /// assert_eq!(log.filter(), "info,async_nats=debug");
    /// ```
    pub fn filter(&self) -> String {
        let level = self.level.trim();
        if level.contains(['=', ',']) {
            level.to_owned()
        } else {
            format!("warn,switchboard={level}")
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (for a terminal or journald).
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

impl<'de> Deserialize<'de> for LogFormat {
    /// By hand, for a message that lists the choices.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(serde::de::Error::custom(format!(
                "log format must be \"text\" or \"json\", not `{other}`"
            ))),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The named config file does not exist.
    #[error(
        "config file {} does not exist; create it (deploy/switchboard.toml in the Switchboard \
         sources is a documented example to copy), or give no config file to run with the \
         defaults in the current directory",
        path.display()
    )]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The config file exists but cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Unreadable {
        /// The path given.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Relative paths need a base, and the current directory is gone.
    #[error("cannot determine the current directory: {0}")]
    CurrentDir(#[source] io::Error),
    /// The file does not parse, or has unknown keys, wrong types or invalid
    /// values; one line per problem, each naming the key and where it came
    /// from (the file or the environment variable).
    #[error("{}", problems.join("\n"))]
    Invalid {
        /// Every problem found.
        problems: Vec<String>,
    },
    /// A NATS credential could not be read (the message never includes
    /// the credential).
    #[error("cannot read {what}: {message}")]
    Credential {
        /// Which credential (`nats.password_file`, …).
        what: String,
        /// Why.
        message: String,
    },
}

/// Shape of the file, for the unknown-key check (the `config` crate merges
/// the file and the environment before serde sees them, so this is where
/// each key's origin is still known).
enum Node {
    Leaf,
    Table(&'static [(&'static str, Node)]),
}

const SCHEMA: &[(&str, Node)] = &[
    ("manifests", Node::Leaf),
    ("state_dir", Node::Leaf),
    ("runtime_dir", Node::Leaf),
    (
        "nats",
        Node::Table(&[
            ("url", Node::Leaf),
            ("user", Node::Leaf),
            ("password_file", Node::Leaf),
            ("password_env", Node::Leaf),
            ("token_file", Node::Leaf),
            ("token_env", Node::Leaf),
            ("creds_file", Node::Leaf),
            ("tls_ca", Node::Leaf),
            (
                "embedded",
                Node::Table(&[
                    ("host", Node::Leaf),
                    ("port", Node::Leaf),
                    ("binary", Node::Leaf),
                    ("jetstream", Node::Leaf),
                    ("allow_remote", Node::Leaf),
                    ("tls_cert", Node::Leaf),
                    ("tls_key", Node::Leaf),
                    ("monitor_port", Node::Leaf),
                    ("max_file_store", Node::Leaf),
                    ("max_memory_store", Node::Leaf),
                ]),
            ),
        ]),
    ),
    (
        "log",
        Node::Table(&[("level", Node::Leaf), ("format", Node::Leaf)]),
    ),
    (
        "sandbox",
        Node::Table(&[("program", Node::Leaf), ("required", Node::Leaf)]),
    ),
    (
        "stream",
        Node::Table(&[
            ("enabled", Node::Leaf),
            ("name", Node::Leaf),
            ("max_age", Node::Leaf),
            ("max_bytes", Node::Leaf),
            ("duplicate_window", Node::Leaf),
            ("max_message", Node::Leaf),
            ("operator_max_bytes", Node::Leaf),
        ]),
    ),
];

/// Origin string the `config` crate gives environment values.
const ENV_ORIGIN: &str = "the environment";

impl Config {
    /// The defaults, with relative paths resolved against `dir`: what a
    /// missing config file means when the daemon runs in `dir`.
    pub fn defaults_in(dir: &Path) -> Config {
        let mut config = Config {
            manifests_dir: default_manifests(),
            state_dir: default_state(),
            runtime_dir: default_runtime(),
            nats: NatsConfig::default(),
            log: LogConfig::default(),
            stream: StreamConfig::default(),
            sandbox: crate::sandbox::SandboxConfig::default(),
        };
        config.resolve_paths(dir);
        config
    }

    /// Loads the configuration: `path` (or the defaults in the current
    /// directory when `None`), then the `SWITCHBOARD__…` variables of the
    /// process environment.
    ///
    /// # Errors
    ///
    /// See [`Config::load_with_env`].
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Self::load_with_env(path, env)
    }

    /// [`Config::load`] with the environment given as name/value pairs
    /// instead of read from the process, so tests need not touch the
    /// (process-wide, racy) real environment. Only names starting with
    /// [`ENV_PREFIX`] are used; empty values count as unset.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NotFound`] when `path` does not exist,
    /// [`ConfigError::Unreadable`] when it cannot be read,
    /// [`ConfigError::Invalid`] for TOML syntax errors, unknown keys (file
    /// or environment, with a suggestion), wrong types and invalid values,
    /// [`ConfigError::CurrentDir`] when `path` is `None` and the current
    /// directory is unknown.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (base, file) = match path {
            Some(path) => {
                match std::fs::metadata(path) {
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {
                        return Err(ConfigError::NotFound {
                            path: path.to_owned(),
                        })
                    }
                    Err(source) => {
                        return Err(ConfigError::Unreadable {
                            path: path.to_owned(),
                            source,
                        })
                    }
                    Ok(meta) if meta.is_dir() => {
                        return Err(ConfigError::Unreadable {
                            path: path.to_owned(),
                            source: io::Error::other(
                                "it is a directory; name the switchboard.toml file inside it",
                            ),
                        })
                    }
                    Ok(_) => {}
                }
                let file = std::path::absolute(path).map_err(ConfigError::CurrentDir)?;
                let base = file
                    .parent()
                    .map_or_else(|| PathBuf::from("/"), Path::to_owned);
                (base, Some(file))
            }
            None => (
                std::env::current_dir().map_err(ConfigError::CurrentDir)?,
                None,
            ),
        };

        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(name, _)| {
                name.get(..ENV_PREFIX.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
            })
            .collect();
        let mut builder = config::Config::builder();
        if let Some(file) = &file {
            builder = builder.add_source(
                config::File::from(file.as_path())
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("SWITCHBOARD")
                .separator("__")
                .ignore_empty(true)
                .source(Some(env)),
        );
        let origin = file
            .as_ref()
            .map_or_else(|| "defaults".to_owned(), |f| f.display().to_string());
        let invalid = |err: config::ConfigError| ConfigError::Invalid {
            problems: vec![match err {
                // The crate names the file by a path relative to the
                // current directory; name it as given instead.
                config::ConfigError::FileParse { cause, .. } => format!("{origin}: {cause}"),
                other => {
                    let message = other.to_string();
                    // Values from the environment say so themselves.
                    if message.ends_with(ENV_ORIGIN) {
                        message
                    } else {
                        format!("{origin}: {message}")
                    }
                }
            }],
        };
        let merged = builder.build().map_err(invalid)?;

        let mut problems = Vec::new();
        unknown_keys(&merged.cache, "", SCHEMA, &origin, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { problems });
        }
        let mut config: Config = merged.try_deserialize().map_err(invalid)?;
        config.resolve_paths(&base);
        config.validate(&origin)?;
        Ok(config)
    }

    /// Makes every relative path absolute against `base`.
    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.manifests_dir);
        resolve(&mut self.state_dir);
        resolve(&mut self.runtime_dir);
        let nats = &mut self.nats;
        for p in [
            &mut nats.password_file,
            &mut nats.token_file,
            &mut nats.creds_file,
            &mut nats.tls_ca,
            &mut nats.embedded.tls_cert,
            &mut nats.embedded.tls_key,
        ]
        .into_iter()
        .flatten()
        {
            resolve(p);
        }
        if let Some(binary) = &mut nats.embedded.binary {
            // A bare name is for a PATH lookup.
            if binary.components().count() > 1 {
                resolve(binary);
            }
        }
        if self.sandbox.program.components().count() > 1 {
            resolve(&mut self.sandbox.program);
        }
    }

    /// Checks the values serde cannot: empty strings, contradictory
    /// credentials.
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: &str| {
            let mut line = String::new();
            let _ = write!(line, "{origin}: `{key}` {message}");
            problems.push(line);
        };
        for (key, p) in [
            ("manifests", &self.manifests_dir),
            ("state_dir", &self.state_dir),
            ("runtime_dir", &self.runtime_dir),
        ] {
            if p.as_os_str().is_empty() {
                problem(key, "is empty; give a directory");
            }
        }
        let stream = &self.stream;
        if stream.name.is_empty()
            || !stream
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            problem(
                "stream.name",
                "must be letters, digits, `-` and `_` (JetStream's rule), e.g. \"SWITCHBOARD\"",
            );
        }
        if stream.max_age.is_zero() {
            problem(
                "stream.max_age",
                "is zero; give how long to keep messages, e.g. \"7d\"",
            );
        }
        if stream.duplicate_window.is_zero() || stream.duplicate_window > stream.max_age {
            problem(
                "stream.duplicate_window",
                "must be more than zero and at most `stream.max_age`, e.g. \"2m\"",
            );
        }
        if stream.max_message < ByteSize::kib(1) || stream.max_message > ByteSize::mib(1) {
            problem(
                "stream.max_message",
                "must be from 1KiB to 1MiB (NATS's largest message), e.g. \"128KiB\"",
            );
        }
        if self.nats.url.is_none()
            && self.nats.embedded.jetstream
            && stream.enabled
            && stream.operator_max_bytes.as_u64() > 0
            && stream.max_bytes.as_u64() + stream.operator_max_bytes.as_u64()
                > self.nats.embedded.max_file_store.as_u64()
        {
            problem(
                "stream.operator_max_bytes",
                "plus `stream.max_bytes` is over `nats.embedded.max_file_store`, which leaves no \
                 room for even one operator's stream; lower them or raise max_file_store",
            );
        }
        if self.nats.url.is_none()
            && self.nats.embedded.jetstream
            && stream.enabled
            && stream.max_bytes > self.nats.embedded.max_file_store
        {
            let line = format!(
                "({}) is over `nats.embedded.max_file_store` ({}), where JetStream would refuse \
                 it; lower it or raise max_file_store",
                stream.max_bytes, self.nats.embedded.max_file_store
            );
            problem("stream.max_bytes", &line);
        }
        let nats = &self.nats;
        if let Some(url) = &nats.url {
            if url.split(',').any(|u| u.trim().is_empty()) {
                problem(
                    "nats.url",
                    "has an empty server; give comma-separated URLs like \
                     \"nats://10.0.0.1:4222,nats://10.0.0.2:4222\", or remove it to run the \
                     embedded server",
                );
            }
        }
        if nats.password_file.is_some() && nats.password_env.is_some() {
            problem(
                "nats.password_file",
                "and `nats.password_env` are both set; keep one",
            );
        }
        if nats.token_file.is_some() && nats.token_env.is_some() {
            problem(
                "nats.token_file",
                "and `nats.token_env` are both set; keep one",
            );
        }
        let has_password = nats.password_file.is_some() || nats.password_env.is_some();
        let has_token = nats.token_file.is_some() || nats.token_env.is_some();
        if nats.user.is_some() && !has_password {
            problem(
                "nats.user",
                "is set without a password; add `nats.password_file` or `nats.password_env`",
            );
        }
        if has_password && nats.user.is_none() {
            problem("nats.user", "is missing; a password needs a user name");
        }
        if has_token && (nats.user.is_some() || has_password) {
            problem(
                "nats.token_file",
                "(or `nats.token_env`) and user/password are both set; use one way to \
                 authenticate",
            );
        }
        for (key, var) in [
            ("nats.password_env", &nats.password_env),
            ("nats.token_env", &nats.token_env),
        ] {
            if let Some(var) = var {
                if !is_valid_env_name(var) {
                    problem(key, "is not a valid environment variable name");
                }
            }
        }
        if nats.embedded.host.trim().is_empty() {
            problem(
                "nats.embedded.host",
                "is empty; use \"127.0.0.1\" to keep the bus on this machine",
            );
        }
        let embedded = &nats.embedded;
        let has_tls = embedded.tls_cert.is_some() && embedded.tls_key.is_some();
        if embedded.tls_cert.is_some() != embedded.tls_key.is_some() {
            problem(
                "nats.embedded.tls_cert",
                "and `nats.embedded.tls_key` go together; set both (PEM files) or neither",
            );
        }
        if has_tls && nats.tls_ca.is_none() && nats.is_embedded() {
            problem(
                "nats.tls_ca",
                "is missing: with [nats.embedded] TLS, the daemon, the CLI and operators need \
                 the CA that signed tls_cert",
            );
        }
        if nats.is_embedded() && !is_loopback(&embedded.host) {
            if !embedded.allow_remote {
                problem(
                    "nats.embedded.host",
                    "is not a loopback address, which would expose the bus to the network; \
                     set `nats.embedded.allow_remote = true` and TLS (`tls_cert`, `tls_key`) \
                     to do that on purpose, or use \"127.0.0.1\"",
                );
            } else if !has_tls {
                problem(
                    "nats.embedded.allow_remote",
                    "needs TLS: set `nats.embedded.tls_cert` and `nats.embedded.tls_key` \
                     (passwords must not cross a network in clear)",
                );
            }
        }
        if nats.is_embedded()
            && (nats.user.is_some() || has_password || has_token || nats.creds_file.is_some())
        {
            problem(
                "nats.user",
                "(and the other credentials in [nats]) are for an external server (`nats.url`); \
                 the embedded server makes its own users: remove them or set `nats.url`",
            );
        }
        if has_token && nats.creds_file.is_some() || has_password && nats.creds_file.is_some() {
            problem(
                "nats.creds_file",
                "and a password or token are both set; use one way to authenticate",
            );
        }
        if self.log.level.trim().is_empty() {
            problem("log.level", "is empty; use e.g. \"info\"");
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }
}

/// Whether `host` names this machine only (`127.0.0.0/8`, `::1`,
/// `localhost`).
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl NatsConfig {
    /// Whether the orchestrator should run its own nats-server.
    pub fn is_embedded(&self) -> bool {
        self.url.is_none()
    }

    /// [`NatsConfig::read_password`] with the process environment.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Credential`] when the file cannot be read or the
    /// variable is not set.
    pub fn password(&self) -> Result<Option<String>, ConfigError> {
        self.read_password(|name| std::env::var(name).ok())
    }

    /// [`NatsConfig::read_token`] with the process environment.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Credential`] when the file cannot be read or the
    /// variable is not set.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        self.read_token(|name| std::env::var(name).ok())
    }

    /// The NATS password, read from `password_file` (trailing newlines
    /// trimmed) or the `password_env` variable (through `lookup_env`);
    /// `None` when neither is configured. Do not log the result.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Credential`] when the file cannot be read or the
    /// variable is not set.
    pub fn read_password(
        &self,
        lookup_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, ConfigError> {
        read_credential(
            "nats.password",
            self.password_file.as_deref(),
            self.password_env.as_deref(),
            lookup_env,
        )
    }

    /// The NATS auth token, like [`NatsConfig::read_password`].
    ///
    /// # Errors
    ///
    /// [`ConfigError::Credential`] when the file cannot be read or the
    /// variable is not set.
    pub fn read_token(
        &self,
        lookup_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, ConfigError> {
        read_credential(
            "nats.token",
            self.token_file.as_deref(),
            self.token_env.as_deref(),
            lookup_env,
        )
    }
}

fn read_credential(
    what: &str,
    file: Option<&Path>,
    var: Option<&str>,
    lookup_env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).map_err(|err| ConfigError::Credential {
            what: format!("{what}_file"),
            message: format!("{}: {err}", file.display()),
        })?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()));
    }
    if let Some(var) = var {
        return lookup_env(var)
            .map(Some)
            .ok_or_else(|| ConfigError::Credential {
                what: format!("{what}_env"),
                message: format!("environment variable {var} is not set"),
            });
    }
    Ok(None)
}

/// Reports keys of `value` (a table) that `schema` does not know, naming
/// the file or environment variable they came from.
fn unknown_keys(
    value: &config::Value,
    prefix: &str,
    schema: &[(&str, Node)],
    file: &str,
    problems: &mut Vec<String>,
) {
    let config::ValueKind::Table(table) = &value.kind else {
        // Not a table where one is expected: serde reports the type.
        return;
    };
    let mut keys: Vec<&String> = table.keys().collect();
    keys.sort();
    let names: Vec<&str> = schema.iter().map(|(n, _)| *n).collect();
    for key in keys {
        let Some(child) = table.get(key) else {
            continue;
        };
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match schema.iter().find(|(n, _)| n == key) {
            Some((_, Node::Table(inner))) => unknown_keys(child, &full, inner, file, problems),
            Some((_, Node::Leaf)) => {}
            None => {
                let place = match child.origin() {
                    Some(ENV_ORIGIN) | None => format!(
                        "environment variable {ENV_PREFIX}{}",
                        full.to_uppercase().replace('.', "__")
                    ),
                    Some(_) => file.to_owned(),
                };
                let hint = match did_you_mean(key, &names) {
                    Some(s) => format!("; did you mean `{}`?", qualified(prefix, s)),
                    None => format!("; the known keys here are {}", names.join(", ")),
                };
                problems.push(format!("{place}: unknown key `{full}`{hint}"));
            }
        }
    }
}

fn qualified(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve_against_the_directory() {
        let c = Config::defaults_in(Path::new("/srv/sb"));
        assert_eq!(c.manifests_dir, Path::new("/srv/sb/operators.d"));
        assert_eq!(c.state_dir, Path::new("/srv/sb/state"));
        assert_eq!(c.runtime_dir, Path::new("/srv/sb/run"));
        assert!(c.nats.is_embedded());
        assert_eq!(c.nats.embedded.port, 4222);
        assert!(c.nats.embedded.jetstream);
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn binary_bare_name_stays_for_path_lookup() {
        let mut c = Config::defaults_in(Path::new("/srv"));
        c.nats.embedded.binary = Some("nats-server".into());
        c.resolve_paths(Path::new("/srv"));
        assert_eq!(
            c.nats.embedded.binary.as_deref(),
            Some(Path::new("nats-server"))
        );
        c.nats.embedded.binary = Some("bin/nats-server".into());
        c.resolve_paths(Path::new("/srv"));
        assert_eq!(
            c.nats.embedded.binary.as_deref(),
            Some(Path::new("/srv/bin/nats-server"))
        );
    }
}
