//! Common bodies for chat envelopes, shared by every protocol operator so
//! that a bot written once works on IRC, Nostr and Bluesky alike, and
//! [`ChatEvent`], the typed view of one chat event.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::envelope::{headers, Envelope};
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
    envelope: &'a Envelope,
    protocol: Cow<'a, str>,
    instance: Cow<'a, str>,
    room: Cow<'a, str>,
    kind: Cow<'a, str>,
    /// `<protocol>.<instance>.<room>` as escaped in the subject.
    place: &'a str,
    sender: &'a str,
    text: &'a str,
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
        let Value::Object(body) = &envelope.body else {
            return Err(bad_body(format!(
                "is a JSON {}, not an object",
                crate::json::type_name(&envelope.body)
            )));
        };
        let sender = match body.get("sender") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(bad_body(format!(
                    "has a `sender` that is a JSON {}, not a string",
                    crate::json::type_name(other)
                )))
            }
            None => return Err(bad_body("has no `sender` string".to_owned())),
        };
        let text = match body.get("text") {
            Some(Value::String(s)) => s.as_str(),
            None | Some(Value::Null) => "",
            Some(other) => {
                return Err(bad_body(format!(
                    "has a `text` that is a JSON {}, not a string",
                    crate::json::type_name(other)
                )))
            }
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
    pub fn sender(&self) -> &'a str {
        self.sender
    }

    /// The text (empty when the body has none).
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Whether it happened in a direct conversation: the body's `private`
    /// when it is a boolean, else whether the room starts with `@`.
    pub fn is_private(&self) -> bool {
        match self.envelope.body.get("private") {
            Some(Value::Bool(private)) => *private,
            _ => self.room.starts_with(ChatAddress::DIRECT_PREFIX),
        }
    }

    /// The subject it arrived on.
    pub fn subject(&self) -> &'a str {
        self.subject
    }

    /// The whole envelope.
    pub fn envelope(&self) -> &'a Envelope {
        self.envelope
    }

    /// The body as it came.
    pub fn body(&self) -> &'a Value {
        &self.envelope.body
    }

    /// One field of the body (protocol-specific ones included), e.g.
    /// `host` from IRC.
    pub fn field(&self, name: &str) -> Option<&'a Value> {
        self.envelope.body.get(name)
    }

    /// The body as a typed value, e.g. [`ChatMessage`] or a struct of
    /// borrowed `&str` fields (no copy then).
    ///
    /// # Errors
    ///
    /// serde's error when the body does not fit `T`.
    pub fn body_as<T: Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.envelope.body)
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
        self.envelope
            .reply(source, Value::Object(body))
            .with_header(headers::ROOM, self.room.as_ref())
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
