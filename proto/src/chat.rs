//! Common bodies for chat envelopes, shared by every protocol operator so
//! that a bot written once works on IRC, Nostr and Bluesky alike, and
//! [`ChatEvent`], the typed view of one chat event.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::envelope::{headers, Envelope, WireEnvelope};
use crate::subject::{escape_token, is_escape_of, unescape_at, Branch, ChatAddress, SubjectError};

/// The `<kind>` token of chat subjects (`chat.….<kind>`, `send.….<kind>`).
pub mod kinds {
    /// A normal message. Body: [`ChatMessage`](super::ChatMessage).
    pub const MESSAGE: &str = "message";
    /// An action (IRC `/me`). Body: [`ChatMessage`](super::ChatMessage).
    pub const ACTION: &str = "action";
    /// A notice (not to be answered automatically). Body:
    /// [`ChatMessage`](super::ChatMessage).
    pub const NOTICE: &str = "notice";
    /// Someone joined the room.
    pub const JOIN: &str = "join";
    /// Someone left the room.
    pub const PART: &str = "part";
    /// Someone left the network.
    pub const QUIT: &str = "quit";
    /// Someone changed their name.
    pub const NICK: &str = "nick";
    /// Someone was removed from the room.
    pub const KICK: &str = "kick";
    /// The room's topic changed.
    pub const TOPIC: &str = "topic";

    /// Every kind above.
    pub const ALL: &[&str] = &[MESSAGE, ACTION, NOTICE, JOIN, PART, QUIT, NICK, KICK, TOPIC];
}

/// What a protocol operator publishes for `message`, `action` and `notice`
/// events: enough for a bot to answer without knowing the protocol.
///
/// Protocol-specific details (an IRC hostmask, a Nostr event id) go in
/// [`ChatMessage::extra`], which keeps every field it does not know.
///
/// ```
/// use switchboard_proto::ChatMessage;
/// use serde_json::json;
///
/// let m: ChatMessage = serde_json::from_value(json!({
///     "text": "hi", "sender": "ferris", "room": "#rust", "host": "x.example"
/// }))?;
/// assert!(!m.private);
/// assert_eq!(m.extra["host"], "x.example");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The text, as received (formatting codes left as the protocol has
    /// them).
    pub text: String,
    /// Who sent it, as the protocol names them (nick, npub, handle).
    pub sender: String,
    /// The raw room name (`@peer` for a direct conversation).
    pub room: String,
    /// Whether it was a direct (private) message rather than one to a room.
    #[serde(default)]
    pub private: bool,
    /// Protocol-specific fields, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    /// A message with no protocol-specific fields; `private` is set when
    /// `room` starts with `@`.
    pub fn new(
        text: impl Into<String>,
        sender: impl Into<String>,
        room: impl Into<String>,
    ) -> ChatMessage {
        let room = room.into();
        ChatMessage {
            text: text.into(),
            sender: sender.into(),
            private: room.starts_with('@'),
            room,
            extra: Map::new(),
        }
    }
}

/// The body of a `send.….message|action|notice` request: what to say. The
/// room comes from the subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    /// The text to send; the operator splits it if the protocol needs.
    pub text: String,
}

impl SendRequest {
    /// A request to send `text`.
    pub fn new(text: impl Into<String>) -> SendRequest {
        SendRequest { text: text.into() }
    }
}

/// The reply to a send request: whether the operator sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResult {
    /// Whether the text was handed to the chat network.
    pub ok: bool,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SendResult {
    /// The text was sent.
    pub fn sent() -> SendResult {
        SendResult {
            ok: true,
            error: None,
        }
    }

    /// The text was not sent, because of `error`.
    pub fn failed(error: impl Into<String>) -> SendResult {
        SendResult {
            ok: false,
            error: Some(error.into()),
        }
    }
}

/// The body of `chat.….join`, `.part` and `.quit` events: someone arrived
/// in a room or left it (a `quit` is reported in each room the operator
/// shared with that person).
///
/// ```
/// use switchboard_proto::ChatPresence;
/// use serde_json::json;
///
/// let p: ChatPresence = serde_json::from_value(json!({
///     "sender": "ferris", "room": "#rust", "text": "see you", "host": "x.example"
/// }))?;
/// assert_eq!(p.text.as_deref(), Some("see you"));
/// assert_eq!(p.extra["host"], "x.example");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatPresence {
    /// Who joined or left, as the protocol names them.
    pub sender: String,
    /// The raw room name.
    pub room: String,
    /// The reason given when leaving (a part or quit message), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Protocol-specific fields, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The body of `chat.….nick` events: someone changed their name (reported
