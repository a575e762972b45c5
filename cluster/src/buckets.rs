//! The two KV buckets and what their keys hold.
//!
//! - `sb_cluster_desired`: one key, `set`, the whole desired state
//!   ([`crate::DesiredSet`]); history kept so an operator can see recent
//!   applies.
//! - `sb_cluster`: `host.<name>` (a host's heartbeat or tombstone,
//!   [`HostRecord`]), `drain.<name>` (present: drained) and
//!   `owner.<id>` (who runs an operator, [`OwnerRecord`]).
//!
//! Heartbeats and ownership share one bucket on purpose: a bucket is one
//! stream, and a watcher receives one stream in order, so a host's view
//! (a complete snapshot, then every change in order: see
//! `engine::watch`) is always the bucket's state at some revision. In
//! particular nobody can see `owner.X = (B, epoch)` without B's
//! registration, so "B has no heartbeat" in a view really means B left
//! or was declared gone, never "B's heartbeat has not arrived yet" (with
//! two buckets the two streams could arrive in any order, and a claim on
//! such a view would be unsafe).

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

use crate::config::REPLICAS;

/// The desired-state bucket.
pub const DESIRED_BUCKET: &str = "sb_cluster_desired";
/// The heartbeat, drain and ownership bucket.
pub const CLUSTER_BUCKET: &str = "sb_cluster";

/// Applies kept in the desired-state bucket's history.
const DESIRED_HISTORY: i64 = 16;

/// Timeout of every JetStream request the cluster makes: shorter than
/// async-nats's default (5 s for acks, 10 s for requests) because a
/// heartbeat that takes longer than this is as good as lost; see
/// [`crate::lease`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

/// Key of a host's heartbeat.
pub fn host_key(host: &str) -> String {
    format!("host.{host}")
}
/// Key of a host's drain flag.
pub fn drain_key(host: &str) -> String {
    format!("drain.{host}")
}
/// Key of an operator's ownership record.
pub fn owner_key(id: &str) -> String {
    format!("owner.{id}")
}

/// A host's heartbeat (`Alive`) or the mark that its incarnation is over
/// (`Gone`): written by the host itself when it can no longer trust its
/// heartbeat, or by a peer that saw the heartbeat stand still for the
/// lease TTL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Alive or gone.
    pub state: HostState,
    /// This incarnation of the host (a fresh id at each registration): an
    /// ownership record names the incarnation, so a restarted host does
    /// not inherit its past self's claims by name alone.
    pub epoch: String,
    /// The host's labels (for placement).
    #[serde(default)]
    pub labels: BTreeSet<String>,
    /// Heartbeat counter, so a host can recognise its own write after a
    /// renewal whose answer was lost.
    #[serde(default)]
    pub beat: u64,
    /// Who declared it gone (a host name), for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_by: Option<String>,
}

/// See [`HostRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    /// Heartbeating.
    Alive,
    /// This incarnation will never heartbeat again.
    Gone,
}

/// Who runs an operator: a host incarnation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    /// Host name.
    pub host: String,
    /// The host's epoch when it claimed the operator.
    pub epoch: String,
}

/// The buckets, opened.
#[derive(Debug, Clone)]
pub struct Buckets {
    /// Desired state.
    pub desired: kv::Store,
    /// Heartbeats, drains, ownership.
    pub cluster: kv::Store,
}

/// Why the buckets could not be opened or a flag set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BucketError {
    /// Creating or opening a bucket failed (no JetStream, no quorum yet,
    /// not enough servers for three replicas...).
    #[error(
        "cannot open the cluster bucket {bucket}: {source} (is JetStream on, \
         and are at least {REPLICAS} servers of the cluster up?)"
    )]
    Open {
        /// The bucket.
        bucket: &'static str,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// A write failed.
    #[error("cannot write {key}: {source}")]
    Write {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// A host name that is not a valid name.
    #[error("`{0}` is not a host name: use 1 to 64 of A-Z, a-z, 0-9, `_` and `-`")]
    BadHost(String),
    /// [`Buckets::forget`] of a host whose heartbeat is alive.
    #[error(
        "{0} is alive (its heartbeat renews): only a host that is gone can be forgotten; stop \
         its daemon first (a clean stop leaves the cluster by itself)"
    )]
    HostAlive(String),
}

/// The kinds of [`BucketError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketErrorKind {
    /// [`BucketError::Open`].
    Open,
    /// [`BucketError::Write`].
    Write,
    /// [`BucketError::BadHost`].
    BadHost,
    /// [`BucketError::HostAlive`].
    HostAlive,
}

