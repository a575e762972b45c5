//! Which file a stored message goes to, and the line written for it.
//!
//! Both depend only on the message (its subject, payload and the time the
//! stream stored it), never on when the logger sees it: a message
//! delivered again after a crash goes to the same file as the first time,
//! which is what makes the undo journal exact.

use std::fmt::Write as _;
use std::path::PathBuf;

use switchboard_bus::stream::Stored;
use switchboard_proto::api::{LogLine, OperatorEvent};
use switchboard_proto::{ChatSubject, Envelope, SbSubject, Timestamp};

use crate::config::{Format, LoggerConfig};

/// One line to append to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the log directory, with the extension.
    pub path: PathBuf,
    /// The line, ending with `\n`.
    pub line: String,
}

/// The values of a layout's placeholders for one message.
struct Place {
    network: String,
    room: String,
    source: String,
}

/// The file and line for `m`, or `None` for a subject the logger does not
/// keep (none of the stream's branches).
pub fn entry(m: &Stored, config: &LoggerConfig) -> Option<Entry> {
    // Decoded only when something needs its fields: JSON lines with the
    // default layout take the network and room from the subject alone.
    let needs_envelope = config.format == Format::Text || config.layout.contains("{source}");
    let envelope = needs_envelope
        .then(|| Envelope::from_slice(&m.payload).ok())
        .flatten();
    let place = place(&m.subject, envelope.as_ref())?;
    let date = date_of(m.stored_at);
    let mut path = config.layout.clone();
    for (key, value) in [
        ("{network}", place.network.as_str()),
        ("{room}", place.room.as_str()),
        ("{source}", place.source.as_str()),
        ("{date}", date.as_str()),
    ] {
        path = path.replace(key, &component(value));
    }
    path.push('.');
    path.push_str(config.format.extension());
    let line = match config.format {
        Format::Json => json_line(m),
        Format::Text => text_line(m, envelope.as_ref()),
    };
    Some(Entry {
        path: PathBuf::from(path),
        line,
    })
}

fn place(subject: &str, envelope: Option<&Envelope>) -> Option<Place> {
    if let Ok(chat) = ChatSubject::parse(subject) {
        let a = &chat.address;
        return Some(Place {
            network: format!("{}.{}", a.protocol, a.instance),
            room: a.room.clone(),
            source: envelope.map_or_else(|| "unknown".to_owned(), |e| e.source.clone()),
        });
    }
    let id = match SbSubject::parse(subject).ok()? {
        SbSubject::Log { id, .. } | SbSubject::Event { id } => id,
        _ => return None,
    };
    Some(Place {
        network: "switchboard".to_owned(),
        room: id.to_string(),
        source: id.to_string(),
    })
}

/// `2026-12-01` (UTC).
pub fn date_of(t: Timestamp) -> String {
    let d = t.as_offset_date_time().date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// A path component from any text: letters, digits and `# + - . _ @ ! , =
/// ~` kept, anything else (`/`, spaces, control characters, non-ASCII)
/// as `%XX`; never empty, `.` or `..`; at most 200 bytes.
pub fn component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"#+-._@!,=~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        if out.len() >= 200 {
            break;
        }
    }
    match out.as_str() {
        "" => "_".to_owned(),
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        _ => out,
    }
}

/// Everything kept: the envelope id, the message itself (as it was
/// stored, when it is one line of JSON), the stream sequence, when it was
/// stored and the subject. Written by hand: the message is checked, not
/// decoded and encoded again.
fn json_line(m: &Stored) -> String {
    let text = |v: &str| serde_json::Value::String(v.to_owned()).to_string();
    let raw = std::str::from_utf8(&m.payload).ok().filter(|t| {
        !t.contains(['\n', '\r']) && serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok()
    });
    let message = match raw {
        Some(raw) => raw.trim().to_owned(),
        None => match serde_json::from_slice::<serde_json::Value>(&m.payload) {
            Ok(v) => v.to_string(),
            Err(_) => text(&String::from_utf8_lossy(&m.payload)),
        },
    };
    let mut line = String::with_capacity(message.len() + 128);
    line.push('{');
    if let Some(id) = &m.msg_id {
        let _ = write!(line, "\"id\":{},", text(id));
    }
    let _ = write!(
        line,
        "\"message\":{message},\"seq\":{},\"stored_at\":\"{}\",\"subject\":{}}}",
        m.seq,
        m.stored_at,
        text(&m.subject)
    );
    line.push('\n');
    line
}