/// in each room the operator shares with them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRename {
    /// The old name.
    pub sender: String,
    /// The raw room name.
    pub room: String,
    /// The new name.
    pub new_name: String,
    /// Protocol-specific fields, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The body of `chat.….kick` events: someone was removed from a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatKick {
    /// Who removed them.
    pub sender: String,
    /// The raw room name.
    pub room: String,
    /// Who was removed.
    pub target: String,
    /// The reason given, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Protocol-specific fields, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The body of `chat.….topic` events: a room's topic was changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatTopic {
    /// Who changed it.
    pub sender: String,
    /// The raw room name.
    pub room: String,
    /// The new topic (empty when it was cleared).
    pub text: String,
    /// Protocol-specific fields, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A chat event (an envelope on `chat.<protocol>.<instance>.<room>.<kind>`)
/// seen as what a bot wants: where, who, what. Nothing is copied: the
/// view borrows the subject and the envelope (body included), and names
/// are unescaped only when they contain escapes.
///
/// - [`room`](ChatEvent::room) is the raw room: the
///   [`room` header](crate::headers::ROOM) when it agrees with the subject
///   (checked without allocating), else the subject's room token,
///   unescaped. The subject wins a disagreement: it is where the event was
///   routed, and where a reply goes.
/// - [`sender`](ChatEvent::sender) and [`text`](ChatEvent::text) come from
///   the body. Every chat body has a `sender` (see "Chat bodies" in
///   docs/PROTOCOL.md); `text` is empty when the body has none (a join).
///   Other fields: [`field`](ChatEvent::field), or the whole body typed
///   with [`body_as`](ChatEvent::body_as).
///
/// ```
/// use serde_json::json;
/// use switchboard_proto::{headers, ChatEvent, Envelope};
///
/// let subject = "chat.irc.libera.=23rust.message";
/// let env = Envelope::new("irc-libera", json!({"text": "!ping", "sender": "ferris", "room": "#rust"}))
///     .with_header(headers::ROOM, "#rust");
///
/// let chat = ChatEvent::parse(subject, &env)?;
/// assert_eq!((chat.protocol(), chat.instance(), chat.room()), ("irc", "libera", "#rust"));
/// assert_eq!((chat.kind(), chat.sender(), chat.text()), ("message", "ferris", "!ping"));
///
/// // The answer goes back where the event came from:
/// assert_eq!(chat.reply_subject("message"), "send.irc.libera.=23rust.message");
/// let reply = chat.reply_envelope("pingbot", "pong");
/// assert_eq!(reply.header(headers::IN_REPLY_TO), env.id());
/// assert_eq!(reply.header(headers::ROOM), Some("#rust"));
/// assert_eq!(reply.body, json!({"text": "pong"}));
/// # Ok::<(), switchboard_proto::ChatEventError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ChatEvent<'a> {
    subject: &'a str,
    envelope: Backing<'a>,
    protocol: Cow<'a, str>,
    instance: Cow<'a, str>,
    room: Cow<'a, str>,
    kind: Cow<'a, str>,
    /// `<protocol>.<instance>.<room>` as escaped in the subject.
    place: &'a str,
    sender: Cow<'a, str>,
    text: Cow<'a, str>,
    /// The body's `private`, when it is a boolean.
    private: Option<bool>,
}

/// The envelope a [`ChatEvent`] reads: an owned one, or a received one
/// whose body is read without building a `Value` tree.
#[derive(Debug, Clone, Copy)]
enum Backing<'a> {
    Owned(&'a Envelope),
    Wire(&'a WireEnvelope),
}

impl<'a> Backing<'a> {
    fn header(self, name: &str) -> Option<&'a str> {
        match self {
            Backing::Owned(e) => e.header(name),
            Backing::Wire(w) => w.header(name),
        }
    }

    fn envelope(self) -> &'a Envelope {
        match self {
            Backing::Owned(e) => e,
            Backing::Wire(w) => w.envelope(),
        }
    }
}

/// A body field a chat event reads, as found: a string (borrowed from the
/// payload when it has no escapes), a boolean, null, or another JSON type.
enum Field<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Null,
    Other(&'static str),
}

