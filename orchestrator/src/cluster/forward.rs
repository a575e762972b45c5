//! `ctl` and `logs` for the whole cluster: a request a client sent to
//! this host's daemon is passed on to the daemons of the other hosts on
//! their peer subject (`sb.host.<host>.peer.<method>`, which routes carry
//! and which is never passed on again), and the answers are merged, so a
//! verb reaches an operator wherever it runs, and `status` shows the
//! details of every operator of the cluster.

use std::time::Duration;

use switchboard_bus::Bus;
use switchboard_proto::api::{
    methods, ClusterStatus, CtlReply, CtlRequest, LogsReply, LogsRequest, RestartReply,
    RestartRequest, StatusReply, StatusRequest,
};

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
    let peers = cluster.live_peers();
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
    let owner = cluster.owner(&req.id)?;
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

/// `restart` of another host: asked of that host's daemon, which answers
/// before it begins. Refused here when the host is not a live host of
/// this host's view (a restart of a host that is down would never be
/// answered).
pub async fn forward_restart(
    cluster: &ClusterState,
    bus: &Bus,
    req: &RestartRequest,
) -> RestartReply {
    let peers = cluster.live_peers();
    if !peers.contains(&req.host) {
        return RestartReply {
            error: Some(format!(
                "no live host `{}` in the cluster (live hosts: {}, {}); see `switchboard status`",
                req.host,
                cluster.host(),
                peers.join(", ")
            )),
            ..RestartReply::default()
        };
    }
    bus.request_json::<_, RestartReply>(
        &host_peer_subject(&req.host, methods::RESTART),
        req,
        STATUS_PEER_TIMEOUT * 5,
    )
    .await
    .unwrap_or_else(|e| RestartReply {
        error: Some(format!(
            "{} did not answer the restart request: {e}; is its daemon running? (`switchboard \
             status` on it)",
            req.host
        )),
        ..RestartReply::default()
    })
}

/// How long `status` waits for a peer's operators: a silent host leaves
/// its rows without details, it does not hold status up.
const STATUS_PEER_TIMEOUT: Duration = Duration::from_secs(1);

/// Fill in the details of operators other hosts run, from those hosts'
/// own status (asked in parallel, each for its own operators only).
pub async fn remote_details(cluster: &ClusterState, bus: &Bus, status: &mut ClusterStatus) {
    let mut hosts: Vec<&str> = status
        .operators
        .iter()
        .filter_map(|p| p.host.as_deref())
        .filter(|h| *h != cluster.host())
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    let asked = hosts.into_iter().map(|host| async move {
        let reply = bus
            .request_json::<_, StatusReply>(
                &host_peer_subject(host, methods::STATUS),
                &StatusRequest {},
                STATUS_PEER_TIMEOUT,
            )
            .await;
        (host.to_owned(), reply)
    });
    for (host, reply) in futures::future::join_all(asked).await {
        let Ok(reply) = reply else {
            continue;
        };
        for op in reply.operators {
            if let Some(p) = status
                .operators
                .iter_mut()
                .find(|p| p.id == op.id && p.host.as_deref() == Some(host.as_str()))
            {
                p.status = Some(op);
            }
        }
    }
}
