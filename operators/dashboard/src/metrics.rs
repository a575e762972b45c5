//! `/metrics`: the Prometheus text exposition format (version 0.0.4).
//!
//! Names follow the Prometheus conventions: a `switchboard_` prefix, base
//! units in the name (`_seconds`, `_bytes`), `_total` for counters, and
//! states as one gauge per state with value 1 for the current one. Every
//! heartbeat counter of an operator is a counter
//! `switchboard_operator_<name>_total{operator="<id>"}` (names with
//! characters Prometheus does not allow get `_` instead).
//!
//! In cluster mode the daemon's status covers the whole cluster, so one
//! dashboard's `/metrics` does too: every operator metric gets a `host`
//! label (the host that runs it; each operator once), the daemon's
//! figures the `host` they are of, and `switchboard_cluster_*` describe
//! the hosts (up, drained, heartbeat age, operators each runs) and the
//! operators no host runs. On a single host nothing changes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use switchboard_proto::api::{
    ClusterStatus, OperatorStatus, StatusReply, SupervisedState, Unowned,
};
use switchboard_proto::Health;

use crate::hub::Counters;
use crate::process::Sample;
use crate::rates::Rates;

/// The content type of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every state, so each operator has a sample for each.
const STATES: [SupervisedState; 8] = [
    SupervisedState::Starting,
    SupervisedState::Running,
    SupervisedState::Halted,
    SupervisedState::Stopping,
    SupervisedState::Backoff,
    SupervisedState::Exited,
    SupervisedState::Failed,
    SupervisedState::Disabled,
];

/// The one heartbeat "counter" that goes down as well as up (the SDK's
/// `switchboard_bus::client::PUBLISH_PENDING`, not exported): a gauge.
const PUBLISH_PENDING: &str = "publish_pending";

const HEALTHS: [Health; 3] = [Health::Ok, Health::Degraded, Health::Failed];

/// Every reason an operator runs nowhere, so each has a sample.
const UNOWNED: [Unowned; 2] = [Unowned::Moving, Unowned::NoEligibleHost];

/// What goes in.
pub struct Input<'a> {
    /// Whether the last status poll answered.
    pub bus_up: bool,
    /// The last status.
    pub status: Option<&'a StatusReply>,
    /// Messages seen.
    pub rates: &'a Rates,
    /// The current second.
    pub now_secs: u64,
    /// The daemon's process figures.
    pub daemon: Option<Sample>,
    /// The dashboard's own counters.
    pub counters: &'a Counters,
}

/// One metric family: its samples are collected first so each family is
/// written once, with its HELP and TYPE.
struct Family {
    help: String,
    kind: &'static str,
    samples: Vec<(String, String)>,
}

#[derive(Default)]
struct Out {
    families: BTreeMap<String, Family>,
}