impl<'a> Field<'a> {
    fn type_name(&self) -> &'static str {
        match self {
            Field::Str(_) => "string",
            Field::Bool(_) => "boolean",
            Field::Null => "null",
            Field::Other(found) => found,
        }
    }

    fn from_value(value: &'a Value) -> Field<'a> {
        match value {
            Value::String(s) => Field::Str(Cow::Borrowed(s)),
            Value::Bool(b) => Field::Bool(*b),
            Value::Null => Field::Null,
            other => Field::Other(crate::json::type_name(other)),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor(std::marker::PhantomData))
    }
}

struct FieldVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> serde::de::Visitor<'de> for FieldVisitor<'a> {
    type Value = Field<'a>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Field<'a>, E> {
        Ok(Field::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Field<'a>, E> {
        Ok(Field::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_bool<E>(self, b: bool) -> Result<Field<'a>, E> {
        Ok(Field::Bool(b))
    }
    fn visit_unit<E>(self) -> Result<Field<'a>, E> {
        Ok(Field::Null)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Field<'a>, E> {
        Ok(Field::Other("number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Field<'a>, E> {
        Ok(Field::Other("number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Field<'a>, E> {
        Ok(Field::Other("number"))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'a>, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Field::Other("array"))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Field<'a>, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Field::Other("object"))
    }
}

/// What a chat event needs of a body: `sender`, `text` and `private` of an
/// object (the last of a repeated key, as in a `Value` map), or the JSON
/// type of a body that is not an object.
enum ChatBody<'a> {
    Object {
        sender: Option<Field<'a>>,
        text: Option<Field<'a>>,
        private: Option<Field<'a>>,
    },
    Not(&'static str),
}

/// An object key, borrowed when it has no escapes.
#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for ChatBody<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ChatBodyVisitor(std::marker::PhantomData))
    }
}

struct ChatBodyVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> serde::de::Visitor<'de> for ChatBodyVisitor<'a> {
    type Value = ChatBody<'a>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a chat body")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ChatBody<'a>, A::Error> {
        let (mut sender, mut text, mut private) = (None, None, None);
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let slot = match key.as_ref() {
                "sender" => &mut sender,
                "text" => &mut text,
                "private" => &mut private,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<Field<'a>>()?);
        }
        Ok(ChatBody::Object {
            sender,
            text,
            private,
        })
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<ChatBody<'a>, A::Error> {
        FieldVisitor(std::marker::PhantomData)
            .visit_seq(seq)
            .map(|_| ChatBody::Not("array"))
    }
    fn visit_str<E>(self, _: &str) -> Result<ChatBody<'a>, E> {
        Ok(ChatBody::Not("string"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<ChatBody<'a>, E> {
        Ok(ChatBody::Not("boolean"))
    }
    fn visit_unit<E>(self) -> Result<ChatBody<'a>, E> {
        Ok(ChatBody::Not("null"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<ChatBody<'a>, E> {
        Ok(ChatBody::Not("number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<ChatBody<'a>, E> {
        Ok(ChatBody::Not("number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<ChatBody<'a>, E> {
        Ok(ChatBody::Not("number"))
    }
}

impl<'a> ChatBody<'a> {
    fn from_value(body: &'a Value) -> ChatBody<'a> {
        match body {
            Value::Object(map) => ChatBody::Object {
                sender: map.get("sender").map(Field::from_value),
                text: map.get("text").map(Field::from_value),
                private: map.get("private").map(Field::from_value),
            },
            other => ChatBody::Not(crate::json::type_name(other)),
        }
    }
}

/// Why a delivery is not a [`ChatEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChatEventError {
    /// The subject is not a chat subject.
    #[error("`{subject}` is not a chat event subject: {source}")]
    Subject {
        /// The subject (shortened when long).
        subject: String,
        /// Why it does not parse.
        source: SubjectError,
    },
    /// The subject is a `send.…` request, not a `chat.…` event: answering
    /// it would ask the protocol operator to send again.
    #[error(
        "`{subject}` is a send request, not a chat event; chat events are on \
         chat.<protocol>.<instance>.<room>.<kind>"
    )]
    SendRequest {
        /// The subject (shortened when long).
        subject: String,
    },
    /// The body is not a chat body.
    #[error(
        "the body of the chat event on `{subject}` {problem}; chat bodies are JSON \
         objects with a string `sender` (docs/PROTOCOL.md, \"Chat bodies\")"
    )]
    Body {
        /// The subject (shortened when long).
        subject: String,
        /// What is wrong, e.g. ``has no `sender` string``.
        problem: String,
    },
}

crate::error_kinds::error_kinds! {
    /// What kind of [`ChatEventError`] it is.
    ChatEventError => ChatEventErrorKind { Subject, SendRequest, Body }
}

impl<'a> ChatEvent<'a> {
    /// The chat event that `envelope`, received on `subject`, is.
    ///
    /// # Errors
    ///
    /// [`ChatEventError`]: the subject is not a chat subject, or is a
    /// `send.…` request; the body is not a JSON object, has no string
    /// `sender`, or has a `text` that is not a string.
    pub fn parse(
        subject: &'a str,
        envelope: &'a Envelope,
    ) -> Result<ChatEvent<'a>, ChatEventError> {
        ChatEvent::build(subject, Backing::Owned(envelope))
    }

    /// [`ChatEvent::parse`] for a received envelope: the body's `sender`,
    /// `text` and `private` are read straight from its JSON text (borrowed
    /// when they have no escapes), without building a `Value` tree.
    ///
    /// # Errors
    ///
    /// As [`ChatEvent::parse`].
    pub fn parse_wire(
        subject: &'a str,
        envelope: &'a WireEnvelope,
    ) -> Result<ChatEvent<'a>, ChatEventError> {
        ChatEvent::build(subject, Backing::Wire(envelope))
    }

    fn build(subject: &'a str, envelope: Backing<'a>) -> Result<ChatEvent<'a>, ChatEventError> {
        let bad_subject = |source| ChatEventError::Subject {
            subject: crate::json::excerpt(subject),
            source,
        };
        let t = crate::subject::chat::ChatTokens::split(subject).map_err(bad_subject)?;
        if t.branch != Branch::Chat {
            return Err(ChatEventError::SendRequest {
                subject: crate::json::excerpt(subject),
            });
        }
        let protocol = unescape_at(2, t.protocol).map_err(bad_subject)?;
        let instance = unescape_at(3, t.instance).map_err(bad_subject)?;
        let room = match envelope.header(headers::ROOM) {
            Some(raw) if is_escape_of(t.room, raw) => Cow::Borrowed(raw),
            _ => unescape_at(4, t.room).map_err(bad_subject)?,
        };
        let kind = unescape_at(5, t.kind).map_err(bad_subject)?;

        let bad_body = |problem: String| ChatEventError::Body {
            subject: crate::json::excerpt(subject),
            problem,
        };
        let body = match envelope {
            Backing::Owned(e) => ChatBody::from_value(&e.body),
            Backing::Wire(w) => serde_json::from_str::<ChatBody<'a>>(w.body_json())
                .map_err(|e| bad_body(format!("is not valid JSON ({e})")))?,
        };
        let (sender, text, private) = match body {
            ChatBody::Object {
                sender,
                text,
                private,
            } => (sender, text, private),
            ChatBody::Not(found) => {
                return Err(bad_body(format!("is a JSON {found}, not an object")));
            }
        };
        let sender = match sender {
            Some(Field::Str(s)) => s,
            Some(other) => {
                return Err(bad_body(format!(
                    "has a `sender` that is a JSON {}, not a string",
                    other.type_name()
                )))
            }
            None => return Err(bad_body("has no `sender` string".to_owned())),
        };
        let text = match text {
            Some(Field::Str(s)) => s,
            None | Some(Field::Null) => Cow::Borrowed(""),
            Some(other) => {
                return Err(bad_body(format!(
                    "has a `text` that is a JSON {}, not a string",
                    other.type_name()
                )))
            }
        };
        let private = match private {
            Some(Field::Bool(b)) => Some(b),
            _ => None,
        };
        Ok(ChatEvent {
            subject,
            envelope,
            protocol,
            instance,
            room,
            kind,
            place: t.place,
            sender,
            text,
            private,
        })
    }

    /// The protocol, e.g. `irc`.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// The instance (network or account), e.g. `libera`.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The raw room, e.g. `#rust.beginners`, or `@peer` for a direct
    /// conversation.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The kind, e.g. [`kinds::MESSAGE`].
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Who it came from, as the protocol names them (nick, npub, handle).
    pub fn sender(&self) -> &str {
        &self.sender
    }

    /// The text (empty when the body has none).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether it happened in a direct conversation: the body's `private`
    /// when it is a boolean, else whether the room starts with `@`.
    pub fn is_private(&self) -> bool {
        match self.private {
            Some(private) => private,
            None => self.room.starts_with(ChatAddress::DIRECT_PREFIX),
        }
    }

    /// The subject it arrived on.
    pub fn subject(&self) -> &'a str {
        self.subject
    }

