//! Direct messages: NIP-17 private messages (a kind-14 rumor, sealed with
//! NIP-44 and gift-wrapped with NIP-59) both ways, and NIP-04 (kind 4)
//! for older clients. They arrive on the private room `@<npub>` of the
//! sender, and a message sent to that room (a bot's `ctx.reply` among
//! them) goes back privately, in the scheme the conversation used.
//!
//! The cryptography is the `nostr` crate's (features `nip04`, `nip59`):
//! [`UnwrappedGift::from_gift_wrap`] checks the wrap's signature, opens
//! the seal, checks the seal's signature and that the rumor's author is
//! the seal's signer, so the sender we publish is authenticated. What is
//! ours is which events are direct messages, the room, the body, and the
//! look-back: NIP-59 stamps a gift wrap up to two days in the past (so
//! relays cannot tell when it was sent), which a `since` filter would
//! miss; the subscription asks [`LOOKBACK`] further back and the resume
//! state recognises what comes again by id.

use nostr::nips::nip17::PrivateDirectMessageBuilder;
use nostr::nips::nip59::UnwrappedGift;
use nostr::prelude::{
    Event, EventBuilder, EventId, FinalizeEvent, Kind, Nip04, PublicKey, Tag, ToBech32,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_bus::proto::{headers, ChatAddress, Envelope};

use crate::config::{BotKeys, SubscriptionConfig};
use crate::inbound::{EVENT_ID_HEADER, RELAYS_HEADER};

/// The built-in subscription's name (its id on the wire and its resume
/// key).
pub const SUBSCRIPTION: &str = "direct-messages";

/// How far before the resume point the subscription asks: the two days
/// NIP-59 allows a gift wrap's `created_at` to lie, and an hour more for
/// clocks.
pub const LOOKBACK: u64 = 2 * 24 * 3600 + 3600;

/// Kind of a NIP-59 gift wrap.
const GIFT_WRAP: u16 = 1059;
/// Kind of a NIP-04 message.
const NIP04: u16 = 4;

/// How a direct message was (or is to be) encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    /// NIP-17: NIP-44 inside a NIP-59 gift wrap (private sender, private
    /// time).
    Nip17,
    /// NIP-04: kind 4, AES-CBC; sender, receiver and time are public.
    Nip04,
}

/// Why a direct message could not be opened or made.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    /// The gift wrap, its seal or the NIP-04 content did not decrypt or
    /// verify (not for us, tampered, or a rumor whose author is not the
    /// seal's signer).
    #[error("cannot open the direct message: {0}")]
    Open(#[source] nostr::error::Error),
    /// The rumor inside is not a kind-14 chat message.
    #[error("the gift wrap holds a kind-{0} rumor, not a kind-14 message")]
    NotAMessage(u16),
    /// Encrypting or signing failed.
    #[error("cannot make the direct message: {0}")]
    Make(#[source] nostr::error::Error),
}

switchboard_bus::proto::error_kinds!(
    /// What kind of [`DmError`] this is.
    DmError => DmErrorKind { Open, NotAMessage, Make }
);

/// The built-in subscription: gift wraps (and NIP-04 messages with
/// `nip04`) tagged with the bot's key.
pub fn subscription(me: PublicKey, nip04: bool) -> SubscriptionConfig {
    let mut kinds = vec![GIFT_WRAP];
    if nip04 {
        kinds.insert(0, NIP04);
    }
    SubscriptionConfig {
        name: SUBSCRIPTION.to_string(),
        kinds,
        authors: Vec::new(),
        mentions: vec![me],
        hashtags: Vec::new(),
        since: None,
        limit: None,
        lookback: LOOKBACK,
    }
}

/// Whether `event` is a direct message to `me` (a gift wrap or NIP-04
/// message with `me` in a `p` tag).
pub fn is_for(event: &Event, me: &PublicKey) -> bool {
    let kind = event.kind.as_u16();
    (kind == GIFT_WRAP || kind == NIP04) && event.tags.public_keys().any(|p| p == *me)
}

/// A direct message, opened.
#[derive(Debug, Clone)]
pub struct Opened {
    /// Who wrote it (the seal's signer, or the NIP-04 event's author).
    pub sender: PublicKey,
    /// The message's id: the rumor's (NIP-17 replies name it), or the
    /// kind-4 event's.
    pub id: EventId,
    /// The relay event that carried it (the gift wrap, or the kind-4
    /// event itself).
    pub carrier: EventId,
    /// 14 or 4.
    pub kind: u16,
    /// The text.
    pub text: String,
    /// The message's tags (the rumor's, or the kind-4 event's).
    pub tags: Vec<Vec<String>>,
    /// When the sender says it was written (the rumor's time, not the
    /// wrap's made-up one).
    pub created_at: u64,
    /// The scheme.
    pub encryption: Encryption,
}

impl Opened {
    /// The message it answers: its first `e` tag.
    pub fn reply_to(&self) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.len() >= 2 && t[0] == "e")
            .map(|t| t[1].as_str())
    }
}

