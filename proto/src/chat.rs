//! Common bodies for chat envelopes, shared by every protocol operator so
//! that a bot written once works on IRC, Nostr and Bluesky alike.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