impl BucketError {
    /// What kind of failure.
    pub fn kind(&self) -> BucketErrorKind {
        match self {
            BucketError::Open { .. } => BucketErrorKind::Open,
            BucketError::Write { .. } => BucketErrorKind::Write,
            BucketError::BadHost(_) => BucketErrorKind::BadHost,
            BucketError::HostAlive(_) => BucketErrorKind::HostAlive,
        }
    }
}

/// A JetStream context with the cluster's request timeout.
pub fn context(client: async_nats::Client) -> jetstream::Context {
    let mut js = jetstream::new(client);
    js.set_timeout(REQUEST_TIMEOUT);
    js
}

impl Buckets {
    /// Create the buckets if needed (three replicas, file storage) and
    /// open them. Any host may call it at start; the first one creates.
    ///
    /// # Errors
    ///
    /// [`BucketError::Open`] when JetStream refuses (for example while
    /// the cluster has no meta leader yet: callers retry).
    pub async fn ensure(js: &jetstream::Context) -> Result<Buckets, BucketError> {
        let open = |bucket: &'static str, history: i64| async move {
            let config = kv::Config {
                bucket: bucket.to_owned(),
                history,
                num_replicas: REPLICAS,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            };
            match js.get_key_value(bucket).await {
                Ok(store) => Ok(store),
                Err(_) => js
                    .create_key_value(config)
                    .await
                    .map_err(|e| BucketError::Open {
                        bucket,
                        source: e.into(),
                    }),
            }
        };
        Ok(Buckets {
            desired: open(DESIRED_BUCKET, DESIRED_HISTORY).await?,
            cluster: open(CLUSTER_BUCKET, 1).await?,
        })
    }

    /// Mark `host` drained: placement gives it nothing, and it hands its
    /// operators to others (each one stop, then start elsewhere).
    ///
    /// # Errors
    ///
    /// [`BucketError::BadHost`] or [`BucketError::Write`].
    pub async fn drain(&self, host: &str) -> Result<(), BucketError> {
        if !crate::config::is_valid_name(host) {
            return Err(BucketError::BadHost(host.to_owned()));
        }
        let key = drain_key(host);
        self.cluster
            .put(&key, bytes::Bytes::from_static(b"1"))
            .await
            .map(|_| ())
            .map_err(|e| BucketError::Write {
                key,
                source: e.into(),
            })
    }

    /// Forget `host`, gone for good (a decommissioned machine): delete its
    /// heartbeat record, which a host that dies without leaving keeps as
    /// `gone` (`status` lists it, and `rolling-restart` waits for every
    /// host it lists), and its drain flag.
    ///
    /// The record is deleted by compare-and-set on the revision read, and
    /// only while it says `gone`: a host that is alive, or came back
    /// between the read and the delete, is untouched. A host forgotten
    /// and started again later simply registers anew.
    ///
    /// # Errors
    ///
    /// [`BucketError::BadHost`], [`BucketError::HostAlive`],
    /// [`BucketError::Write`].
    pub async fn forget(&self, host: &str) -> Result<(), BucketError> {
        if !crate::config::is_valid_name(host) {
            return Err(BucketError::BadHost(host.to_owned()));
        }
        let key = host_key(host);
        let write = |key: &str, source: async_nats::Error| BucketError::Write {
            key: key.to_owned(),
            source,
        };
        let entry = self
            .cluster
            .entry(&key)
            .await
            .map_err(|e| write(&key, e.into()))?;
        if let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) {
            let alive = serde_json::from_slice::<HostRecord>(&entry.value)
                .is_ok_and(|r| r.state == HostState::Alive);
            if alive {
                return Err(BucketError::HostAlive(host.to_owned()));
            }
            self.cluster
                .delete_expect_revision(&key, Some(entry.revision))
                .await
                .map_err(|e| write(&key, e.into()))?;
        }
        let drain = drain_key(host);
        self.cluster
            .delete(&drain)
            .await
            .map_err(|e| write(&drain, e.into()))
    }

    /// Undo [`Buckets::drain`].
    ///
    /// # Errors
    ///
    /// [`BucketError::BadHost`] or [`BucketError::Write`].
    pub async fn undrain(&self, host: &str) -> Result<(), BucketError> {
        if !crate::config::is_valid_name(host) {
            return Err(BucketError::BadHost(host.to_owned()));
        }
        let key = drain_key(host);
        self.cluster
            .delete(&key)
            .await
            .map_err(|e| BucketError::Write {
                key,
                source: e.into(),
            })
    }
}