/// Opens `event` (already verified, and [`is_for`] the bot) with the
/// bot's keys.
pub fn open(event: &Event, keys: &BotKeys) -> Result<Opened, DmError> {
    let tags = |t: &nostr::prelude::Tags| -> Vec<Vec<String>> {
        t.iter().map(|t| t.as_slice().to_vec()).collect()
    };
    if event.kind.as_u16() == NIP04 {
        let text = keys
            .keys()
            .nip04_decrypt(&event.pubkey, &event.content)
            .map_err(DmError::Open)?;
        return Ok(Opened {
            sender: event.pubkey,
            id: event.id,
            carrier: event.id,
            kind: NIP04,
            text,
            tags: tags(&event.tags),
            created_at: event.created_at.as_secs(),
            encryption: Encryption::Nip04,
        });
    }
    let gift = UnwrappedGift::from_gift_wrap(keys.keys(), event).map_err(DmError::Open)?;
    let mut rumor = gift.rumor;
    if rumor.kind != Kind::PrivateDirectMessage {
        return Err(DmError::NotAMessage(rumor.kind.as_u16()));
    }
    rumor.ensure_id();
    Ok(Opened {
        sender: gift.sender,
        id: rumor.id.unwrap_or_else(|| rumor.compute_id()),
        carrier: event.id,
        kind: rumor.kind.as_u16(),
        text: rumor.content.clone(),
        tags: tags(&rumor.tags),
        created_at: rumor.created_at.as_secs(),
        encryption: Encryption::Nip17,
    })
}

/// A direct message from the bot to `to`, answering message `reply_to`
/// when given: a gift wrap for NIP-17 (only to `to`: the bot keeps no
/// copy of its own messages on the relays), a kind-4 event for NIP-04.
pub fn make(
    keys: &BotKeys,
    to: PublicKey,
    text: String,
    reply_to: Option<EventId>,
    encryption: Encryption,
) -> Result<Event, DmError> {
    let reply: Vec<Tag> = reply_to.into_iter().map(Tag::event).collect();
    match encryption {
        Encryption::Nip17 => PrivateDirectMessageBuilder::new(to, text)
            .rumor_extra_tags(reply)
            .finalize(keys.keys())
            .map_err(DmError::Make),
        Encryption::Nip04 => {
            let content = keys
                .keys()
                .nip04_encrypt(&to, &text)
                .map_err(DmError::Make)?;
            EventBuilder::new(Kind::EncryptedDirectMessage, content)
                .tag(Tag::public_key(to))
                .tags(reply)
                .finalize(keys.keys())
                .map_err(DmError::Make)
        }
    }
}

/// The room of a conversation with `peer`: `@<npub>`.
pub fn room(peer: &PublicKey) -> String {
    format!("@{}", npub(peer))
}

fn npub(key: &PublicKey) -> String {
    key.to_bech32().unwrap_or_else(|_| key.to_hex())
}

/// The body of a direct message on the bus (PROTOCOL.md, "Nostr
/// operator", direct messages).
#[derive(Debug, Serialize)]
pub struct DmBody {
    /// The text (decrypted).
    pub text: String,
    /// The sender's npub.
    pub sender: String,
    /// `@<npub>` of the sender.
    pub room: String,
    /// Always `true`.
    pub private: bool,
    /// The message id (the rumor's for NIP-17).
    pub id: String,
    /// The sender, hex.
    pub pubkey: String,
    /// The sender, NIP-19.
    pub npub: String,
    /// 14 (NIP-17) or 4 (NIP-04).
    pub kind: u16,
    /// `nip17` or `nip04`.
    pub encryption: Encryption,
    /// The message's tags.
    pub tags: Vec<Vec<String>>,
    /// When the sender wrote it (unix seconds).
    pub created_at: u64,
    /// The message it answers (its first `e` tag).
    pub reply_to: Option<String>,
    /// The relay event that carried it (the gift wrap's id for NIP-17).
    pub carrier: String,
    /// Relays that carried it.
    pub relays: Vec<String>,
}

