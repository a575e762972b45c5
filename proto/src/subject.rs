//! The subject hierarchy, and the escaping that keeps outside names to one
//! token each.
//!
//! | subject | who publishes | what |
//! | --- | --- | --- |
//! | `chat.<protocol>.<instance>.<room>.<kind>` | protocol operators | what they sensed (a message, a join, …) |
//! | `send.<protocol>.<instance>.<room>.<kind>` | anyone | a request for that operator to send |
//! | `sb.op.<id>.ready` | every operator | it can work ([`Ready`](crate::Ready)) |
//! | `sb.op.<id>.heartbeat` | every operator | periodic [`Heartbeat`](crate::Heartbeat) |
//! | `sb.ctl.<id>` | orchestrator | a [`Control`](crate::Control) request, answered with a [`ControlAck`](crate::ControlAck) |
//! | `sb.event.<id>` | orchestrator | lifecycle events about operator `<id>` |
//! | `sb.log.<id>.<stream>` | orchestrator | the operator's `stdout`/`stderr` lines |
//! | `sb.api.<method>` | orchestrator (replies) | the orchestrator's request/reply API |
//!
//! Names that come from outside (an IRC channel `#rust.beginners`, a DID
//! `did:plc:abc123`, a relay URL) go through [`escape_token`], so no input can
//! add or remove a token or smuggle in a wildcard. Direct conversations use
//! the room `@<peer>` (before escaping). The raw room also travels in the
//! envelope's [`headers::ROOM`](crate::headers::ROOM) header.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Wildcard subject matching every operator's `ready` announcement.
pub const ALL_READY: &str = "sb.op.*.ready";
/// Wildcard subject matching every operator's heartbeats.
pub const ALL_HEARTBEATS: &str = "sb.op.*.heartbeat";
/// Wildcard subject matching the orchestrator's events about any operator.
pub const ALL_EVENTS: &str = "sb.event.*";
/// Wildcard subject matching every operator's log lines.
pub const ALL_LOGS: &str = "sb.log.>";
/// Every orchestrator API method (what the orchestrator serves).
pub const ALL_API: &str = "sb.api.*";

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Bytes that stand for themselves in an escaped token.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Escapes any string into exactly one NATS subject token, reversibly.
///
/// ASCII letters, digits, `_` and `-` are kept; every other byte of the
/// UTF-8 text becomes `=XX` (uppercase hex); the empty string becomes the
/// lone token `=` (unambiguous: a real escape is always three characters).
/// The result is never empty, never contains `.`, `*`, `>`, `#` or
/// whitespace, and [`unescape_token`] gives the input back.
///
/// ```
/// use switchboard_proto::{escape_token, unescape_token};
///
/// assert_eq!(escape_token("#rust.beginners"), "=23rust=2Ebeginners");
/// assert_eq!(escape_token("did:plc:abc123"), "did=3Aplc=3Aabc123");
/// assert_eq!(escape_token(""), "=");
/// assert_eq!(unescape_token("=23rust=2Ebeginners")?, "#rust.beginners");
/// # Ok::<(), switchboard_proto::TokenError>(())
/// ```
pub fn escape_token(raw: &str) -> String {
    if raw.is_empty() {
        return "=".to_owned();
    }
    let bytes = raw.as_bytes();
    let escaped = bytes.iter().filter(|&&b| !is_plain(b)).count();
    if escaped == 0 {
        return raw.to_owned();
    }
    let mut out = Vec::with_capacity(bytes.len() + 2 * escaped);
    for &b in bytes {
        if is_plain(b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[
                b'=',
                HEX_UPPER[usize::from(b >> 4)],
                HEX_UPPER[usize::from(b & 0x0f)],
            ]);
        }
    }
    // Only ASCII was pushed.
    out.into_iter().map(char::from).collect()
}

