//! Scale-out for Switchboard: which host runs which operator, decided
//! safely, so that each operator id runs on at most one host at any
//! instant and a dead host's operators start elsewhere within seconds.
//!
//! The engine is NATS's own distributed machinery, not a protocol of ours:
//! every fact lives in JetStream key-value buckets replicated three ways
//! ([`REPLICAS`]), and every change of ownership is a compare-and-set on a
//! key's revision, which JetStream's Raft orders. The design, its
//! arithmetic and its limits are argued in docs/cluster.md.
//!
//! Parts:
//! - [`config`]: the `[cluster]` table (host name, labels, route listener,
//!   peers), validated.
//! - [`server_config`]: the nats-server config fragment a host needs to
//!   join the cluster.
//! - [`placement`]: the pure decision of where each operator should run.
//! - [`desired`]: the cluster's one desired state (the manifests) in a KV
//!   bucket, applied with compare-and-set so a stale host cannot overwrite
//!   a newer edit.
//! - [`lease`]: the timing (renew interval, TTL, skew margin, stop budget)
//!   and the arithmetic that makes self-fencing safe.
//! - [`engine`]: the loop that registers the host, renews its heartbeat,
//!   claims and releases operators and tells its caller "start X" /
//!   "stop X". It spawns no process: the orchestrator does.
//!
//! The orchestrator runs one engine per daemon in cluster mode
//! (`orchestrator/src/cluster/`): `[cluster]` in switchboard.toml,
//! `switchboard apply`, `drain`, `undrain`, a HOST column in `status`.

pub mod buckets;
pub mod config;
pub mod desired;
pub mod engine;
pub mod lease;
pub mod placement;
pub mod server_config;

pub use buckets::{BucketError, BucketErrorKind, Buckets};
pub use config::{ClusterConfig, ConfigError, ConfigErrorKind, RouteTls, REPLICAS};
pub use desired::{ApplyError, ApplyErrorKind, DesiredOperator, DesiredSet, DesiredStore};
pub use engine::{
    Deadline, Engine, EngineOptions, Event, StopReason, Stopped, ViewHandle, ViewSnapshot,
};
pub use placement::{eligible, place, HostView, Placement, PlacementSpec};
pub use server_config::server_fragment;
