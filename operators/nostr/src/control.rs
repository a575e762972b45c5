//! Relays as the bus sees them: the relay events each connection reports
//! (GenNostr's callback for every relay message and connection event),
//! published as chat events of the relay's own room, and the relay list
//! changed at run time ([`Overlay`]: what `relay-add` and `relay-remove`
//! requests did, on top of the manifest).
//!
//! Relay events go through a bounded queue so that a slow bus never
//! holds a relay connection up: when it is full, events are dropped and
//! counted (`nostr_relay_events_dropped`), never the connection's work.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use switchboard_bus::proto::{headers, ChatAddress, Envelope};
use switchboard_bus::{Bus, Counter};
use tokio::sync::{mpsc, watch};

use crate::config::RelayConfig;

/// What happened on a relay connection; the `<kind>` of its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RelayEventKind {
    /// The websocket is open (`relay-connected`).
    Connected,
    /// An open connection ended, or the relay was removed
    /// (`relay-disconnected`, with the reason).
    Disconnected,
    /// A `NOTICE` (`relay-notice`).
    Notice,
    /// A `CLOSED`: the relay ended one of our subscriptions
    /// (`relay-closed`).
    Closed,
    /// NIP-42: a challenge, and whether our answer was accepted
    /// (`relay-auth`, `stage` says which).
    Auth,
    /// An `OK false` for an event we sent (`relay-refused`).
    Refused,
}

impl RelayEventKind {
    /// The subject's `<kind>` token.
    pub fn token(self) -> &'static str {
        match self {
            RelayEventKind::Connected => "relay-connected",
            RelayEventKind::Disconnected => "relay-disconnected",
            RelayEventKind::Notice => "relay-notice",
            RelayEventKind::Closed => "relay-closed",
            RelayEventKind::Auth => "relay-auth",
            RelayEventKind::Refused => "relay-refused",
        }
    }
}

/// One relay event.
#[derive(Debug, Clone)]
pub struct RelayEvent {
    /// The relay's URL (the room).
    pub relay: String,
    /// What happened.
    pub kind: RelayEventKind,
    /// The relay's words, or the reason.
    pub text: String,
    /// Fields of this kind (`subscription`, `stage`, `event_id`, …).
    pub extra: Map<String, Value>,
}

impl RelayEvent {
    /// An event of `kind` on `relay` saying `text`.
    pub fn new(relay: &str, kind: RelayEventKind, text: impl Into<String>) -> RelayEvent {
        RelayEvent {
            relay: relay.to_string(),
            kind,
            text: text.into(),
            extra: Map::new(),
        }
    }

    /// With field `key`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> RelayEvent {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    /// Subject and envelope: `chat.nostr.<instance>.<relay url>.<kind>`,
    /// a `ChatMessage` from the relay (so a chat bot can read it) plus
    /// `relay`, `event` (the kind without `relay-`) and the extra fields.
    pub fn envelope(&self, instance: &str, source: &str) -> (String, Envelope) {
        let mut body = Map::new();
        body.insert("text".into(), self.text.clone().into());
        body.insert("sender".into(), self.relay.clone().into());
        body.insert("room".into(), self.relay.clone().into());
        body.insert("relay".into(), self.relay.clone().into());
        let token = self.kind.token();
        body.insert(
            "event".into(),
            token.trim_start_matches("relay-").to_string().into(),
        );
        for (k, v) in &self.extra {
            body.insert(k.clone(), v.clone());
        }
        let subject = ChatAddress::new("nostr", instance, self.relay.as_str()).event_subject(token);
        let env = Envelope::new(source, Value::Object(body))
            .with_header(headers::ROOM, self.relay.clone());
        (subject, env)
    }
}

/// Where relay tasks report events.
#[derive(Debug, Clone)]
pub struct RelayEvents {
    tx: mpsc::Sender<RelayEvent>,
    dropped: Counter,
}

/// Events waiting for the bus at most.
const QUEUE: usize = 1024;

impl RelayEvents {
    /// The sender, and the receiver for [`publish_events`].
    pub fn new(dropped: Counter) -> (RelayEvents, mpsc::Receiver<RelayEvent>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (RelayEvents { tx, dropped }, rx)
    }

    /// Queues `event`; counts it as dropped when the queue is full.
    pub fn emit(&self, event: RelayEvent) {
        if self.tx.try_send(event).is_err() {
            self.dropped.inc();
        }
    }
}

/// Publishes relay events until every sender is gone.
pub async fn publish_events(
    bus: Bus,
    instance: watch::Receiver<String>,
    mut rx: mpsc::Receiver<RelayEvent>,
) {
    while let Some(event) = rx.recv().await {
        let instance = instance.borrow().clone();
        let (subject, env) = event.envelope(&instance, bus.source());
        if let Err(e) = bus.publish(&subject, &env).await {
            tracing::debug!(%subject, error = %e, "could not publish a relay event");
        }
    }
}

/// Where a relay in the running list comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The manifest.
    Config,
    /// A `relay-add` request.
    Bus,
}