/// Why a token is not the canonical escaping of any string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is empty (the empty string escapes to `=`).
    #[error("escaped token is empty; the empty string is written as `=`")]
    Empty,
    /// A `=` is not followed by two hex digits.
    #[error(
        "escaped token has a truncated escape at byte {position}; \
         `=` must be followed by two uppercase hex digits, as in `=2E`"
    )]
    TruncatedEscape {
        /// Byte offset of the `=`.
        position: usize,
    },
    /// A `=` is followed by something other than two uppercase hex digits.
    #[error(
        "escaped token has a bad escape `{escape}` at byte {position}; \
         use two uppercase hex digits, as in `=2E`"
    )]
    BadEscape {
        /// Byte offset of the `=`.
        position: usize,
        /// The three characters found.
        escape: String,
    },
    /// A byte that stands for itself was escaped, so the token is not the
    /// one [`escape_token`] would produce.
    #[error(
        "escaped token escapes `{ch}` at byte {position}, which must be written as itself \
         (letters, digits, `_` and `-` are never escaped)"
    )]
    NeedlessEscape {
        /// Byte offset of the `=`.
        position: usize,
        /// The character that needed no escape.
        ch: char,
    },
    /// A character that must have been escaped appears as itself.
    #[error(
        "escaped token contains `{ch}` at byte {position}; only letters, digits, `_`, `-` \
         and `=XX` escapes may appear (escape the text with escape_token)"
    )]
    InvalidChar {
        /// Byte offset of the character.
        position: usize,
        /// The character.
        ch: char,
    },
    /// The escapes decode to bytes that are not UTF-8.
    #[error("escaped token decodes to bytes that are not valid UTF-8 (from byte {position})")]
    InvalidUtf8 {
        /// Byte offset in the decoded text where UTF-8 breaks.
        position: usize,
    },
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The exact inverse of [`escape_token`]: accepts only the canonical tokens
/// that function produces, so that one string has exactly one token (and a
/// subject compares equal exactly when the names do).
///
/// # Errors
///
/// [`TokenError`] for an empty token, lowercase or truncated escapes,
/// escapes of characters that stand for themselves (`=41` for `A`),
/// characters that should have been escaped, or escapes that decode to
/// invalid UTF-8.
pub fn unescape_token(token: &str) -> Result<String, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if token == "=" {
        return Ok(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_plain(b) {
            out.push(b);
            i += 1;
        } else if b == b'=' {
            let pair = bytes
                .get(i + 1..i + 3)
                .ok_or(TokenError::TruncatedEscape { position: i })?;
            let decoded = match (hex_value(pair[0]), hex_value(pair[1])) {
                (Some(hi), Some(lo)) => (hi << 4) | lo,
                _ => {
                    let end = (i + 3).min(token.len());
                    let escape = token.get(i..end).map_or_else(
                        || String::from_utf8_lossy(&bytes[i..end]).into(),
                        str::to_owned,
                    );
                    return Err(TokenError::BadEscape {
                        position: i,
                        escape,
                    });
                }
            };
            if is_plain(decoded) {
                return Err(TokenError::NeedlessEscape {
                    position: i,
                    ch: char::from(decoded),
                });
            }
            out.push(decoded);
            i += 3;
        } else {
            let ch = token[i..]
                .chars()
                .next()
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            return Err(TokenError::InvalidChar { position: i, ch });
        }
    }
    String::from_utf8(out).map_err(|e| TokenError::InvalidUtf8 {
        position: e.utf8_error().valid_up_to(),
    })
}

/// Whether `token` can stand as one literal token in a subject or pattern.
///
/// NATS's rules (not empty, no `.`, no whitespace, not a wildcard) plus our
/// own: no `*`, `>` or `#` anywhere, and no control characters, so that a
/// literal can never be mistaken for a wildcard in either NATS or
/// [`Pattern`](crate::Pattern) syntax.
pub fn is_valid_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .chars()
            .all(|c| !matches!(c, '.' | '*' | '>' | '#') && !c.is_whitespace() && !c.is_control())
}