impl Out {
    fn add(&mut self, name: &str, kind: &'static str, help: &str, labels: &[(&str, &str)], v: f64) {
        let f = self
            .families
            .entry(name.to_owned())
            .or_insert_with(|| Family {
                help: help.to_owned(),
                kind,
                samples: Vec::new(),
            });
        let mut l = String::new();
        if !labels.is_empty() {
            l.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    l.push(',');
                }
                let _ = write!(l, "{k}=\"{}\"", escape_label(val));
            }
            l.push('}');
        }
        f.samples.push((l, number(v)));
    }

    fn finish(self) -> String {
        let mut s = String::new();
        for (name, f) in self.families {
            let _ = writeln!(
                s,
                "# HELP {name} {}",
                f.help.replace('\\', "\\\\").replace('\n', "\\n")
            );
            let _ = writeln!(s, "# TYPE {name} {}", f.kind);
            for (labels, v) in f.samples {
                let _ = writeln!(s, "{name}{labels} {v}");
            }
        }
        s
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Label values escape `\`, `"` and newlines.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A heartbeat counter's name as a metric name part: `[a-zA-Z0-9_]`.
pub fn metric_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The exposition.
pub fn render(input: &Input<'_>) -> String {
    let mut o = Out::default();
    o.add(
        "switchboard_up",
        "gauge",
        "1 when the daemon's API answered the last status request",
        &[],
        f64::from(u8::from(input.bus_up)),
    );
    if let Some(st) = input.status {
        let me = st.cluster.as_ref().map(|c| c.host.as_str());
        daemon(&mut o, st, input.daemon, me);
        for (op, host) in operators(st) {
            operator(&mut o, op, host);
        }
        if let Some(c) = &st.cluster {
            cluster(&mut o, c);
        }
    }
    for (branch, total) in input.rates.totals() {
        o.add(
            "switchboard_bus_messages_total",
            "counter",
            "Messages the dashboard saw on the bus since it started, per subject branch",
            &[("branch", branch)],
            total as f64,
        );
        o.add(
            "switchboard_bus_messages_per_second",
            "gauge",
            "Mean messages per second over the last 10 s, per subject branch",
            &[("branch", branch)],
            input.rates.mean(branch, input.now_secs, 10),
        );
    }
    let own = [
        (
            "tail_dropped",
            &input.counters.tail_dropped,
            "Messages a slow page did not get in its tail or log stream",
        ),
        (
            "status_errors",
            &input.counters.status_errors,
            "Status requests to the daemon that failed",
        ),
        (
            "unauthorized",
            &input.counters.unauthorized,
            "State-changing requests refused for a missing or wrong token",
        ),
        (
            "ctl_requests",
            &input.counters.ctl_requests,
            "Control requests passed to the daemon",
        ),
        (
            "published",
            &input.counters.published,
            "Envelopes sent from the page's publish box",
        ),
    ];
    for (name, c, help) in own {
        o.add(
            &format!("switchboard_dashboard_{name}_total"),
            "counter",
            help,
            &[],
            c.get() as f64,
        );
    }
    o.finish()
}

/// Every operator once, with the host that runs it in cluster mode:
/// this host's own (from `operators`), then every other host's the
/// cluster part carries details of (an id listed here too, while it moves,
/// counts as this host's: the process it reports is here). So one
/// host's status covers the cluster without counting an operator twice.
fn operators(st: &StatusReply) -> Vec<(&OperatorStatus, Option<&str>)> {
    let me = st.cluster.as_ref().map(|c| c.host.as_str());
    let mut out: Vec<(&OperatorStatus, Option<&str>)> =
        st.operators.iter().map(|op| (op, me)).collect();
    if let Some(c) = &st.cluster {
        let here: BTreeSet<&str> = st.operators.iter().map(|op| op.id.as_str()).collect();
        for p in &c.operators {
            if let (Some(op), Some(host)) = (&p.status, p.host.as_deref()) {
                if !here.contains(p.id.as_str()) && Some(host) != me {
                    out.push((op, Some(host)));
                }
            }
        }
    }
    out
}

/// Labels: `operator` (and `host` in cluster mode), then `extra`.
fn labels<'a>(
    id: &'a str,
    host: Option<&'a str>,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut l = vec![("operator", id)];
    if let Some(h) = host {
        l.push(("host", h));
    }
    l.extend_from_slice(extra);
    l
}

fn operator(o: &mut Out, op: &OperatorStatus, host: Option<&str>) {
    let id = op.id.as_str();
    let just = labels(id, host, &[]);
    for s in STATES {
        o.add(
            "switchboard_operator_state",
            "gauge",
            "Supervision state: 1 for the current one",
            &labels(id, host, &[("state", s.as_str())]),
            f64::from(u8::from(op.state == s)),
        );
    }
    for h in HEALTHS {
        o.add(
            "switchboard_operator_health",
            "gauge",
            "Health from the last heartbeat: 1 for the current one",
            &labels(id, host, &[("health", h.as_str())]),
            f64::from(u8::from(op.health == h)),
        );
    }
    o.add(
        "switchboard_operator_restarts_total",
        "counter",
        "Process starts after the first",
        &just,
        op.restarts as f64,
    );
    o.add(
        "switchboard_operator_ignored_lifecycle_total",
        "counter",
        "Ready and heartbeat messages from another process, ignored",
        &just,
        op.ignored_lifecycle as f64,
    );
    if let Some(ms) = op.uptime_ms {
        o.add(
            "switchboard_operator_uptime_seconds",
            "gauge",
            "Seconds since the current process started",
            &just,
            ms as f64 / 1000.0,
        );
    }
    if let Some(ms) = op.last_heartbeat_ms {
        o.add(
            "switchboard_operator_heartbeat_age_seconds",
            "gauge",
            "Seconds since the last heartbeat (or ready)",
            &just,
            ms as f64 / 1000.0,
        );
    }
    if let Some(c) = &op.counters {
        let map = serde_json::to_value(c).ok();
        for (name, v) in map.iter().filter_map(|v| v.as_object()).flatten() {
            let Some(v) = v.as_u64() else { continue };
            if name == PUBLISH_PENDING {
                o.add(
                    "switchboard_operator_publish_pending",
                    "gauge",
                    "Publishes accepted but not yet written to the connection",
                    &just,
                    v as f64,
                );
                continue;
            }
            o.add(
                &format!("switchboard_operator_{}_total", metric_part(name)),
                "counter",
                &format!("Heartbeat counter `{name}` of the operator"),
                &just,
                v as f64,
            );
        }
    }
}

