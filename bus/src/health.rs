//! An operator's health, as its heartbeats report it.
//!
//! Alive is not the same as working: a logger that cannot write or a chat
//! operator whose login was refused keeps its heartbeats going (a restart
//! would not fix a full disk or a wrong password) and says what is wrong
//! here. `switchboard status` shows it.

use std::sync::{Arc, Mutex};

use switchboard_proto::Health;
use tokio::sync::Notify;

/// The health an operator reports; cheap to clone into tasks. A change
/// sends a heartbeat at once and is logged once (not at every heartbeat).
#[derive(Debug, Clone, Default)]
pub struct HealthReport {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    now: Mutex<(Health, Option<String>)>,
    changed: Notify,
}

impl HealthReport {
    /// Report `health` with a reason a person can act on (never a secret).
    pub fn set(&self, health: Health, reason: impl Into<String>) {
        let reason = Some(reason.into()).filter(|_| !health.is_ok());
        let mut now = self.inner.now.lock().unwrap_or_else(|p| p.into_inner());
        if now.0 == health && now.1 == reason {
            return;
        }
        match (&health, &reason) {
            (Health::Ok, _) => tracing::info!("health ok again"),
            (h, r) => tracing::warn!(
                health = h.as_str(),
                reason = r.as_deref().unwrap_or(""),
                "health changed"
            ),
        }
        *now = (health, reason);
        drop(now);
        self.inner.changed.notify_one();
    }

    /// Back to [`Health::Ok`].
    pub fn ok(&self) {
        self.set(Health::Ok, "");
    }

    /// What is reported now.
    pub fn get(&self) -> (Health, Option<String>) {
        self.inner
            .now
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves after the next change.
    pub(crate) async fn changed(&self) {
        self.inner.changed.notified().await;
    }
}