/// Why an operator id is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is empty.
    #[error("operator id is empty; use 1 to 64 of A-Z, a-z, 0-9, `_` and `-`")]
    Empty,
    /// The id is over 64 bytes.
    #[error("operator id is {len} bytes long; at most {max} are allowed", max = OperatorId::MAX_LEN)]
    TooLong {
        /// Length of the rejected id in bytes.
        len: usize,
    },
    /// The id contains a character outside the allowed set.
    #[error(
        "operator id `{id}` has the invalid character {ch:?} at byte {position}; \
         only A-Z, a-z, 0-9, `_` and `-` are allowed"
    )]
    BadChar {
        /// The rejected id.
        id: String,
        /// The first bad character.
        ch: char,
        /// Its byte offset.
        position: usize,
    },
}

/// The id of an operator, unique within one orchestrator: 1 to 64 of
/// `[A-Za-z0-9_-]`.
///
/// Restricting the alphabet makes an id a subject token as it is (no
/// escaping needed in `sb.op.<id>.ready` and friends), a safe file name for
/// its state directory and a readable log field.
///
/// ```
/// use switchboard_proto::OperatorId;
///
/// let id: OperatorId = "irc-libera".parse()?;
/// assert_eq!(id.as_str(), "irc-libera");
/// assert!(OperatorId::new("irc.libera").is_err());
/// # Ok::<(), switchboard_proto::IdError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OperatorId(String);

impl OperatorId {
    /// Longest id accepted, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates `id`.
    ///
    /// # Errors
    ///
    /// [`IdError`] naming the problem (empty, too long, or the first bad
    /// character).
    pub fn new(id: impl Into<String>) -> Result<OperatorId, IdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(IdError::Empty);
        }
        if let Some((position, ch)) = id
            .char_indices()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            return Err(IdError::BadChar {
                id: crate::json::excerpt(&id),
                ch,
                position,
            });
        }
        if id.len() > Self::MAX_LEN {
            return Err(IdError::TooLong { len: id.len() });
        }
        Ok(OperatorId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned `String`.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for OperatorId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OperatorId::new(s)
    }
}

impl TryFrom<String> for OperatorId {
    type Error = IdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        OperatorId::new(value)
    }
}

impl TryFrom<&str> for OperatorId {
    type Error = IdError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        OperatorId::new(value)
    }
}

impl From<OperatorId> for String {
    fn from(value: OperatorId) -> Self {
        value.0
    }
}

impl AsRef<str> for OperatorId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for OperatorId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for OperatorId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for OperatorId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl Serialize for OperatorId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for OperatorId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        OperatorId::new(text).map_err(serde::de::Error::custom)
    }
}

/// `sb.op.<id>.ready`: where operator `id` announces it can work.
pub fn ready_subject(id: &OperatorId) -> String {
    format!("sb.op.{id}.ready")
}

/// `sb.op.<id>.heartbeat`: where operator `id` sends its heartbeats.
pub fn heartbeat_subject(id: &OperatorId) -> String {
    format!("sb.op.{id}.heartbeat")
}

/// `sb.ctl.<id>`: where operator `id` listens for control requests.
pub fn control_subject(id: &OperatorId) -> String {
    format!("sb.ctl.{id}")
}

/// Where an operator's answer to one control request goes:
/// `sb.op.<id>.ack.<token>`. Under the operator's own `sb.op.<id>.>`, which
/// it may always publish on and no other operator may, so an ack never
/// depends on nats-server's reply tracking (reset by every config reload)
/// and cannot be forged by another operator. `token` is a fresh,
/// subject-safe string per request.
pub fn control_reply_subject(id: &OperatorId, token: &str) -> String {
    format!("sb.op.{}.ack.{token}", id.as_str())
}

/// `sb.event.<id>`: where the orchestrator reports lifecycle events (spawned,
/// exited, restarted, …) about operator `id`.
pub fn event_subject(id: &OperatorId) -> String {
    format!("sb.event.{id}")
}