/// The cluster as the answering host sees it: its hosts, their leases,
/// how many operators each runs and how many run nowhere.
fn cluster(o: &mut Out, c: &ClusterStatus) {
    o.add(
        "switchboard_cluster_view_info",
        "gauge",
        "The cluster host whose view these figures are (value 1). One host's /metrics covers \
         the whole cluster: every host, and every operator once, labelled with the host that runs it",
        &[("host", &c.host)],
        1.0,
    );
    o.add(
        "switchboard_cluster_view_complete",
        "gauge",
        "1 when the answering host's view of the cluster's buckets is complete (0: joining, \
         or its watch is catching up; the figures may be partial)",
        &[],
        f64::from(u8::from(c.error.is_none())),
    );
    if let Some(r) = c.revision {
        o.add(
            "switchboard_cluster_desired_revision",
            "gauge",
            "Revision of the cluster's desired state (the last apply)",
            &[],
            r as f64,
        );
    }
    if c.lease_ttl_ms > 0 {
        o.add(
            "switchboard_cluster_lease_ttl_seconds",
            "gauge",
            "How long a host's heartbeat may stand still before a peer declares it gone",
            &[],
            c.lease_ttl_ms as f64 / 1000.0,
        );
    }
    let mut owned: BTreeMap<&str, usize> = c.hosts.iter().map(|h| (h.name.as_str(), 0)).collect();
    let mut unowned: BTreeMap<&str, usize> = UNOWNED.iter().map(|u| (u.as_str(), 0)).collect();
    for p in &c.operators {
        match (p.host.as_deref(), p.unowned) {
            (Some(h), _) => *owned.entry(h).or_default() += 1,
            (None, u) => {
                *unowned
                    .entry(u.unwrap_or(Unowned::Moving).as_str())
                    .or_default() += 1
            }
        }
    }
    for h in &c.hosts {
        let host = [("host", h.name.as_str())];
        o.add(
            "switchboard_cluster_host_up",
            "gauge",
            "1 while the host heartbeats, 0 once it left or was declared gone",
            &host,
            f64::from(u8::from(h.alive)),
        );
        o.add(
            "switchboard_cluster_host_drained",
            "gauge",
            "1 while the host is drained (placement gives it nothing)",
            &host,
            f64::from(u8::from(h.drained)),
        );
        if let Some(ms) = h.heartbeat_age_ms {
            o.add(
                "switchboard_cluster_host_heartbeat_age_seconds",
                "gauge",
                "Seconds since the answering host first saw this host's latest heartbeat \
                 (its lease: declared gone at switchboard_cluster_lease_ttl_seconds)",
                &host,
                ms as f64 / 1000.0,
            );
        }
    }
    for (host, n) in owned {
        o.add(
            "switchboard_cluster_host_operators",
            "gauge",
            "Operators of the desired state the host owns (runs)",
            &[("host", host)],
            n as f64,
        );
    }
    for (reason, n) in unowned {
        o.add(
            "switchboard_cluster_operators_unplaced",
            "gauge",
            "Operators of the desired state no host owns: moving (being placed or moved) or \
             no_eligible_host (no live, undrained host may run it)",
            &[("reason", reason)],
            n as f64,
        );
    }
    o.add(
        "switchboard_cluster_operators",
        "gauge",
        "Operators in the cluster's desired state",
        &[],
        c.operators.len() as f64,
    );
}

