//! The orchestrator's request/reply API on `sb.api.<method>`, and the
//! client side the CLI uses.
//!
//! Payloads are in [`switchboard_proto::api`], so tools in other languages
//! can use the API with any NATS client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use switchboard_bus::{Bus, RawMessage};
use switchboard_proto::api::{methods, CtlReply, CtlRequest, LogsReply, LogsRequest, StatusReply};
use switchboard_proto::{api_subject, SbSubject};
use tokio_util::sync::CancellationToken;

use crate::supervisor::Supervisor;

/// Facts about the daemon itself, for `status`.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    /// When it started.
    pub started: Instant,
    /// URL operators are given.
    pub nats_url: String,
    /// Whether it runs the server.
    pub nats_embedded: bool,
}

/// API requests handled at once; more are answered "busy" at once instead
/// of piling up tasks (a flood of requests must not eat the daemon's
/// memory).
pub const MAX_CONCURRENT_REQUESTS: usize = 64;

/// Answer API requests until `shutdown` is cancelled (or the subscription
/// ends).
pub async fn serve(
    bus: Bus,
    supervisor: Arc<Supervisor>,
    info: DaemonInfo,
    shutdown: CancellationToken,
) {
    let mut requests = match bus.subscribe_raw(switchboard_proto::ALL_API).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve the API; the CLI will not reach this daemon");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_REQUESTS));
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => return,
            msg = requests.next() => match msg {
                Some(msg) => msg,
                None => return,
            },
        };
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            let busy = serde_json::json!({
                "error": format!("the daemon is busy ({MAX_CONCURRENT_REQUESTS} requests in progress); try again")
            });
            let _ = bus.respond_json(&reply, &busy).await;
            continue;
        };
        let bus = bus.clone();
        let supervisor = Arc::clone(&supervisor);
        let info = info.clone();
        // Each request on its own task: a slow `ctl` (stop timeouts) must
        // not hold up `status`.
        tokio::spawn(async move {
            let answer = handle(&supervisor, &info, &msg).await;
            if let Err(e) = bus.respond_json(&reply, &answer).await {
                tracing::debug!(error = %e, "could not answer an API request");
            }
            drop(slot);
        });
    }
}

async fn handle(supervisor: &Supervisor, info: &DaemonInfo, msg: &RawMessage) -> serde_json::Value {
    let bad = |e: String| serde_json::json!({ "error": e });
    let method = match SbSubject::parse(&msg.subject) {
        Ok(SbSubject::Api { method }) => method,
        Ok(_) => return bad(format!("`{}` is not an API subject", msg.subject)),
        Err(e) => return bad(e.to_string()),
    };
    match method.as_str() {
        methods::STATUS => {
            let reply = StatusReply {
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                uptime_ms: u64::try_from(info.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                nats_url: info.nats_url.clone(),
                nats_embedded: info.nats_embedded,
                operators: supervisor.status(),
                log_lines_dropped: supervisor.outbox().log_lines_dropped(),
                events_dropped: supervisor.outbox().events_dropped(),
            };
            json(&reply)
        }
        methods::CTL => match serde_json::from_slice::<CtlRequest>(&msg.payload) {
            Ok(req) => {
                tracing::info!(verb = %req.verb, target = %req.target, "control request");
                json(&supervisor.ctl(req).await)
            }
            Err(e) => json(&CtlReply {
                results: Vec::new(),
                error: Some(format!(
                    "bad ctl request: {e}; send {{\"verb\":\"halt\",\"target\":\"<id or glob>\"}}"
                )),
            }),
        },
        methods::LOGS => match serde_json::from_slice::<LogsRequest>(&msg.payload) {
            Ok(req) => match supervisor.logs().tail(&req.id, req.lines) {
                Some(lines) => json(&LogsReply { lines, error: None }),
                None => json(&LogsReply {
                    lines: Vec::new(),
                    error: Some(format!("no operator `{}`", req.id)),
                }),
            },
            Err(e) => bad(format!("bad logs request: {e}")),
        },
        other => bad(format!(
            "unknown API method `{other}`; methods are status, ctl, logs"
        )),
    }
}

fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// How long the CLI waits for the daemon.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Call an API method from a client.
pub async fn call<Req: Serialize, Resp: serde::de::DeserializeOwned>(
    bus: &Bus,
    method: &str,
    request: &Req,
) -> Result<Resp, switchboard_bus::RequestError> {
    bus.request_json(&api_subject(method), request, CLIENT_TIMEOUT)
        .await
}
