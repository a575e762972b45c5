//! The subject hierarchy, and the escaping that keeps outside names to one
//! token each.
//!
//! | subject | who publishes | what | parsed by |
//! | --- | --- | --- | --- |
//! | `chat.<protocol>.<instance>.<room>.<kind>` | protocol operators | what they sensed (a message, a join, …) | [`ChatSubject`] |
//! | `send.<protocol>.<instance>.<room>.<kind>` | anyone | a request for that operator to send | [`ChatSubject`] |
//! | `sb.op.<id>.ready` | every operator | it can work ([`Ready`](crate::Ready)) | [`SbSubject::Ready`] |
//! | `sb.op.<id>.heartbeat` | every operator | periodic [`Heartbeat`](crate::Heartbeat) | [`SbSubject::Heartbeat`] |
//! | `sb.op.<id>.<rest>` | operator `<id>` | its own subjects | [`SbSubject::Op`] |
//! | `sb.ctl.<id>` | orchestrator | a [`Control`](crate::Control) request, answered with a [`ControlAck`](crate::ControlAck) | [`SbSubject::Ctl`] |
//! | `sb.event.<id>` | orchestrator | lifecycle events about operator `<id>` | [`SbSubject::Event`] |
//! | `sb.log.<id>.<stream>` | orchestrator | the operator's `stdout`/`stderr` lines | [`SbSubject::Log`] |
//! | `sb.api.<method>` | orchestrator (replies) | the orchestrator's request/reply API | [`SbSubject::Api`] |
//!
//! Each shape is written in one place and read in one place: the
//! `chat`/`send` shape by [`ChatAddress`]/[`ChatSubject`] (module
//! `chat`), the `sb.…` shapes by [`SbSubject`] (module `sb`), whose
//! [`Display`](std::fmt::Display) the builder functions
//! ([`ready_subject`], [`log_subject`], …) share. Round-trip tests hold
//! each builder and its parser together.
//!
//! Names that come from outside (an IRC channel `#rust.beginners`, a DID
//! `did:plc:abc123`, a relay URL) go through [`escape_token`], so no input can
//! add or remove a token or smuggle in a wildcard. Direct conversations use
//! the room `@<peer>` (before escaping). The raw room also travels in the
//! envelope's [`headers::ROOM`](crate::headers::ROOM) header.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(crate) mod chat;
mod sb;

pub use chat::{Branch, ChatAddress, ChatPattern, ChatSubject};
pub use sb::{
    api_subject, control_reply_subject, control_subject, event_subject, heartbeat_subject,
    log_subject, log_wildcard, op_wildcard, ready_subject, SbSubject, ALL_API, ALL_EVENTS,
    ALL_HEARTBEATS, ALL_LOGS, ALL_READY,
};

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

    /// Whether `id` would be accepted by [`OperatorId::new`], without
    /// allocating: receivers check every chat envelope's `source` with it
    /// (the bus's `authentic` module).
    pub fn is_valid(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
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

/// [`unescape_token`] that borrows when there is nothing to unescape (a
/// token of letters, digits, `_` and `-`, as most protocol, instance and
/// kind tokens are), so reading a subject costs no allocation then.
pub(crate) fn unescape_cow(token: &str) -> Result<Cow<'_, str>, TokenError> {
    if !token.is_empty() && token.bytes().all(is_plain) {
        Ok(Cow::Borrowed(token))
    } else {
        unescape_token(token).map(Cow::Owned)
    }
}

/// Whether `token` is exactly [`escape_token`]`(raw)`, without allocating.
/// When it is, `token` is canonical and `raw` is what it stands for.
pub(crate) fn is_escape_of(token: &str, raw: &str) -> bool {
    if raw.is_empty() {
        return token == "=";
    }
    let mut t = token.bytes();
    for b in raw.bytes() {
        let same = if is_plain(b) {
            t.next() == Some(b)
        } else {
            t.next() == Some(b'=')
                && t.next() == Some(HEX_UPPER[usize::from(b >> 4)])
                && t.next() == Some(HEX_UPPER[usize::from(b & 0x0f)])
        };
        if !same {
            return false;
        }
    }
    t.next().is_none()
}

/// The 1-based token `position` of a subject unescaped, or the
/// [`SubjectError::BadToken`] that says why not.
pub(crate) fn unescape_at(position: usize, token: &str) -> Result<Cow<'_, str>, SubjectError> {
    unescape_cow(token).map_err(|source| SubjectError::BadToken {
        position,
        token: crate::json::excerpt(token),
        source,
    })
}

