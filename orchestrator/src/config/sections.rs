//! The tables of `switchboard.toml` below the top level: `[nats]`,
//! `[nats.embedded]`, `[log]` and `[stream]`, with their defaults.

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
    /// The stream's shape for [`switchboard_bus::Bus::ensure_stream`],
    /// with `replicas` copies ([`super::Config::stream_replicas`]).
    pub fn spec(&self, replicas: usize) -> switchboard_bus::stream::StreamSpec {
        switchboard_bus::stream::StreamSpec {
            name: self.name.clone(),
            max_age: self.max_age,
            max_bytes: self.max_bytes.as_u64(),
            duplicate_window: self.duplicate_window,
            max_message_bytes: u32::try_from(self.max_message.as_u64()).unwrap_or(u32::MAX),
            replicas,
        }
    }

    /// The operators' own streams, unless turned off.
    pub fn operator_streams(&self) -> Option<switchboard_bus::stream::OperatorStreams> {
        (self.operator_max_bytes.as_u64() > 0).then(|| switchboard_bus::stream::OperatorStreams {
            max_bytes: self.operator_max_bytes.as_u64(),
        })
    }
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

impl NatsConfig {
    /// Whether the orchestrator should run its own nats-server.
    pub fn is_embedded(&self) -> bool {
        self.url.is_none()
    }
}
