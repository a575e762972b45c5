//! The orchestrator's request/reply API on `sb.api.<method>`, and the
//! client side the CLI uses.
//!
//! Payloads are in [`switchboard_proto::api`], so tools in other languages
//! can use the API with any NATS client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use switchboard_bus::usage;
use switchboard_bus::{Bus, RawMessage};
use switchboard_proto::api::{
    methods, ApplyReply, ApplyRequest, CtlReply, CtlRequest, DrainReply, DrainRequest, LogLine,
    LogsReply, LogsRequest, RestartReply, RestartRequest, StatusReply, StreamStatus,
    LOGS_REPLY_BUDGET,
};
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
    /// The durable stream's name, when it keeps one.
    pub stream: Option<String>,
    /// Requests answered per method, for `$SRV.STATS`.
    pub stats: Arc<crate::discovery::ApiStats>,
    /// Cluster mode: this host's part of the cluster (status, apply,
    /// drain).
    pub cluster: Option<Arc<crate::cluster::ClusterState>>,
    /// How `restart` reaches the daemon's main loop.
    pub restart: Restart,
}

/// What the `restart` method needs: the main loop's trigger and how the
/// program will be executed again (or why it cannot be).
#[derive(Debug, Clone)]
pub struct Restart {
    /// Cancelled to have the daemon stop and execute its program again.
    pub requested: CancellationToken,
    /// The program and arguments to execute, captured at start.
    pub relaunch: Arc<Result<crate::relaunch::Relaunch, crate::relaunch::RelaunchError>>,
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
    // In cluster mode this host's server maps `sb.api.<method>` from its
    // own clients to this host's subject (see `crate::cluster::api_mapping`),
    // and peer daemons ask on this host's peer subject.
    let subjects = match &info.cluster {
        Some(c) => vec![
            crate::cluster::host_api_subject(c.host(), "*"),
            crate::cluster::host_peer_subject(c.host(), "*"),
        ],
        None => vec![switchboard_proto::ALL_API.to_owned()],
    };
    let mut subscriptions = Vec::new();
    for subject in &subjects {
        match bus.subscribe_raw(subject).await {
            Ok(s) => subscriptions.push(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot serve the API; the CLI will not reach this daemon");
                return;
            }
        }
    }
    let mut requests = futures::stream::select_all(subscriptions);
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
            let started = Instant::now();
            let answer = handle(&supervisor, &info, &msg).await;
            let method = msg.subject.rsplit('.').next().unwrap_or("");
            // `$SRV.STATS` counts the endpoints it lists: a peer daemon's
            // request (cluster mode) is not a client's.
            let peer = info.cluster.as_ref().is_some_and(|c| {
                msg.subject
                    .starts_with(&crate::cluster::host_peer_subject(c.host(), ""))
            });
            if !peer {
                info.stats.record(
                    method,
                    started.elapsed(),
                    answer.get("error").and_then(|e| e.as_str()),
                );
            }
            if let Err(e) = bus.respond_json(&reply, &answer).await {
                // Said, not hidden: the caller only sees a timeout.
                tracing::warn!(error = %e, "could not answer an API request");
            }
            drop(slot);
        });
    }
}

/// How long status waits for the stream's figures: below the 2 s a
/// client gives a request.
const STREAM_BUDGET: std::time::Duration = std::time::Duration::from_millis(1500);

/// The stream's figures for status; JetStream trouble is said in the
/// reply, never a reason for status to fail or hang.
async fn stream_status(bus: &Bus, name: &str) -> StreamStatus {
    let empty = |error: String| StreamStatus {
        name: name.to_owned(),
        messages: 0,
        bytes: 0,
        max_bytes: 0,
        oldest: None,
        consumers: 0,
        error: Some(error),
    };
    match tokio::time::timeout(STREAM_BUDGET, bus.stream_state(name)).await {
        Ok(Ok(s)) => StreamStatus {
            name: name.to_owned(),
            messages: s.messages,
            bytes: s.bytes,
            max_bytes: s.max_bytes,
            oldest: s.oldest,
            consumers: s.consumers,
            error: None,
        },
        Ok(Err(e)) => empty(e.to_string()),
        Err(_) => empty(format!(
            "JetStream did not answer within {} ms",
            STREAM_BUDGET.as_millis()
        )),
    }
}

