//! From send requests to signed events: a reply in a thread (NIP-10), a
//! direct message (NIP-17 or NIP-04, [`crate::dm`]), a top-level note, a
//! reaction (NIP-25), a pre-signed event; or a relay request (GenNostr's
//! `list_relays`, `add_relay`, `remove_relay`). A publish goes to every
//! write relay (GenNostr's `broadcast_message`) or, with `relays` in its
//! body, to the named ones (its `send_message` to one relay).

use nostr::prelude::{Event, EventBuilder, EventId, FinalizeEvent, Kind, PublicKey, Tag};
use serde::Deserialize;
use serde_json::Value;
use switchboard_bus::proto::headers;
use switchboard_bus::send::{self, SendRequestError};
use switchboard_bus::Delivery;

use crate::config::{BotKeys, RawRelayFull, RelayConfig};
use crate::dm::{self, Encryption};
use crate::inbound::Recent;

/// Request kinds (the `<kind>` of `send.nostr.<instance>.<room>.<kind>`).
pub mod kinds {
    /// A reply in the room's thread.
    pub const MESSAGE: &str = "message";
    /// A top-level text note.
    pub const NOTE: &str = "note";
    /// A NIP-25 reaction.
    pub const REACTION: &str = "reaction";
    /// A pre-signed event, published as is.
    pub const RAW: &str = "raw";
    /// The relays and their state (answered, nothing is published).
    pub const RELAYS: &str = "relays";
    /// Add a relay (or change its flags) until the next reload says
    /// otherwise.
    pub const RELAY_ADD: &str = "relay-add";
    /// Remove a relay until the next reload says otherwise.
    pub const RELAY_REMOVE: &str = "relay-remove";
}

