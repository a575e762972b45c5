//! NATS service discovery: the daemon answers the NATS "micro" protocol
//! (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`, also addressed by name and by
//! name and id), so `nats micro ls`, `nats micro info switchboard` and
//! other tooling find it and its API endpoints (`sb.api.<method>`).
//!
//! In cluster mode every host's daemon is one instance of the service:
//! routes carry `$SRV.*` to all of them, so a client on any host hears
//! every host's daemon. Each says which host it is (metadata `host`) and
//! lists its endpoints on the subjects that reach it from anywhere
//! (`sb.host.<host>.api.<method>`): `sb.api.<method>` would be answered
//! by the asking client's own host, not by the instance that listed it.
//!
//! Hand-written rather than async-nats's `service` feature: the API is
//! already served by [`crate::api`] (with its own bounds on requests in
//! flight), only the three discovery answers are needed, and the SDK keeps
//! async-nats types out of reach (the invariant that only `bus` knows
//! async-nats). Shapes: the `io.nats.micro.v1.*_response` schemas of the
//! NATS ADR-32.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde::Serialize;
use switchboard_bus::Bus;
use switchboard_proto::api::methods;
use switchboard_proto::{api_subject, Timestamp};
use tokio_util::sync::CancellationToken;

/// The service name tools list (`nats micro ls`).
pub const SERVICE_NAME: &str = "switchboard";

/// The API methods, as micro endpoints.
const ENDPOINTS: [&str; 3] = [methods::STATUS, methods::CTL, methods::LOGS];

/// In cluster mode also the cluster's own methods (a single host answers
/// them with an error, so it does not list them).
const CLUSTER_ENDPOINTS: [&str; 8] = [
    methods::STATUS,
    methods::CTL,
    methods::LOGS,
    methods::APPLY,
    methods::DRAIN,
    methods::UNDRAIN,
    methods::RESTART,
    methods::FORGET,
];

/// Request counts and times per API method, kept by [`crate::api`].
#[derive(Debug, Default)]
pub struct ApiStats {
    per_method: Mutex<BTreeMap<String, MethodStats>>,
}

#[derive(Debug, Default, Clone)]
struct MethodStats {
    requests: u64,
    errors: u64,
    last_error: String,
    processing: Duration,
}

impl ApiStats {
    /// One answered request of `method` that took `took`; `error` when the
    /// answer was an error.
    pub fn record(&self, method: &str, took: Duration, error: Option<&str>) {
        let mut map = self.per_method.lock().unwrap_or_else(|p| p.into_inner());
        let m = map.entry(method.to_owned()).or_default();
        m.requests += 1;
        m.processing += took;
        if let Some(e) = error {
            m.errors += 1;
            m.last_error = e.chars().take(256).collect();
        }
    }

    fn get(&self, method: &str) -> MethodStats {
        let map = self.per_method.lock().unwrap_or_else(|p| p.into_inner());
        map.get(method).cloned().unwrap_or_default()
    }
}

/// What identifies this daemon to tools.
#[derive(Debug, Clone)]
pub struct Service {
    /// A unique id for this run of the daemon.
    pub id: String,
    /// When it started.
    pub started: Timestamp,
    /// Its counters.
    pub stats: Arc<ApiStats>,
    /// Cluster mode: this host's name (`[cluster] host`).
    pub host: Option<String>,
}

impl Service {
    /// The endpoints it lists.
    fn endpoints(&self) -> &'static [&'static str] {
        match self.host {
            Some(_) => &CLUSTER_ENDPOINTS,
            None => &ENDPOINTS,
        }
    }

    /// The subject `method` is answered on for a client anywhere.
    fn subject(&self, method: &str) -> String {
        match &self.host {
            Some(h) => crate::cluster::host_api_subject(h, method),
            None => api_subject(method),
        }
    }

    /// The service's metadata: the host in cluster mode.
    fn metadata(&self) -> BTreeMap<String, String> {
        self.host
            .iter()
            .map(|h| ("host".to_owned(), h.clone()))
            .collect()
    }
}

#[derive(Serialize)]
struct Ping<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'static str,
    id: &'a str,
    version: &'static str,
    metadata: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct EndpointInfo {
    name: &'static str,
    subject: String,
    queue_group: &'static str,
    metadata: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Info<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'static str,
    id: &'a str,
    version: &'static str,
    metadata: BTreeMap<String, String>,
    description: &'static str,
    endpoints: Vec<EndpointInfo>,
}

#[derive(Serialize)]
struct EndpointStats {
    name: &'static str,
    subject: String,
    queue_group: &'static str,
    num_requests: u64,
    num_errors: u64,
    last_error: String,
    /// Nanoseconds, as the schema says.
    processing_time: u64,
    average_processing_time: u64,
}