/// Subject and envelope of an opened direct message:
/// `chat.nostr.<instance>.@<npub>.message`.
pub fn envelope(
    dm: &Opened,
    instance: &str,
    source: &str,
    relays: &[String],
) -> (String, Envelope) {
    let npub = npub(&dm.sender);
    let room = room(&dm.sender);
    let body = DmBody {
        text: dm.text.clone(),
        sender: npub.clone(),
        room: room.clone(),
        private: true,
        id: dm.id.to_hex(),
        pubkey: dm.sender.to_hex(),
        npub: npub.clone(),
        kind: dm.kind,
        encryption: dm.encryption,
        tags: dm.tags.clone(),
        created_at: dm.created_at,
        reply_to: dm.reply_to().map(str::to_string),
        carrier: dm.carrier.to_hex(),
        relays: relays.to_vec(),
    };
    let subject = ChatAddress::direct("nostr", instance, &npub).event_subject("message");
    let body = serde_json::to_value(&body).unwrap_or(Value::Null);
    let env = Envelope::new(source, body)
        .with_header(headers::ROOM, room)
        .with_header(RELAYS_HEADER, relays.join(","))
        .with_header(EVENT_ID_HEADER, dm.carrier.to_hex());
    (subject, env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::prelude::Keys;

    fn bot() -> BotKeys {
        let c: crate::NostrConfig = serde_json::from_value(serde_json::json!({
            "relays": ["ws://h:1"],
            "secret_key": "6b911fd37cdf5c81d4c0adb1ab7fa822ed253ab0ad9aa18d77257c88b29b718e"
        }))
        .unwrap();
        c.keys
    }

    fn as_bot(keys: &Keys) -> BotKeys {
        let c: crate::NostrConfig = serde_json::from_value(serde_json::json!({
            "relays": ["ws://h:1"],
            "secret_key": keys.secret_key().to_secret_hex()
        }))
        .unwrap();
        c.keys
    }

    #[test]
    fn both_schemes_round_trip_and_name_the_sender() {
        let alice = Keys::generate();
        let bot = bot();
        for enc in [Encryption::Nip17, Encryption::Nip04] {
            let wrap = make(
                &as_bot(&alice),
                bot.public_key(),
                "psst".to_string(),
                None,
                enc,
            )
            .unwrap();
            assert!(is_for(&wrap, &bot.public_key()));
            assert!(!wrap.content.contains("psst"));
            let dm = open(&wrap, &bot).unwrap();
            assert_eq!(dm.text, "psst");
            assert_eq!(dm.sender, alice.public_key());
            assert_eq!(dm.encryption, enc);
            let (subject, env) = envelope(&dm, "main", "nostr-main", &["ws://r".into()]);
            assert!(subject.starts_with("chat.nostr.main.=40npub1"), "{subject}");
            assert_eq!(env.body["private"], true);
            assert_eq!(env.body["text"], "psst");
        }
    }

    #[test]
    fn a_wrap_for_someone_else_does_not_open() {
        let alice = Keys::generate();
        let carol = Keys::generate();
        let wrap = make(
            &as_bot(&alice),
            carol.public_key(),
            "not yours".to_string(),
            None,
            Encryption::Nip17,
        )
        .unwrap();
        let bot = bot();
        assert!(!is_for(&wrap, &bot.public_key()));
        assert_eq!(open(&wrap, &bot).unwrap_err().kind(), DmErrorKind::Open);
    }

    #[test]
    fn a_reply_names_the_message_it_answers() {
        let bot = bot();
        let alice = Keys::generate();
        let first = EventId::from_byte_array([7; 32]);
        let wrap = make(
            &bot,
            alice.public_key(),
            "pong".to_string(),
            Some(first),
            Encryption::Nip17,
        )
        .unwrap();
        let dm = open(&wrap, &as_bot(&alice)).unwrap();
        assert_eq!(dm.reply_to(), Some(first.to_hex().as_str()));
        assert_eq!(dm.sender, bot.public_key());
    }
}
