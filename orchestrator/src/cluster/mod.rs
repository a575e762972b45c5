//! Cluster mode (`[cluster]` in switchboard.toml): this daemon is one
//! host of several sharing one bus, and runs what the cluster engine
//! ([`switchboard_cluster::Engine`]) gives it instead of its manifests
//! directory.
//!
//! - The engine runs on its own connection to this host's server (never
//!   a discovered one: a host whose operators lost the bus must not keep
//!   its heartbeat alive through a peer; docs/cluster.md).
//! - `Event::Start` becomes a supervised operator, its manifest text
//!   loaded as a file would be (same checks; relative paths and secrets
//!   resolved on this host, under its manifests directory);
//!   `Event::Stop` stops it, with the SIGTERM grace capped so the process
//!   is gone within the lease's stop budget ([`desired::MAX_STOP_GRACE`]).
//!   Events are handled by one task that waits only on the supervisor
//!   (stops bounded by that grace), never on the buckets, so a fence's
//!   stops are never queued behind an apply or a read.
//! - The manifests directory is what this host *proposes*: at start (only
//!   while the cluster has no desired state yet), on SIGHUP and with
//!   `switchboard apply`, it is written to the cluster's desired state by
//!   compare-and-set on the revision this host's directory is based on:
//!   the last one it wrote, or found equal to its directory at start
//!   ([`ClusterState::apply`]); a stale host is refused, never
//!   overwrites. An empty directory proposes nothing (at start and on
//!   SIGHUP).
//! - An edit of a running operator's manifest in the desired state
//!   restarts it here with the new manifest (stop, then start: bounded by
//!   the stop budget, unlike an in-place reload that waits for the
//!   operator's answer).
//! - Leaving cleanly ([`Cluster::leave`]) runs `Engine::shutdown`: every
//!   operator here stops, the records are handed back, the heartbeat is
//!   deleted, and peers take over without waiting for the lease TTL.
//!
//! The NATS users of the operators stay per host: the supervisor grants
//! a user on this host's server when it starts an operator and revokes it
//! when it stops, so each server's users follow what runs on its host.
//!
//! Files: this one the subjects, the errors and the [`Cluster`] handle;
//! `state` what the API and the event task share (apply, drain, the
//! start-up adoption); `events` the event task; `desired` manifests
//! directory <-> desired state; `forward` `ctl`, `logs` and status
//! details from the other hosts; `status` the cluster part of `status`.

mod desired;
mod events;
mod forward;
mod state;
mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use switchboard_cluster::{ApplyError, BucketError, ClusterConfig, Deadline, EngineOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::supervisor::Supervisor;
use crate::warden::WardenLink;
use events::Host;
use switchboard_bus::stream::{OperatorStreams, StreamSpec};

pub use desired::{check_set, manifest_of, nominal_path, set_from_dir, MAX_STOP_GRACE};
pub use forward::{forward_ctl, forward_logs, forward_restart, remote_details};
pub use state::ClusterState;

/// The subject this host's daemon answers `method` on in cluster mode:
/// `sb.host.<host>.api.<method>`.
pub fn host_api_subject(host: &str, method: &str) -> String {
    format!("sb.host.{host}.api.{method}")
}

/// The subject a peer daemon asks this host's daemon on: the same
/// methods, answered for this host only (never forwarded again).
pub fn host_peer_subject(host: &str, method: &str) -> String {
    format!("sb.host.{host}.peer.{method}")
}

/// The server config lines (a subject mapping) that make this host's
/// server deliver `sb.api.<method>`, published by its own clients, to
/// this host's daemon alone.
///
/// Every daemon of the cluster serves the API, and routes carry a
/// request to every subscriber (a queue group would pick any member of
/// the cluster at random, not the local one): `switchboard status` on a
/// host must be answered by that host's daemon. The mapping runs where a
/// client publishes, so the CLI, operators with `api` grants and other
/// tools keep using `sb.api.<method>` unchanged. The server maps the
/// subject before it checks the publisher's permissions (on the mapped
/// subject): operators' `api` grants allow both subjects
/// (`crate::access::EmbeddedAccess::cluster_host`).
pub fn api_mapping(host: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    format!(
        "mappings {{\n  {}: {}\n}}\n",
        q("sb.api.*"),
        q(&host_api_subject(host, "{{wildcard(1)}}"))
    )
}

/// How the engine's connection logs in to this host's server.
#[derive(Clone)]
pub struct Login {
    /// This host's server.
    pub url: String,
    /// The daemon's user.
    pub user: String,
    /// Its password (never logged).
    pub password: String,
    /// The CA, when the server speaks TLS.
    pub tls_ca: Option<PathBuf>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("url", &self.url)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Why a cluster request (apply, drain) was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The engine has not opened the buckets yet.
    #[error(
        "this host has not joined the cluster yet (its engine waits for the cluster's buckets, \
         which need 3 hosts up); try again in a few seconds"
    )]
    NotJoined,
    /// A manifest of the set does not load.
    #[error("the desired state is not valid, nothing written:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
    /// The desired state could not be written (stale among them).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A drain flag could not be written.
    #[error(transparent)]
    Bucket(#[from] BucketError),
    /// Drain or undrain of a host the cluster has never seen.
    #[error("no host `{host}` in the cluster (hosts: {known}); see `switchboard status`")]
    UnknownHost {
        /// The host asked for.
        host: String,
        /// The hosts there are.
        known: String,
    },
}

