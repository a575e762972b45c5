//! The cluster part of `status`: every host and where each operator of
//! the desired state runs, from the engine's own view of the buckets (the
//! records it decides by, as of its last tick), so any host shows the
//! whole cluster and answers at once, even while the buckets cannot (a
//! lost server, a Raft election).

use switchboard_cluster::buckets::HostState;
use switchboard_cluster::ViewSnapshot;
use switchboard_proto::api::{ClusterHost, ClusterPlacement, ClusterStatus};

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
    out.hosts = view
        .hosts
        .iter()
        .map(|(name, rec)| ClusterHost {
            name: name.clone(),
            alive: rec.state == HostState::Alive,
            drained: view.drained.contains(name),
            labels: rec.labels.iter().cloned().collect(),
            epoch: rec.epoch.clone(),
        })
        .collect();
    let placement = view.placement();
    out.operators = view
        .desired
        .operators
        .keys()
        .map(|id| ClusterPlacement {
            id: id.clone(),
            host: view.owner_of(id).map(str::to_owned),
            placed: placement.assigned.get(id).cloned(),
            status: None,
        })
        .collect();
    out
}
