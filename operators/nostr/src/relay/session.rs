//! The relay task: connect, run a session, back off, again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use nostr::filter::{Filter, MatchEventOptions};
use nostr::nips::nip42::ClientAuthentication;
use nostr::prelude::{
    ClientMessage, Event, EventId, FinalizeEvent, RelayMessage, RelayUrl, SubscriptionId,
};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{AuthState, Command, OkResult, Outgoing, Received, RelayState, Shared, StatusCell};
use crate::config::{RelayConfig, SubscriptionConfig};
use crate::control::{RelayEvent, RelayEventKind};
use crate::frame;
use crate::stats::BurstLog;

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Opening a websocket may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A websocket ping after this long without a frame...
const PING_AFTER: Duration = Duration::from_secs(30);
/// ...and the connection is given up after this long without one.
const SILENT_LIMIT: Duration = Duration::from_secs(90);
/// Relays that never answer an `AUTH` with `OK` (NIP-42 says they
/// should; several do not) are taken to have accepted it after this.
const AUTH_ANSWER_WAIT: Duration = Duration::from_secs(2);

/// The task: runs until aborted.
pub(super) async fn run(
    config: RelayConfig,
    shared: Shared,
    mut subs: Arc<Vec<SubscriptionConfig>>,
    mut commands: mpsc::Receiver<Command>,
    status: StatusCell,
) {
    let mut queue: Vec<Outgoing> = Vec::new();
    let mut attempt: usize = 0;
    loop {
        status.update(|s| s.state = RelayState::Connecting);
        match connect(&config.url, shared.max_event_bytes, shared.tls.clone()).await {
            Ok(ws) => {
                attempt = 0;
                shared.stats.connects.inc();
                status.update(|s| {
                    s.attempts = 0;
                    s.connects += 1;
                    s.state = RelayState::Connected;
                    s.auth = AuthState::None;
                });
                tracing::info!(relay = %config.url, "connected");
                let connects = status.get().connects;
                shared.events.emit(
                    RelayEvent::new(&config.url, RelayEventKind::Connected, "connected")
                        .with("connects", connects),
                );
                let mut session = Session {
                    config: &config,
                    shared: &shared,
                    status: &status,
                    ws,
                    subs: Arc::clone(&subs),
                    in_flight: HashMap::new(),
                    waiting_auth: Vec::new(),
                    closed_for_auth: Vec::new(),
                    challenge: None,
                    auth: None,
                    bad_frames: BurstLog::default(),
                    notices: BurstLog::default(),
                    filters: HashMap::new(),
                };
                let reason = session.run(&mut queue, &mut commands).await;
                subs = Arc::clone(&session.subs);
                // What was sent and not answered goes again after the
                // reconnect (relays know events by id, so a repeat is
                // harmless).
                queue.extend(session.in_flight.into_values());
                queue.extend(session.waiting_auth);
                match reason {
                    End::Lost(why) => {
                        tracing::warn!(relay = %config.url, reason = %why, "connection lost");
                        shared.events.emit(
                            RelayEvent::new(&config.url, RelayEventKind::Disconnected, &why)
                                .with("reason", why.as_str()),
                        );
                        status.update(|s| s.last_error = Some(why));
                    }
                    End::Commands => return,
                }
            }
            Err(why) => {
                // Said once per outage; the attempts go on quietly (the
                // `relays` status has the last error and the count).
                if attempt == 0 {
                    tracing::warn!(relay = %config.url, error = %why, "cannot connect; retrying on the reconnect schedule");
                } else {
                    tracing::debug!(relay = %config.url, error = %why, attempt, "cannot connect");
                }
                status.update(|s| {
                    s.attempts += 1;
                    s.last_error = Some(why);
                });
            }
        }
        let delay = delay(&shared.reconnect, attempt);
        attempt += 1;
        let until = crate::resume::now_millis() + delay.as_millis() as u64;
        status.update(|s| {
            s.state = RelayState::Backoff;
            s.backoff_until_ms = Some(until);
        });
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(Command::Publish(o)) => queue.push(o),
                    Some(Command::Subscriptions(s)) => subs = s,
                },
            }
        }
    }
}

/// The wait before attempt `attempt`: the schedule's entry, then its last.
fn delay(schedule: &[Duration], attempt: usize) -> Duration {
    schedule
        .get(attempt.min(schedule.len().saturating_sub(1)))
        .copied()
        .unwrap_or(Duration::from_secs(1))
}