/// The daemon's figures; `host`: in cluster mode, the host it is (the
/// dashboard's own, whose status this is).
fn daemon(o: &mut Out, st: &StatusReply, process: Option<Sample>, host: Option<&str>) {
    let mut with_version = vec![("version", st.version.as_str())];
    with_version.extend(host.map(|h| ("host", h)));
    o.add(
        "switchboard_daemon_info",
        "gauge",
        "The daemon's version (value always 1)",
        &with_version,
        1.0,
    );
    let host: Vec<(&str, &str)> = host.map(|h| ("host", h)).into_iter().collect();
    let host = host.as_slice();
    o.add(
        "switchboard_daemon_uptime_seconds",
        "gauge",
        "Seconds since the daemon started",
        host,
        st.uptime_ms as f64 / 1000.0,
    );
    if let Some(p) = process {
        o.add(
            "switchboard_daemon_resident_memory_bytes",
            "gauge",
            "Resident memory of the daemon process",
            host,
            p.rss_bytes as f64,
        );
        o.add(
            "switchboard_daemon_cpu_seconds_total",
            "counter",
            "CPU time of the daemon process, user and system",
            host,
            p.cpu_seconds,
        );
    }
    o.add(
        "switchboard_daemon_log_lines_dropped_total",
        "counter",
        "Operators' output lines the daemon could not forward to the bus",
        host,
        st.log_lines_dropped as f64,
    );
    o.add(
        "switchboard_daemon_events_dropped_total",
        "counter",
        "Lifecycle events the daemon could not forward to the bus",
        host,
        st.events_dropped as f64,
    );
    if let Some(s) = &st.stream {
        let name = s.name.as_str();
        for (metric, help, v) in [
            (
                "switchboard_stream_messages",
                "Messages the durable stream keeps",
                s.messages,
            ),
            (
                "switchboard_stream_bytes",
                "Bytes the durable stream keeps",
                s.bytes,
            ),
            (
                "switchboard_stream_max_bytes",
                "Size limit of the durable stream",
                s.max_bytes,
            ),
            (
                "switchboard_stream_consumers",
                "Consumers of the durable stream",
                s.consumers,
            ),
        ] {
            o.add(metric, "gauge", help, &[("stream", name)], v as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::api::{ClusterHost, ClusterPlacement};

    #[test]
    fn labels_and_names_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(metric_part("lines-Written.x"), "lines_written_x");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.5), "0.5");
    }

    fn op(id: &str, state: SupervisedState) -> OperatorStatus {
        serde_json::from_value(serde_json::json!({
            "id": id, "state": state.as_str(), "restarts": 0, "control": "nats"
        }))
        .expect("an operator status")
    }

    fn placed(id: &str, host: Option<&str>, status: Option<OperatorStatus>) -> ClusterPlacement {
        ClusterPlacement {
            id: id.into(),
            host: host.map(str::to_owned),
            placed: host.map(str::to_owned),
            status,
            unowned: host.is_none().then_some(Unowned::NoEligibleHost),
        }
    }

    /// One host's status covers the cluster: each operator once, with the
    /// host that runs it; one this host still stops while another starts
    /// it counts once, as this host's (its process is here).
    #[test]
    fn a_cluster_status_gives_every_operator_once_with_its_host() {
        let st = StatusReply {
            version: "0".into(),
            pid: 1,
            uptime_ms: 0,
            nats_url: String::new(),
            nats_embedded: true,
            operators: vec![
                op("a", SupervisedState::Running),
                op("m", SupervisedState::Stopping),
            ],
            log_lines_dropped: 0,
            events_dropped: 0,
            stream: None,
            rss_bytes: None,
            cpu_seconds: None,
            cluster: Some(ClusterStatus {
                host: "h0".into(),
                hosts: ["h0", "h1", "h2"]
                    .iter()
                    .map(|h| ClusterHost {
                        name: (*h).into(),
                        alive: *h != "h2",
                        drained: *h == "h1",
                        heartbeat_age_ms: Some(250),
                        ..ClusterHost::default()
                    })
                    .collect(),
                operators: vec![
                    placed("a", Some("h0"), None),
                    placed("b", Some("h1"), Some(op("b", SupervisedState::Running))),
                    placed("m", Some("h1"), Some(op("m", SupervisedState::Starting))),
                    placed("n", None, None),
                ],
                ..ClusterStatus::default()
            }),
        };
        let got: Vec<(&str, Option<&str>)> = operators(&st)
            .iter()
            .map(|(o, h)| (o.id.as_str(), *h))
            .collect();
        assert_eq!(
            got,
            [("a", Some("h0")), ("m", Some("h0")), ("b", Some("h1"))]
        );
        let mut o = Out::default();
        cluster(&mut o, st.cluster.as_ref().expect("cluster"));
        let text = o.finish();
        for line in [
            "switchboard_cluster_host_up{host=\"h2\"} 0",
            "switchboard_cluster_host_drained{host=\"h1\"} 1",
            "switchboard_cluster_host_heartbeat_age_seconds{host=\"h0\"} 0.25",
            "switchboard_cluster_host_operators{host=\"h0\"} 1",
            "switchboard_cluster_host_operators{host=\"h1\"} 2",
            "switchboard_cluster_host_operators{host=\"h2\"} 0",
            "switchboard_cluster_operators_unplaced{reason=\"no_eligible_host\"} 1",
            "switchboard_cluster_operators_unplaced{reason=\"moving\"} 0",
            "switchboard_cluster_operators 4",
            "switchboard_cluster_view_info{host=\"h0\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }
}