/// `sb.log.<id>.<stream>`: where the orchestrator republishes the lines
/// operator `id` wrote on `stream` (`stdout`, `stderr`, …; escaped).
pub fn log_subject(id: &OperatorId, stream: &str) -> String {
    format!("sb.log.{id}.{}", escape_token(stream))
}

/// `sb.api.<method>`: the orchestrator's request/reply API (`method` is
/// escaped, so it is always one token).
///
/// ```
/// assert_eq!(switchboard_proto::api_subject("status"), "sb.api.status");
/// ```
pub fn api_subject(method: &str) -> String {
    format!("sb.api.{}", escape_token(method))
}

/// The two chat branches: what happened, and what should happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Branch {
    /// `chat.…`: events a protocol operator sensed.
    Chat,
    /// `send.…`: requests for a protocol operator to send.
    Send,
}

impl Branch {
    /// The first token of subjects on this branch (`chat` or `send`).
    pub fn as_str(self) -> &'static str {
        match self {
            Branch::Chat => "chat",
            Branch::Send => "send",
        }
    }
}

impl fmt::Display for Branch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a subject is not a chat subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// Not exactly five tokens.
    #[error(
        "subject `{subject}` has {found} tokens; chat subjects have exactly 5: \
         chat|send.<protocol>.<instance>.<room>.<kind>"
    )]
    WrongTokenCount {
        /// The subject (shortened when long).
        subject: String,
        /// How many tokens it has.
        found: usize,
    },
    /// The first token is neither `chat` nor `send`.
    #[error("subject starts with `{found}`; chat subjects start with `chat` or `send`")]
    UnknownBranch {
        /// The first token found (shortened when long).
        found: String,
    },
    /// A token is not a canonical escaped token.
    #[error("token {position} (`{token}`) of the subject is not a valid escaped name: {source}")]
    BadToken {
        /// 1-based token position.
        position: usize,
        /// The token (shortened when long).
        token: String,
        /// Why it does not unescape.
        source: TokenError,
    },
}

/// Where a chat happens: protocol, instance (which network or account) and
/// room, all raw (unescaped).
///
/// ```
/// use switchboard_proto::{Branch, ChatAddress};
///
/// let addr = ChatAddress::direct("nostr", "main", "npub1xyz");
/// let subject = addr.send_subject("message");
/// assert_eq!(subject, "send.nostr.main.=40npub1xyz.message");
///
/// let (branch, parsed, kind) = ChatAddress::parse(&subject)?;
/// assert_eq!((branch, kind.as_str()), (Branch::Send, "message"));
/// assert_eq!(parsed, addr);
/// assert_eq!(parsed.peer(), Some("npub1xyz"));
/// # Ok::<(), switchboard_proto::SubjectError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChatAddress {
    /// Protocol name, e.g. `irc`, `nostr`, `bluesky`.
    pub protocol: String,
    /// Which connection of that protocol, e.g. `libera`; usually the
    /// operator's own choice.
    pub instance: String,
    /// The room as the protocol names it, e.g. `#rust.beginners`; `@peer`
    /// for a direct conversation.
    pub room: String,
}

impl ChatAddress {
    /// Prefix marking a direct (private) conversation in [`ChatAddress::room`].
    pub const DIRECT_PREFIX: char = '@';

    /// An address from its three raw parts.
    pub fn new(
        protocol: impl Into<String>,
        instance: impl Into<String>,
        room: impl Into<String>,
    ) -> ChatAddress {
        ChatAddress {
            protocol: protocol.into(),
            instance: instance.into(),
            room: room.into(),
        }
    }

    /// The address of a direct conversation with `peer` (room `@peer`).
    pub fn direct(
        protocol: impl Into<String>,
        instance: impl Into<String>,
        peer: &str,
    ) -> ChatAddress {
        let mut room = String::with_capacity(peer.len() + 1);
        room.push(Self::DIRECT_PREFIX);
        room.push_str(peer);
        ChatAddress::new(protocol, instance, room)
    }

