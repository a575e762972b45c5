//! NATS service discovery: the daemon answers the NATS micro protocol
//! (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`, each also with the service
//! name and with name and id appended), so `nats micro ls` and other
//! tooling find it and its API endpoints. Hand-rolled (three JSON shapes)
//! because async-nats' `service` feature would bring its own request loop
//! for endpoints the daemon already serves in [`crate::api`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{select_all, StreamExt};
use serde_json::{json, Value};
use switchboard_bus::Bus;
use switchboard_proto::api::methods;
use switchboard_proto::{api_subject, Timestamp};
use tokio_util::sync::CancellationToken;

/// The service name tools list.
pub const SERVICE_NAME: &str = "switchboard";

/// The API methods, as micro endpoints, in this order.
const ENDPOINTS: [&str; 3] = [methods::STATUS, methods::CTL, methods::LOGS];

/// Per-endpoint figures for `$SRV.STATS`, filled by [`crate::api::serve`].
#[derive(Debug, Default)]
pub struct Stats {
    endpoints: [Endpoint; 3],
}

#[derive(Debug, Default)]
struct Endpoint {
    requests: AtomicU64,
    errors: AtomicU64,
    nanos: AtomicU64,
}

impl Stats {
    /// One request to `method` took `took`; `error` when the answer was an
    /// error. Unknown methods are not endpoints and are not counted.
    pub fn record(&self, method: &str, took: Duration, error: bool) {
        if let Some(i) = ENDPOINTS.iter().position(|m| *m == method) {
            let e = &self.endpoints[i];
            e.requests.fetch_add(1, Ordering::Relaxed);
            e.errors.fetch_add(u64::from(error), Ordering::Relaxed);
            let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            e.nanos.fetch_add(ns, Ordering::Relaxed);
        }
    }
}

/// Who this instance is.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Random per daemon start, as micro ids are.
    pub id: String,
    /// When it started.
    pub started: Timestamp,
}

impl Identity {
    /// A fresh identity.
    pub fn new() -> Identity {
        let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        Identity {
            id: (0..22)
                .map(|_| alphabet[fastrand::usize(..alphabet.len())] as char)
                .collect(),
            started: Timestamp::now(),
        }
    }
}

impl Default for Identity {
    fn default() -> Self {
        Identity::new()
    }
}

fn base(kind: &str, me: &Identity) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert(
        "type".into(),
        json!(format!("io.nats.micro.v1.{kind}_response")),
    );
    m.insert("name".into(), json!(SERVICE_NAME));
    m.insert("id".into(), json!(me.id));
    m.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    m.insert("metadata".into(), json!({}));
    m
}

/// The answer to `$SRV.<verb>…`, or `None` for a verb micro does not have.
pub fn answer(verb: &str, me: &Identity, stats: &Stats) -> Option<Value> {
    match verb {
        "PING" => Some(Value::Object(base("ping", me))),
        "INFO" => {
            let mut m = base("info", me);
            m.insert(
                "description".into(),
                json!("Switchboard daemon: supervision and control API (docs/PROTOCOL.md)"),
            );
            let endpoints: Vec<Value> = ENDPOINTS
                .iter()
                .map(|e| json!({"name": e, "subject": api_subject(e), "queue_group": "", "metadata": {}}))
                .collect();
            m.insert("endpoints".into(), json!(endpoints));
            Some(Value::Object(m))
        }
        "STATS" => {
            let mut m = base("stats", me);
            m.insert("started".into(), json!(me.started.to_string()));
            let endpoints: Vec<Value> = ENDPOINTS
                .iter()
                .zip(&stats.endpoints)
                .map(|(name, e)| {
                    let n = e.requests.load(Ordering::Relaxed);
                    let ns = e.nanos.load(Ordering::Relaxed);
                    json!({
                        "name": name,
                        "subject": api_subject(name),
                        "queue_group": "",
                        "num_requests": n,
                        "num_errors": e.errors.load(Ordering::Relaxed),
                        "last_error": "",
                        "processing_time": ns,
                        "average_processing_time": ns.checked_div(n).unwrap_or(0),
                    })
                })
                .collect();
            m.insert("endpoints".into(), json!(endpoints));
            Some(Value::Object(m))
        }
        _ => None,
    }
}

/// Answer discovery requests until `shutdown`.
pub async fn serve(bus: Bus, me: Identity, stats: Arc<Stats>, shutdown: CancellationToken) {
    let mut subs = Vec::new();
    for s in [
        "$SRV.*".to_owned(),
        format!("$SRV.*.{SERVICE_NAME}"),
        format!("$SRV.*.{SERVICE_NAME}.{}", me.id),
    ] {
        match bus.subscribe_raw(&s).await {
            Ok(sub) => subs.push(sub),
            Err(e) => {
                tracing::warn!(error = %e, "no NATS service discovery ($SRV): `nats micro ls` will not list this daemon");
                return;
            }
        }
    }
    let mut all = select_all(subs);
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => return,
            m = all.next() => match m { Some(m) => m, None => return },
        };
        let (Some(reply), Some(verb)) = (msg.reply.as_deref(), msg.subject.split('.').nth(1))
        else {
            continue;
        };
        if let Some(a) = answer(verb, &me, &stats) {
            if let Err(e) = bus.respond_json(reply, &a).await {
                tracing::debug!(error = %e, "could not answer a discovery request");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_only_endpoints() {
        let s = Stats::default();
        s.record("status", Duration::from_micros(3), false);
        s.record("status", Duration::from_micros(5), true);
        s.record("nope", Duration::from_secs(1), true);
        let a = answer("STATS", &Identity::new(), &s).expect("stats");
        assert_eq!(a["endpoints"][0]["num_requests"], 2);
        assert_eq!(a["endpoints"][0]["num_errors"], 1);
        assert_eq!(a["endpoints"][0]["average_processing_time"], 4000);
        assert_eq!(a["endpoints"][1]["num_requests"], 0);
        assert!(answer("SCHEMA", &Identity::new(), &s).is_none());
    }
}
