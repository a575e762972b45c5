//! The chat data plane: `chat|send.<protocol>.<instance>.<room>.<kind>`,
//! built by [`ChatAddress`] and [`ChatSubject`], read by
//! [`ChatSubject::parse`] (and, without allocating, by
//! [`ChatEvent`](crate::ChatEvent)), matched by [`ChatPattern`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{escape_token, unescape_at, SubjectError};
use crate::pattern::{Pattern, PatternToken};

/// The shape of chat subjects, as error messages name it.
const SHAPE: &str = "chat|send.<protocol>.<instance>.<room>.<kind>";

/// The two chat branches: what happened, and what should happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    fn from_token(token: &str) -> Option<Branch> {
        match token {
            "chat" => Some(Branch::Chat),
            "send" => Some(Branch::Send),
            _ => None,
        }
    }
}

impl fmt::Display for Branch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a chat happens: protocol, instance (which network or account) and
/// room, all raw (unescaped).
///
/// ```
/// use switchboard_proto::{Branch, ChatAddress, ChatSubject};
///
/// let addr = ChatAddress::direct("nostr", "main", "npub1xyz");
/// let subject = addr.send_subject("message");
/// assert_eq!(subject, "send.nostr.main.=40npub1xyz.message");
///
/// let parsed = ChatSubject::parse(&subject)?;
/// assert_eq!(parsed.branch, Branch::Send);
/// assert_eq!(parsed.kind, "message");
/// assert_eq!(parsed.address, addr);
/// assert_eq!(parsed.address.peer(), Some("npub1xyz"));
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

    /// `chat.<protocol>.<instance>.<room>.<kind>`: where the protocol
    /// operator publishes what it sensed here (every part escaped).
    pub fn event_subject(&self, kind: &str) -> String {
        write_subject(Branch::Chat, self, kind)
    }

    /// `send.<protocol>.<instance>.<room>.<kind>`: where to ask the protocol
    /// operator to send here (every part escaped).
    pub fn send_subject(&self, kind: &str) -> String {
        write_subject(Branch::Send, self, kind)
    }

    /// The subject on `branch` for `kind` here.
    pub fn subject(&self, branch: Branch, kind: &str) -> String {
        write_subject(branch, self, kind)
    }
}

/// The one writer of the chat shape.
fn write_subject(branch: Branch, address: &ChatAddress, kind: &str) -> String {
    let parts = [
        escape_token(&address.protocol),
        escape_token(&address.instance),
        escape_token(&address.room),
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

/// The tokens of a chat subject, still escaped: the one reader of the
/// chat shape, shared by [`ChatSubject::parse`] and
/// [`ChatEvent`](crate::ChatEvent).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChatTokens<'a> {
    pub(crate) branch: Branch,
    pub(crate) protocol: &'a str,
    pub(crate) instance: &'a str,
    pub(crate) room: &'a str,
    pub(crate) kind: &'a str,
    /// `<protocol>.<instance>.<room>`, escaped, as in the subject: what a
    /// reply on the other branch repeats.
    pub(crate) place: &'a str,
}

impl<'a> ChatTokens<'a> {
    /// Splits `subject` into its five tokens and checks the branch; the
    /// tokens are not unescaped yet.
    pub(crate) fn split(subject: &'a str) -> Result<ChatTokens<'a>, SubjectError> {
        let mut tokens = subject.split('.');
        let (Some(first), Some(protocol), Some(instance), Some(room), Some(kind), None) = (
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
        ) else {
            return Err(SubjectError::WrongTokenCount {
                subject: crate::json::excerpt(subject),
                found: subject.split('.').count(),
                shape: SHAPE,
                expected: "exactly 5",
            });
        };
        let branch = Branch::from_token(first).ok_or_else(|| SubjectError::UnknownBranch {
            found: crate::json::excerpt(first),
        })?;
        let start = first.len() + 1;
        let end = subject.len() - kind.len() - 1;
        Ok(ChatTokens {
            branch,
            protocol,
            instance,
            room,
            kind,
            place: &subject[start..end],
        })
    }
}

/// A chat subject taken apart: branch, address and kind, all unescaped.
///
/// [`ChatSubject::parse`] reads what [`ChatAddress::event_subject`],
/// [`ChatAddress::send_subject`] and this type's [`Display`](fmt::Display)
/// write.
///
/// ```
/// use switchboard_proto::{Branch, ChatSubject};
///
/// let s: ChatSubject = "chat.irc.libera.=23rust=2Ebeginners.message".parse()?;
/// assert_eq!(s.branch, Branch::Chat);
/// assert_eq!(s.address.room, "#rust.beginners");
/// assert_eq!(s.kind, "message");
/// assert_eq!(s.to_string(), "chat.irc.libera.=23rust=2Ebeginners.message");
/// # Ok::<(), switchboard_proto::SubjectError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChatSubject {
    /// `chat` (an event) or `send` (a request).
    pub branch: Branch,
    /// Protocol, instance and room.
    pub address: ChatAddress,
    /// The `<kind>` token, e.g. [`kinds::MESSAGE`](crate::kinds::MESSAGE).
    pub kind: String,
}

impl ChatSubject {
    /// A chat subject from its parts.
    pub fn new(branch: Branch, address: ChatAddress, kind: impl Into<String>) -> ChatSubject {
        ChatSubject {
            branch,
            address,
            kind: kind.into(),
        }
    }

    /// Takes a chat subject apart (every part unescaped).
    ///
    /// # Errors
    ///
    /// [`SubjectError`] when the subject has not exactly 5 tokens, starts
    /// with something else than `chat`/`send`, or a token is not a canonical
    /// escaped name (which also rejects wildcards).
    pub fn parse(subject: &str) -> Result<ChatSubject, SubjectError> {
        let t = ChatTokens::split(subject)?;
        Ok(ChatSubject {
            branch: t.branch,
            address: ChatAddress {
                protocol: unescape_at(2, t.protocol)?.into_owned(),
                instance: unescape_at(3, t.instance)?.into_owned(),
                room: unescape_at(4, t.room)?.into_owned(),
            },
            kind: unescape_at(5, t.kind)?.into_owned(),
        })
    }
}

impl fmt::Display for ChatSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&write_subject(self.branch, &self.address, &self.kind))
    }
}

