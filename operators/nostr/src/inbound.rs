//! From verified relay events to bus envelopes: one copy per event
//! however many relays (and subscriptions, and resumed overlaps) bring
//! it, with every relay that carried it in the `nostr-relays` header.
//!
//! The first copy of an event waits `collect` for copies from the other
//! relays, so the header lists them; later copies are counted as
//! duplicates. Ids already published are remembered in the resume state,
//! which is written after each published batch.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nostr::prelude::{Event, EventId, ToBech32};
use serde::Serialize;
use serde_json::Value;
use switchboard_bus::proto::{headers, ChatAddress, Envelope};
use switchboard_bus::Bus;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::BotKeys;
use crate::dm::{self, Encryption, Opened};
use crate::relay::Received;
use crate::resume::Resume;
use crate::stats::NostrStats;

/// Header: the relays that carried the event, comma-separated, in the
/// order the copies arrived.
pub const RELAYS_HEADER: &str = "nostr-relays";
/// Header: the Nostr event id (hex).
pub const EVENT_ID_HEADER: &str = "nostr-id";

/// Where an event belongs: its thread, or its author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The room: the thread root's id (hex), the reacted-to event's id for
    /// reactions, else the author's `npub1…`.
    pub room: String,
    /// The thread root, when the event is in a thread.
    pub root: Option<String>,
    /// The event it answers (NIP-10 `reply` marker, or the last `e` tag).
    pub reply_to: Option<String>,
}

/// NIP-10: `e` tags with `root`/`reply` markers, or the deprecated
/// positional form (first is the root, last the reply). Kind 7 (NIP-25)
/// belongs with the event it reacts to.
pub fn placement(event: &Event) -> Placement {
    let e_tags: Vec<&[String]> = event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .filter(|t| t.len() >= 2 && t[0] == "e")
        .collect();
    let marked = |m: &str| {
        e_tags
            .iter()
            .find(|t| t.get(3).map(String::as_str) == Some(m))
            .map(|t| t[1].clone())
    };
    let (root, reply_to) = match (marked("root"), marked("reply")) {
        (Some(root), reply) => {
            let reply = reply.or_else(|| Some(root.clone()));
            (Some(root), reply)
        }
        (None, Some(reply)) => (Some(reply.clone()), Some(reply)),
        (None, None) => (
            e_tags.first().map(|t| t[1].clone()),
            e_tags.last().map(|t| t[1].clone()),
        ),
    };
    let npub = event
        .pubkey
        .to_bech32()
        .unwrap_or_else(|_| event.pubkey.to_hex());
    let room = if event.kind.as_u16() == 7 {
        reply_to.clone().unwrap_or(npub)
    } else {
        root.clone().unwrap_or(npub)
    };
    Placement {
        room,
        root,
        reply_to,
    }
}

/// The `<kind>` token of an event's subject: `message` for text notes
/// (kind 1, so chat bots listening for messages hear Nostr too),
/// `reaction` for kind 7, else the kind number.
pub fn kind_token(event: &Event) -> String {
    match event.kind.as_u16() {
        1 => "message".to_string(),
        7 => "reaction".to_string(),
        n => n.to_string(),
    }
}

/// The body of an inbound event (PROTOCOL.md, "Nostr operator").
#[derive(Debug, Serialize)]
pub struct EventBody {
    /// Event id, hex.
    pub id: String,
    /// Author, hex.
    pub pubkey: String,
    /// Author, NIP-19.
    pub npub: String,
    /// Kind number.
    pub kind: u16,
    /// Content.
    pub content: String,
    /// Tags as arrays of strings.
    pub tags: Value,
    /// Unix seconds, as the author stamped it.
    pub created_at: u64,
    /// The content again as `text`, and the author as `sender`, so chat
    /// bots read it like any other message.
    pub text: String,
    /// The author's npub.
    pub sender: String,
    /// The raw room.
    pub room: String,
    /// Thread root id.
    pub root: Option<String>,
    /// The event this answers.
    pub reply_to: Option<String>,
    /// Relays that carried it.
    pub relays: Vec<String>,
    /// Our subscriptions it matched.
    pub subscriptions: Vec<String>,
    /// The event exactly as signed (for re-verification or re-publishing).
    pub event: Value,
}

