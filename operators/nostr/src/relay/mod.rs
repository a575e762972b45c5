//! One relay: a task that keeps a websocket open (reconnecting on the
//! configured schedule), sends our `REQ`s and resumes them, answers NIP-42
//! challenges, verifies every event it receives and hands the good ones to
//! the [`crate::inbound`] task, and publishes events, reporting each
//! relay's `OK` to whoever asked.
//!
//! This is GenNostr's connection process (add/remove at runtime, a
//! reconnect schedule, a handler per relay message) written on
//! tokio-tungstenite; the `nostr` crate supplies the message types, event
//! verification and signing. See `lib.rs` for why the `nostr-sdk` pool is
//! not used.

mod session;
pub mod status;
pub mod tls;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nostr::prelude::Event;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use status::{AuthState, RelayState, RelayStatus, StatusCell};

use crate::config::{BotKeys, RelayConfig, SubscriptionConfig};
use crate::resume::Resume;
use crate::stats::NostrStats;

/// One relay's answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OkResult {
    /// The relay.
    pub url: String,
    /// `OK true`.
    pub accepted: bool,
    /// The relay's message (empty when it gave none); for a relay that did
    /// not answer, why.
    pub message: String,
}

/// An event to publish and where its result goes.
#[derive(Debug)]
pub struct Outgoing {
    /// The signed event.
    pub event: Arc<Event>,
    /// Receives the relay's `OK`.
    pub done: oneshot::Sender<OkResult>,
    /// Already sent again after a NIP-42 refusal.
    pub retried: bool,
}

/// A verified event from a relay, for the inbound task.
#[derive(Debug)]
pub struct Received {
    /// The relay it came from.
    pub relay: String,
    /// The subscription it answers.
    pub subscription: String,
    /// The event (id and signature checked).
    pub event: Box<Event>,
}

/// Orders for a relay task.
#[derive(Debug)]
pub enum Command {
    /// Publish an event (queued while disconnected).
    Publish(Outgoing),
    /// The subscriptions changed (reload): `CLOSE` the gone, `REQ` the new.
    Subscriptions(Arc<Vec<SubscriptionConfig>>),
}

/// What every relay task shares.
#[derive(Clone)]
pub struct Shared {
    /// The bot's keys (NIP-42).
    pub keys: BotKeys,
    /// Where subscriptions resume.
    pub resume: Arc<Mutex<Resume>>,
    /// Verified events go here.
    pub inbound: mpsc::Sender<Received>,
    /// Counters.
    pub stats: NostrStats,
    /// Reconnect schedule.
    pub reconnect: Arc<Vec<Duration>>,
    /// Largest frame accepted.
    pub max_event_bytes: usize,
    /// TLS for `wss://` relays (`None` when no relay needs it).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The operator's health, from its read relays.
    pub health: status::RelayHealth,
    /// Relay events for the bus.
    pub events: crate::control::RelayEvents,
}

/// A running relay task.
#[derive(Debug)]
pub struct RelayHandle {
    config: RelayConfig,
    commands: mpsc::Sender<Command>,
    status: StatusCell,
    task: JoinHandle<()>,
}

impl RelayHandle {
    /// Starts a task for `config`.
    pub fn spawn(
        config: RelayConfig,
        shared: Shared,
        subscriptions: Arc<Vec<SubscriptionConfig>>,
        stats: &switchboard_bus::Stats,
    ) -> RelayHandle {
        let (tx, rx) = mpsc::channel(256);
        let status = StatusCell::new(
            stats,
            &config.url,
            config.read,
            config.write,
            Some(shared.health.clone()),
        );
        let task = tokio::spawn(session::run(
            config.clone(),
            shared,
            subscriptions,
            rx,
            status.clone(),
        ));
        RelayHandle {
            config,
            commands: tx,
            status,
            task,
        }
    }

    /// The relay's configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// The relay's status.
    pub fn status(&self) -> RelayStatus {
        self.status.get()
    }

    /// Hands `event` to the relay; the result arrives on the returned
    /// receiver (dropped unanswered if the task is gone).
    pub fn publish(&self, event: Arc<Event>) -> oneshot::Receiver<OkResult> {
        let (done, rx) = oneshot::channel();
        let cmd = Command::Publish(Outgoing {
            event,
            done,
            retried: false,
        });
        if let Err(mpsc::error::TrySendError::Full(Command::Publish(o))) =
            self.commands.try_send(cmd)
        {
            let _ = o.done.send(OkResult {
                url: self.config.url.clone(),
                accepted: false,
                message: "the operator's queue for this relay is full; try again later".to_string(),
            });
        }
        rx
    }

    /// New subscriptions.
    pub fn set_subscriptions(&self, subs: Arc<Vec<SubscriptionConfig>>) {
        let _ = self.commands.try_send(Command::Subscriptions(subs));
    }

    /// Stops the task (the websocket is closed by dropping it); `why`
    /// goes into a `relay-disconnected` event when it was connected.
    pub fn stop(self, why: &str, events: &crate::control::RelayEvents) {
        self.task.abort();
        let was = self.status.get().state;
        self.status.update(|s| s.state = RelayState::Stopped);
        if matches!(was, RelayState::Connected | RelayState::Auth) {
            events.emit(
                crate::control::RelayEvent::new(
                    &self.config.url,
                    crate::control::RelayEventKind::Disconnected,
                    why,
                )
                .with("reason", why),
            );
        }
    }
}