    /// The whole envelope (for a received one, built on first use).
    pub fn envelope(&self) -> &'a Envelope {
        self.envelope.envelope()
    }

    /// The body as it came, as a JSON `Value` (for a received envelope,
    /// built on first use; [`body_as`](ChatEvent::body_as) reads it
    /// without the tree).
    pub fn body(&self) -> &'a Value {
        &self.envelope().body
    }

    /// One field of the body (protocol-specific ones included), e.g.
    /// `host` from IRC.
    pub fn field(&self, name: &str) -> Option<&'a Value> {
        self.body().get(name)
    }

    /// The body as a typed value, e.g. [`ChatMessage`] or a struct of
    /// borrowed `&str` fields (no copy then). For a received envelope it
    /// is decoded straight from the JSON text; a borrowed `&str` field
    /// whose text has escapes is read from the `Value` tree instead.
    ///
    /// # Errors
    ///
    /// serde's error when the body does not fit `T`.
    pub fn body_as<T: Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        match self.envelope {
            Backing::Owned(e) => T::deserialize(&e.body),
            Backing::Wire(w) => w
                .body_as()
                .or_else(|first| T::deserialize(&w.envelope().body).map_err(|_| first)),
        }
    }

    /// Protocol, instance and room as an owned address, e.g. to keep it
    /// and send there later.
    pub fn address(&self) -> ChatAddress {
        ChatAddress::new(
            self.protocol.as_ref(),
            self.instance.as_ref(),
            self.room.as_ref(),
        )
    }

    /// `send.<protocol>.<instance>.<room>.<kind>`: where to ask the
    /// protocol operator to send `kind` into this event's room. The tokens
    /// are the subject's own (no unescaping and escaping again).
    pub fn reply_subject(&self, kind: &str) -> String {
        let kind = escape_token(kind);
        let mut out = String::with_capacity(6 + self.place.len() + kind.len());
        out.push_str(Branch::Send.as_str());
        out.push('.');
        out.push_str(self.place);
        out.push('.');
        out.push_str(&kind);
        out
    }

    /// The envelope that answers this event with `text` (a
    /// [`SendRequest`] body): from `source`, with a fresh id and time,
    /// [`in-reply-to`](crate::headers::IN_REPLY_TO) this event's id, and
    /// the raw [`room`](crate::headers::ROOM). Publish it on
    /// [`reply_subject`](ChatEvent::reply_subject).
    pub fn reply_envelope(&self, source: &str, text: impl Into<String>) -> Envelope {
        let mut body = Map::with_capacity(1);
        body.insert("text".to_owned(), Value::String(text.into()));
        let reply = Envelope::new(source, Value::Object(body));
        let reply = match self.envelope.header(headers::ID) {
            Some(id) => reply.with_header(headers::IN_REPLY_TO, id),
            None => reply,
        };
        reply.with_header(headers::ROOM, self.room.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(body: Value) -> Envelope {
        Envelope::new("irc-libera", body)
    }

    #[test]
    fn room_from_the_header_when_it_agrees() {
        let e = env(json!({"sender": "a", "text": "hi"})).with_header(headers::ROOM, "#a.b");
        let chat = ChatEvent::parse("chat.irc.x.=23a=2Eb.message", &e).expect("chat");
        assert!(matches!(chat.room, Cow::Borrowed(_)));
        assert_eq!(chat.room(), "#a.b");
        assert!(matches!(chat.protocol, Cow::Borrowed(_)));
        // A header that disagrees with the subject loses.
        let e = env(json!({"sender": "a"})).with_header(headers::ROOM, "#elsewhere");
        let chat = ChatEvent::parse("chat.irc.x.=23a=2Eb.join", &e).expect("chat");
        assert_eq!(chat.room(), "#a.b");
        assert_eq!(chat.text(), "");
        // No header: unescaped from the subject.
        let e = env(json!({"sender": "a", "private": true}));
        let chat = ChatEvent::parse("chat.irc.x.=40a.message", &e).expect("chat");
        assert_eq!(chat.room(), "@a");
        assert!(chat.is_private());
        assert_eq!(chat.address(), ChatAddress::direct("irc", "x", "a"));
    }

    #[test]
    fn not_chat_events() {
        let ok = env(json!({"sender": "a"}));
        let kind =
            |subject: &str, e: &Envelope| ChatEvent::parse(subject, e).expect_err(subject).kind();
        assert_eq!(kind("chat.a.b.c", &ok), ChatEventErrorKind::Subject);
        assert_eq!(kind("chat.a.b.=2e.d", &ok), ChatEventErrorKind::Subject);
        assert_eq!(kind("send.a.b.c.d", &ok), ChatEventErrorKind::SendRequest);
        for (body, problem) in [
            (json!("hi"), "is a JSON string, not an object"),
            (json!({}), "has no `sender` string"),
            (json!({"sender": 1}), "`sender` that is a JSON number"),
            (
                json!({"sender": "a", "text": []}),
                "`text` that is a JSON array",
            ),
        ] {
            let e = env(body);
            let err = ChatEvent::parse("chat.a.b.c.d", &e).expect_err("bad body");
            assert_eq!(err.kind(), ChatEventErrorKind::Body);
            assert!(err.to_string().contains(problem), "{err}");
        }
        let err = ChatEvent::parse("chat.a", &ok).expect_err("short");
        let source = std::error::Error::source(&err).expect("has a source");
        assert!(source.to_string().contains("has 2 tokens"), "{source}");
    }

    #[test]
    fn typed_bodies_borrow() {
        #[derive(Deserialize)]
        struct Borrowed<'a> {
            host: &'a str,
        }
        let e = env(json!({"sender": "a", "text": "t", "room": "#r", "host": "h.example"}));
        let chat = ChatEvent::parse("chat.irc.x.=23r.message", &e).expect("chat");
        assert_eq!(
            chat.body_as::<Borrowed<'_>>().expect("fits").host,
            "h.example"
        );
        let m: ChatMessage = chat.body_as().expect("a ChatMessage");
        assert_eq!(m.extra["host"], "h.example");
        assert_eq!(chat.field("host"), Some(&json!("h.example")));
        assert_eq!(chat.subject(), "chat.irc.x.=23r.message");
        assert_eq!(chat.envelope(), &e);
    }

    #[test]
    fn received_envelopes_read_the_same() {
        let bodies = [
            json!({"sender": "a", "text": "hi \"there\"\n", "private": true, "x": [1, {"y": 2}]}),
            json!({"sender": "s\u{e9}", "text": null}),
            json!({"sender": "a", "private": "yes"}),
            json!({"sender": 1}),
            json!({"sender": "a", "text": []}),
            json!({"text": "t"}),
            json!("hi"),
            json!([1]),
            json!(null),
            json!(2.5),
            json!(true),
        ];
        for body in bodies {
            let owned = env(body.clone()).with_header(headers::ROOM, "#r");
            let wire = WireEnvelope::parse(owned.to_vec().into()).expect("valid envelope");
            for subject in ["chat.irc.x.=23r.message", "chat.irc.x.=40a.join"] {
                let a = ChatEvent::parse(subject, &owned);
                let b = ChatEvent::parse_wire(subject, &wire);
                match (a, b) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(
                            (a.sender(), a.text(), a.room(), a.is_private()),
                            (b.sender(), b.text(), b.room(), b.is_private()),
                            "{body}"
                        );
                        assert_eq!(a.reply_subject("message"), b.reply_subject("message"));
                        assert_eq!(b.body(), &body);
                        let r = b.reply_envelope("bot", "ok");
                        assert_eq!(r.header(headers::IN_REPLY_TO), owned.id());
                        let m: Result<ChatMessage, _> = b.body_as();
                        assert_eq!(m.is_ok(), a.body_as::<ChatMessage>().is_ok());
                    }
                    (Err(a), Err(b)) => assert_eq!(a, b, "{body}"),
                    (a, b) => panic!("{body}: owned {a:?}, wire {b:?}"),
                }
            }
        }
    }

    #[test]
    fn replies() {
        let e = env(json!({"sender": "a", "text": "t"}));
        let chat = ChatEvent::parse("chat.irc.x.=3D.action", &e).expect("chat");
        assert_eq!(chat.reply_subject("message"), "send.irc.x.=3D.message");
        let r = chat.reply_envelope("bot", "ok");
        assert_eq!(r.source, "bot");
        assert_ne!(r.id(), e.id());
        assert_eq!(r.header(headers::IN_REPLY_TO), e.id());
        assert_eq!(r.header(headers::ROOM), Some("="));
        assert_eq!(r.body, json!({"text": "ok"}));
        let s: SendRequest = serde_json::from_value(r.body).expect("a SendRequest");
        assert_eq!(s.text, "ok");
    }
}