/// Why a subject does not have the shape it should (see the table in the
/// [module docs](self)).
///
/// ```
/// use switchboard_proto::{SbSubject, SubjectError, SubjectErrorKind};
///
/// let err = SbSubject::parse("sb.ctl.a.b").unwrap_err();
/// assert_eq!(err.kind(), SubjectErrorKind::WrongTokenCount);
/// assert_eq!(
///     err.to_string(),
///     "subject `sb.ctl.a.b` has 4 tokens; sb.ctl.<id> has exactly 3"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// Too few or too many tokens for the subject's shape.
    #[error("subject `{subject}` has {found} tokens; {shape} has {expected}")]
    WrongTokenCount {
        /// The subject (shortened when long).
        subject: String,
        /// How many tokens it has.
        found: usize,
        /// The shape expected, e.g. `chat|send.<protocol>.<instance>.<room>.<kind>`.
        shape: &'static str,
        /// How many tokens that shape has, in words: `exactly 5`, `at least 4`.
        expected: &'static str,
    },
    /// The first token of a chat subject is neither `chat` nor `send`.
    #[error("subject starts with `{found}`; chat subjects start with `chat` or `send`")]
    UnknownBranch {
        /// The first token found (shortened when long).
        found: String,
    },
    /// Not one of the control-plane shapes `sb.op|ctl|event|log|api.…`.
    #[error(
        "subject `{subject}` is not a control-plane subject; those are sb.op.<id>.<…>, \
         sb.ctl.<id>, sb.event.<id>, sb.log.<id>.<stream> and sb.api.<method>"
    )]
    UnknownControl {
        /// The subject (shortened when long).
        subject: String,
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
    /// The token where an operator id belongs is not one.
    #[error("token {position} of the subject is not an operator id: {source}")]
    BadId {
        /// 1-based token position.
        position: usize,
        /// Why it is not an id.
        source: IdError,
    },
    /// A token that must be a literal is empty, a wildcard or has
    /// whitespace (see [`is_valid_token`]).
    #[error(
        "token {position} (`{token}`) of the subject is not a literal token \
         (empty, a wildcard, or whitespace)"
    )]
    NotLiteral {
        /// 1-based token position.
        position: usize,
        /// The token (shortened when long).
        token: String,
    },
}

crate::error_kinds::error_kinds! {
    /// What kind of [`SubjectError`] it is.
    SubjectError => SubjectErrorKind {
        WrongTokenCount, UnknownBranch, UnknownControl, BadToken, BadId, NotLiteral
    }
}

crate::error_kinds::error_kinds! {
    /// What kind of [`TokenError`] it is.
    TokenError => TokenErrorKind {
        Empty, TruncatedEscape, BadEscape, NeedlessEscape, InvalidChar, InvalidUtf8
    }
}

crate::error_kinds::error_kinds! {
    /// What kind of [`IdError`] it is.
    IdError => IdErrorKind { Empty, TooLong, BadChar }
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
        for text in [
            "a",
            "irc-libera",
            "",
            "irc.libera",
            "é",
            &"x".repeat(64),
            &"x".repeat(65),
        ] {
            assert_eq!(
                OperatorId::is_valid(text),
                OperatorId::new(text).is_ok(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn cow_unescape_borrows_plain_tokens() {
        assert!(matches!(
            unescape_cow("irc-1_x"),
            Ok(Cow::Borrowed("irc-1_x"))
        ));
        assert_eq!(unescape_cow("=23rust").as_deref(), Ok("#rust"));
        assert_eq!(unescape_cow("=").as_deref(), Ok(""));
        assert_eq!(unescape_cow(""), Err(TokenError::Empty));
        assert!(unescape_cow("=2e").is_err());
    }

    #[test]
    fn escape_comparison_without_allocating() {
        for raw in ["", "#rust.beginners", "plain", "é", "=", "@x y"] {
            let token = escape_token(raw);
            assert!(is_escape_of(&token, raw), "{raw:?}");
            assert!(!is_escape_of(&format!("{token}x"), raw), "{raw:?}");
        }
        assert!(!is_escape_of("=23rus", "#rust"));
        assert!(!is_escape_of("=23Rust", "#rust"));
        assert!(!is_escape_of("=", "x"));
        assert!(!is_escape_of("=2e", "."));
    }
}
