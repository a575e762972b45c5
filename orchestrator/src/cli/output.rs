//! What the client commands print: envelopes as lines, and text made
//! safe for a terminal.

use switchboard_bus::Envelope;
use switchboard_proto::SbSubject;

/// One line of `tail` (and `replay`) for a message on `subject`: with
/// `raw` the payload as it came; with `json` one JSON object
/// `{"subject", "envelope"}`; else `time subject [source] body`. Payloads on `sb.…` (lifecycle, control, API, logs) are
/// plain JSON and shown as `subject payload`; anything else that is not an
/// envelope says so, in the line, instead of a warning in the log.
pub fn tail_line(subject: &str, payload: &[u8], raw: bool, json: bool) -> String {
    let text = String::from_utf8_lossy(payload);
    if raw || SbSubject::parse(subject).is_ok() {
        return format!("{subject} {text}");
    }
    match Envelope::from_slice(payload) {
        Ok(env) if json => {
            let envelope: serde_json::Value =
                serde_json::from_slice(&env.to_vec()).unwrap_or(serde_json::Value::Null);
            serde_json::json!({"subject": subject, "envelope": envelope}).to_string()
        }
        Ok(env) => format!("{} {subject} [{}] {}", env.timestamp, env.source, env.body),
        Err(e) => format!("{subject} (not an envelope: {e}) {text}"),
    }
}

/// What may be printed to a terminal: control characters (which could
/// move the cursor, retitle the window or worse) are shown escaped, as
/// `\u{1b}`; to a pipe or file the text goes as it is.
pub fn shown(text: &str, terminal: bool) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && c != '\t';
    if !terminal || !text.chars().any(bad) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if bad(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_a_terminal() {
        let evil = "hi \u{1b}]0;owned\u{7} \u{1b}[2J\tend";
        let safe = shown(evil, true);
        assert!(!safe.chars().any(|c| c.is_control() && c != '\t'), "{safe}");
        assert!(safe.contains("\\u{1b}"), "{safe}");
        assert_eq!(shown(evil, false), evil, "pipes get the text as it is");
        assert!(matches!(
            shown("plain", true),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn tail_shows_lifecycle_payloads_as_they_are() {
        let hb = br#"{"id":"p","pid":1,"seq":1,"state":"running","uptime_ms":1,"timestamp":"2026-01-01T00:00:00Z"}"#;
        let line = tail_line("sb.op.p.heartbeat", hb, false, false);
        assert!(line.starts_with("sb.op.p.heartbeat {\"id\""), "{line}");
        assert!(!line.contains("not an envelope"));
        let env = Envelope::new("bot", serde_json::json!({"text": "hi"}));
        let line = tail_line("chat.t.x.r.message", &env.to_vec(), false, false);
        assert!(line.contains("[bot]") && line.contains("hi"), "{line}");
        let line = tail_line("chat.t.x.r.message", b"garbage", false, false);
        assert!(line.contains("not an envelope"), "{line}");
        let line = tail_line("chat.t.x.r.message", b"garbage", true, false);
        assert_eq!(line, "chat.t.x.r.message garbage");
    }
}
