//! Inbound mapping helpers: what the server said, as bus events.
//!
//! Pure functions used by [`crate::client`]: CTCP parsing, formatting
//! codes, IRCv3 tags, and the event bodies (`ChatMessage`,
//! `ChatPresence`, `ChatRename`, `ChatKick`, `ChatTopic` from
//! `switchboard_proto`).

use serde_json::{Map, Value};
use switchboard_bus::proto::{
    ChatKick, ChatMessage, ChatPresence, ChatRename, ChatTopic, Timestamp,
};

/// Something the operator publishes on `chat.irc.<instance>.<room>.<kind>`.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundEvent {
    /// The raw room (`#chan`, or `@nick` for a private conversation).
    pub room: String,
    /// The `<kind>` token.
    pub kind: &'static str,
    /// The body.
    pub body: Value,
    /// When the server says it happened (IRCv3 `server-time`), if it did.
    pub timestamp: Option<Timestamp>,
}

impl InboundEvent {
    /// An event of `kind` in `room` with `body`; the IRCv3 `server-time`
    /// tag, when present, becomes its timestamp.
    fn new(
        room: &str,
        kind: &'static str,
        body: impl serde::Serialize,
        tags: &Map<String, Value>,
    ) -> Self {
        InboundEvent {
            room: room.to_string(),
            kind,
            body: serde_json::to_value(body).unwrap_or(Value::Null),
            timestamp: server_time(tags),
        }
    }
}

/// Who a line came from: the parts of `nick!user@host`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    /// The nick.
    pub nick: String,
    /// The user name (may be empty).
    pub user: String,
    /// The host (may be empty).
    pub host: String,
}

impl Source {
    /// Fields every event body carries about its sender: `user`, `host`
    /// (when known) and the IRCv3 `tags` (when present).
    pub fn extra(&self, tags: &Map<String, Value>) -> Map<String, Value> {
        let mut extra = Map::new();
        if !self.user.is_empty() {
            extra.insert("user".into(), Value::String(self.user.clone()));
        }
        if !self.host.is_empty() {
            extra.insert("host".into(), Value::String(self.host.clone()));
        }
        if !tags.is_empty() {
            extra.insert("tags".into(), Value::Object(tags.clone()));
        }
        extra
    }

    /// [`Source::extra`] plus `"self": true` when the event is about the
    /// bot itself (its own join, nick change, kick...).
    pub fn extra_with_self(&self, tags: &Map<String, Value>, is_self: bool) -> Map<String, Value> {
        let mut extra = self.extra(tags);
        if is_self {
            extra.insert("self".into(), Value::Bool(true));
        }
        extra
    }
}

/// IRCv3 tags as a JSON object (a tag without value maps to `""`).
pub fn tags_to_json(tags: Option<&Vec<irc_proto::message::Tag>>) -> Map<String, Value> {
    let mut map = Map::new();
    for tag in tags.into_iter().flatten() {
        if tag.0.is_empty() {
            continue;
        }
        map.insert(
            tag.0.clone(),
            Value::String(tag.1.clone().unwrap_or_default()),
        );
    }
    map
}

/// The `time` tag (IRCv3 `server-time`) as a timestamp.
pub fn server_time(tags: &Map<String, Value>) -> Option<Timestamp> {
    tags.get("time")
        .and_then(Value::as_str)
        .and_then(|t| Timestamp::parse(t).ok())
}

/// A CTCP request or reply: `\x01COMMAND params\x01` (the closing `\x01`
/// is optional, as many clients omit it). Returns the command
/// (uppercased) and its parameters.
pub fn parse_ctcp(text: &str) -> Option<(String, &str)> {
    let inner = text.strip_prefix('\x01')?;
    let inner = inner.strip_suffix('\x01').unwrap_or(inner);
    let (command, params) = match inner.split_once(' ') {
        Some((c, p)) => (c, p),
        None => (inner, ""),
    };
    if command.is_empty() {
        return None;
    }
    Some((command.to_ascii_uppercase(), params))
}

