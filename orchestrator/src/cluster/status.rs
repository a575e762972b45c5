//! The cluster part of `status`: every host and where each operator of
//! the desired state runs, read from the buckets when asked (the same
//! records the engines decide by), so any host shows the whole cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use switchboard_cluster::buckets::{HostRecord, HostState, OwnerRecord};
use switchboard_cluster::{Buckets, DesiredStore};
use switchboard_proto::api::{ClusterHost, ClusterPlacement, ClusterStatus};

/// How long status may spend reading the buckets: a cluster without a
/// majority cannot answer, and status must not hang on it.
const READ_BUDGET: Duration = Duration::from_millis(1500);

/// What the buckets say, as of now.
#[derive(Debug, Default)]
pub(super) struct Records {
    pub(super) hosts: BTreeMap<String, HostRecord>,
    pub(super) drained: BTreeSet<String>,
    pub(super) owners: BTreeMap<String, OwnerRecord>,
}

impl Records {
    /// The host whose live incarnation holds `id`'s record.
    pub(super) fn owner_of(&self, id: &str) -> Option<&str> {
        let owner = self.owners.get(id)?;
        let host = self.hosts.get(&owner.host)?;
        (host.state == HostState::Alive && host.epoch == owner.epoch).then_some(owner.host.as_str())
    }
}

/// Read every heartbeat, drain flag and ownership record.
pub(super) async fn read(buckets: &Buckets) -> Result<Records, String> {
    let work = async {
        let kv = &buckets.cluster;
        let mut keys = kv
            .keys()
            .await
            .map_err(|e| format!("cannot list the cluster bucket: {e}"))?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            names.push(key.map_err(|e| format!("cannot list the cluster bucket: {e}"))?);
        }
        let mut records = Records::default();
        for key in names {
            let Some(entry) = kv
                .get(&key)
                .await
                .map_err(|e| format!("cannot read {key}: {e}"))?
            else {
                continue;
            };
            if let Some(host) = key.strip_prefix("host.") {
                if let Ok(rec) = serde_json::from_slice::<HostRecord>(&entry) {
                    records.hosts.insert(host.to_owned(), rec);
                }
            } else if let Some(host) = key.strip_prefix("drain.") {
                records.drained.insert(host.to_owned());
            } else if let Some(id) = key.strip_prefix("owner.") {
                if let Ok(rec) = serde_json::from_slice::<OwnerRecord>(&entry) {
                    records.owners.insert(id.to_owned(), rec);
                }
            }
        }
        Ok(records)
    };
    tokio::time::timeout(READ_BUDGET, work)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the cluster bucket did not answer within {READ_BUDGET:?} (no majority of the \
                 servers reachable?)"
            ))
        })
}

/// The [`ClusterStatus`] for `host`, whose directory is based on
/// revision `based_on`.
pub(super) async fn status(
    host: &str,
    based_on: Option<u64>,
    buckets: Option<&Buckets>,
) -> ClusterStatus {
    let mut out = ClusterStatus {
        host: host.to_owned(),
        based_on,
        ..ClusterStatus::default()
    };
    let Some(buckets) = buckets else {
        out.error = Some(
            "this host has not joined the cluster yet (its engine is waiting for the \
             cluster's buckets: are at least 3 hosts up?)"
                .to_owned(),
        );
        return out;
    };
    // Side by side: status waits at most one budget in all.
    let store = DesiredStore::new(buckets.desired.clone());
    let (desired, records) = tokio::join!(
        tokio::time::timeout(READ_BUDGET, store.load()),
        read(buckets)
    );
    let ids: Vec<String> = match desired {
        Ok(Ok(Some((set, revision)))) => {
            out.revision = Some(revision);
            set.operators.into_keys().collect()
        }
        Ok(Ok(None)) => Vec::new(),
        Ok(Err(e)) => {
            out.error = Some(e.to_string());
            Vec::new()
        }
        Err(_) => {
            out.error = Some(format!(
                "the desired state did not answer within {READ_BUDGET:?}"
            ));
            Vec::new()
        }
    };
    match records {
        Ok(records) => {
            out.hosts = records
                .hosts
                .iter()
                .map(|(name, rec)| ClusterHost {
                    name: name.clone(),
                    alive: rec.state == HostState::Alive,
                    drained: records.drained.contains(name),
                    labels: rec.labels.iter().cloned().collect(),
                })
                .collect();
            out.operators = ids
                .into_iter()
                .map(|id| ClusterPlacement {
                    host: records.owner_of(&id).map(str::to_owned),
                    id,
                })
                .collect();
        }
        Err(e) => {
            out.operators = ids
                .into_iter()
                .map(|id| ClusterPlacement { id, host: None })
                .collect();
            out.error = Some(e);
        }
    }
    out
}