/// Builds the subject and envelope of `event`.
pub fn envelope(
    event: &Event,
    instance: &str,
    source: &str,
    relays: &[String],
    subscriptions: &[String],
) -> (String, Envelope) {
    let place = placement(event);
    let npub = event
        .pubkey
        .to_bech32()
        .unwrap_or_else(|_| event.pubkey.to_hex());
    let raw: Value = serde_json::from_str(&event.as_json()).unwrap_or(Value::Null);
    let body = EventBody {
        id: event.id.to_hex(),
        pubkey: event.pubkey.to_hex(),
        npub: npub.clone(),
        kind: event.kind.as_u16(),
        content: event.content.clone(),
        tags: raw.get("tags").cloned().unwrap_or(Value::Array(vec![])),
        created_at: event.created_at.as_secs(),
        text: event.content.clone(),
        sender: npub,
        room: place.room.clone(),
        root: place.root,
        reply_to: place.reply_to,
        relays: relays.to_vec(),
        subscriptions: subscriptions.to_vec(),
        event: raw,
    };
    let subject =
        ChatAddress::new("nostr", instance, place.room.as_str()).event_subject(&kind_token(event));
    let body = serde_json::to_value(&body).unwrap_or(Value::Null);
    let env = Envelope::new(source, body)
        .with_header(headers::ROOM, place.room)
        .with_header(RELAYS_HEADER, relays.join(","))
        .with_header(EVENT_ID_HEADER, event.id.to_hex());
    (subject, env)
}

/// Recently published events by id: author and thread root, so a reply
/// request can name just the event it answers; and by the id of the
/// envelope that carried them, so a bot's plain reply (`ctx.reply`, which
/// says only `in-reply-to: <envelope id>`) is threaded under the event it
/// answers.
#[derive(Debug, Default)]
pub struct Recent {
    map: HashMap<String, (String, Option<String>)>,
    by_envelope: HashMap<String, String>,
    /// Direct messages by id, with their scheme: an answer uses it.
    dms: HashMap<String, Encryption>,
    order: VecDeque<(String, Option<String>)>,
}

const RECENT_CAP: usize = 10_000;

impl Recent {
    /// Remembers `event`, published in the envelope with id `envelope`.
    pub fn insert(&mut self, event: &Event, envelope: Option<&str>) {
        let id = event.id.to_hex();
        if self.map.contains_key(&id) {
            return;
        }
        let root = placement(event).root;
        self.remember(id, event.pubkey.to_hex(), root, envelope);
    }

    /// Remembers direct message `dm`, published in envelope `envelope`.
    pub fn insert_dm(&mut self, dm: &Opened, envelope: Option<&str>) {
        let id = dm.id.to_hex();
        if self.map.contains_key(&id) {
            return;
        }
        self.dms.insert(id.clone(), dm.encryption);
        self.remember(id, dm.sender.to_hex(), None, envelope);
    }

    fn remember(
        &mut self,
        id: String,
        author: String,
        root: Option<String>,
        envelope: Option<&str>,
    ) {
        self.map.insert(id.clone(), (author, root));
        if let Some(env) = envelope {
            self.by_envelope.insert(env.to_string(), id.clone());
        }
        self.order.push_back((id, envelope.map(str::to_string)));
        while self.order.len() > RECENT_CAP {
            if let Some((old, env)) = self.order.pop_front() {
                self.map.remove(&old);
                self.dms.remove(&old);
                if let Some(env) = env {
                    self.by_envelope.remove(&env);
                }
            }
        }
    }

    /// The event (hex id) that the envelope with id `envelope` carried.
    pub fn event_of_envelope(&self, envelope: &str) -> Option<&str> {
        self.by_envelope.get(envelope).map(String::as_str)
    }

    /// The scheme of a recent direct message.
    pub fn encryption(&self, id: &str) -> Option<Encryption> {
        self.dms.get(id).copied()
    }

    /// Author (hex) and thread root of a recent event.
    pub fn get(&self, id: &str) -> Option<&(String, Option<String>)> {
        self.map.get(id)
    }
}

struct Gathering {
    event: Box<Event>,
    relays: Vec<String>,
    subscriptions: Vec<String>,
    /// Every (subscription, relay) that brought a copy: their resume
    /// marks move only once the event is out.
    sources: Vec<(String, String)>,
    due: Instant,
}

/// What the inbound task needs.
pub struct Inbound {
    /// The bus to publish on.
    pub bus: Bus,
    /// The subject instance (changes on reload).
    pub instance: watch::Receiver<String>,
    /// Paused while the operator is halted (events wait in the channel).
    pub paused: watch::Receiver<bool>,
    /// How long a first copy waits for others.
    pub collect: watch::Receiver<Duration>,
    /// The bot's keys (its public key, and its secret key to open
    /// direct messages) and whether its own events are published.
    pub own: watch::Receiver<(BotKeys, bool)>,
    /// Resume state.
    pub resume: Arc<Mutex<Resume>>,
    /// Recent events for replies.
    pub recent: Arc<Mutex<Recent>>,
    /// Counters.
    pub stats: NostrStats,
}