    /// The peer of a direct conversation, `None` for a shared room.
    pub fn peer(&self) -> Option<&str> {
        self.room.strip_prefix(Self::DIRECT_PREFIX)
    }

    fn subject(&self, branch: Branch, kind: &str) -> String {
        let parts = [
            escape_token(&self.protocol),
            escape_token(&self.instance),
            escape_token(&self.room),
            escape_token(kind),
        ];
        let len = 4 + parts.iter().map(|p| p.len() + 1).sum::<usize>();
        let mut out = String::with_capacity(len);
        out.push_str(branch.as_str());
        for part in &parts {
            out.push('.');
            out.push_str(part);
        }
        out
    }

    /// `chat.<protocol>.<instance>.<room>.<kind>`: where the protocol
    /// operator publishes what it sensed here (every part escaped).
    pub fn event_subject(&self, kind: &str) -> String {
        self.subject(Branch::Chat, kind)
    }

    /// `send.<protocol>.<instance>.<room>.<kind>`: where to ask the protocol
    /// operator to send here (every part escaped).
    pub fn send_subject(&self, kind: &str) -> String {
        self.subject(Branch::Send, kind)
    }

    /// Splits a chat subject into its branch, address and kind (all
    /// unescaped).
    ///
    /// # Errors
    ///
    /// [`SubjectError`] when the subject has not exactly 5 tokens, starts
    /// with something else than `chat`/`send`, or a token is not a canonical
    /// escaped name (which also rejects wildcards).
    pub fn parse(subject: &str) -> Result<(Branch, ChatAddress, String), SubjectError> {
        let mut tokens = subject.split('.');
        let count = subject.split('.').count();
        let (Some(first), Some(p), Some(i), Some(r), Some(k), None) = (
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
        ) else {
            return Err(SubjectError::WrongTokenCount {
                subject: crate::json::excerpt(subject),
                found: count,
            });
        };
        let branch = match first {
            "chat" => Branch::Chat,
            "send" => Branch::Send,
            other => {
                return Err(SubjectError::UnknownBranch {
                    found: crate::json::excerpt(other),
                })
            }
        };
        let unescape = |position: usize, token: &str| {
            unescape_token(token).map_err(|source| SubjectError::BadToken {
                position,
                token: crate::json::excerpt(token),
                source,
            })
        };
        let address = ChatAddress {
            protocol: unescape(2, p)?,
            instance: unescape(3, i)?,
            room: unescape(4, r)?,
        };
        Ok((branch, address, unescape(5, k)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        assert_eq!(escape_token("#rust.beginners"), "=23rust=2Ebeginners");
        assert_eq!(
            escape_token("wss://relay.example.com/"),
            "wss=3A=2F=2Frelay=2Eexample=2Ecom=2F"
        );
        assert_eq!(escape_token("é"), "=C3=A9");
        assert_eq!(escape_token("a b*>"), "a=20b=2A=3E");
    }

    #[test]
    fn unescape_rejects_non_canonical() {
        type Check = fn(&TokenError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, TokenError::Empty)),
            ("ab=2", |e| {
                matches!(e, TokenError::TruncatedEscape { position: 2 })
            }),
            ("=2e", |e| matches!(e, TokenError::BadEscape { .. })),
            ("=G0", |e| matches!(e, TokenError::BadEscape { .. })),
            ("=41", |e| {
                matches!(e, TokenError::NeedlessEscape { ch: 'A', .. })
            }),
            ("a.b", |e| {
                matches!(e, TokenError::InvalidChar { ch: '.', .. })
            }),
            ("é", |e| {
                matches!(e, TokenError::InvalidChar { ch: 'é', .. })
            }),
            ("=C3", |e| {
                matches!(e, TokenError::InvalidUtf8 { position: 0 })
            }),
            ("x==", |e| {
                matches!(e, TokenError::TruncatedEscape { position: 1 })
            }),
            ("x==41", |e| {
                matches!(e, TokenError::BadEscape { position: 1, .. })
            }),
        ];
        for (token, check) in cases {
            let err = unescape_token(token).expect_err(token);
            assert!(check(&err), "{token}: {err:?}");
            assert!(!err.to_string().is_empty());
        }
        // A multi-byte character right after `=` must not split a char.
        assert!(matches!(
            unescape_token("=é"),
            Err(TokenError::BadEscape { .. })
        ));
    }