/// What a send request asks for.
#[derive(Debug)]
pub enum Request {
    /// Publish this event.
    Publish {
        /// The signed event.
        event: Box<Event>,
        /// Only to these relays (by URL); `None`: every write relay.
        relays: Option<Vec<String>>,
    },
    /// Answer with the relays' status.
    Relays,
    /// Add a relay, or change its flags.
    AddRelay(RelayConfig),
    /// Remove a relay.
    RemoveRelay(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    text: String,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    encryption: Option<Encryption>,
    #[serde(default)]
    relays: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    text: String,
    #[serde(default)]
    hashtags: Vec<String>,
    #[serde(default)]
    relays: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReactionBody {
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    relays: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBody {
    event: Value,
    #[serde(default)]
    relays: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayRemoveBody {
    url: String,
}

/// Why a send request is refused. The message is the sentence the sender
/// gets back (`{"ok": false, "error": …}`).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Not a send request this operator can act on (subject, body,
    /// kind, or what the body asks).
    #[error(transparent)]
    Request(#[from] SendRequestError),
    /// The event could not be signed.
    #[error("cannot sign the event: {reason}")]
    Sign {
        /// The signer's error.
        reason: String,
    },
    /// The direct message could not be made.
    #[error(transparent)]
    Dm(#[from] dm::DmError),
    /// `relay-add` and `relay-remove` while `relay_control` is off.
    #[error(
        "relay-add and relay-remove are off; set relay_control = true in the \
         operator's [config] to allow them"
    )]
    RelayControlOff,
    /// A relay the request names cannot be used as asked (unknown,
    /// read-only, the only one), or none can write.
    #[error("{reason}")]
    Relay {
        /// Which relay and what to do.
        reason: String,
    },
    /// TLS for a `wss://` relay could not be set up.
    #[error("TLS setup: {reason}")]
    Tls {
        /// Why.
        reason: String,
    },
}

switchboard_bus::proto::error_kinds!(
    /// What kind of [`Refusal`] this is.
    Refusal => RefusalKind { Request, Sign, Dm, RelayControlOff, Relay, Tls }
);

impl Refusal {
    /// Well formed, but asks for what cannot be: an id or key that is
    /// not one, an empty relay list, a room of the wrong shape.
    fn invalid(reason: impl Into<String>) -> Refusal {
        SendRequestError::invalid(reason).into()
    }

    /// The same refusal with what to do next appended.
    fn hint(self, next: &str) -> Refusal {
        Refusal::invalid(format!("{self}; {next}"))
    }
}

fn publish(event: Box<Event>, relays: Option<Vec<String>>) -> Result<Request, Refusal> {
    if relays.as_ref().is_some_and(Vec::is_empty) {
        return Err(Refusal::invalid(
            "`relays` is empty; name at least one relay, or leave it out for every write relay",
        ));
    }
    Ok(Request::Publish { event, relays })
}

fn event_id(what: &str, value: &str) -> Result<EventId, Refusal> {
    EventId::parse(value).map_err(|_| {
        Refusal::invalid(format!(
            "{what} {value:?} is not an event id (64 hex digits or note1…)"
        ))
    })
}

fn pubkey(what: &str, value: &str) -> Result<PublicKey, Refusal> {
    PublicKey::parse(value).map_err(|_| {
        Refusal::invalid(format!(
            "{what} {value:?} is not a public key (npub1… or 64 hex digits)"
        ))
    })
}

fn sign(builder: EventBuilder, keys: &BotKeys) -> Result<Box<Event>, Refusal> {
    builder
        .finalize(keys.keys())
        .map(Box::new)
        .map_err(|e| Refusal::Sign {
            reason: e.to_string(),
        })
}

/// The request for one delivery, or why it is refused.
pub fn request_for(
    delivery: &Delivery,
    instance: &str,
    keys: &BotKeys,
    recent: &Recent,
) -> Result<Request, Refusal> {
    let asked = send::Request::parse(delivery, "nostr", instance)?;
    let room = asked.room.as_str();
    match asked.kind.as_str() {
        kinds::MESSAGE => {
            let mut b: MessageBody =
                asked.body(r#"{"text": "...", "reply_to": "<event id>"}"#)?;
            // A bot's `ctx.reply` names the envelope it answers, not the
            // event: map it back.
            if b.reply_to.is_none() {
                b.reply_to = delivery
                    .header(headers::IN_REPLY_TO)
                    .and_then(|env| recent.event_of_envelope(env))
                    .map(str::to_string);
            }
            let relays = b.relays.take();
            let event = match room.strip_prefix('@') {
                Some(peer) => direct(peer, b, keys, recent)?,
                None if b.encryption.is_some() => {
                    return Err(Refusal::invalid(
                        "`encryption` is for direct messages: send to the room @<npub> of the person",
                    ))
                }
                None => reply(room, b, keys, recent)?,
            };
            publish(event, relays)
        }
        kinds::NOTE => {
            let b: NoteBody = asked.body(r#"{"text": "...", "hashtags": ["..."]}"#)?;
            let tags: Vec<Tag> = b.hashtags.iter().map(Tag::hashtag).collect();
            publish(
                sign(EventBuilder::new(Kind::TextNote, b.text).tags(tags), keys)?,
                b.relays,
            )
        }
        kinds::REACTION => {
            let b: ReactionBody = asked.body(r#"{"event_id": "<id, default: the room>", "content": "+"}"#,
            )?;
            let target = match &b.event_id {
                Some(id) => event_id("`event_id`", id)?,
                None => event_id("the room", room)
                    .map_err(|e| e.hint("give `event_id` in the body or use a thread room"))?,
            };
            let author = match (&b.author, recent.get(&target.to_hex())) {
                (Some(a), _) => Some(pubkey("`author`", a)?),
                (None, Some((a, _))) => PublicKey::from_hex(a).ok(),
                (None, None) => None,
            };
            let mut tags = vec![Tag::event(target)];
            if let Some(a) = author {
                tags.push(Tag::public_key(a));
            }
            let content = b.content.unwrap_or_else(|| "+".to_string());
            publish(
                sign(EventBuilder::new(Kind::Reaction, content).tags(tags), keys)?,
                b.relays,
            )
        }
        kinds::RAW => {
            let b: RawBody = asked.body(r#"{"event": {<a signed event>}}"#)?;
            let event = Event::from_json(b.event.to_string())
                .map_err(|e| Refusal::invalid(format!("`event` is not a Nostr event: {e}")))?;
            event.verify().map_err(|_| {
                Refusal::invalid("`event`: its id or signature does not verify")
            })?;
            publish(Box::new(event), b.relays)
        }
        kinds::RELAYS => Ok(Request::Relays),
        kinds::RELAY_ADD => {
            let b: RawRelayFull = asked.body(r#"{"url": "wss://…", "read": true, "write": true}"#,
            )?;
            let url = b.url.trim().to_string();
            crate::config::check_relay_url(&url)
                .map_err(|e| Refusal::invalid(format!("`url`: {}", e.problem)))?;
            if !b.read && !b.write {
                return Err(Refusal::invalid(format!(
                    "{url} with read = false and write = false would do nothing; send relay-remove instead"
                )));
            }
            Ok(Request::AddRelay(RelayConfig {
                url,
                read: b.read,
                write: b.write,
            }))
        }
        kinds::RELAY_REMOVE => {
            let b: RelayRemoveBody = asked.body(r#"{"url": "wss://…"}"#)?;
            Ok(Request::RemoveRelay(b.url.trim().to_string()))
        }
        _ => Err(asked
            .unknown_kind(
                "the Nostr operator sends message, note, reaction and raw, and answers relays, relay-add and relay-remove",
            )
            .into()),
    }
}

/// A direct message to `peer` (the room `@<npub>` without its `@`): in
/// the scheme `encryption` names, else the scheme of the message it
/// answers (an older client that wrote NIP-04 reads only NIP-04), else
/// NIP-17.
fn direct(
    peer: &str,
    b: MessageBody,
    keys: &BotKeys,
    recent: &Recent,
) -> Result<Box<Event>, Refusal> {
    let to = pubkey("the room", peer)
        .map_err(|e| e.hint("a direct-message room is @ followed by the person's npub"))?;
    let reply_to = b
        .reply_to
        .as_deref()
        .map(|r| event_id("`reply_to`", r))
        .transpose()?;
    let encryption = b
        .encryption
        .or_else(|| reply_to.and_then(|r| recent.encryption(&r.to_hex())))
        .unwrap_or(Encryption::Nip17);
    Ok(Box::new(dm::make(keys, to, b.text, reply_to, encryption)?))
}

/// A reply in a thread (NIP-10 marked `e` tags, `p` tags of the people
/// answered). The room is the thread root's id, or an author's npub (then
/// `reply_to` names the note, which becomes the root).
fn reply(
    room: &str,
    b: MessageBody,
    keys: &BotKeys,
    recent: &Recent,
) -> Result<Box<Event>, Refusal> {
    let (root, reply_to, mut people) = if room.starts_with("npub1") {
        let author = pubkey("the room", room)?;
        let Some(reply_to) = &b.reply_to else {
            return Err(Refusal::invalid(
                "a `message` to an author's room needs `reply_to`: the id of the note to answer \
                 (or send a `note` for a top-level post)",
            ));
        };
        let reply_to = event_id("`reply_to`", reply_to)?;
        let root = recent
            .get(&reply_to.to_hex())
            .and_then(|(_, root)| root.as_deref())
            .and_then(|r| EventId::from_hex(r).ok())
            .unwrap_or(reply_to);
        (root, reply_to, vec![author])
    } else {
        let root = event_id("the room", room)
            .map_err(|e| e.hint("a thread room is the root event's id"))?;
        let reply_to = match &b.reply_to {
            Some(r) => event_id("`reply_to`", r)?,
            None => root,
        };
        (root, reply_to, Vec::new())
    };
    for id in [root, reply_to] {
        if let Some((author, _)) = recent.get(&id.to_hex()) {
            if let Ok(pk) = PublicKey::from_hex(author) {
                people.push(pk);
            }
        }
    }
    let tag = |id: EventId, marker: &str| {
        Tag::parse(["e", &id.to_hex(), "", marker]).map_err(|e| Refusal::invalid(e.to_string()))
    };
    let mut tags = vec![tag(root, "root")?];
    if reply_to != root {
        tags.push(tag(reply_to, "reply")?);
    }
    let me = keys.public_key();
    let mut seen = Vec::new();
    for p in people {
        if p != me && !seen.contains(&p) {
            seen.push(p);
            tags.push(Tag::public_key(p));
        }
    }
    sign(EventBuilder::new(Kind::TextNote, b.text).tags(tags), keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchboard_bus::proto::{ChatAddress, Envelope};

    fn keys() -> BotKeys {
        let c: crate::NostrConfig = serde_json::from_value(json!({
            "relays": ["ws://h:1"],
            "secret_key": "6b911fd37cdf5c81d4c0adb1ab7fa822ed253ab0ad9aa18d77257c88b29b718e"
        }))
        .unwrap();
        c.keys
    }

    fn delivery(room: &str, kind: &str, body: Value) -> Delivery {
        Delivery::new(
            ChatAddress::new("nostr", "main", room).send_subject(kind),
            Envelope::new("test", body),
        )
    }

    fn tags(r: Request) -> Vec<Vec<String>> {
        match r {
            Request::Publish { event, .. } => {
                event.tags.iter().map(|t| t.as_slice().to_vec()).collect()
            }
            other => panic!("not a publish: {other:?}"),
        }
    }

    #[test]
    fn a_reply_in_a_thread_has_root_and_reply_markers() {
        let root = "a".repeat(64);
        let other = "b".repeat(64);
        let r = request_for(
            &delivery(&root, "message", json!({"text": "hi", "reply_to": other})),
            "main",
            &keys(),
            &Recent::default(),
        )
        .unwrap();
        assert_eq!(
            tags(r),
            vec![
                vec!["e".to_string(), root.clone(), String::new(), "root".into()],
                vec!["e".to_string(), other, String::new(), "reply".into()],
            ]
        );
        let r = request_for(
            &delivery(&root, "message", json!({"text": "hi"})),
            "main",
            &keys(),
            &Recent::default(),
        )
        .unwrap();
        assert_eq!(tags(r).len(), 1);
    }

    #[test]
    fn a_plain_bot_reply_is_threaded_by_its_in_reply_to() {
        let k = keys();
        let note = EventBuilder::new(Kind::TextNote, "!ping")
            .finalize(k.keys())
            .unwrap();
        let mut recent = Recent::default();
        recent.insert(&note, Some("env-1"));
        let npub = nostr::prelude::ToBech32::to_bech32(&note.pubkey).unwrap();
        let d = Delivery::new(
            ChatAddress::new("nostr", "main", npub.as_str()).send_subject("message"),
            Envelope::new("pingbot", json!({"text": "pong"})).with_header("in-reply-to", "env-1"),
        );
        let t = tags(request_for(&d, "main", &k, &recent).unwrap());
        assert_eq!(
            t[0],
            vec![
                "e".to_string(),
                note.id.to_hex(),
                String::new(),
                "root".into()
            ]
        );
    }

    #[test]
    fn refusals_say_what_to_do() {
        let k = keys();
        let npub = nostr::prelude::ToBech32::to_bech32(&k.public_key()).unwrap();
        let e = request_for(
            &delivery(&npub, "message", json!({"text": "x"})),
            "main",
            &k,
            &Recent::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("reply_to"), "{e}");
        let e = request_for(
            &delivery("lobby", "message", json!({"text": "x"})),
            "main",
            &k,
            &Recent::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("root event"), "{e}");
        let e = request_for(
            &delivery("x", "wave", json!({})),
            "main",
            &k,
            &Recent::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown kind"), "{e}");
        let e = request_for(
            &delivery("x", "note", json!({"txt": "x"})),
            "main",
            &k,
            &Recent::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bad body"), "{e}");
        let e = request_for(
            &delivery("x", "note", json!({"text": "x"})),
            "other",
            &k,
            &Recent::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a send request"), "{e}");
    }

    #[test]
    fn raw_events_must_verify() {
        let k = keys();
        let ev = EventBuilder::new(Kind::TextNote, "x")
            .finalize(k.keys())
            .unwrap();
        let mut raw: Value = serde_json::from_str(&ev.as_json()).unwrap();
        assert!(matches!(
            request_for(
                &delivery("_", "raw", json!({"event": raw.clone()})),
                "main",
                &k,
                &Recent::default()
            ),
            Ok(Request::Publish { .. })
        ));
        raw["content"] = json!("tampered");
        let e = request_for(
            &delivery("_", "raw", json!({"event": raw})),
            "main",
            &k,
            &Recent::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("does not verify"), "{e}");
    }

    #[test]
    fn a_reaction_tags_the_event_and_its_author() {
        let target = "c".repeat(64);
        let author = keys().public_key().to_hex();
        let r = request_for(
            &delivery(&target, "reaction", json!({"author": author})),
            "main",
            &keys(),
            &Recent::default(),
        )
        .unwrap();
        let t = tags(r);
        assert_eq!(t[0][..2], ["e".to_string(), target]);
        assert_eq!(t[1][..2], ["p".to_string(), author]);
    }
}