/// `[12:00:01] <nick> text` and the like; one line whatever the content.
fn text_line(m: &Stored, envelope: Option<&Envelope>) -> String {
    let when = |t: Timestamp| {
        let t = t.as_offset_date_time();
        format!("[{:02}:{:02}:{:02}]", t.hour(), t.minute(), t.second())
    };
    let body = if let Some(env) = envelope {
        let b = &env.body;
        let text = b.get("text").and_then(|t| t.as_str());
        let sender = b.get("sender").and_then(|t| t.as_str());
        let kind = m.subject.rsplit('.').next().unwrap_or("");
        let at = when(env.timestamp);
        match (sender, text, m.subject.starts_with("send.")) {
            (Some(nick), Some(text), false) if kind == "message" => {
                format!("{at} <{nick}> {text}")
            }
            (_, Some(text), true) => format!("{at} <{}> {text}", env.source),
            (Some(nick), _, _) => format!("{at} -!- {nick} {kind} {b}"),
            _ => format!("{at} -!- {kind} {b}"),
        }
    } else if let Ok(l) = serde_json::from_slice::<LogLine>(&m.payload) {
        format!("{} {}: {}", when(l.timestamp), l.stream, l.line)
    } else if let Ok(e) = serde_json::from_slice::<OperatorEvent>(&m.payload) {
        let reason = e.reason.map(|r| format!(" ({r})")).unwrap_or_default();
        format!(
            "{} -!- {} -> {}{reason}",
            when(e.timestamp),
            e.previous.as_str(),
            e.state.as_str()
        )
    } else {
        format!(
            "{} -!- {}",
            when(m.stored_at),
            String::from_utf8_lossy(&m.payload)
        )
    };
    let mut line = String::with_capacity(body.len() + 1);
    for c in body.chars() {
        match c {
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            c if c.is_control() && c != '\t' => {
                let _ = write!(line, "\\u{{{:x}}}", c as u32);
            }
            c => line.push(c),
        }
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(subject: &str, payload: &str) -> Stored {
        let at = Timestamp::parse("2026-12-01T12:00:01Z").unwrap();
        Stored::new(subject, payload.to_owned(), 7, at, Some("i\"d".into()))
    }

    fn config(format: &str) -> LoggerConfig {
        serde_json::from_value(serde_json::json!({ "dir": "/l", "format": format })).unwrap()
    }

    #[test]
    fn json_lines_keep_the_message_as_stored_and_stay_one_line() {
        let env = r#"{"source":"irc-x","timestamp":"2026-12-01T12:00:00Z","headers":{"id":"a"},"body":{"sender":"ann","text":"hi"}}"#;
        let e = entry(&stored("chat.irc.x.=23rust.message", env), &config("json")).unwrap();
        assert_eq!(e.path, PathBuf::from("irc.x/#rust/2026-12-01.jsonl"));
        let v: serde_json::Value = serde_json::from_str(&e.line).unwrap();
        assert_eq!(v["id"], "i\"d");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["message"]["body"]["text"], "hi");
        assert!(e.line.contains(env), "the stored bytes, not a re-encoding");
        // Pretty JSON from another client: compacted to one line.
        let pretty = "{\n  \"id\": \"x\",\n  \"stream\": \"stderr\"\n}";
        let e = entry(&stored("sb.log.bot.stderr", pretty), &config("json")).unwrap();
        assert_eq!(e.line.matches('\n').count(), 1);
        assert_eq!(e.path, PathBuf::from("switchboard/bot/2026-12-01.jsonl"));
        // Not JSON at all: kept as a string.
        let e = entry(
            &stored("chat.irc.x.room.message", "not json\nat all"),
            &config("json"),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&e.line).unwrap();
        assert_eq!(v["message"], "not json\nat all");
    }

    #[test]
    fn text_lines_read_like_irssi() {
        let env = r#"{"source":"irc-x","timestamp":"2026-12-01T12:00:00Z","headers":{"id":"a"},"body":{"sender":"ann","text":"hi"}}"#;
        let e = entry(&stored("chat.irc.x.=23rust.message", env), &config("text")).unwrap();
        assert_eq!(e.line, "[12:00:00] <ann> hi\n");
        assert_eq!(e.path, PathBuf::from("irc.x/#rust/2026-12-01.log"));
        let reply =
            r#"{"source":"pingbot","timestamp":"2026-12-01T12:00:02Z","body":{"text":"pong"}}"#;
        let e = entry(
            &stored("send.irc.x.=23rust.message", reply),
            &config("text"),
        )
        .unwrap();
        assert_eq!(e.line, "[12:00:02] <pingbot> pong\n");
    }

    #[test]
    fn components_stay_inside_one_directory() {
        assert_eq!(component("#rust"), "#rust");
        assert_eq!(component("a/b"), "a%2Fb");
        assert_eq!(component(".."), "%2E%2E");
        assert_eq!(component(""), "_");
        assert_eq!(component("ä b"), "%C3%A4%20b");
        assert!(component(&"x".repeat(500)).len() <= 200);
    }
}