impl Inbound {
    /// Runs until every relay task and the operator let go of `rx`.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Received>) {
        let mut pending: HashMap<EventId, Gathering> = HashMap::new();
        let mut order: VecDeque<EventId> = VecDeque::new();
        loop {
            let paused = *self.paused.borrow();
            let next_due = order.front().and_then(|id| pending.get(id)).map(|g| g.due);
            tokio::select! {
                received = rx.recv(), if !paused => {
                    let Some(r) = received else { break };
                    self.take(r, &mut pending, &mut order);
                    // Take whatever else is ready before publishing.
                    while let Ok(r) = rx.try_recv() {
                        self.take(r, &mut pending, &mut order);
                    }
                }
                _ = sleep_until(next_due), if !paused && next_due.is_some() => {}
                changed = self.paused.changed() => {
                    if changed.is_err() { break; }
                    continue;
                }
            }
            self.flush(&mut pending, &mut order, false).await;
        }
        self.flush(&mut pending, &mut order, true).await;
    }

    fn take(
        &mut self,
        r: Received,
        pending: &mut HashMap<EventId, Gathering>,
        order: &mut VecDeque<EventId>,
    ) {
        let id = r.event.id;
        let created_at = r.event.created_at.as_secs();
        // A mark may move past an event only once that event is published
        // (or deliberately skipped): a kill before then must not lose it.
        let own = {
            let own = self.own.borrow();
            r.event.pubkey == own.0.public_key() && !own.1
        };
        {
            let mut resume = self.resume.lock().unwrap_or_else(|p| p.into_inner());
            if resume.is_seen(&id.to_hex()) || own {
                resume.observe(&r.subscription, &r.relay, created_at);
                if own {
                    self.stats.own.inc();
                } else {
                    self.stats.duplicates.inc();
                }
                return;
            }
        }
        if let Some(g) = pending.get_mut(&id) {
            g.sources.push((r.subscription.clone(), r.relay.clone()));
            self.stats.duplicates.inc();
            if !g.relays.contains(&r.relay) {
                g.relays.push(r.relay);
            }
            if !g.subscriptions.contains(&r.subscription) {
                g.subscriptions.push(r.subscription);
            }
            return;
        }
        let collect = *self.collect.borrow();
        pending.insert(
            id,
            Gathering {
                event: r.event,
                sources: vec![(r.subscription.clone(), r.relay.clone())],
                relays: vec![r.relay],
                subscriptions: vec![r.subscription],
                due: Instant::now() + collect,
            },
        );
        order.push_back(id);
    }

    /// Publishes every event whose wait is over (all with `all`), then
    /// saves the resume state once.
    async fn flush(
        &mut self,
        pending: &mut HashMap<EventId, Gathering>,
        order: &mut VecDeque<EventId>,
        all: bool,
    ) {
        let now = Instant::now();
        let mut published = false;
        while let Some(id) = order.front().copied() {
            let due = pending.get(&id).map(|g| g.due);
            match due {
                None => {
                    order.pop_front();
                }
                Some(due) if all || due <= now => {
                    order.pop_front();
                    if let Some(g) = pending.remove(&id) {
                        self.publish(g).await;
                        published = true;
                    }
                }
                Some(_) => break,
            }
        }
        if published {
            let mut resume = self.resume.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = resume.save() {
                tracing::warn!(error = %e, "could not save the resume state");
            }
        }
    }

    async fn publish(&mut self, g: Gathering) {
        let (keys, own_events) = self.own.borrow().clone();
        if dm::is_for(&g.event, &keys.public_key()) {
            return self.publish_dm(g, &keys, own_events).await;
        }
        let instance = self.instance.borrow().clone();
        let (subject, env) = envelope(
            &g.event,
            &instance,
            self.bus.source(),
            &g.relays,
            &g.subscriptions,
        );
        let env_id = env.id().map(str::to_string);
        match self.bus.publish(&subject, &env).await {
            Ok(()) => {
                self.stats.published.inc();
                tracing::debug!(%subject, id = %g.event.id, relays = g.relays.len(), "published");
            }
            Err(e) => {
                // Not marked seen: the next resumed REQ brings it back.
                tracing::warn!(%subject, error = %e, "could not publish an event");
                return;
            }
        }
        self.settle(&g);
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(&g.event, env_id.as_deref());
    }

    /// The event is out (or deliberately skipped): its id is known and
    /// the marks of the relays that brought it may move past it.
    fn settle(&self, g: &Gathering) {
        let mut resume = self.resume.lock().unwrap_or_else(|p| p.into_inner());
        let created_at = g.event.created_at.as_secs();
        resume.mark_seen(&g.event.id.to_hex(), created_at);
        for (sub, relay) in &g.sources {
            resume.observe(sub, relay, created_at);
        }
    }

    /// A direct message to the bot: opened, and published on the
    /// sender's private room; one that does not open is dropped and
    /// counted (never retried: it will not open later either).
    async fn publish_dm(&mut self, g: Gathering, keys: &BotKeys, own_events: bool) {
        let dm = match dm::open(&g.event, keys) {
            Ok(dm) => dm,
            Err(e) => {
                self.stats.undecryptable.inc();
                tracing::debug!(id = %g.event.id, error = %e, kind = ?e.kind(), "dropped a direct message that does not open");
                self.settle(&g);
                return;
            }
        };
        if dm.sender == keys.public_key() && !own_events {
            self.stats.own.inc();
            self.settle(&g);
            return;
        }
        // The look-back would otherwise bring a new bot two days of old
        // messages: nothing written before the subscription's first REQ.
        let floor = self
            .resume
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .floor(dm::SUBSCRIPTION);
        if floor.is_some_and(|floor| dm.created_at < floor) {
            self.stats.dms_before_start.inc();
            self.settle(&g);
            return;
        }
        let instance = self.instance.borrow().clone();
        let (subject, env) = dm::envelope(&dm, &instance, self.bus.source(), &g.relays);
        let env_id = env.id().map(str::to_string);
        if let Err(e) = self.bus.publish(&subject, &env).await {
            tracing::warn!(%subject, error = %e, "could not publish a direct message");
            return;
        }
        self.stats.published.inc();
        self.stats.dms.inc();
        // The text is private: never logged, only its ids.
        tracing::debug!(%subject, id = %dm.id, carrier = %dm.carrier, "published a direct message");
        self.settle(&g);
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert_dm(&dm, env_id.as_deref());
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::prelude::{EventBuilder, FinalizeEvent, Keys, Kind, Tag};

    fn keys() -> Keys {
        Keys::parse("6b911fd37cdf5c81d4c0adb1ab7fa822ed253ab0ad9aa18d77257c88b29b718e").unwrap()
    }

    fn note(tags: Vec<Vec<&str>>, kind: u16) -> Event {
        let tags: Vec<Tag> = tags.into_iter().map(|t| Tag::parse(t).unwrap()).collect();
        EventBuilder::new(Kind::from(kind), "hello")
            .tags(tags)
            .finalize(&keys())
            .unwrap()
    }

    #[test]
    fn a_top_level_note_is_in_its_authors_room() {
        let e = note(vec![], 1);
        let p = placement(&e);
        assert!(p.room.starts_with("npub1"));
        assert_eq!(p.root, None);
        let (subject, env) = envelope(&e, "main", "nostr-main", &["ws://a".into()], &["s".into()]);
        assert_eq!(subject, format!("chat.nostr.main.{}.message", p.room));
        assert_eq!(env.header(RELAYS_HEADER), Some("ws://a"));
        assert_eq!(env.body["id"], e.id.to_hex());
        assert_eq!(env.body["event"]["sig"], e.sig.to_string());
        assert_eq!(env.body["text"], "hello");
    }

    #[test]
    fn nip10_markers_and_positional_tags() {
        let root = "a".repeat(64);
        let reply = "b".repeat(64);
        let e = note(
            vec![vec!["e", &reply, "", "reply"], vec!["e", &root, "", "root"]],
            1,
        );
        let p = placement(&e);
        assert_eq!(
            (p.room.as_str(), p.reply_to.as_deref()),
            (root.as_str(), Some(reply.as_str()))
        );
        let e = note(vec![vec!["e", &root], vec!["e", &reply]], 1);
        let p = placement(&e);
        assert_eq!(
            (p.room.as_str(), p.reply_to.as_deref()),
            (root.as_str(), Some(reply.as_str()))
        );
        let e = note(vec![vec!["e", &root, "", "root"]], 1);
        assert_eq!(placement(&e).reply_to.as_deref(), Some(root.as_str()));
        // A reaction sits with what it reacts to.
        let e = note(vec![vec!["e", &root], vec!["e", &reply]], 7);
        assert_eq!(placement(&e).room, reply);
        assert_eq!(kind_token(&e), "reaction");
        assert_eq!(kind_token(&note(vec![], 30023)), "30023");
    }
}
