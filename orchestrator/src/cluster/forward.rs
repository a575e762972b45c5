//! `ctl` and `logs` for the whole cluster: a request a client sent to
//! this host's daemon is passed on to the daemons of the other hosts on
//! their peer subject (`sb.host.<host>.peer.<method>`, which routes carry
//! and which is never passed on again), and the answers are merged, so a
//! verb reaches an operator wherever it runs.

use std::time::Duration;

use switchboard_bus::Bus;
use switchboard_proto::api::{methods, CtlReply, CtlRequest, LogsReply, LogsRequest};

use super::{host_peer_subject, ClusterState};

/// How long a peer may take: a `ctl` waits for operators' answers and
/// stop timeouts, and the CLI itself waits 30 s.
const PEER_TIMEOUT: Duration = Duration::from_secs(20);

/// `ctl`: this host's `local` outcome plus every live peer's.
pub async fn forward_ctl(
    cluster: &ClusterState,
    bus: &Bus,
    req: &CtlRequest,
    local: CtlReply,
) -> CtlReply {
    let peers = cluster.live_peers().await;
    let asked = peers.iter().map(|host| async move {
        let answer = bus
            .request_json::<_, CtlReply>(&host_peer_subject(host, methods::CTL), req, PEER_TIMEOUT)
            .await;
        (host.clone(), answer)
    });
    let mut merged = CtlReply {
        results: local.results,
        error: None,
    };
    let mut silent = Vec::new();
    for (host, answer) in futures::future::join_all(asked).await {
        match answer {
            Ok(reply) => merged.results.extend(reply.results),
            Err(e) => {
                tracing::warn!(%host, error = %e, "ctl: a peer host did not answer");
                silent.push(host);
            }
        }
    }
    merged.results.sort_by(|a, b| a.id.cmp(&b.id));
    if merged.results.is_empty() {
        let mut error = local
            .error
            .unwrap_or_else(|| format!("no operator matches `{}` in the cluster", req.target));
        if !silent.is_empty() {
            error.push_str(&format!(
                " (hosts that did not answer: {})",
                silent.join(", ")
            ));
        }
        merged.error = Some(error);
    }
    merged
}

/// `logs` of an operator this host does not run: asked of the host that
/// does; `None` when no live host owns it.
pub async fn forward_logs(
    cluster: &ClusterState,
    bus: &Bus,
    req: &LogsRequest,
) -> Option<LogsReply> {
    let owner = cluster.owner(&req.id).await?;
    if owner == cluster.host() {
        return None;
    }
    let answer = bus
        .request_json::<_, LogsReply>(&host_peer_subject(&owner, methods::LOGS), req, PEER_TIMEOUT)
        .await;
    Some(answer.unwrap_or_else(|e| LogsReply {
        lines: Vec::new(),
        omitted: 0,
        error: Some(format!(
            "`{}` runs on {owner}, which did not answer: {e}",
            req.id
        )),
    }))
}