/// Removes mIRC formatting: bold (`\x02`), colour (`\x03` with up to two
/// digits, optionally `,` and two more), hex colour (`\x04` with six hex
/// digits, optionally `,` and six more), reset (`\x0F`), monospace
/// (`\x11`), reverse (`\x16`), italics (`\x1D`), strikethrough (`\x1E`)
/// and underline (`\x1F`).
pub fn strip_formatting(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let take = |i: &mut usize, max: usize, pred: &dyn Fn(char) -> bool| {
        let mut n = 0;
        while n < max && *i < chars.len() && pred(chars[*i]) {
            *i += 1;
            n += 1;
        }
        n
    };
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '\x02' | '\x0F' | '\x11' | '\x16' | '\x1D' | '\x1E' | '\x1F' => {}
            '\x03' | '\x04' => {
                let (digits, pred): (usize, &dyn Fn(char) -> bool) = if c == '\x03' {
                    (2, &|c: char| c.is_ascii_digit())
                } else {
                    (6, &|c: char| c.is_ascii_hexdigit())
                };
                if take(&mut i, digits, pred) > 0
                    && i + 1 < chars.len()
                    && chars[i] == ','
                    && pred(chars[i + 1])
                {
                    i += 1;
                    take(&mut i, digits, pred);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// `text` with formatting removed when `strip` is set.
pub fn maybe_strip(text: &str, strip: bool) -> String {
    if strip {
        strip_formatting(text)
    } else {
        text.to_string()
    }
}

/// A `message`, `action` or `notice` event.
#[allow(clippy::too_many_arguments)]
pub fn message_event(
    kind: &'static str,
    room: &str,
    private: bool,
    text: String,
    source: &Source,
    target: &str,
    tags: &Map<String, Value>,
) -> InboundEvent {
    let mut extra = source.extra(tags);
    extra.insert("target".into(), Value::String(target.to_string()));
    let body = ChatMessage {
        text,
        sender: source.nick.clone(),
        room: room.to_string(),
        private,
        extra,
    };
    InboundEvent::new(room, kind, body, tags)
}

/// A `join`, `part` or `quit` event in `room`.
pub fn presence_event(
    kind: &'static str,
    room: &str,
    source: &Source,
    text: Option<String>,
    is_self: bool,
    tags: &Map<String, Value>,
) -> InboundEvent {
    let extra = source.extra_with_self(tags, is_self);
    let body = ChatPresence {
        sender: source.nick.clone(),
        room: room.to_string(),
        text,
        extra,
    };
    InboundEvent::new(room, kind, body, tags)
}

/// A `nick` event in `room`.
pub fn rename_event(
    room: &str,
    source: &Source,
    new_name: &str,
    is_self: bool,
    tags: &Map<String, Value>,
) -> InboundEvent {
    let extra = source.extra_with_self(tags, is_self);
    let body = ChatRename {
        sender: source.nick.clone(),
        room: room.to_string(),
        new_name: new_name.to_string(),
        extra,
    };
    InboundEvent::new(room, "nick", body, tags)
}

/// A `kick` event.
pub fn kick_event(
    room: &str,
    source: &Source,
    target: &str,
    text: Option<String>,
    is_self: bool,
    tags: &Map<String, Value>,
) -> InboundEvent {
    let extra = source.extra_with_self(tags, is_self);
    let body = ChatKick {
        sender: source.nick.clone(),
        room: room.to_string(),
        target: target.to_string(),
        text,
        extra,
    };
    InboundEvent::new(room, "kick", body, tags)
}

/// A `topic` event.
pub fn topic_event(
    room: &str,
    source: &Source,
    text: String,
    tags: &Map<String, Value>,
) -> InboundEvent {
    let body = ChatTopic {
        sender: source.nick.clone(),
        room: room.to_string(),
        text,
        extra: source.extra(tags),
    };
    InboundEvent::new(room, "topic", body, tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctcp() {
        assert_eq!(
            parse_ctcp("\x01ACTION waves\x01"),
            Some(("ACTION".into(), "waves"))
        );
        assert_eq!(parse_ctcp("\x01version\x01"), Some(("VERSION".into(), "")));
        assert_eq!(parse_ctcp("\x01PING 123"), Some(("PING".into(), "123")));
        assert_eq!(parse_ctcp("hello"), None);
        assert_eq!(parse_ctcp("\x01\x01"), None);
    }

    #[test]
    fn formatting() {
        assert_eq!(strip_formatting("\x02bold\x02 text"), "bold text");
        assert_eq!(strip_formatting("\x0304,12red\x03 plain"), "red plain");
        assert_eq!(strip_formatting("\x034,text"), ",text");
        assert_eq!(strip_formatting("\x03,5x"), ",5x");
        assert_eq!(strip_formatting("\x04FF0000,00FF00hex"), "hex");
        assert_eq!(strip_formatting("\x1Di\x1E\x1Fu\x11\x16\x0F"), "iu");
        assert_eq!(strip_formatting("10\x03"), "10");
        assert_eq!(strip_formatting("é\x0312日本"), "é日本");
    }

    #[test]
    fn tags_and_time() {
        let m: irc_proto::Message =
            "@time=2024-05-01T12:00:00.5Z;msgid=abc;+draft/x :n!u@h PRIVMSG #c :hi"
                .parse()
                .unwrap();
        let tags = tags_to_json(m.tags.as_ref());
        assert_eq!(tags["msgid"], "abc");
        assert_eq!(tags["+draft/x"], "");
        assert_eq!(
            server_time(&tags).unwrap().to_string(),
            "2024-05-01T12:00:00.500000Z"
        );
    }

    #[test]
    fn message_body_shape() {
        let src = Source {
            nick: "ferris".into(),
            user: "~f".into(),
            host: "h.example".into(),
        };
        let ev = message_event(
            "message",
            "#rust",
            false,
            "hi".into(),
            &src,
            "#rust",
            &Map::new(),
        );
        assert_eq!(
            ev.body,
            serde_json::json!({"text": "hi", "sender": "ferris", "room": "#rust",
                "private": false, "user": "~f", "host": "h.example", "target": "#rust"})
        );
        assert!(ev.timestamp.is_none());
    }
}
