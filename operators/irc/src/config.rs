//! The operator's configuration: the manifest's `[config]` table, typed.
//!
//! Every key, with its default (JSON as the operator receives it; in a
//! manifest these are TOML keys under `[config]`):
//!
//! | key | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `server` | string | required | host name or IP address of the IRC server |
//! | `port` | integer | 6697 with TLS, else 6667 | TCP port |
//! | `tls` | bool | `false` | TLS (rustls; system roots unless `tls_ca`) |
//! | `tls_ca` | path | none | PEM file of CA certificates to trust instead of the system roots |
//! | `password` | string (secret) | none | server password (`PASS`) |
//! | `nick` | string | required | the nick to use |
//! | `alt_nicks` | list of strings | `[]` | tried in order when `nick` is taken; then `nick_`, `nick__`, … |
//! | `username` | string | `nick` | the user name (ident) |
//! | `realname` | string | `"Switchboard IRC operator"` | the real name (gecos) |
//! | `sasl` | `{account, password}` | none | SASL PLAIN credentials (password is a secret) |
//! | `nickserv_password` | string (secret) | none | `IDENTIFY` with NickServ when SASL did not log in |
//! | `channels` | list of `"#name"` or `{name, key}` | `[]` | channels to be in |
//! | `rejoin_on_kick` | bool | `false` | join again (after 2 s) when kicked |
//! | `ping_interval` | duration | `"60s"` | send a PING after this long without any line from the server |
//! | `ping_timeout` | duration | `"60s"` | give up on the connection when the server stays silent this long after that PING |
//! | `reconnect` | `{initial, max, multiplier}` | `"1s"`, `"60s"`, `2.0` | backoff between connection attempts (with jitter); reset once registered |
//! | `flood` | `{burst, per_second, window_bytes, max_queue}` | `5`, `4.0`, `1024`, `1000` | outbound flood control, see [`crate::flood`] |
//! | `strip_formatting` | bool | `false` | remove mIRC colour/bold/… codes from inbound text |
//! | `allow_raw` | bool | `false` | accept `send.….raw` requests (a whole IRC line) |
//! | `instance` | string | the operator id | the `<instance>` token of this operator's subjects; must equal the operator id (refused otherwise: PROTOCOL.md, "Authentic source") |
//! | `max_line_bytes` | integer | `512` | longest line the server accepts and relays, CR LF included (outbound text is split to fit) |
//! | `quit_message` | string | `"Switchboard"` | QUIT reason on shutdown |
//!
//! Durations are strings with a unit: `"500ms"`, `"30s"`, `"2m"`, `"1h"`.
//! Unknown keys are errors, as are values that could break the protocol
//! (a nick with a space, a channel with a comma, CR/LF/NUL anywhere).
//! Secrets are never printed: `Debug` shows `"***"`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use switchboard_bus::{duration, ConfigError};

use crate::names;

/// A password or other secret: compared and used, never printed (the
/// SDK's one secret type).
pub use switchboard_bus::Secret;

/// SASL PLAIN credentials.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sasl {
    /// The account name (authentication and authorisation identity).
    pub account: String,
    /// The account's password.
    pub password: Secret,
}

