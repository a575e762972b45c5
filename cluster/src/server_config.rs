//! What a host's embedded nats-server needs to join the cluster, as a
//! config fragment the orchestrator appends to the file it writes.
//!
//! Clustered JetStream needs two things beyond a plain server: a
//! `server_name` unique in the cluster (JetStream's Raft groups name their
//! peers by it) and a `cluster` block with the route listener and the
//! peers. Replication (R3) is not a server setting but each bucket's: see
//! [`crate::REPLICAS`] and [`crate::buckets`]. The `jetstream { store_dir
//! ... }` block stays the orchestrator's, as today.

use std::fmt::Write as _;

use crate::config::ClusterConfig;

/// The `server_name` line and `cluster { ... }` block for `config`.
///
/// Call [`ClusterConfig::validate`] first: names are then plain tokens,
/// and every string is written JSON-quoted anyway (nats-server reads
/// JSON strings, and expands no `$VARIABLE` inside quotes), so nothing in
/// the table can add a line to the server's config.
pub fn server_fragment(config: &ClusterConfig) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut c = String::new();
    let _ = writeln!(c, "server_name: {}", q(&config.host));
    c.push_str("cluster {\n");
    let _ = writeln!(c, "  name: {}", q(&config.name));
    let _ = writeln!(c, "  listen: {}", q(&config.listen.to_string()));
    c.push_str("  routes: [\n");
    for peer in &config.peers {
        let _ = writeln!(c, "    {}", q(&format!("nats-route://{peer}")));
    }
    c.push_str("  ]\n}\n");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_names_the_server_and_routes_to_every_peer() {
        let config = ClusterConfig {
            host: "alpha".into(),
            labels: Default::default(),
            name: "sb".into(),
            listen: "127.0.0.1:6222".parse().expect("addr"),
            peers: vec!["127.0.0.1:6223".into(), "beta:6222".into()],
        };
        let f = server_fragment(&config);
        assert_eq!(
            f,
            "server_name: \"alpha\"\ncluster {\n  name: \"sb\"\n  listen: \"127.0.0.1:6222\"\n  \
             routes: [\n    \"nats-route://127.0.0.1:6223\"\n    \"nats-route://beta:6222\"\n  \
             ]\n}\n"
        );
    }
}
