//! The checks serde cannot make: values that contradict each other or
//! would expose the bus, each reported with the key to change.

use bytesize::ByteSize;

use super::{Config, ConfigError};
use crate::manifest::is_valid_env_name;

/// The problems found so far, each as `origin: `key` message`.
struct Problems<'a> {
    origin: &'a str,
    lines: Vec<String>,
}

impl Problems<'_> {
    fn add(&mut self, key: &str, message: &str) {
        self.lines
            .push(format!("{}: `{key}` {message}", self.origin));
    }
}

impl Config {
    /// Checks the values serde cannot: empty strings, contradictory
    /// credentials, limits that do not fit each other.
    pub(super) fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let mut p = Problems {
            origin,
            lines: Vec::new(),
        };
        for (key, dir) in [
            ("manifests", &self.manifests_dir),
            ("state_dir", &self.state_dir),
            ("runtime_dir", &self.runtime_dir),
        ] {
            if dir.as_os_str().is_empty() {
                p.add(key, "is empty; give a directory");
            }
        }
        self.check_stream(&mut p);
        self.check_auth(&mut p);
        self.check_embedded(&mut p);
        self.check_cluster(&mut p);
        if self.log.level.trim().is_empty() {
            p.add("log.level", "is empty; use e.g. \"info\"");
        }
        if p.lines.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { problems: p.lines })
        }
    }

    /// `[stream]`: JetStream's naming rule and limits, and whether it fits
    /// the embedded server's store.
    fn check_stream(&self, p: &mut Problems<'_>) {
        let stream = &self.stream;
        if stream.name.is_empty()
            || !stream
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            p.add(
                "stream.name",
                "must be letters, digits, `-` and `_` (JetStream's rule), e.g. \"SWITCHBOARD\"",
            );
        }
        if stream.max_age.is_zero() {
            p.add(
                "stream.max_age",
                "is zero; give how long to keep messages, e.g. \"7d\"",
            );
        }
        if stream.duplicate_window.is_zero() || stream.duplicate_window > stream.max_age {
            p.add(
                "stream.duplicate_window",
                "must be more than zero and at most `stream.max_age`, e.g. \"2m\"",
            );
        }
        if stream.max_message < ByteSize::kib(1) || stream.max_message > ByteSize::mib(1) {
            p.add(
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
            p.add(
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
            p.add("stream.max_bytes", &line);
        }
    }

    /// `[nats]` credentials for an external server: one way to
    /// authenticate, each complete.
    fn check_auth(&self, p: &mut Problems<'_>) {
        let nats = &self.nats;
        if let Some(url) = &nats.url {
            if url.split(',').any(|u| u.trim().is_empty()) {
                p.add(
                    "nats.url",
                    "has an empty server; give comma-separated URLs like \
                     \"nats://10.0.0.1:4222,nats://10.0.0.2:4222\", or remove it to run the \
                     embedded server",
                );
            }
        }
        if nats.password_file.is_some() && nats.password_env.is_some() {
            p.add(
                "nats.password_file",
                "and `nats.password_env` are both set; keep one",
            );
        }
        if nats.token_file.is_some() && nats.token_env.is_some() {
            p.add(
                "nats.token_file",
                "and `nats.token_env` are both set; keep one",
            );
        }
        let has_password = nats.password_file.is_some() || nats.password_env.is_some();
        let has_token = nats.token_file.is_some() || nats.token_env.is_some();
        if nats.user.is_some() && !has_password {
            p.add(
                "nats.user",
                "is set without a password; add `nats.password_file` or `nats.password_env`",
            );
        }
        if has_password && nats.user.is_none() {
            p.add("nats.user", "is missing; a password needs a user name");
        }
        if has_token && (nats.user.is_some() || has_password) {
            p.add(
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
                    p.add(key, "is not a valid environment variable name");
                }
            }
        }
        if has_token && nats.creds_file.is_some() || has_password && nats.creds_file.is_some() {
            p.add(
                "nats.creds_file",
                "and a password or token are both set; use one way to authenticate",
            );
        }
    }

    /// `[nats.embedded]`: kept on loopback unless exposed on purpose with
    /// TLS, and no credentials meant for an external server.
    fn check_embedded(&self, p: &mut Problems<'_>) {
        let nats = &self.nats;
        let has_password = nats.password_file.is_some() || nats.password_env.is_some();
        let has_token = nats.token_file.is_some() || nats.token_env.is_some();
        if nats.embedded.host.trim().is_empty() {
            p.add(
                "nats.embedded.host",
                "is empty; use \"127.0.0.1\" to keep the bus on this machine",
            );
        }
        let embedded = &nats.embedded;
        let has_tls = embedded.tls_cert.is_some() && embedded.tls_key.is_some();
        if embedded.tls_cert.is_some() != embedded.tls_key.is_some() {
            p.add(
                "nats.embedded.tls_cert",
                "and `nats.embedded.tls_key` go together; set both (PEM files) or neither",
            );
        }
        if has_tls && nats.tls_ca.is_none() && nats.is_embedded() {
            p.add(
                "nats.tls_ca",
                "is missing: with [nats.embedded] TLS, the daemon, the CLI and operators need \
                 the CA that signed tls_cert",
            );
        }
        if nats.is_embedded() && !is_loopback(&embedded.host) {
            if !embedded.allow_remote {
                p.add(
                    "nats.embedded.host",
                    "is not a loopback address, which would expose the bus to the network; \
                     set `nats.embedded.allow_remote = true` and TLS (`tls_cert`, `tls_key`) \
                     to do that on purpose, or use \"127.0.0.1\"",
                );
            } else if !has_tls {
                p.add(
                    "nats.embedded.allow_remote",
                    "needs TLS: set `nats.embedded.tls_cert` and `nats.embedded.tls_key` \
                     (passwords must not cross a network in clear)",
                );
            }
        }
        if nats.is_embedded()
            && (nats.user.is_some() || has_password || has_token || nats.creds_file.is_some())
        {
            p.add(
                "nats.user",
                "(and the other credentials in [nats]) are for an external server (`nats.url`); \
                 the embedded server makes its own users: remove them or set `nats.url`",
            );
        }
    }
}

