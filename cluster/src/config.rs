//! The `[cluster]` table: who this host is and whom its embedded
//! nats-server routes to.
//!
//! Typed and validated here; the orchestrator embeds it in
//! switchboard.toml (and adds its own rules: loopback routes only until
//! they are authenticated, no external NATS). Unknown keys are errors, as everywhere in
//! switchboard.toml: a misspelt `peer` must not silently make a one-host
//! "cluster".

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Longest host name or label, in bytes (the operator id's limit: both
/// end up as KV keys and log fields).
pub const MAX_NAME_LEN: usize = 64;

/// Replicas of every cluster bucket: JetStream's R3, which survives the
/// loss of any one server and keeps a majority in a 2 + 1 partition.
pub const REPLICAS: usize = 3;

/// `[cluster]` in switchboard.toml.
///
/// ```toml
/// [cluster]
/// host = "alpha"
/// labels = ["eu", "irc"]
/// listen = "10.0.0.1:6222"
/// peers = ["10.0.0.2:6222", "10.0.0.3:6222"]
///
/// [cluster.tls]
/// cert = "/etc/switchboard/route.pem"
/// key = "/etc/switchboard/route.key"
/// ca = "/etc/switchboard/cluster-ca.pem"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This host's name: unique in the cluster, 1 to 64 of
    /// `[A-Za-z0-9_-]`. It is the nats-server `server_name`, the key of
    /// the host's heartbeat and what `status` will show in its HOST column.
    pub host: String,
    /// What this host offers (`gpu`, `eu`...), matched against an
    /// operator's required labels.
    #[serde(default)]
    pub labels: BTreeSet<String>,
    /// The NATS cluster's name (every host must say the same; nats-server
    /// refuses routes between differently named clusters).
    #[serde(default = "default_cluster_name")]
    pub name: String,
    /// Where this host's embedded nats-server listens for routes from its
    /// peers (`ip:port`).
    pub listen: SocketAddr,
    /// The other hosts' route addresses (`host:port`). At least
    /// [`REPLICAS`]` - 1`: the buckets keep three copies.
    pub peers: Vec<String>,
    /// `[cluster.tls]`: mutual TLS on the routes. Without it the routes
    /// are plain TCP, which the orchestrator allows on loopback only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RouteTls>,
}

/// `[cluster.tls]`: the routes between hosts are TLS in both directions,
/// and each side proves itself with a certificate from the cluster's own
/// CA.
///
/// This is how nats-server secures routes (its docs call mutual TLS the
/// only way): a route offers no user/password exchange, and every server
/// of a cluster both dials and accepts routes, so each certificate is a
/// server's and a client's at once. Whoever holds a certificate signed by
/// `ca` can join the cluster, and so the bus: the CA should sign route
/// certificates only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTls {
    /// This host's route certificate (PEM). Its subject alternative
    /// names must include the name or IP address its peers dial (the
    /// entry in their `peers`), and its extended key usage both
    /// `serverAuth` and `clientAuth` (or none).
    pub cert: PathBuf,
    /// The certificate's private key (PEM, unencrypted: the server reads
    /// it at start with nobody to type a passphrase).
    pub key: PathBuf,
    /// The cluster's CA (PEM): the only issuer whose route certificates
    /// this host accepts, and trusts when it dials.
    pub ca: PathBuf,
}

fn default_cluster_name() -> String {
    "switchboard".to_owned()
}

/// Why a `[cluster]` table is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A host name, label or cluster name uses characters outside the
    /// allowed set or is empty or too long.
    #[error(
        "[cluster] {field} `{value}` is not a valid name: use 1 to {MAX_NAME_LEN} of \
         A-Z, a-z, 0-9, `_` and `-`"
    )]
    BadName {
        /// Which key (`host`, `labels`, `name`).
        field: &'static str,
        /// The value (names are not secret).
        value: String,
    },
    /// Too few peers for the replicas every bucket keeps.
    #[error(
        "[cluster] peers lists {given} peer(s); at least {needed} are needed \
         (every cluster bucket keeps {REPLICAS} copies, one per host): add the other hosts' \
         route addresses"
    )]
    TooFewPeers {
        /// How many were given.
        given: usize,
        /// How many are needed.
        needed: usize,
    },
    /// A peer is not `host:port`.
    #[error("[cluster] peer `{peer}` is not host:port (for example \"10.0.0.2:6222\")")]
    BadPeer {
        /// The peer as written.
        peer: String,
    },
    /// A peer is listed twice, or is this host's own listen address.
    #[error("[cluster] peer `{peer}` is listed twice or is this host's own listen address")]
    DuplicatePeer {
        /// The peer as written.
        peer: String,
    },
}

