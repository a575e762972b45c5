//! The dashboard's `[config]` table.
//!
//! | Key | Type | Default | Meaning |
//! | --- | --- | --- | --- |
//! | `listen` | `host:port` | `"127.0.0.1:0"` (a free port, logged at start) | where the web server listens |
//! | `token` | secret | none | logs a browser in with every right (the buttons, the publish box); also accepted as `Authorization: Bearer <token>`. Without a token (and no `viewer_token`) the page shows nothing but how to set one |
//! | `viewer_token` | secret | none | logs a browser in to look only: every view, no button |
//! | `poll_interval` | duration | `"1s"` | how often `sb.api.status` is asked |
//! | `tail_buffer` | integer | `500` | envelopes the live tail keeps (1..=10000) |
//! | `rate_window` | duration | `"5m"` | how far back the message-rate chart goes (10 s..1 h) |
//!
//! Every view (operators, logs, the tail, events) needs a login: on a
//! shared machine, loopback is reachable by every local user and every
//! other operator. Only `/metrics` (counters, no text) stays open on a
//! loopback listener, as Prometheus expects. A non-loopback `listen`
//! needs a `token`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use switchboard_proto::duration::parse_duration;

/// A token: compared (in constant time), never printed; the SDK's one
/// secret type.
pub use switchboard_bus::Secret;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    token: Option<Secret>,
    #[serde(default)]
    viewer_token: Option<Secret>,
    #[serde(default)]
    poll_interval: Option<String>,
    #[serde(default)]
    tail_buffer: Option<usize>,
    #[serde(default)]
    rate_window: Option<String>,
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Raw")]
pub struct DashboardConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Logs in with every right.
    pub token: Option<Secret>,
    /// Logs in to look only.
    pub viewer_token: Option<Secret>,
    /// Status poll period.
    pub poll_interval: Duration,
    /// Tail ring size.
    pub tail_buffer: usize,
    /// Rate history length.
    pub rate_window: Duration,
}

/// A config value serde accepted but that cannot work; says which key and
/// what to write instead, never quoting the value (it may sit next to a
/// secret, and the SDK's config errors never quote values).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `listen` is not `ip:port`.
    #[error("`listen` is not an IP address with a port, e.g. \"127.0.0.1:8080\"")]
    Listen,
    /// `listen` reaches beyond loopback without a token.
    #[error(
        "`listen` is reachable from other machines: give a `token` (by secret reference, \
         [secrets] token = {{ file = \"...\" }}) or listen on 127.0.0.1"
    )]
    Exposed,
    /// A duration key that does not parse.
    #[error("`{key}`: {source}")]
    Duration {
        /// The key.
        key: &'static str,
        /// Why.
        source: switchboard_proto::duration::DurationError,
    },
    /// A value outside its range.
    #[error("`{key}` must be between {range}")]
    Range {
        /// The key.
        key: &'static str,
        /// The allowed range, in words.
        range: &'static str,
    },
}

/// A configuration this operator cannot use fails `start`/`reload` as a
/// configuration error, kept as its source.
impl From<ConfigError> for switchboard_bus::HandlerError {
    fn from(e: ConfigError) -> switchboard_bus::HandlerError {
        switchboard_bus::HandlerError::new(switchboard_bus::HandlerErrorKind::Config, e)
    }
}

switchboard_proto::error_kinds! {
    /// Coarse classes of [`ConfigError`].
    ConfigError => ConfigErrorKind { Listen, Exposed, Duration, Range }
}

impl TryFrom<Raw> for DashboardConfig {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Self, ConfigError> {
        let listen_text = raw.listen.unwrap_or_else(|| "127.0.0.1:0".to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| ConfigError::Listen)?;
        let token = raw.token.filter(|t| !t.is_empty());
        let viewer_token = raw.viewer_token.filter(|t| !t.is_empty());
        if !listen.ip().is_loopback() && token.is_none() {
            return Err(ConfigError::Exposed);
        }
        let duration = |key: &'static str, v: Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(t) => parse_duration(&t).map_err(|source| ConfigError::Duration { key, source }),
        };
        let poll_interval = duration("poll_interval", raw.poll_interval, Duration::from_secs(1))?;
        if !(Duration::from_millis(50)..=Duration::from_secs(60)).contains(&poll_interval) {
            return Err(ConfigError::Range {
                key: "poll_interval",
                range: "50ms and 60s",
            });
        }
        let rate_window = duration("rate_window", raw.rate_window, Duration::from_secs(300))?;
        if !(Duration::from_secs(10)..=Duration::from_secs(3600)).contains(&rate_window) {
            return Err(ConfigError::Range {
                key: "rate_window",
                range: "10s and 1h",
            });
        }
        let tail_buffer = raw.tail_buffer.unwrap_or(500);
        if !(1..=10_000).contains(&tail_buffer) {
            return Err(ConfigError::Range {
                key: "tail_buffer",
                range: "1 and 10000",
            });
        }
        Ok(DashboardConfig {
            listen,
            token,
            viewer_token,
            poll_interval,
            tail_buffer,
            rate_window,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<DashboardConfig, String> {
        switchboard_bus::parse_config::<DashboardConfig>(&v).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_loopback_and_a_free_port() {
        let c = parse(serde_json::json!({})).expect("defaults");
        assert_eq!(c.listen, "127.0.0.1:0".parse().expect("addr"));
        assert_eq!(c.token, None);
        assert_eq!(c.tail_buffer, 500);
    }

    #[test]
    fn beyond_loopback_needs_a_token() {
        let e = parse(serde_json::json!({"listen": "0.0.0.0:8080"})).expect_err("refused");
        assert!(e.contains("token"), "{e}");
        parse(serde_json::json!({"listen": "0.0.0.0:8080", "token": "t"})).expect("with a token");
    }

    #[test]
    fn bad_values_and_unknown_keys_are_refused() {
        assert!(parse(serde_json::json!({"listen": "localhost"}))
            .expect_err("no port")
            .contains("listen"));
        assert!(parse(serde_json::json!({"tail_buffer": 0}))
            .expect_err("zero")
            .contains("tail_buffer"));
        assert!(parse(serde_json::json!({"rate_window": "1s"}))
            .expect_err("short")
            .contains("rate_window"));
        assert!(parse(serde_json::json!({"tokn": "x"}))
            .expect_err("unknown")
            .contains("tokn"));
    }

    #[test]
    fn errors_have_kinds() {
        let raw = |v: serde_json::Value| -> Raw { serde_json::from_value(v).expect("raw") };
        let kind = |v| {
            DashboardConfig::try_from(raw(v))
                .expect_err("refused")
                .kind()
        };
        assert_eq!(
            kind(serde_json::json!({"listen": "x"})),
            ConfigErrorKind::Listen
        );
        assert_eq!(
            kind(serde_json::json!({"listen": "[::]:1"})),
            ConfigErrorKind::Exposed
        );
        assert_eq!(
            kind(serde_json::json!({"poll_interval": "soon"})),
            ConfigErrorKind::Duration
        );
        assert_eq!(
            kind(serde_json::json!({"poll_interval": "2h"})),
            ConfigErrorKind::Range
        );
    }

    #[test]
    fn the_token_is_never_printed() {
        let c = parse(serde_json::json!({"token": "hunter2"})).expect("ok");
        assert!(!format!("{c:?}").contains("hunter2"));
        let t = c.token.expect("token");
        assert!(t.matches("hunter2"));
        assert!(!t.matches("hunter"));
        assert!(!t.matches("hunter22"));
    }
}
