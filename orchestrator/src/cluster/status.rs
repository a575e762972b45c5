//! The cluster part of `status`: every host and where each operator of
//! the desired state runs, from the engine's own view of the buckets (the
//! records it decides by, as of its last tick), so any host shows the
//! whole cluster and answers at once, even while the buckets cannot (a
//! lost server, a Raft election).

use std::collections::BTreeMap;
use std::time::Instant;

use switchboard_cluster::buckets::HostState;
use switchboard_cluster::lease::LEASE_TTL;
use switchboard_cluster::{HostView, ViewSnapshot};
use switchboard_proto::api::{ClusterHost, ClusterPlacement, ClusterStatus, Unowned};

/// The [`ClusterStatus`] for `host`, whose directory is based on
/// `based_on`, from `view` (`None`: not joined yet).
pub(super) fn status(
    host: &str,
    based_on: Option<u64>,
    view: Option<ViewSnapshot>,
) -> ClusterStatus {
    let mut out = ClusterStatus {
        host: host.to_owned(),
        based_on,
        lease_ttl_ms: u64::try_from(LEASE_TTL.as_millis()).unwrap_or(u64::MAX),
        ..ClusterStatus::default()
    };
    let Some(view) = view else {
        out.error = Some(
            "this host has not joined the cluster yet (its engine is waiting for the \
             cluster's buckets: are at least 3 hosts up?)"
                .to_owned(),
        );
        return out;
    };
    if !view.current {
        out.error = Some(
            "this host's view of the cluster is still catching up (its watch of the buckets \
             is starting over)"
                .to_owned(),
        );
    }
    out.revision = view.desired_revision;
    let now = Instant::now();
    out.hosts = view
        .hosts
        .iter()
        .map(|(name, rec)| ClusterHost {
            name: name.clone(),
            alive: rec.state == HostState::Alive,
            drained: view.drained.contains(name),
            labels: rec.labels.iter().cloned().collect(),
            epoch: rec.epoch.clone(),
            heartbeat_age_ms: view.heartbeat_seen.get(name).map(|seen| {
                u64::try_from(now.saturating_duration_since(*seen).as_millis()).unwrap_or(u64::MAX)
            }),
            beat: rec.beat,
            gone_by: rec.gone_by.clone(),
        })
        .collect();
    // The live hosts as placement sees them, to tell an operator that is
    // being moved from one no host may run.
    let live: BTreeMap<String, HostView> = view
        .hosts
        .iter()
        .filter(|(_, rec)| rec.state == HostState::Alive)
        .map(|(name, rec)| {
            let host = HostView {
                labels: rec.labels.clone(),
                drained: view.drained.contains(name),
            };
            (name.clone(), host)
        })
        .collect();
    let placement = view.placement();
    out.operators = view
        .desired
        .operators
        .iter()
        .map(|(id, op)| {
            let host = view.owner_of(id).map(str::to_owned);
            let unowned = host.is_none().then(|| {
                if switchboard_cluster::eligible(&op.placement, &live).is_empty() {
                    Unowned::NoEligibleHost
                } else {
                    Unowned::Moving
                }
            });
            ClusterPlacement {
                id: id.clone(),
                host,
                placed: placement.assigned.get(id).cloned(),
                status: None,
                unowned,
            }
        })
        .collect();
    out
}
