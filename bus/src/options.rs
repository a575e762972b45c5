//! How to reach NATS: URLs, credentials, TLS, buffering.

use std::path::PathBuf;
use std::time::Duration;

/// Connection options for [`crate::Bus::connect`].
///
/// Built explicitly with the builder methods, or read from the launch
/// environment the orchestrator gives an operator
/// ([`crate::LaunchEnv::from_env`]). Secrets live here but are never
/// printed: the `Debug` impl masks them.
#[derive(Clone)]
pub struct BusOptions {
    pub(crate) urls: Vec<String>,
    pub(crate) name: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) creds_file: Option<PathBuf>,
    pub(crate) nkey_file: Option<PathBuf>,
    pub(crate) inbox_prefix: Option<String>,
    pub(crate) tls_ca: Option<PathBuf>,
    pub(crate) tls_client: Option<(PathBuf, PathBuf)>,
    pub(crate) require_tls: bool,
    pub(crate) publish_buffer: usize,
    pub(crate) subscription_capacity: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_reconnect_delay: Duration,
    pub(crate) dedupe_window: usize,
    pub(crate) stream_ids: bool,
}

impl std::fmt::Debug for BusOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("BusOptions")
            .field("urls", &self.urls)
            .field("name", &self.name)
            .field("user", &self.user)
            .field("password", &masked(&self.password))
            .field("token", &masked(&self.token))
            .field("creds_file", &self.creds_file)
            .field("nkey_file", &self.nkey_file)
            .field("inbox_prefix", &self.inbox_prefix)
            .field("tls_ca", &self.tls_ca)
            .field("require_tls", &self.require_tls)
            .field("publish_buffer", &self.publish_buffer)
            .field("stream_ids", &self.stream_ids)
            .finish_non_exhaustive()
    }
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions {
            urls: vec!["nats://127.0.0.1:4222".to_string()],
            name: None,
            user: None,
            password: None,
            token: None,
            creds_file: None,
            nkey_file: None,
            inbox_prefix: None,
            tls_ca: None,
            tls_client: None,
            require_tls: false,
            // Publishes made while disconnected wait in the client's command
            // queue; a deep queue is what lets a server restart lose nothing.
            publish_buffer: 65_536,
            subscription_capacity: 65_536,
            connect_timeout: Duration::from_secs(10),
            max_reconnect_delay: Duration::from_secs(2),
            dedupe_window: 8_192,
            stream_ids: false,
        }
    }
}

impl BusOptions {
    /// Options for one server URL (or a comma-separated list).
    ///
    /// ```
    /// let opts = switchboard_bus::BusOptions::new("nats://127.0.0.1:4222")
    ///     .name("my-operator");
    /// assert!(format!("{opts:?}").contains("127.0.0.1"));
    /// ```
    pub fn new(urls: &str) -> Self {
        BusOptions {
            urls: split_urls(urls),
            ..Default::default()
        }
    }

    /// Client name shown by the server's monitoring.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Authenticate with user and password.
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// Authenticate with a token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Authenticate with a NATS `.creds` file (JWT + nkey seed).
    pub fn creds_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.creds_file = Some(path.into());
        self
    }

    /// Authenticate with an nkey seed read from a file.
    pub fn nkey_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.nkey_file = Some(path.into());
        self
    }

    /// Use `prefix` instead of `_INBOX` for the reply subjects of
    /// requests (and of [`crate::Bus::sync`]).
    ///
    /// A server that grants each client only its own `<prefix>.>` keeps
    /// clients from reading each other's replies; such a client must use
    /// that prefix, or every request it makes is refused. The prefix is
    /// checked by [`crate::Bus::connect`]: one or more literal tokens, no
    /// wildcards.
    pub fn inbox_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.inbox_prefix = Some(prefix.into());
        self
    }

    /// Trust this CA (PEM) for the server's certificate; implies TLS.
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(path.into());
        self.require_tls = true;
        self
    }

    /// Present this client certificate and key (PEM); implies TLS.
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_client = Some((cert.into(), key.into()));
        self.require_tls = true;
        self
    }

    /// Refuse to talk to the server without TLS.
    pub fn require_tls(mut self, yes: bool) -> Self {
        self.require_tls = yes;
        self
    }

    /// How many publishes may wait while the connection is down (default
    /// 65,536). When full, `publish` waits instead of dropping.
    pub fn publish_buffer(mut self, n: usize) -> Self {
        self.publish_buffer = n.max(1);
        self
    }

    /// Messages a subscription holds before the server marks the client
    /// a slow consumer and drops (default 65,536; drops are counted).
    pub fn subscription_capacity(mut self, n: usize) -> Self {
        self.subscription_capacity = n.max(1);
        self
    }

    /// How long the first connection may take before `connect` fails.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Longest pause between reconnect attempts (default 2 s).
    pub fn max_reconnect_delay(mut self, d: Duration) -> Self {
        self.max_reconnect_delay = d;
        self
    }

    /// How many recent envelope ids each subscription remembers to drop
    /// duplicates (default 8,192; 0 turns de-duplication off).
    pub fn dedupe_window(mut self, n: usize) -> Self {
        self.dedupe_window = n;
        self
    }

    /// Whether the daemon keeps a durable stream (the launch environment
    /// says so with `SWITCHBOARD_STREAM`): then an envelope published on a
    /// subject the stream captures ([`crate::stream::STREAM_SUBJECTS`])
    /// carries its id in the `Nats-Msg-Id` header, so that a republish is
    /// stored once. Off by default: without a stream no message is stored
    /// twice, and the header costs both ends a NATS header map per message
    /// (about 10,000 instructions, two thirds of the bus's own cost;
    /// docs/benchmarks.md).
    pub fn stream_ids(mut self, yes: bool) -> Self {
        self.stream_ids = yes;
        self
    }

    /// The server URLs, for messages and status.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }
}

/// Why `prefix` cannot be an inbox prefix, if it cannot: the client
/// appends `.<id>.<token>` to it and subscribes to `<prefix>.<id>.*`, so
/// it must be a literal subject (an empty token or a wildcard would make
/// that subscription something else than the server granted).
pub(crate) fn inbox_prefix_problem(prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        return Some("the prefix is empty".into());
    }
    for (i, token) in prefix.split('.').enumerate() {
        let n = i + 1;
        if token.is_empty() {
            return Some(format!("token {n} is empty"));
        }
        if token == "*" || token == ">" {
            return Some(format!("token {n} is a wildcard"));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Some(format!("token {n} contains whitespace"));
        }
    }
    None
}

/// Split a comma-separated URL list, dropping blanks.
pub(crate) fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_secrets() {
        let o = BusOptions::new("nats://a:4222, nats://b:4222")
            .user_password("bot", "hunter2")
            .token("s3cret-token");
        let d = format!("{o:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(!d.contains("s3cret-token"), "{d}");
        assert_eq!(o.urls(), ["nats://a:4222", "nats://b:4222"]);
    }

    #[test]
    fn inbox_prefix_must_be_literal_tokens() {
        for good in ["_INBOX_irc-libera", "sb.inbox.pingbot", "_INBOX"] {
            assert_eq!(inbox_prefix_problem(good), None, "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("a..b", "token 2 is empty"),
            ("a.", "token 2 is empty"),
            ("_INBOX.*", "token 2 is a wildcard"),
            (">", "token 1 is a wildcard"),
            ("my inbox", "whitespace"),
        ] {
            let problem = inbox_prefix_problem(bad).unwrap_or_default();
            assert!(problem.contains(why), "{bad:?}: {problem:?}");
        }
    }
}
