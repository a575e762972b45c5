//! What the operator publishes: one envelope per notification or
//! Jetstream post on `chat.bluesky.<instance>.<room>.<kind>`, where the
//! room is the thread's root post URI (escaped in the subject, raw in the
//! `room` header and body) and the kind is the reason (`mention`, `reply`,
//! `quote`, `like`, `repost`, `follow`, or any other the server names).
//!
//! The envelope id is derived from the record's URI, so the same post
//! published twice (a crash between publishing and saving the mark) has
//! the same id and subscribers' de-duplication drops the repeat.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use switchboard_bus::proto::{headers, ChatAddress, Envelope};
use switchboard_bus::{Bus, PublishError};

use crate::lexicon::{reply_of, uri_did, Notification, StrongRef};

/// The protocol token.
pub const PROTOCOL: &str = "bluesky";

/// Where an event came from (the body's `via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `listNotifications`.
    Notification,
    /// The Jetstream websocket.
    Jetstream,
    /// The firehose (`subscribeRepos`).
    Firehose,
}

/// A post or other record ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The raw room: the thread root URI (or the author's DID for records
    /// that belong to no post, such as a follow).
    pub room: String,
    /// The kind token (the reason).
    pub kind: String,
    /// The body.
    pub body: Value,
    /// The record, for answering it.
    pub post: StrongRef,
}

/// The thread root of a post record at `uri`: its `reply.root`, or itself.
pub fn thread_root(uri: &str, record: &Value) -> String {
    reply_of(record).map_or_else(|| uri.to_string(), |r| r.root.uri)
}

/// The event from the parts every source has: its kind is `reason`, its
/// body the common fields plus `extra`.
#[allow(clippy::too_many_arguments)]
fn event(
    via: Via,
    reason: &str,
    room: String,
    did: &str,
    handle: Option<&str>,
    post: StrongRef,
    record: &Value,
    extra: Map<String, Value>,
) -> Event {
    let text = record.get("text").and_then(Value::as_str).unwrap_or("");
    let mut b = json!({
        "text": text,
        "sender": handle.unwrap_or(did),
        "room": room,
        "private": false,
        "reason": reason,
        "author": {"did": did, "handle": handle},
        "uri": post.uri,
        "cid": post.cid,
        "langs": record.get("langs").cloned().unwrap_or(Value::Array(vec![])),
        "reply": record.get("reply").cloned().unwrap_or(Value::Null),
        "facets": record.get("facets").cloned().unwrap_or(Value::Array(vec![])),
        "record": record,
        "via": match via { Via::Notification => "notification", Via::Jetstream => "jetstream", Via::Firehose => "firehose" },
    });
    if let Value::Object(m) = &mut b {
        m.extend(extra);
    }
    Event {
        body: b,
        kind: reason.to_string(),
        room,
        post,
    }
}

/// The event of a notification. `subject_root` is the thread root of the
/// liked or reposted post, when it was looked up.
pub fn from_notification(n: &Notification, subject_root: Option<&str>) -> Event {
    let is_post = n
        .record
        .get("$type")
        .and_then(Value::as_str)
        .is_some_and(|t| t == crate::lexicon::collection::POST);
    let room = if is_post {
        thread_root(&n.uri, &n.record)
    } else if let Some(subject) = &n.reason_subject {
        subject_root.unwrap_or(subject).to_string()
    } else {
        n.author.did.clone()
    };
    let post = StrongRef {
        uri: n.uri.clone(),
        cid: n.cid.clone(),
    };
    let mut extra = Map::new();
    extra.insert("indexed_at".into(), Value::String(n.indexed_at.clone()));
    if let Some(s) = &n.reason_subject {
        extra.insert("subject".into(), Value::String(s.clone()));
    }
    event(
        Via::Notification,
        &n.reason,
        room,
        &n.author.did,
        Some(&n.author.handle),
        post,
        &n.record,
        extra,
    )
}