/// The kinds of [`ConfigError`], for callers that branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// [`ConfigError::BadName`].
    BadName,
    /// [`ConfigError::TooFewPeers`].
    TooFewPeers,
    /// [`ConfigError::BadPeer`].
    BadPeer,
    /// [`ConfigError::DuplicatePeer`].
    DuplicatePeer,
}

impl ConfigError {
    /// What kind of problem.
    pub fn kind(&self) -> ConfigErrorKind {
        match self {
            ConfigError::BadName { .. } => ConfigErrorKind::BadName,
            ConfigError::TooFewPeers { .. } => ConfigErrorKind::TooFewPeers,
            ConfigError::BadPeer { .. } => ConfigErrorKind::BadPeer,
            ConfigError::DuplicatePeer { .. } => ConfigErrorKind::DuplicatePeer,
        }
    }
}

/// Whether `name` is a valid host name or label: the operator id's
/// alphabet, so it is a KV key, a subject token and a file name as it is.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl ClusterConfig {
    /// Check what serde cannot: names, peer syntax, enough distinct peers.
    ///
    /// # Errors
    ///
    /// The first problem found, as a [`ConfigError`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = |field: &'static str, value: &str| {
            if is_valid_name(value) {
                Ok(())
            } else {
                Err(ConfigError::BadName {
                    field,
                    value: value.to_owned(),
                })
            }
        };
        name("host", &self.host)?;
        name("name", &self.name)?;
        for label in &self.labels {
            name("labels", label)?;
        }
        let mut seen = BTreeSet::new();
        seen.insert(self.listen.to_string());
        for peer in &self.peers {
            let Some((host, port)) = peer.rsplit_once(':') else {
                return Err(ConfigError::BadPeer { peer: peer.clone() });
            };
            let host_ok = !host.is_empty()
                && !host.contains(['/', '@', ' ', '"'])
                && !host.chars().any(char::is_control);
            if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(ConfigError::BadPeer { peer: peer.clone() });
            }
            if !seen.insert(peer.clone()) {
                return Err(ConfigError::DuplicatePeer { peer: peer.clone() });
            }
        }
        let needed = REPLICAS - 1;
        if self.peers.len() < needed {
            return Err(ConfigError::TooFewPeers {
                given: self.peers.len(),
                needed,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterConfig, String> {
        #[derive(Deserialize)]
        struct File {
            cluster: ClusterConfig,
        }
        toml::from_str::<File>(text)
            .map(|f| f.cluster)
            .map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
        [cluster]
        host = "alpha"
        labels = ["eu", "irc"]
        listen = "127.0.0.1:6222"
        peers = ["127.0.0.1:6223", "beta.example:6222"]
    "#;

    #[test]
    fn a_good_table_parses_and_validates() {
        let c = parse(GOOD).expect("parses");
        assert_eq!(c.host, "alpha");
        assert_eq!(c.name, "switchboard");
        assert!(c.labels.contains("eu") && c.labels.contains("irc"));
        c.validate().expect("valid");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = parse(&GOOD.replace("peers =", "peer =")).expect_err("misspelt key");
        assert!(e.contains("unknown field `peer`"), "{e}");
    }

    #[test]
    fn each_problem_has_its_kind() {
        let base = parse(GOOD).expect("parses");
        let check = |c: ClusterConfig, kind: ConfigErrorKind, words: &str| {
            let e = c.validate().expect_err("invalid");
            assert_eq!(e.kind(), kind, "{e}");
            assert!(e.to_string().contains(words), "{e}");
        };
        let mut c = base.clone();
        c.host = "al pha".into();
        check(c, ConfigErrorKind::BadName, "host `al pha`");
        let mut c = base.clone();
        c.labels.insert(String::new());
        check(c, ConfigErrorKind::BadName, "labels");
        let mut c = base.clone();
        c.peers.pop();
        check(c, ConfigErrorKind::TooFewPeers, "at least 2");
        let mut c = base.clone();
        c.peers[1] = "beta".into();
        check(c, ConfigErrorKind::BadPeer, "`beta`");
        let mut c = base.clone();
        c.peers[1] = "user@beta:6222".into();
        check(c, ConfigErrorKind::BadPeer, "host:port");
        let mut c = base.clone();
        c.peers[1] = "127.0.0.1:6223".into();
        check(c, ConfigErrorKind::DuplicatePeer, "listed twice");
        let mut c = base;
        c.peers[1] = "127.0.0.1:6222".into();
        check(c, ConfigErrorKind::DuplicatePeer, "own listen");
    }
}