/// A channel to join, with its key if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    /// The channel, e.g. `#rust`.
    pub name: String,
    /// The channel key (`+k`), if needed.
    pub key: Option<Secret>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawChannel {
    Name(String),
    Full(RawChannelFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannelFull {
    name: String,
    #[serde(default)]
    key: Option<Secret>,
}

/// Backoff between connection attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconnect {
    /// Wait before the first retry.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Growth factor per failed attempt (>= 1).
    pub multiplier: f64,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 2.0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReconnect {
    initial: Option<String>,
    max: Option<String>,
    multiplier: Option<f64>,
}

/// Outbound flood control (see [`crate::flood`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Flood {
    /// Lines that may go out at once after a quiet period.
    pub burst: u32,
    /// Sustained lines per second.
    pub per_second: f64,
    /// Most bytes sent but not yet processed by the server (checked with
    /// PING markers); 0 turns the window off.
    pub window_bytes: usize,
    /// Most lines waiting to be sent; requests beyond it are refused.
    pub max_queue: usize,
}

impl Default for Flood {
    fn default() -> Self {
        Flood {
            burst: 5,
            per_second: 4.0,
            window_bytes: 1024,
            max_queue: 1000,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFlood {
    burst: Option<u32>,
    per_second: Option<f64>,
    window_bytes: Option<usize>,
    max_queue: Option<usize>,
}

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct IrcConfig {
    /// Server host name or address.
    pub server: String,
    /// Server port.
    pub port: u16,
    /// Whether to speak TLS.
    pub tls: bool,
    /// CA file to trust instead of the system roots.
    pub tls_ca: Option<PathBuf>,
    /// Server password.
    pub password: Option<Secret>,
    /// Wanted nick.
    pub nick: String,
    /// Alternatives when the nick is taken.
    pub alt_nicks: Vec<String>,
    /// User name; `None` means the nick (see [`IrcConfig::username`]).
    pub username: Option<String>,
    /// Real name.
    pub realname: String,
    /// SASL PLAIN credentials.
    pub sasl: Option<Sasl>,
    /// NickServ password (fallback when SASL did not log in).
    pub nickserv_password: Option<Secret>,
    /// Channels to join.
    pub channels: Vec<ChannelSpec>,
    /// Join again after a kick.
    pub rejoin_on_kick: bool,
    /// Idle time before a keepalive PING.
    pub ping_interval: Duration,
    /// Silence after that PING before the connection is dropped.
    pub ping_timeout: Duration,
    /// Reconnect backoff.
    pub reconnect: Reconnect,
    /// Outbound flood control.
    pub flood: Flood,
    /// Strip formatting codes from inbound text.
    pub strip_formatting: bool,
    /// Accept raw lines from the bus.
    pub allow_raw: bool,
    /// Subject instance token (defaults to the operator id at start).
    pub instance: Option<String>,
    /// Longest line the server relays, CR LF included.
    pub max_line_bytes: usize,
    /// QUIT reason on shutdown.
    pub quit_message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    tls_ca: Option<PathBuf>,
    #[serde(default)]
    password: Option<Secret>,
    nick: String,
    #[serde(default)]
    alt_nicks: Vec<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    realname: Option<String>,
    #[serde(default)]
    sasl: Option<Sasl>,
    #[serde(default)]
    nickserv_password: Option<Secret>,
    #[serde(default)]
    channels: Vec<RawChannel>,
    #[serde(default)]
    rejoin_on_kick: bool,
    #[serde(default)]
    ping_interval: Option<String>,
    #[serde(default)]
    ping_timeout: Option<String>,
    #[serde(default)]
    reconnect: RawReconnect,
    #[serde(default)]
    flood: RawFlood,
    #[serde(default)]
    strip_formatting: bool,
    #[serde(default)]
    allow_raw: bool,
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    max_line_bytes: Option<usize>,
    #[serde(default)]
    quit_message: Option<String>,
}

/// Rejects CR, LF and NUL, which would end or corrupt an IRC line.
fn no_line_breaks(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(ConfigError::invalid(key, "must not contain CR, LF or NUL"));
    }
    Ok(())
}

impl TryFrom<RawConfig> for IrcConfig {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<IrcConfig, ConfigError> {
        let server = raw.server.trim().to_string();
        if server.is_empty() || server.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::invalid(
                "server",
                "must be a host name or address without spaces",
            ));
        }
        let port = raw.port.unwrap_or(if raw.tls { 6697 } else { 6667 });
        if port == 0 {
            return Err(ConfigError::invalid("port", "must be between 1 and 65535"));
        }
        if raw.tls_ca.is_some() && !raw.tls {
            return Err(ConfigError::invalid("tls_ca", "is set but `tls` is false"));
        }
        if let Some(p) = &raw.password {
            no_line_breaks("password", p.expose())?;
            if p.expose().is_empty() {
                return Err(ConfigError::invalid(
                    "password",
                    "is empty; leave it out for no server password",
                ));
            }
        }
        if let Err(e) = names::check_nick(&raw.nick) {
            return Err(ConfigError::invalid("nick", e));
        }
        for alt in &raw.alt_nicks {
            if let Err(e) = names::check_nick(alt) {
                return Err(ConfigError::invalid("alt_nicks", e));
            }
        }
        if let Some(username) = &raw.username {
            if username.is_empty()
                || username
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '@' || c == ':')
            {
                return Err(ConfigError::invalid(
                    "username",
                    "must be a word without spaces, `@` or `:`",
                ));
            }
        }
        let realname = raw
            .realname
            .unwrap_or_else(|| "Switchboard IRC operator".to_string());
        no_line_breaks("realname", &realname)?;
        if let Some(sasl) = &raw.sasl {
            if sasl.account.is_empty() || sasl.account.contains(['\0', '\r', '\n']) {
                return Err(ConfigError::invalid(
                    "sasl.account",
                    "must be a non-empty name without NUL, CR or LF",
                ));
            }
            if sasl.password.expose().contains('\0') {
                return Err(ConfigError::invalid(
                    "sasl.password",
                    "must not contain NUL",
                ));
            }
        }
        if let Some(p) = &raw.nickserv_password {
            no_line_breaks("nickserv_password", p.expose())?;
        }
        let mut channels: Vec<ChannelSpec> = Vec::new();
        for ch in raw.channels {
            let (name, key) = match ch {
                RawChannel::Name(name) => (name, None),
                RawChannel::Full(full) => (full.name, full.key),
            };
            if let Err(e) = names::check_channel(&name, names::DEFAULT_CHANTYPES) {
                return Err(ConfigError::invalid("channels", e));
            }
            if let Some(k) = &key {
                if let Err(e) = names::check_key(k.expose()) {
                    return Err(ConfigError::invalid(
                        "channels",
                        format!("key of {name}: {e}"),
                    ));
                }
            }
            let folded = names::fold(&name, names::CaseMapping::Rfc1459);
            if channels
                .iter()
                .any(|c| names::fold(&c.name, names::CaseMapping::Rfc1459) == folded)
            {
                return Err(ConfigError::invalid(
                    "channels",
                    format!("{name} is listed twice"),
                ));
            }
            channels.push(ChannelSpec { name, key });
        }
        let ping_interval = duration(
            "ping_interval",
            raw.ping_interval.as_deref(),
            Duration::from_secs(60),
        )?;
        let ping_timeout = duration(
            "ping_timeout",
            raw.ping_timeout.as_deref(),
            Duration::from_secs(60),
        )?;
        if ping_interval < Duration::from_millis(100) || ping_timeout < Duration::from_millis(100) {
            let key = match ping_interval < Duration::from_millis(100) {
                true => "ping_interval",
                false => "ping_timeout",
            };
            return Err(ConfigError::invalid(key, "must be at least 100ms"));
        }
        let defaults = Reconnect::default();
        let reconnect = Reconnect {
            initial: duration(
                "reconnect.initial",
                raw.reconnect.initial.as_deref(),
                defaults.initial,
            )?,
            max: duration("reconnect.max", raw.reconnect.max.as_deref(), defaults.max)?,
            multiplier: raw.reconnect.multiplier.unwrap_or(defaults.multiplier),
        };
        if !(reconnect.multiplier >= 1.0 && reconnect.multiplier <= 100.0) {
            return Err(ConfigError::invalid(
                "reconnect.multiplier",
                "must be between 1 and 100",
            ));
        }
        if reconnect.max < reconnect.initial {
            return Err(ConfigError::invalid(
                "reconnect.max",
                "must not be shorter than `reconnect.initial`",
            ));
        }
        let fd = Flood::default();
        let flood = Flood {
            burst: raw.flood.burst.unwrap_or(fd.burst),
            per_second: raw.flood.per_second.unwrap_or(fd.per_second),
            window_bytes: raw.flood.window_bytes.unwrap_or(fd.window_bytes),
            max_queue: raw.flood.max_queue.unwrap_or(fd.max_queue),
        };
        if flood.burst == 0 {
            return Err(ConfigError::invalid("flood.burst", "must be at least 1"));
        }
        if !(flood.per_second > 0.0 && flood.per_second.is_finite()) {
            return Err(ConfigError::invalid(
                "flood.per_second",
                "must be a positive number",
            ));
        }
        if flood.max_queue == 0 {
            return Err(ConfigError::invalid(
                "flood.max_queue",
                "must be at least 1",
            ));
        }
        if let Some(instance) = &raw.instance {
            if instance.is_empty() {
                return Err(ConfigError::invalid("instance", "must not be empty"));
            }
        }
        let max_line_bytes = raw.max_line_bytes.unwrap_or(512);
        if !(128..=16384).contains(&max_line_bytes) {
            return Err(ConfigError::invalid(
                "max_line_bytes",
                "must be between 128 and 16384",
            ));
        }
        let quit_message = raw
            .quit_message
            .unwrap_or_else(|| "Switchboard".to_string());
        no_line_breaks("quit_message", &quit_message)?;
        Ok(IrcConfig {
            server,
            port,
            tls: raw.tls,
            tls_ca: raw.tls_ca,
            password: raw.password,
            nick: raw.nick,
            alt_nicks: raw.alt_nicks,
            username: raw.username,
            realname,
            sasl: raw.sasl,
            nickserv_password: raw.nickserv_password,
            channels,
            rejoin_on_kick: raw.rejoin_on_kick,
            ping_interval,
            ping_timeout,
            reconnect,
            flood,
            strip_formatting: raw.strip_formatting,
            allow_raw: raw.allow_raw,
            instance: raw.instance,
            max_line_bytes,
            quit_message,
        })
    }
}