async fn connect(
    url: &str,
    max_event_bytes: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Ws, String> {
    // Frames up to 4x the event limit reach our own check (which skips
    // and counts them); only beyond that does the websocket give up.
    let limit = max_event_bytes.saturating_mul(4).max(1 << 20);
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let connector = match tls {
        Some(config) if url.starts_with("wss://") => tokio_tungstenite::Connector::Rustls(config),
        _ => tokio_tungstenite::Connector::Plain,
    };
    let attempt = tokio_tungstenite::connect_async_tls_with_config(
        url,
        Some(ws_config),
        true,
        Some(connector),
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Err(_) => Err(format!("no websocket within {CONNECT_TIMEOUT:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok((ws, _response))) => Ok(ws),
    }
}

enum End {
    /// The connection failed or closed: reconnect.
    Lost(String),
    /// The command channel closed: the relay was removed.
    Commands,
}

struct PendingAuth {
    id: EventId,
    sent: Instant,
}

struct Session<'a> {
    config: &'a RelayConfig,
    shared: &'a Shared,
    status: &'a StatusCell,
    ws: Ws,
    subs: Arc<Vec<SubscriptionConfig>>,
    in_flight: HashMap<EventId, Outgoing>,
    /// Refused with `auth-required:`/`restricted:`, to send again once
    /// authenticated.
    waiting_auth: Vec<Outgoing>,
    /// Subscriptions the relay closed with `auth-required:`.
    closed_for_auth: Vec<String>,
    challenge: Option<String>,
    auth: Option<PendingAuth>,
    bad_frames: BurstLog,
    notices: BurstLog,
    /// The filter of each open subscription, to hold events against.
    filters: HashMap<String, Filter>,
}

impl Session<'_> {
    async fn run(
        &mut self,
        queue: &mut Vec<Outgoing>,
        commands: &mut mpsc::Receiver<Command>,
    ) -> End {
        if self.config.read {
            let subs = Arc::clone(&self.subs);
            for sub in subs.iter() {
                if let Err(e) = self.req(sub).await {
                    return End::Lost(e);
                }
            }
        }
        for o in queue.drain(..) {
            if let Err(e) = self.send_event(o).await {
                return End::Lost(e);
            }
        }
        let mut last_frame = Instant::now();
        let mut last_ping = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                frame = self.ws.next() => {
                    last_frame = Instant::now();
                    let result = match frame {
                        None => return End::Lost("the relay closed the connection".to_string()),
                        Some(Err(e)) => return End::Lost(e.to_string()),
                        Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
                        Some(Ok(Message::Close(frame))) => {
                            return End::Lost(match frame {
                                Some(f) => format!("the relay closed the connection ({} {})", f.code, f.reason),
                                None => "the relay closed the connection".to_string(),
                            })
                        }
                        // Pings are answered by tungstenite; binary frames
                        // are not part of NIP-01.
                        Some(Ok(_)) => Ok(()),
                    };
                    if let Err(e) = result {
                        return End::Lost(e);
                    }
                }
                cmd = commands.recv() => {
                    let result = match cmd {
                        None => {
                            let _ = self.ws.close(None).await;
                            return End::Commands;
                        }
                        Some(Command::Publish(o)) => self.send_event(o).await,
                        Some(Command::Subscriptions(s)) => self.resubscribe(s).await,
                    };
                    if let Err(e) = result {
                        return End::Lost(e);
                    }
                }
                _ = tick.tick() => {
                    let silent = last_frame.elapsed();
                    if silent > SILENT_LIMIT {
                        return End::Lost(format!("nothing from the relay for {silent:?}"));
                    }
                    if silent > PING_AFTER && last_ping.elapsed() > PING_AFTER {
                        last_ping = Instant::now();
                        if let Err(e) = self.ws.send(Message::Ping(Vec::new().into())).await {
                            return End::Lost(e.to_string());
                        }
                    }
                    if let Some(p) = &self.auth {
                        if p.sent.elapsed() > AUTH_ANSWER_WAIT {
                            self.auth = None;
                            if let Err(e) = self.authenticated(true, "").await {
                                return End::Lost(e);
                            }
                        }
                    }
                    self.in_flight.retain(|_, o| !o.done.is_closed());
                }
            }
        }
    }

    async fn send(&mut self, msg: ClientMessage<'_>) -> Result<(), String> {
        let text = serde_json::to_string(&msg).map_err(|e| e.to_string())?;
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| e.to_string())
    }

    async fn req(&mut self, sub: &SubscriptionConfig) -> Result<(), String> {
        let (since, first) = {
            let mut resume = self.shared.resume.lock().unwrap_or_else(|p| p.into_inner());
            resume.since(sub, &self.config.url)
        };
        tracing::debug!(relay = %self.config.url, subscription = %sub.name, since, "REQ");
        let filter = sub.filter(since, first);
        self.filters.insert(sub.name.clone(), filter.clone());
        self.send(ClientMessage::req(
            SubscriptionId::new(sub.name.clone()),
            vec![filter],
        ))
        .await
    }

    async fn resubscribe(&mut self, new: Arc<Vec<SubscriptionConfig>>) -> Result<(), String> {
        let old = std::mem::replace(&mut self.subs, Arc::clone(&new));
        if !self.config.read {
            return Ok(());
        }
        for gone in old.iter().filter(|o| !new.iter().any(|n| n.name == o.name)) {
            self.filters.remove(&gone.name);
            self.send(ClientMessage::close(SubscriptionId::new(gone.name.clone())))
                .await?;
        }
        for sub in new.iter().filter(|n| !old.contains(n)) {
            // A REQ with a known id replaces that subscription (NIP-01).
            self.req(sub).await?;
        }
        Ok(())
    }

    async fn send_event(&mut self, o: Outgoing) -> Result<(), String> {
        if o.done.is_closed() {
            return Ok(());
        }
        let event = Event::clone(&o.event);
        self.in_flight.insert(event.id, o);
        self.send(ClientMessage::event(event)).await
    }

    fn answer(&self, o: Outgoing, accepted: bool, message: &str) {
        if accepted {
            self.shared.stats.oks.inc();
        } else {
            self.shared.stats.refusals.inc();
            tracing::debug!(relay = %self.config.url, id = %o.event.id, %message, "event refused");
        }
        let _ = o.done.send(OkResult {
            url: self.config.url.clone(),
            accepted,
            message: message.to_string(),
        });
    }

    async fn on_text(&mut self, text: &str) -> Result<(), String> {
        let message = match frame::parse(text, self.shared.max_event_bytes) {
            Ok(m) => m,
            Err(e) => {
                if e.kind() == frame::FrameErrorKind::TooLarge {
                    self.shared.stats.oversize.inc();
                } else {
                    self.shared.stats.bad_frames.inc();
                }
                if let Some(before) = self.bad_frames.should_log() {
                    tracing::warn!(relay = %self.config.url, error = %e, skipped_before = before, "skipped a relay frame");
                }
                return Ok(());
            }
        };
        match message {
            RelayMessage::Event {
                subscription_id,
                event,
            } => {
                self.shared.stats.events_in.inc();
                let event = event.into_owned();
                if event.verify().is_err() {
                    self.shared.stats.bad_signature.inc();
                    tracing::debug!(relay = %self.config.url, id = %event.id, "dropped an event whose id or signature does not verify");
                    return Ok(());
                }
                // A relay may only send what we asked for: events for a
                // subscription we closed, or that the filter does not
                // match, are dropped (time bounds are left to the relay;
                // resume and dedupe cope with those).
                let matches = MatchEventOptions {
                    since: false,
                    until: false,
                    nip50: false,
                    ..MatchEventOptions::new()
                };
                let wanted = self
                    .filters
                    .get(subscription_id.as_str())
                    .is_some_and(|f| f.match_event(&event, matches));
                if !wanted {
                    self.shared.stats.unmatched.inc();
                    tracing::debug!(relay = %self.config.url, id = %event.id, subscription = %subscription_id.as_str(), "dropped an event that no open subscription asked for");
                    return Ok(());
                }
                let received = Received {
                    relay: self.config.url.clone(),
                    subscription: subscription_id.as_str().to_string(),
                    event: Box::new(event),
                };
                // Waits when the inbound task is behind (or halted): the
                // relay then waits for us, and nothing is dropped.
                if self.shared.inbound.send(received).await.is_err() {
                    return Err("the operator is shutting down".to_string());
                }
            }
            RelayMessage::Ok {
                event_id,
                status,
                message,
            } => {
                if self.auth.as_ref().is_some_and(|p| p.id == event_id) {
                    self.auth = None;
                    return self.authenticated(status, &message).await;
                }
                if !status && !message.starts_with("duplicate:") {
                    // Every refusal, also one a relay sends without the
                    // event's id (nostr-relay does), and one we retry
                    // after authenticating: the bot sees what the relay
                    // said.
                    self.shared.events.emit(
                        RelayEvent::new(
                            &self.config.url,
                            RelayEventKind::Refused,
                            message.to_string(),
                        )
                        .with("event_id", event_id.to_hex()),
                    );
                }
                let Some(o) = self.in_flight.remove(&event_id) else {
                    return Ok(());
                };
                let for_auth = message.starts_with("auth-required:")
                    || (message.starts_with("restricted:") && self.challenge.is_some());
                let auth_done = self.status.get().auth == AuthState::Done;
                // NIP-01: `duplicate:` means the relay already has the
                // event; some relays (nostr-relay) say it with `false`.
                let status = status || message.starts_with("duplicate:");
                if !status && for_auth && !o.retried && !auth_done {
                    tracing::debug!(relay = %self.config.url, id = %event_id, "refused until we authenticate; will retry");
                    self.waiting_auth.push(Outgoing { retried: true, ..o });
                    if self.auth.is_none() {
                        self.send_auth().await?;
                    }
                } else {
                    self.answer(o, status, &message);
                }
            }
            RelayMessage::EndOfStoredEvents(id) => {
                tracing::debug!(relay = %self.config.url, subscription = %id.as_str(), "EOSE");
            }
            RelayMessage::Notice(notice) => {
                self.shared.stats.notices.inc();
                self.shared.events.emit(RelayEvent::new(
                    &self.config.url,
                    RelayEventKind::Notice,
                    notice.to_string(),
                ));
                if let Some(before) = self.notices.should_log() {
                    tracing::info!(relay = %self.config.url, %notice, not_logged_before = before, "NOTICE");
                }
            }
            RelayMessage::Closed {
                subscription_id,
                message,
            } => {
                self.shared.stats.closed.inc();
                let name = subscription_id.as_str().to_string();
                self.shared.events.emit(
                    RelayEvent::new(
                        &self.config.url,
                        RelayEventKind::Closed,
                        message.to_string(),
                    )
                    .with("subscription", name.as_str()),
                );
                if message.starts_with("auth-required:") && !self.closed_for_auth.contains(&name) {
                    self.closed_for_auth.push(name);
                    if self.auth.is_none() {
                        self.send_auth().await?;
                    }
                } else {
                    tracing::warn!(relay = %self.config.url, subscription = %name, %message, "the relay closed a subscription");
                }
            }
            RelayMessage::Auth { challenge } => {
                self.shared.events.emit(
                    RelayEvent::new(&self.config.url, RelayEventKind::Auth, "challenge")
                        .with("stage", "challenge")
                        .with("challenge", challenge.to_string()),
                );
                self.challenge = Some(challenge.into_owned());
                self.send_auth().await?;
            }
            RelayMessage::Count { .. }
            | RelayMessage::NegMsg { .. }
            | RelayMessage::NegErr { .. } => {
                // Answers to requests we never make.
            }
        }
        Ok(())
    }

    /// Answers the relay's challenge with a signed kind-22242 event.
    async fn send_auth(&mut self) -> Result<(), String> {
        let Some(challenge) = self.challenge.clone() else {
            // Nothing to answer yet; the relay's AUTH will trigger it.
            return Ok(());
        };
        let url = RelayUrl::parse(&self.config.url).map_err(|e| e.to_string())?;
        let event = ClientAuthentication::new(challenge, url)
            .finalize(self.shared.keys.keys())
            .map_err(|e| format!("cannot sign the NIP-42 event: {e}"))?;
        self.auth = Some(PendingAuth {
            id: event.id,
            sent: Instant::now(),
        });
        self.shared.stats.auths.inc();
        self.status.update(|s| {
            s.state = RelayState::Auth;
            s.auth = AuthState::Sent;
        });
        tracing::debug!(relay = %self.config.url, "answering the NIP-42 challenge");
        self.send(ClientMessage::auth(event)).await
    }

    /// After our `AUTH` was answered (or not answered in time): send what
    /// waited for it, or refuse it.
    async fn authenticated(&mut self, accepted: bool, message: &str) -> Result<(), String> {
        let stage = if accepted { "accepted" } else { "refused" };
        self.shared.events.emit(
            RelayEvent::new(&self.config.url, RelayEventKind::Auth, message).with("stage", stage),
        );
        self.status.update(|s| {
            s.state = RelayState::Connected;
            s.auth = if accepted {
                AuthState::Done
            } else {
                AuthState::Refused
            };
        });
        if !accepted {
            tracing::warn!(relay = %self.config.url, %message, "the relay refused our NIP-42 authentication");
            for o in std::mem::take(&mut self.waiting_auth) {
                let why = format!("authentication refused: {message}");
                self.answer(o, false, &why);
            }
            return Ok(());
        }
        tracing::info!(relay = %self.config.url, "authenticated (NIP-42)");
        // Everything still unanswered goes again: what was refused for
        // auth, and what a relay refused with an `OK` we could not match
        // (nostr-relay refuses with an empty event id). Relays know events
        // by id, so a repeat of an accepted one is answered `duplicate:`.
        let mut again = std::mem::take(&mut self.waiting_auth);
        again.extend(self.in_flight.drain().map(|(_, o)| o));
        for o in again {
            self.send_event(o).await?;
        }
        let names = std::mem::take(&mut self.closed_for_auth);
        let subs = Arc::clone(&self.subs);
        for sub in subs.iter().filter(|s| names.contains(&s.name)) {
            self.req(sub).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_stays_at_its_last_step() {
        let s: Vec<Duration> = [500, 1000, 5000]
            .iter()
            .map(|m| Duration::from_millis(*m))
            .collect();
        assert_eq!(delay(&s, 0), Duration::from_millis(500));
        assert_eq!(delay(&s, 2), Duration::from_secs(5));
        assert_eq!(delay(&s, 50), Duration::from_secs(5));
    }
}
