//! What a host's embedded nats-server needs to join the cluster, as a
//! config fragment the orchestrator appends to the file it writes.
//!
//! Clustered JetStream needs two things beyond a plain server: a
//! `server_name` unique in the cluster (JetStream's Raft groups name their
//! peers by it) and a `cluster` block with the route listener and the
//! peers. Replication (R3) is not a server setting but each bucket's: see
//! [`crate::REPLICAS`] and [`crate::buckets`]. The `jetstream { store_dir
//! ... }` block stays the orchestrator's, as today.
//!
//! With `[cluster.tls]` the block gains a `tls` map: nats-server then
//! speaks TLS on every route, verifies the peer's certificate in both
//! directions against the cluster CA (`verify` is always on for routes;
//! written anyway, so the file says what it does), and checks the dialled
//! name or IP against the peer's certificate.

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
    if let Some(tls) = &config.tls {
        let path = |p: &std::path::Path| q(&p.to_string_lossy());
        c.push_str("  tls {\n");
        let _ = writeln!(c, "    cert_file: {}", path(&tls.cert));
        let _ = writeln!(c, "    key_file: {}", path(&tls.key));
        let _ = writeln!(c, "    ca_file: {}", path(&tls.ca));
        c.push_str("    verify: true\n");
        // A TLS handshake over a WAN link takes longer than the 0.5 s
        // some nats-server versions default to.
        c.push_str("    timeout: 2\n");
        c.push_str("  }\n");
    }
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
            tls: None,
        };
        let f = server_fragment(&config);
        assert_eq!(
            f,
            "server_name: \"alpha\"\ncluster {\n  name: \"sb\"\n  listen: \"127.0.0.1:6222\"\n  \
             routes: [\n    \"nats-route://127.0.0.1:6223\"\n    \"nats-route://beta:6222\"\n  \
             ]\n}\n"
        );
    }

    #[test]
    fn route_tls_verifies_both_ways_against_the_cluster_ca() {
        let config = ClusterConfig {
            host: "alpha".into(),
            labels: Default::default(),
            name: "sb".into(),
            listen: "10.0.0.1:6222".parse().expect("addr"),
            peers: vec!["10.0.0.2:6222".into(), "10.0.0.3:6222".into()],
            tls: Some(crate::RouteTls {
                cert: "/etc/sb/route.pem".into(),
                key: "/etc/sb/route.key".into(),
                ca: "/etc/sb/ca.pem".into(),
            }),
        };
        let f = server_fragment(&config);
        let expected = [
            "  tls {",
            "    cert_file: \"/etc/sb/route.pem\"",
            "    key_file: \"/etc/sb/route.key\"",
            "    ca_file: \"/etc/sb/ca.pem\"",
            "    verify: true",
        ]
        .join("\n");
        assert!(f.contains(&expected), "{f}");
        let tls_at = f.find("  tls {").expect("tls");
        let routes_at = f.find("  routes: [").expect("routes");
        assert!(tls_at < routes_at, "inside the cluster block: {f}");
    }
}