/// The relay list's run-time changes: URL → its relay as added over the
/// bus, or `None` when removed over the bus.
///
/// Which wins: a change over the bus holds until a reload changes that
/// URL's own manifest entry (adds it, removes it, or changes its flags);
/// reloads that leave that entry as it was keep the change. A restart
/// starts from the manifest alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    changes: BTreeMap<String, Option<RelayConfig>>,
}

impl Overlay {
    /// Records an add (or new flags); one that asks for exactly the
    /// manifest's entry undoes the bus's change to it instead.
    pub fn add(&mut self, relay: RelayConfig, manifest: &[RelayConfig]) {
        if manifest.contains(&relay) {
            self.changes.remove(&relay.url);
        } else {
            self.changes.insert(relay.url.clone(), Some(relay));
        }
    }

    /// Records a removal.
    pub fn remove(&mut self, url: &str) {
        self.changes.insert(url.to_string(), None);
    }

    /// The running list: the manifest's relays with the changes applied
    /// (manifest order, then added ones in URL order).
    pub fn apply(&self, manifest: &[RelayConfig]) -> Vec<(RelayConfig, Origin)> {
        let mut out: Vec<(RelayConfig, Origin)> = Vec::new();
        for r in manifest {
            match self.changes.get(&r.url) {
                None => out.push((r.clone(), Origin::Config)),
                Some(Some(changed)) => out.push((changed.clone(), Origin::Bus)),
                Some(None) => {}
            }
        }
        for (url, change) in &self.changes {
            if let Some(r) = change {
                if !manifest.iter().any(|m| &m.url == url) {
                    out.push((r.clone(), Origin::Bus));
                }
            }
        }
        out
    }

    /// A reload from manifest `old` to `new`: the reload wins for every
    /// URL whose entry it changed.
    pub fn reload(&mut self, old: &[RelayConfig], new: &[RelayConfig]) {
        self.changes.retain(|url, _| {
            let before = old.iter().find(|r| &r.url == url);
            let after = new.iter().find(|r| &r.url == url);
            before == after
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(url: &str, read: bool, write: bool) -> RelayConfig {
        RelayConfig {
            url: url.to_string(),
            read,
            write,
        }
    }

    #[test]
    fn bus_changes_hold_until_a_reload_changes_that_relay() {
        let a = relay("ws://a", true, true);
        let b = relay("ws://b", true, true);
        let manifest = vec![a.clone(), b.clone()];
        let mut o = Overlay::default();
        o.remove("ws://a");
        o.add(relay("ws://c", true, false), &manifest);
        let urls = |l: Vec<(RelayConfig, Origin)>| -> Vec<(String, Origin)> {
            l.into_iter().map(|(r, o)| (r.url, o)).collect()
        };
        assert_eq!(
            urls(o.apply(&manifest)),
            vec![
                ("ws://b".to_string(), Origin::Config),
                ("ws://c".to_string(), Origin::Bus)
            ]
        );
        // A reload that leaves a and c alone keeps both changes.
        let same = vec![a.clone(), relay("ws://b", true, false)];
        o.reload(&manifest, &same);
        assert_eq!(o.apply(&same).len(), 2);
        assert!(!o.apply(&same).iter().any(|(r, _)| r.url == "ws://a"));
        // A reload that changes a's entry brings it back.
        let mut readd = o.clone();
        readd.add(a.clone(), &same);
        assert!(readd.apply(&same).contains(&(a.clone(), Origin::Config)));
        let changed = vec![relay("ws://a", false, true), same[1].clone()];
        o.reload(&same, &changed);
        let now = urls(o.apply(&changed));
        assert!(
            now.contains(&("ws://a".to_string(), Origin::Config)),
            "{now:?}"
        );
        assert!(
            now.contains(&("ws://c".to_string(), Origin::Bus)),
            "{now:?}"
        );
        // Adding a's manifest entry as it is undoes nothing else.
        let mut undo = o.clone();
        undo.add(changed[0].clone(), &changed);
        assert_eq!(undo, o);
        // A reload that adds c's URL to the manifest takes it over.
        let with_c = vec![
            changed[0].clone(),
            changed[1].clone(),
            relay("ws://c", true, true),
        ];
        o.reload(&changed, &with_c);
        assert_eq!(
            o.apply(&with_c).last().map(|(r, o)| (r.write, *o)),
            Some((true, Origin::Config))
        );
    }

    #[test]
    fn an_event_is_a_chat_message_from_the_relay_room() {
        let e = RelayEvent::new("wss://relay.example", RelayEventKind::Notice, "slow down")
            .with("subscription", "notes");
        let (subject, env) = e.envelope("main", "nostr-main");
        assert_eq!(
            subject,
            "chat.nostr.main.wss=3A=2F=2Frelay=2Eexample.relay-notice"
        );
        assert_eq!(env.body["sender"], "wss://relay.example");
        assert_eq!(env.body["text"], "slow down");
        assert_eq!(env.body["event"], "notice");
        assert_eq!(env.body["subscription"], "notes");
        assert_eq!(env.header("room"), Some("wss://relay.example"));
    }
}