impl Config {
    /// `[cluster]`: the table's own rules, and what cluster mode needs of
    /// the rest (the embedded server, JetStream, routes off loopback only
    /// with TLS).
    fn check_cluster(&self, p: &mut Problems<'_>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        if let Err(e) = cluster.validate() {
            p.lines.push(format!("{}: {e}", p.origin));
        }
        if self.nats.url.is_some() {
            p.add(
                "cluster",
                "with `nats.url` is not supported yet: cluster mode clusters the hosts' embedded \
                 nats-servers (their routes carry the bus and the cluster's buckets); remove \
                 `nats.url`, or remove [cluster] to run one host on the external server",
            );
        }
        if !self.nats.embedded.jetstream {
            p.add(
                "nats.embedded.jetstream",
                "is false, but [cluster] keeps the desired state and the leases in JetStream; \
                 set it to true (or remove [cluster])",
            );
        }
        match &cluster.tls {
            Some(tls) => {
                for (key, path) in [
                    ("cluster.tls.cert", &tls.cert),
                    ("cluster.tls.key", &tls.key),
                    ("cluster.tls.ca", &tls.ca),
                ] {
                    if let Err(e) = std::fs::File::open(path) {
                        let line = format!(
                            "names {}, which cannot be read ({e}); nats-server reads it at start \
                             to secure the routes",
                            path.display()
                        );
                        p.add(key, &line);
                    }
                }
            }
            None => self.check_plain_routes(cluster, p),
        }
    }

    /// Routes without `[cluster.tls]` are plain TCP with no authentication:
    /// whoever reaches the port joins the bus. Allowed on loopback only
    /// (several hosts on one machine, as in the tests).
    fn check_plain_routes(
        &self,
        cluster: &switchboard_cluster::ClusterConfig,
        p: &mut Problems<'_>,
    ) {
        const FIX: &str = "set [cluster.tls] (cert, key, ca: mutual TLS with the cluster's own \
                           CA, docs/cluster.md \"Route TLS\"), or use 127.0.0.x addresses \
                           (several hosts on one machine)";
        if !cluster.listen.ip().is_loopback() {
            let line = format!(
                "is not a loopback address, and routes without TLS are neither authenticated \
                 nor encrypted (anyone who reaches the port could join the bus): {FIX}"
            );
            p.add("cluster.listen", &line);
        }
        for peer in &cluster.peers {
            let host = peer.rsplit_once(':').map_or(peer.as_str(), |(h, _)| h);
            if !is_loopback(host) {
                let line = format!(
                    "lists `{peer}`, which is not a loopback address, and routes without TLS \
                     are neither authenticated nor encrypted: {FIX}"
                );
                p.add("cluster.peers", &line);
            }
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