#[derive(Serialize)]
struct Stats<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'static str,
    id: &'a str,
    version: &'static str,
    metadata: BTreeMap<String, String>,
    started: Timestamp,
    endpoints: Vec<EndpointStats>,
}

/// Which discovery request a subject is, if it is one for this daemon:
/// `$SRV.<VERB>`, `$SRV.<VERB>.switchboard` or `$SRV.<VERB>.switchboard.<id>`.
fn verb_for<'s>(subject: &'s str, id: &str) -> Option<&'s str> {
    let mut parts = subject.split('.');
    if parts.next() != Some("$SRV") {
        return None;
    }
    let verb = parts.next()?;
    match (parts.next(), parts.next(), parts.next()) {
        (None, None, None) => Some(verb),
        (Some(SERVICE_NAME), None, None) => Some(verb),
        (Some(SERVICE_NAME), Some(i), None) if i == id => Some(verb),
        _ => None,
    }
}

fn answer(verb: &str, service: &Service) -> Option<serde_json::Value> {
    let version = env!("CARGO_PKG_VERSION");
    let value = match verb {
        "PING" => serde_json::to_value(Ping {
            kind: "io.nats.micro.v1.ping_response",
            name: SERVICE_NAME,
            id: &service.id,
            version,
            metadata: service.metadata(),
        }),
        "INFO" => serde_json::to_value(Info {
            kind: "io.nats.micro.v1.info_response",
            name: SERVICE_NAME,
            id: &service.id,
            version,
            metadata: service.metadata(),
            description: match service.host {
                Some(_) => {
                    "Switchboard daemon API of one cluster host: status, control verbs, \
                     operator logs, the cluster's desired state and drains"
                }
                None => "Switchboard daemon API: status, control verbs, operator logs",
            },
            endpoints: service
                .endpoints()
                .iter()
                .map(|m| EndpointInfo {
                    name: m,
                    subject: service.subject(m),
                    queue_group: "q",
                    metadata: BTreeMap::new(),
                })
                .collect(),
        }),
        "STATS" => serde_json::to_value(Stats {
            kind: "io.nats.micro.v1.stats_response",
            name: SERVICE_NAME,
            id: &service.id,
            version,
            metadata: service.metadata(),
            started: service.started,
            endpoints: service
                .endpoints()
                .iter()
                .map(|m| {
                    let s = service.stats.get(m);
                    let total = u64::try_from(s.processing.as_nanos()).unwrap_or(u64::MAX);
                    EndpointStats {
                        name: m,
                        subject: service.subject(m),
                        queue_group: "q",
                        num_requests: s.requests,
                        num_errors: s.errors,
                        last_error: s.last_error,
                        processing_time: total,
                        average_processing_time: total / s.requests.max(1),
                    }
                })
                .collect(),
        }),
        _ => return None,
    };
    value.ok()
}

/// Answer discovery requests until `shutdown`.
pub async fn serve(bus: Bus, service: Service, shutdown: CancellationToken) {
    let mut requests = match bus.subscribe_raw("$SRV.>").await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "no NATS service discovery ($SRV.*): tools will not list this daemon");
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => return,
            msg = requests.next() => match msg {
                Some(m) => m,
                None => return,
            },
        };
        let (Some(reply), Some(verb)) = (msg.reply.as_deref(), verb_for(&msg.subject, &service.id))
        else {
            continue;
        };
        if let Some(value) = answer(verb, &service) {
            let _ = bus.respond_json(reply, &value).await;
        }
    }
}

/// A new run id (22 characters, like the SDK's envelope ids).
pub fn new_id() -> String {
    nuid::next().to_string()
}

/// When the daemon started, for `$SRV.STATS`.
pub fn started_at(elapsed: Instant) -> Timestamp {
    let nanos =
        Timestamp::now().unix_nanos() - i128::try_from(elapsed.elapsed().as_nanos()).unwrap_or(0);
    Timestamp::from_unix_nanos(nanos).unwrap_or_else(|_| Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_matched_by_verb_name_and_id() {
        assert_eq!(verb_for("$SRV.PING", "abc"), Some("PING"));
        assert_eq!(verb_for("$SRV.INFO.switchboard", "abc"), Some("INFO"));
        assert_eq!(verb_for("$SRV.STATS.switchboard.abc", "abc"), Some("STATS"));
        assert_eq!(verb_for("$SRV.STATS.switchboard.other", "abc"), None);
        assert_eq!(verb_for("$SRV.PING.otherservice", "abc"), None);
        assert_eq!(verb_for("sb.api.status", "abc"), None);
    }
}