/// The kinds of [`ClusterError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterErrorKind {
    /// [`ClusterError::NotJoined`].
    NotJoined,
    /// [`ClusterError::Invalid`].
    Invalid,
    /// [`ClusterError::Apply`] for a stale revision.
    Stale,
    /// Any other [`ClusterError::Apply`], or [`ClusterError::Bucket`].
    Store,
    /// [`ClusterError::UnknownHost`].
    UnknownHost,
}

impl ClusterError {
    /// What kind of failure.
    pub fn kind(&self) -> ClusterErrorKind {
        match self {
            ClusterError::NotJoined => ClusterErrorKind::NotJoined,
            ClusterError::Invalid(_) => ClusterErrorKind::Invalid,
            ClusterError::Apply(e) if e.kind() == switchboard_cluster::ApplyErrorKind::Stale => {
                ClusterErrorKind::Stale
            }
            ClusterError::Apply(_) | ClusterError::Bucket(_) => ClusterErrorKind::Store,
            ClusterError::UnknownHost { .. } => ClusterErrorKind::UnknownHost,
        }
    }

    /// The revision that won, when the apply was stale.
    pub fn current(&self) -> Option<u64> {
        match self {
            ClusterError::Apply(ApplyError::Stale { current, .. }) => Some(*current),
            _ => None,
        }
    }
}

/// The running cluster mode: its state and its task.
#[derive(Debug)]
pub struct Cluster {
    state: Arc<ClusterState>,
    reload: mpsc::UnboundedSender<PathBuf>,
    leave: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// Start cluster mode: join (retrying while the cluster forms), then
    /// turn the engine's events into supervised operators.
    pub fn start(
        config: &ClusterConfig,
        login: Login,
        supervisor: Arc<Supervisor>,
        manifests_dir: PathBuf,
        warden: Option<WardenLink>,
        lease: Option<Arc<OnceLock<Deadline>>>,
        operator_streams: Option<(StreamSpec, OperatorStreams)>,
    ) -> Cluster {
        let state = Arc::new(ClusterState {
            host: config.host.clone(),
            manifests_dir: Mutex::new(manifests_dir.clone()),
            buckets: OnceLock::new(),
            view: OnceLock::new(),
            based_on: Mutex::new(None),
            applying: tokio::sync::Mutex::new(()),
        });
        let (reload, reloads) = mpsc::unbounded_channel();
        let leave = CancellationToken::new();
        let host = Host {
            state: Arc::clone(&state),
            options: EngineOptions {
                host: config.host.clone(),
                labels: config.labels.clone(),
            },
            login,
            supervisor,
            running: BTreeMap::new(),
            warden,
            deadline: None,
            stopped: None,
            lease,
            operator_streams,
        };
        let task = tokio::spawn(host.run(manifests_dir, reloads, leave.clone()));
        Cluster {
            state,
            reload,
            leave,
            task,
        }
    }

    /// What the API handlers use.
    pub fn state(&self) -> Arc<ClusterState> {
        Arc::clone(&self.state)
    }

    /// SIGHUP: apply `dir` to the desired state (in the background).
    pub fn reload(&self, dir: PathBuf) {
        let _ = self.reload.send(dir);
    }

    /// Leave the cluster cleanly (`Engine::shutdown`): stop everything
    /// here, hand the records back, delete the heartbeat.
    pub async fn leave(self) {
        self.leave.cancel();
        let _ = self.task.await;
    }
}