/// Why a post concerns the account `me`: it answers one of its posts
/// (`reply`), quotes one (`quote`) or mentions it in a facet (`mention`);
/// `None` when it does none of these.
pub fn post_reason(me: &str, record: &Value) -> Option<&'static str> {
    let ours = |uri: Option<&str>| uri.and_then(uri_did) == Some(me);
    if let Some(reply) = reply_of(record) {
        if ours(Some(&reply.parent.uri)) {
            return Some("reply");
        }
    }
    let embed = record.get("embed");
    let quoted = embed
        .and_then(|e| e.get("record"))
        .and_then(|r| {
            r.get("uri")
                .or_else(|| r.get("record").and_then(|r| r.get("uri")))
        })
        .and_then(Value::as_str);
    if ours(quoted) {
        return Some("quote");
    }
    let mentioned = record
        .get("facets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.get("features").and_then(Value::as_array))
        .flatten()
        .any(|f| {
            f.get("$type").and_then(Value::as_str) == Some("app.bsky.richtext.facet#mention")
                && f.get("did").and_then(Value::as_str) == Some(me)
        });
    mentioned.then_some("mention")
}

/// The event of a post seen on Jetstream (no handle there: `sender` is the
/// author's DID).
pub fn from_jetstream(
    reason: &str,
    did: &str,
    post: StrongRef,
    record: &Value,
    time_us: i64,
) -> Event {
    let room = thread_root(&post.uri, record);
    let mut extra = Map::new();
    extra.insert("time_us".into(), Value::from(time_us));
    event(Via::Jetstream, reason, room, did, None, post, record, extra)
}

/// The event of a record seen on the firehose (no handle there either:
/// `sender` is the author's DID). `room` is chosen by the caller, as for
/// notifications (thread root, liked post's root, or the follower).
pub fn from_firehose(
    reason: &str,
    did: &str,
    post: StrongRef,
    record: &Value,
    room: String,
    extra: Map<String, Value>,
) -> Event {
    event(Via::Firehose, reason, room, did, None, post, record, extra)
}

/// The envelope id for a record: derived from its URI.
pub fn envelope_id(uri: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, uri.as_bytes());
    let hex: String = digest.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("bsky{hex}")
}

/// Envelope ids of recent events and the posts they were about, so a
/// request that answers one (`in-reply-to`) answers that very post.
#[derive(Debug, Default)]
struct RecentPosts {
    map: HashMap<String, StrongRef>,
    order: VecDeque<String>,
}

/// Events remembered for `in-reply-to`.
pub const RECENT_EVENTS: usize = 4096;

/// Publishes this operator's events.
#[derive(Debug, Clone)]
pub struct Publisher {
    bus: Bus,
    instance: String,
    recent: Arc<Mutex<RecentPosts>>,
}

impl Publisher {
    /// Events of `instance` on `bus`.
    pub fn new(bus: Bus, instance: String) -> Publisher {
        Publisher {
            bus,
            instance,
            recent: Arc::default(),
        }
    }

    /// The same publisher for another instance token (reload), keeping
    /// what it remembers.
    pub fn with_instance(&self, instance: String) -> Publisher {
        Publisher {
            instance,
            ..self.clone()
        }
    }

