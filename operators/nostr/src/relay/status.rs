//! What each relay connection is doing, for `relays` requests and the
//! heartbeat.
//!
//! Heartbeat counters are numbers only, so each relay reports two gauges
//! there: `relay.<url>.state` (the [`RelayState`] code) and
//! `relay.<url>.backoff_until_ms` (unix milliseconds, 0 when not backing
//! off). The full record is the reply to a `relays` request.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use switchboard_bus::proto::Health;
use switchboard_bus::{Counter, HealthReport, Stats};

/// Connection state of one relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayState {
    /// Opening the websocket.
    Connecting,
    /// Open; subscriptions sent.
    Connected,
    /// Open, answering a NIP-42 challenge.
    Auth,
    /// Waiting before the next attempt (`backoff_until_ms`).
    Backoff,
    /// Removed or shut down.
    Stopped,
}

impl RelayState {
    /// The gauge value in heartbeats.
    pub fn code(self) -> u64 {
        match self {
            RelayState::Connecting => 1,
            RelayState::Connected => 2,
            RelayState::Auth => 3,
            RelayState::Backoff => 4,
            RelayState::Stopped => 5,
        }
    }
}

/// NIP-42 progress on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthState {
    /// No challenge received.
    None,
    /// Challenge answered, no `OK` yet.
    Sent,
    /// The relay accepted our `AUTH` (or did not answer it within 2 s, as
    /// some relays never do).
    Done,
    /// The relay refused our `AUTH`.
    Refused,
}

/// One relay's record.
#[derive(Debug, Clone, Serialize)]
pub struct RelayStatus {
    /// The URL as configured.
    pub url: String,
    /// Subscribed here.
    pub read: bool,
    /// Published here.
    pub write: bool,
    /// Connection state.
    pub state: RelayState,
    /// NIP-42 on this connection.
    pub auth: AuthState,
    /// Unix ms of the next attempt while in `backoff`.
    pub backoff_until_ms: Option<u64>,
    /// Failed attempts since the last successful connect.
    pub attempts: u32,
    /// Successful connects so far.
    pub connects: u64,
    /// Why the last connection ended or failed.
    pub last_error: Option<String>,
}

/// The operator's health from its relays: `degraded` while no relay it
/// reads from is connected (it hears nothing), with each one's last error.
#[derive(Debug, Clone)]
pub struct RelayHealth {
    report: HealthReport,
    readers: Arc<Mutex<BTreeMap<String, Reader>>>,
}

/// A read relay as health sees it: connected, and its last error.
type Reader = (bool, Option<String>);

impl RelayHealth {
    /// Reporting through `report` (the operator's heartbeat health).
    pub fn new(report: HealthReport) -> RelayHealth {
        RelayHealth {
            report,
            readers: Arc::default(),
        }
    }

    fn note(&self, s: &RelayStatus) {
        if !s.read {
            return;
        }
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if s.state == RelayState::Stopped {
            readers.remove(&s.url);
        } else {
            let up = matches!(s.state, RelayState::Connected | RelayState::Auth);
            readers.insert(s.url.clone(), (up, s.last_error.clone()));
        }
        // Connecting for the first time is not trouble; every reader down
        // after having tried is.
        let tried = readers.values().all(|(up, error)| *up || error.is_some());
        if readers.is_empty() || readers.values().any(|(up, _)| *up) || !tried {
            self.report.ok();
        } else {
            let why: Vec<String> = readers
                .iter()
                .map(|(url, (_, e))| format!("{url}: {}", e.as_deref().unwrap_or("not connected")))
                .collect();
            self.report.set(
                Health::Degraded,
                format!(
                    "no relay to read from is connected ({}); retrying on the reconnect schedule",
                    why.join("; ")
                ),
            );
        }
    }
}

/// A relay's status, shared between its task and the operator, with its
/// heartbeat gauges.
#[derive(Debug, Clone)]
pub struct StatusCell {
    inner: Arc<Mutex<RelayStatus>>,
    state_gauge: Counter,
    backoff_gauge: Counter,
    health: Option<RelayHealth>,
}

/// Sets a heartbeat counter to `value` (counters only add; adding the
/// wrapped difference sets it, and each gauge has a single writer).
fn set_gauge(c: &Counter, value: u64) {
    c.add(value.wrapping_sub(c.get()));
}

impl StatusCell {
    /// A relay starting to connect.
    pub fn new(
        stats: &Stats,
        url: &str,
        read: bool,
        write: bool,
        health: Option<RelayHealth>,
    ) -> StatusCell {
        let cell = StatusCell {
            inner: Arc::new(Mutex::new(RelayStatus {
                url: url.to_string(),
                read,
                write,
                state: RelayState::Connecting,
                auth: AuthState::None,
                backoff_until_ms: None,
                attempts: 0,
                connects: 0,
                last_error: None,
            })),
            state_gauge: stats.counter(&format!("relay.{url}.state")),
            backoff_gauge: stats.counter(&format!("relay.{url}.backoff_until_ms")),
            health,
        };
        set_gauge(&cell.state_gauge, RelayState::Connecting.code());
        set_gauge(&cell.backoff_gauge, 0);
        cell
    }

    /// A copy of the record.
    pub fn get(&self) -> RelayStatus {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes the record and the gauges.
    pub fn update(&self, f: impl FnOnce(&mut RelayStatus)) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        if s.state != RelayState::Backoff {
            s.backoff_until_ms = None;
        }
        set_gauge(&self.state_gauge, s.state.code());
        set_gauge(&self.backoff_gauge, s.backoff_until_ms.unwrap_or(0));
        if let Some(h) = &self.health {
            h.note(&s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_follow_the_state() {
        let stats = Stats::default();
        let cell = StatusCell::new(&stats, "ws://r", true, true, None);
        cell.update(|s| {
            s.state = RelayState::Backoff;
            s.backoff_until_ms = Some(1234);
        });
        let snap = stats.snapshot();
        assert_eq!(snap.extra["relay.ws://r.state"], 4);
        assert_eq!(snap.extra["relay.ws://r.backoff_until_ms"], 1234);
        cell.update(|s| s.state = RelayState::Connected);
        let snap = stats.snapshot();
        assert_eq!(snap.extra["relay.ws://r.state"], 2);
        assert_eq!(snap.extra["relay.ws://r.backoff_until_ms"], 0);
        assert_eq!(cell.get().backoff_until_ms, None);
    }
}