impl IrcConfig {
    /// Whether going from `self` to `new` needs a new connection (anything
    /// that is sent only while registering, or where we connect).
    pub fn needs_reconnect(&self, new: &IrcConfig) -> bool {
        self.server != new.server
            || self.port != new.port
            || self.tls != new.tls
            || self.tls_ca != new.tls_ca
            || self.password != new.password
            || self.username != new.username
            || self.realname != new.realname
            || self.sasl != new.sasl
    }

    /// The user name sent in `USER`: `username`, else the nick.
    pub fn username(&self) -> &str {
        self.username.as_deref().unwrap_or(&self.nick)
    }

    /// `server:port`, for logs and errors.
    pub fn address(&self) -> String {
        if self.server.contains(':') {
            format!("[{}]:{}", self.server, self.port)
        } else {
            format!("{}:{}", self.server, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<IrcConfig, String> {
        serde_json::from_value::<IrcConfig>(v).map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(json!({"server": "irc.example.net", "nick": "sb"})).unwrap();
        assert_eq!(c.port, 6667);
        assert_eq!(c.username(), "sb");
        assert_eq!(c.max_line_bytes, 512);
        assert_eq!(c.flood, Flood::default());
        assert_eq!(c.ping_interval, Duration::from_secs(60));
        let tls = parse(json!({"server": "irc.example.net", "nick": "sb", "tls": true})).unwrap();
        assert_eq!(tls.port, 6697);
    }

    #[test]
    fn full_config_parses() {
        let c = parse(json!({
            "server": "127.0.0.1", "port": 7000, "tls": true, "tls_ca": "/tmp/ca.pem",
            "password": "pw", "nick": "sb", "alt_nicks": ["sb2"], "username": "u",
            "realname": "Real Name", "sasl": {"account": "acc", "password": "pw2"},
            "nickserv_password": "pw3",
            "channels": ["#a", {"name": "#b", "key": "k"}],
            "rejoin_on_kick": true, "ping_interval": "30s", "ping_timeout": "1.5s",
            "reconnect": {"initial": "100ms", "max": "2s", "multiplier": 1.5},
            "flood": {"burst": 10, "per_second": 5.0, "window_bytes": 0, "max_queue": 10},
            "strip_formatting": true, "allow_raw": true, "instance": "net",
            "max_line_bytes": 1024, "quit_message": "bye"
        }))
        .unwrap();
        assert_eq!(c.channels[1].key, Some(Secret::new("k")));
        assert_eq!(c.ping_timeout, Duration::from_millis(1500));
        assert_eq!(c.reconnect.initial, Duration::from_millis(100));
        assert_eq!(c.flood.window_bytes, 0);
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        let base = || json!({"server": "irc.example.net", "nick": "sb"});
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base();
            b[k] = v;
            parse(b)
        };
        assert!(with("nikc", json!("x"))
            .unwrap_err()
            .contains("unknown field"));
        assert!(with("nick", json!("a b")).is_err());
        assert!(with("nick", json!("a\r\nQUIT")).is_err());
        assert!(with("channels", json!(["rust"])).is_err());
        assert!(with("channels", json!(["#a,#b"])).is_err());
        assert!(with("channels", json!(["#a", "#A"])).is_err());
        assert!(with("channels", json!([{"name": "#a", "pass": "x"}])).is_err());
        assert!(with("ping_interval", json!("10")).is_err());
        assert!(with("realname", json!("x\nQUIT")).is_err());
        assert!(with("password", json!("x\r\nQUIT")).is_err());
        assert!(with("flood", json!({"burst": 0})).is_err());
        assert!(with("max_line_bytes", json!(10)).is_err());
        assert!(parse(json!({"server": "x"})).is_err());
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = parse(json!({
            "server": "s", "nick": "n", "password": "hunter2",
            "sasl": {"account": "a", "password": "hunter3"}, "nickserv_password": "hunter4",
            "channels": [{"name": "#c", "key": "hunter5"}]
        }))
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter"), "{dbg}");
    }

    #[test]
    fn durations_use_the_shared_syntax() {
        let c = parse(json!({"server": "s", "nick": "n", "ping_interval": "1.5s"})).unwrap();
        assert_eq!(c.ping_interval, Duration::from_millis(1500));
        for bad in ["5", "-1s", ".5s", "9000h"] {
            let e = parse(json!({"server": "s", "nick": "n", "ping_timeout": bad})).unwrap_err();
            assert!(e.contains("`ping_timeout`"), "{bad}: {e}");
        }
    }

    #[test]
    fn reconnect_needed_only_for_connection_keys() {
        let a = parse(json!({"server": "s", "nick": "n", "channels": ["#a"]})).unwrap();
        let b = parse(json!({"server": "s", "nick": "m", "channels": ["#b"]})).unwrap();
        assert!(!a.needs_reconnect(&b));
        let c = parse(json!({"server": "t", "nick": "n"})).unwrap();
        assert!(a.needs_reconnect(&c));
    }
}
