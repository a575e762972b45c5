//! The status board (what `status` shows, kept by the actors) and the
//! router that hands lifecycle messages to the actor of their operator.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use switchboard_proto::api::{OperatorStatus, SupervisedState};
use switchboard_proto::{Counters, Health};
use tokio::sync::mpsc;

use super::Lifecycle;

/// One operator's line on the status board.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) state: SupervisedState,
    pub(super) pid: Option<u32>,
    pub(super) started: Option<Instant>,
    pub(super) restarts: u64,
    pub(super) last_seen: Option<Instant>,
    pub(super) last_exit: Option<String>,
    pub(super) reason: Option<String>,
    pub(super) control: &'static str,
    pub(super) sandbox: String,
    pub(super) counters: Option<Counters>,
    pub(super) ignored_lifecycle: u64,
    pub(super) malformed_lifecycle: u64,
    pub(super) links: std::collections::BTreeMap<String, String>,
    pub(super) health: Health,
    pub(super) health_reason: Option<String>,
    pub(super) manifest: Option<switchboard_proto::api::ManifestSummary>,
}

impl Entry {
    pub(super) fn to_status(&self, id: &str, now: Instant) -> OperatorStatus {
        let ms = |t: Instant| u64::try_from(now.duration_since(t).as_millis()).unwrap_or(u64::MAX);
        OperatorStatus {
            id: id.to_string(),
            state: self.state,
            pid: self.pid,
            uptime_ms: self.started.map(ms),
            restarts: self.restarts,
            last_heartbeat_ms: self.last_seen.map(ms),
            last_exit: self.last_exit.clone(),
            reason: self.reason.clone(),
            control: self.control.to_string(),
            sandbox: self.sandbox.clone(),
            counters: self.counters.clone(),
            ignored_lifecycle: self.ignored_lifecycle,
            malformed_lifecycle: self.malformed_lifecycle,
            links: self.links.clone(),
            health: self.health,
            health_reason: self.health_reason.clone(),
            manifest: self.manifest.clone(),
        }
    }
}

/// Routes lifecycle messages by operator ID.
#[derive(Debug, Clone, Default)]
pub struct Routes(pub(super) Arc<RwLock<HashMap<String, mpsc::Sender<Lifecycle>>>>);

impl Routes {
    /// Hand `msg` to the actor of `id`; dropped if it is busy or unknown
    /// (heartbeats come again).
    pub fn deliver(&self, id: &str, msg: Lifecycle) {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(id) {
            let _ = tx.try_send(msg);
        }
    }
}