async fn handle(supervisor: &Supervisor, info: &DaemonInfo, msg: &RawMessage) -> serde_json::Value {
    let bad = |e: String| serde_json::json!({ "error": e });
    // `from_client`: a request of this host's clients, which `ctl` and
    // `logs` pass on to the other hosts in cluster mode (a peer's request
    // is answered for this host only).
    let (method, from_client) = match &info.cluster {
        Some(c) => {
            let api = crate::cluster::host_api_subject(c.host(), "");
            let peer = crate::cluster::host_peer_subject(c.host(), "");
            match (
                msg.subject.strip_prefix(&api),
                msg.subject.strip_prefix(&peer),
            ) {
                (Some(method), _) => (method.to_owned(), true),
                (None, Some(method)) => (method.to_owned(), false),
                (None, None) => return bad(format!("`{}` is not an API subject", msg.subject)),
            }
        }
        None => match SbSubject::parse(&msg.subject) {
            Ok(SbSubject::Api { method }) => (method, false),
            Ok(_) => return bad(format!("`{}` is not an API subject", msg.subject)),
            Err(e) => return bad(e.to_string()),
        },
    };
    match method.as_str() {
        methods::STATUS => {
            // The stream's figures and, in cluster mode, the other hosts'
            // details are each bounded (1.5 s, 1 s) and asked at once: a
            // lost server (the stream's, a peer) slows status, never
            // stops it.
            let stream = async {
                match &info.stream {
                    Some(name) => Some(stream_status(supervisor.bus(), name).await),
                    None => None,
                }
            };
            // A peer asks for this host's operators only.
            let cluster = async {
                match &info.cluster {
                    Some(c) if from_client => {
                        let mut cluster = c.status();
                        crate::cluster::remote_details(c, supervisor.bus(), &mut cluster).await;
                        Some(cluster)
                    }
                    _ => None,
                }
            };
            let (stream, cluster) = tokio::join!(stream, cluster);
            let reply = StatusReply {
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                uptime_ms: u64::try_from(info.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                nats_url: info.nats_url.clone(),
                nats_embedded: info.nats_embedded,
                operators: supervisor.status(),
                log_lines_dropped: supervisor.outbox().log_lines_dropped(),
                events_dropped: supervisor.outbox().events_dropped(),
                stream,
                rss_bytes: usage::rss_bytes(usage::Process::Own),
                cpu_seconds: usage::cpu_seconds(usage::Process::Own),
                cluster,
            };
            json(&reply)
        }
        methods::CTL => match serde_json::from_slice::<CtlRequest>(&msg.payload) {
            Ok(req) => {
                tracing::info!(verb = %req.verb, target = %req.target, "control request");
                let reply = supervisor.ctl(req.clone()).await;
                match &info.cluster {
                    Some(c) if from_client => {
                        json(&crate::cluster::forward_ctl(c, supervisor.bus(), &req, reply).await)
                    }
                    _ => json(&reply),
                }
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
                Some(lines) => {
                    let (lines, omitted) = fit_in_reply(lines);
                    json(&LogsReply {
                        lines,
                        omitted,
                        error: None,
                    })
                }
                None => {
                    let forwarded = match &info.cluster {
                        Some(c) if from_client => {
                            crate::cluster::forward_logs(c, supervisor.bus(), &req).await
                        }
                        _ => None,
                    };
                    json(&forwarded.unwrap_or_else(|| LogsReply {
                        lines: Vec::new(),
                        omitted: 0,
                        error: Some(format!("no operator `{}`", req.id)),
                    }))
                }
            },
            Err(e) => bad(format!("bad logs request: {e}")),
        },
        methods::APPLY => {
            let Some(cluster) = &info.cluster else {
                return json(&ApplyReply {
                    error: Some(NOT_CLUSTER.to_owned()),
                    ..ApplyReply::default()
                });
            };
            match serde_json::from_slice::<ApplyRequest>(&msg.payload) {
                Ok(req) => json(&apply(cluster, req).await),
                Err(e) => bad(format!("bad apply request: {e}")),
            }
        }
        methods::FORGET => {
            let Some(cluster) = &info.cluster else {
                return json(&DrainReply {
                    error: Some(NOT_CLUSTER.to_owned()),
                });
            };
            match serde_json::from_slice::<DrainRequest>(&msg.payload) {
                Ok(req) => json(&DrainReply {
                    error: cluster.forget(&req.host).await.err().map(|e| e.to_string()),
                }),
                Err(e) => bad(format!("bad {method} request: {e}")),
            }
        }
        methods::DRAIN | methods::UNDRAIN => {
            let Some(cluster) = &info.cluster else {
                return json(&DrainReply {
                    error: Some(NOT_CLUSTER.to_owned()),
                });
            };
            match serde_json::from_slice::<DrainRequest>(&msg.payload) {
                Ok(req) => {
                    let on = method == methods::DRAIN;
                    let done = cluster.drain(&req.host, on).await;
                    json(&DrainReply {
                        error: done.err().map(|e| e.to_string()),
                    })
                }
                Err(e) => bad(format!("bad {method} request: {e}")),
            }
        }
        methods::RESTART => {
            let Some(cluster) = &info.cluster else {
                return json(&RestartReply {
                    error: Some(NOT_CLUSTER.to_owned()),
                    ..RestartReply::default()
                });
            };
            match serde_json::from_slice::<RestartRequest>(&msg.payload) {
                Ok(req) if req.host == cluster.host() => json(&restart_here(&info.restart)),
                Ok(req) if from_client => {
                    json(&crate::cluster::forward_restart(cluster, supervisor.bus(), &req).await)
                }
                // A peer subject is answered for this host only.
                Ok(req) => json(&RestartReply {
                    error: Some(format!(
                        "{} was asked to restart {}; ask that host's own daemon",
                        cluster.host(),
                        req.host
                    )),
                    ..RestartReply::default()
                }),
                Err(e) => bad(format!(
                    "bad restart request: {e}; send {{\"host\":\"<host>\"}}"
                )),
            }
        }
        other => bad(format!(
            "unknown API method `{other}`; methods are status, ctl, logs, apply, drain, undrain, \
             restart"
        )),
    }
}

/// `restart` of this host: answered before it begins (the main loop
/// leaves the cluster, stops the server and executes the program again
/// after the reply went out, since leaving takes a second or more).
fn restart_here(restart: &Restart) -> RestartReply {
    match restart.relaunch.as_ref() {
        Ok(relaunch) => {
            tracing::info!(program = %relaunch.program().display(), "restart requested");
            restart.requested.cancel();
            RestartReply {
                pid: Some(std::process::id()),
                program: Some(relaunch.program().display().to_string()),
                error: None,
            }
        }
        Err(e) => RestartReply {
            error: Some(e.to_string()),
            ..RestartReply::default()
        },
    }
}

/// What `apply`, `drain`, `undrain` and `restart` answer on a single host.
const NOT_CLUSTER: &str =
    "this daemon is not in cluster mode: add [cluster] to switchboard.toml (docs/cluster.md)";

/// `sb.api.apply`: decode the set, write it, say the revision or why not.
async fn apply(cluster: &crate::cluster::ClusterState, req: ApplyRequest) -> ApplyReply {
    let set: switchboard_cluster::DesiredSet = match serde_json::from_value(req.set) {
        Ok(set) => set,
        Err(e) => {
            return ApplyReply {
                error: Some(format!("bad desired state: {e}")),
                ..ApplyReply::default()
            }
        }
    };
    match cluster.apply(set, req.based_on).await {
        Ok(revision) => ApplyReply {
            revision: Some(revision),
            ..ApplyReply::default()
        },
        Err(e) => ApplyReply {
            current: e.current(),
            error: Some(e.to_string()),
            ..ApplyReply::default()
        },
    }
}

/// The newest lines that fit in [`LOGS_REPLY_BUDGET`] (each line is at
/// most 16 KiB, so at least 30 always fit), and how many older ones were
/// left out: 100 lines of 16 KiB would exceed NATS's payload limit and the
/// reply would never arrive.
fn fit_in_reply(lines: Vec<LogLine>) -> (Vec<LogLine>, usize) {
    let mut budget = LOGS_REPLY_BUDGET;
    let mut keep = lines.len();
    for line in lines.iter().rev() {
        // Escaping can grow a line; a generous estimate per line.
        let cost = line.line.len() * 2 + line.id.len() + line.stream.len() + 96;
        if cost > budget {
            break;
        }
        budget -= cost;
        keep -= 1;
    }
    let omitted = keep;
    (lines.into_iter().skip(omitted).collect(), omitted)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_log_replies_keep_the_newest_lines_that_fit() {
        let line = |i: usize| LogLine {
            fields: None,
            id: "p".into(),
            stream: "stderr".into(),
            line: format!("{i:05}{}", "x".repeat(16 * 1024 - 5)),
            timestamp: switchboard_proto::Timestamp::now(),
        };
        let lines: Vec<LogLine> = (0..100).map(line).collect();
        let (kept, omitted) = fit_in_reply(lines);
        assert!(omitted > 0 && kept.len() + omitted == 100);
        assert!(kept.last().unwrap().line.starts_with("00099"));
        let reply = serde_json::to_vec(&LogsReply {
            lines: kept,
            omitted,
            error: None,
        })
        .unwrap();
        assert!(reply.len() < 1024 * 1024, "{} bytes", reply.len());
        let few: Vec<LogLine> = (0..3).map(line).collect();
        assert_eq!(fit_in_reply(few).1, 0);
    }
}