    #[test]
    fn tokens() {
        for ok in ["a", "=23rust", "sb", "é", "a=b"] {
            assert!(is_valid_token(ok), "{ok}");
        }
        for bad in [
            "", "a.b", "*", ">", "#", "a*", "x>", "#rust", "a b", "a\tb", "\u{0}",
        ] {
            assert!(!is_valid_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn operator_ids() {
        assert!(OperatorId::new("a").is_ok());
        assert!(OperatorId::new("A_z-9".repeat(12).as_str()).is_ok());
        assert_eq!(OperatorId::new(""), Err(IdError::Empty));
        assert_eq!(
            OperatorId::new("x".repeat(65)),
            Err(IdError::TooLong { len: 65 })
        );
        let err = OperatorId::new("irc.libera").expect_err("dot");
        let msg = err.to_string();
        assert!(msg.contains("'.'") && msg.contains("A-Z"), "{msg}");
        let id: OperatorId = serde_json::from_str("\"demo-1\"").expect("valid");
        assert_eq!(
            serde_json::to_string(&id).expect("serializes"),
            "\"demo-1\""
        );
        assert!(serde_json::from_str::<OperatorId>("\"demo 1\"").is_err());
    }

    #[test]
    fn lifecycle_subjects() {
        let id = OperatorId::new("irc-1").expect("valid");
        assert_eq!(ready_subject(&id), "sb.op.irc-1.ready");
        assert_eq!(heartbeat_subject(&id), "sb.op.irc-1.heartbeat");
        assert_eq!(control_subject(&id), "sb.ctl.irc-1");
        assert_eq!(event_subject(&id), "sb.event.irc-1");
        assert_eq!(log_subject(&id, "stderr"), "sb.log.irc-1.stderr");
        assert_eq!(log_subject(&id, "a.b"), "sb.log.irc-1.a=2Eb");
        assert_eq!(api_subject("list.all"), "sb.api.list=2Eall");
    }

    #[test]
    fn chat_subjects_round_trip() {
        let addr = ChatAddress::new("irc", "libera", "#rust.beginners");
        let s = addr.event_subject("message");
        assert_eq!(s, "chat.irc.libera.=23rust=2Ebeginners.message");
        assert_eq!(
            ChatAddress::parse(&s),
            Ok((Branch::Chat, addr.clone(), "message".to_owned()))
        );
        let empty = ChatAddress::new("", "", "");
        let s = empty.send_subject("");
        assert_eq!(s, "send.=.=.=.=");
        assert_eq!(
            ChatAddress::parse(&s),
            Ok((Branch::Send, empty, String::new()))
        );
        assert!(addr.peer().is_none());
    }

    #[test]
    fn chat_subject_errors() {
        assert!(matches!(
            ChatAddress::parse("chat.irc.libera.x"),
            Err(SubjectError::WrongTokenCount { found: 4, .. })
        ));
        assert!(matches!(
            ChatAddress::parse("chat.irc.libera.x.message.extra"),
            Err(SubjectError::WrongTokenCount { found: 6, .. })
        ));
        assert!(matches!(
            ChatAddress::parse("sb.irc.libera.x.message"),
            Err(SubjectError::UnknownBranch { .. })
        ));
        let err = ChatAddress::parse("chat.irc.*.x.message").expect_err("wildcard");
        assert!(matches!(err, SubjectError::BadToken { position: 3, .. }));
        assert!(err.to_string().contains("token 3"), "{err}");
    }
}