    /// The post that the event with envelope id `id` was about, if it was
    /// published lately.
    pub fn post_for(&self, id: &str) -> Option<StrongRef> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.map.get(id).cloned()
    }

    fn remember(&self, id: String, post: StrongRef) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.map.insert(id.clone(), post).is_none() {
            recent.order.push_back(id);
        }
        while recent.order.len() > RECENT_EVENTS {
            if let Some(old) = recent.order.pop_front() {
                recent.map.remove(&old);
            }
        }
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The instance token.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Publish `event` and wait until the server has it (a round trip), so
    /// that saving the mark afterwards never skips an unsent event.
    ///
    /// # Errors
    ///
    /// [`PublishError`] when NATS did not take it.
    pub async fn event(&self, event: &Event) -> Result<(), PublishError> {
        let address = ChatAddress::new(PROTOCOL, &self.instance, &event.room);
        let id = envelope_id(&event.post.uri);
        let env = Envelope::new(self.bus.source(), event.body.clone())
            .with_header(headers::ID, id.as_str())
            .with_header(headers::ROOM, event.room.as_str());
        self.bus
            .publish(&address.event_subject(&event.kind), &env)
            .await?;
        self.bus.sync().await?;
        self.remember(id, event.post.clone());
        Ok(())
    }

    /// An operator-wide notice (room `""`), e.g. a rate-limit wait.
    ///
    /// # Errors
    ///
    /// [`PublishError`] when NATS did not take it.
    pub async fn notice(&self, kind: &str, body: Value) -> Result<(), PublishError> {
        let address = ChatAddress::new(PROTOCOL, &self.instance, "");
        let env = Envelope::new(self.bus.source(), body).with_header(headers::ROOM, "");
        self.bus.publish(&address.event_subject(kind), &env).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(reason: &str, record: Value, subject: Option<&str>) -> Notification {
        serde_json::from_value(json!({
            "uri": "at://did:plc:alice/app.bsky.feed.post/3k2", "cid": "bafyA",
            "author": {"did": "did:plc:alice", "handle": "alice.test"},
            "reason": reason, "reasonSubject": subject, "record": record,
            "isRead": false, "indexedAt": "2026-01-01T00:00:00.000Z"
        }))
        .unwrap()
    }

    #[test]
    fn a_reply_lands_in_its_thread_root() {
        let record = json!({"$type": "app.bsky.feed.post", "text": "hi @bot.test", "langs": ["en"],
            "reply": {"root": {"uri": "at://did:plc:bot/app.bsky.feed.post/root", "cid": "r"},
                      "parent": {"uri": "at://did:plc:bot/app.bsky.feed.post/p", "cid": "p"}}});
        let e = from_notification(&notification("reply", record, None), None);
        assert_eq!(e.room, "at://did:plc:bot/app.bsky.feed.post/root");
        assert_eq!(e.kind, "reply");
        assert_eq!(e.body["sender"], "alice.test");
        assert_eq!(e.body["author"]["did"], "did:plc:alice");
        assert_eq!(e.body["text"], "hi @bot.test");
        assert_eq!(e.body["langs"], json!(["en"]));
        assert_eq!(e.body["reply"]["parent"]["cid"], "p");
        assert_eq!(e.body["via"], "notification");
    }

    #[test]
    fn a_top_level_mention_is_its_own_room_and_likes_go_to_the_subject() {
        let post = json!({"$type": "app.bsky.feed.post", "text": "@bot.test yo"});
        let e = from_notification(&notification("mention", post, None), None);
        assert_eq!(e.room, "at://did:plc:alice/app.bsky.feed.post/3k2");
        let like = json!({"$type": "app.bsky.feed.like", "subject": {"uri": "at://did:plc:bot/app.bsky.feed.post/9", "cid": "c"}});
        let subject = "at://did:plc:bot/app.bsky.feed.post/9";
        let e = from_notification(&notification("like", like.clone(), Some(subject)), None);
        assert_eq!(e.room, subject);
        assert_eq!(e.body["subject"], subject);
        let e = from_notification(
            &notification("like", like, Some(subject)),
            Some("at://root"),
        );
        assert_eq!(e.room, "at://root");
        let follow = json!({"$type": "app.bsky.graph.follow", "subject": "did:plc:bot"});
        let e = from_notification(&notification("follow", follow, None), None);
        assert_eq!(e.room, "did:plc:alice");
        assert_eq!(e.body["text"], "");
    }

    #[test]
    fn jetstream_posts_are_sorted_by_why_they_concern_us() {
        let me = "did:plc:bot";
        let mention = json!({"text": "@bot.test", "facets": [{"index": {"byteStart": 0, "byteEnd": 9},
            "features": [{"$type": "app.bsky.richtext.facet#mention", "did": me}]}]});
        assert_eq!(post_reason(me, &mention), Some("mention"));
        let reply = json!({"text": "x", "reply": {
            "root": {"uri": "at://did:plc:bot/app.bsky.feed.post/1", "cid": "a"},
            "parent": {"uri": "at://did:plc:bot/app.bsky.feed.post/2", "cid": "b"}}});
        assert_eq!(post_reason(me, &reply), Some("reply"));
        let quote = json!({"text": "x", "embed": {"$type": "app.bsky.embed.record",
            "record": {"uri": "at://did:plc:bot/app.bsky.feed.post/1", "cid": "a"}}});
        assert_eq!(post_reason(me, &quote), Some("quote"));
        let other = json!({"text": "@someone", "facets": [{"features": [{"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:x"}]}]});
        assert_eq!(post_reason(me, &other), None);
        assert_eq!(post_reason(me, &json!("garbage")), None);
    }

    #[test]
    fn envelope_ids_follow_the_uri() {
        assert_eq!(envelope_id("at://a"), envelope_id("at://a"));
        assert_ne!(envelope_id("at://a"), envelope_id("at://b"));
    }
}