impl FromStr for ChatSubject {
    type Err = SubjectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChatSubject::parse(s)
    }
}

/// A [`Pattern`] over chat subjects, from raw (unescaped) names: each part
/// given is escaped into a literal token, each part left out matches any
/// one token (`*`). Built patterns never need a client-side filter.
///
/// ```
/// use switchboard_proto::{kinds, ChatAddress, ChatPattern};
///
/// // What the IRC operator for network `libera` serves:
/// let p = ChatPattern::send().protocol("irc").instance("libera").build();
/// assert_eq!(p.to_string(), "send.irc.libera.*.*");
///
/// // Every message in every room:
/// assert_eq!(ChatPattern::chat().kind(kinds::MESSAGE).build().to_string(), "chat.*.*.*.message");
///
/// // Requests to send into one room, any kind:
/// let room = ChatAddress::new("console", "local", "#lobby");
/// assert_eq!(ChatPattern::send().address(&room).build().to_string(), "send.console.local.=23lobby.*");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[must_use = "a ChatPattern does nothing until built"]
pub struct ChatPattern {
    branch: Branch,
    protocol: Option<String>,
    instance: Option<String>,
    room: Option<String>,
    kind: Option<String>,
}

impl ChatPattern {
    /// Every subject on `branch` (`<branch>.*.*.*.*`), to narrow down.
    pub fn new(branch: Branch) -> ChatPattern {
        ChatPattern {
            branch,
            protocol: None,
            instance: None,
            room: None,
            kind: None,
        }
    }

    /// Every chat event: `chat.*.*.*.*`.
    pub fn chat() -> ChatPattern {
        ChatPattern::new(Branch::Chat)
    }

    /// Every send request: `send.*.*.*.*`.
    pub fn send() -> ChatPattern {
        ChatPattern::new(Branch::Send)
    }

    /// Only this protocol (raw name, escaped here).
    pub fn protocol(mut self, protocol: &str) -> ChatPattern {
        self.protocol = Some(escape_token(protocol));
        self
    }

    /// Only this instance (raw name, escaped here).
    pub fn instance(mut self, instance: &str) -> ChatPattern {
        self.instance = Some(escape_token(instance));
        self
    }

    /// Only this room (raw name, escaped here).
    pub fn room(mut self, room: &str) -> ChatPattern {
        self.room = Some(escape_token(room));
        self
    }

    /// Only this kind (raw name, escaped here).
    pub fn kind(mut self, kind: &str) -> ChatPattern {
        self.kind = Some(escape_token(kind));
        self
    }

    /// Only this protocol, instance and room.
    pub fn address(self, address: &ChatAddress) -> ChatPattern {
        self.protocol(&address.protocol)
            .instance(&address.instance)
            .room(&address.room)
    }

    /// The pattern.
    pub fn build(&self) -> Pattern {
        let part = |p: &Option<String>| match p {
            Some(token) => PatternToken::Literal(token.clone()),
            None => PatternToken::Star,
        };
        // Escaped tokens are literal tokens by construction (see
        // escape_token), so there is nothing to check.
        Pattern::from_valid_tokens(vec![
            PatternToken::Literal(self.branch.as_str().to_owned()),
            part(&self.protocol),
            part(&self.instance),
            part(&self.room),
            part(&self.kind),
        ])
    }
}

impl From<ChatPattern> for Pattern {
    fn from(p: ChatPattern) -> Pattern {
        p.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SubjectErrorKind;

    #[test]
    fn chat_subjects_round_trip() {
        let addr = ChatAddress::new("irc", "libera", "#rust.beginners");
        let s = addr.event_subject("message");
        assert_eq!(s, "chat.irc.libera.=23rust=2Ebeginners.message");
        assert_eq!(
            ChatSubject::parse(&s),
            Ok(ChatSubject::new(Branch::Chat, addr.clone(), "message"))
        );
        let empty = ChatAddress::new("", "", "");
        let s = empty.send_subject("");
        assert_eq!(s, "send.=.=.=.=");
        let parsed = ChatSubject::parse(&s).expect("parses");
        assert_eq!((parsed.branch, &parsed.address), (Branch::Send, &empty));
        assert_eq!(parsed.to_string(), s);
        assert!(addr.peer().is_none());
        assert_eq!(addr.subject(Branch::Send, "x"), addr.send_subject("x"));
    }

    #[test]
    fn chat_subject_errors() {
        assert!(matches!(
            ChatSubject::parse("chat.irc.libera.x"),
            Err(SubjectError::WrongTokenCount { found: 4, .. })
        ));
        let err = ChatSubject::parse("chat.irc.libera.x.message.extra").expect_err("6 tokens");
        assert!(matches!(
            err,
            SubjectError::WrongTokenCount { found: 6, .. }
        ));
        assert_eq!(
            err.to_string(),
            "subject `chat.irc.libera.x.message.extra` has 6 tokens; \
             chat|send.<protocol>.<instance>.<room>.<kind> has exactly 5"
        );
        let err = ChatSubject::parse("sb.irc.libera.x.message").expect_err("branch");
        assert_eq!(err.kind(), SubjectErrorKind::UnknownBranch);
        let err = ChatSubject::parse("chat.irc.*.x.message").expect_err("wildcard");
        assert!(matches!(err, SubjectError::BadToken { position: 3, .. }));
        assert!(err.to_string().contains("token 3"), "{err}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn tokens_keep_the_escaped_place() {
        let t = ChatTokens::split("chat.irc.libera.=23rust.message").expect("splits");
        assert_eq!(t.place, "irc.libera.=23rust");
        assert_eq!((t.protocol, t.room, t.kind), ("irc", "=23rust", "message"));
        let t = ChatTokens::split("send.=.=.=.=").expect("splits");
        assert_eq!(t.place, "=.=.=");
    }

    #[test]
    fn chat_patterns() {
        let p = ChatPattern::send().protocol("irc").instance("a.b").build();
        assert_eq!(p.to_string(), "send.irc.a=2Eb.*.*");
        assert_eq!(p, Pattern::parse("send.irc.a=2Eb.*.*").expect("parses"));
        assert!(!p.nats_plan().needs_filter);
        let all: Pattern = ChatPattern::chat().into();
        assert_eq!(all.to_string(), "chat.*.*.*.*");
        let p = ChatPattern::chat()
            .address(&ChatAddress::new("irc", "x", ""))
            .kind("*")
            .build();
        assert_eq!(p.to_string(), "chat.irc.x.=.=2A");
    }
}
