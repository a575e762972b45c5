//! One websocket text frame from a relay, parsed into a NIP-01 relay
//! message with the `nostr` crate, or a typed reason to skip it.
//!
//! This is the only place relay input is parsed, so it is what the fuzz
//! target (`fuzz/fuzz_targets/relay_message.rs`) drives: no input may
//! panic, and every refusal says which of the four things went wrong.

use nostr::prelude::RelayMessage;
use serde_json::Value;

/// Why a frame was skipped.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Longer than `max_event_bytes`.
    #[error("frame of {len} bytes is over the limit of {max} (max_event_bytes)")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON at all.
    #[error("frame is not JSON: {source}")]
    NotJson {
        /// What serde_json said.
        source: serde_json::Error,
    },
    /// A JSON array whose first element is a message type we do not know.
    #[error("unknown relay message type {kind:?}")]
    UnknownType {
        /// The type, cut to 32 characters.
        kind: String,
    },
    /// A known type with the wrong shape (missing fields, bad event).
    #[error("malformed {kind} message: {source}")]
    Malformed {
        /// The message type.
        kind: String,
        /// What the `nostr` crate said.
        source: serde_json::Error,
    },
}

switchboard_bus::proto::error_kinds!(
    /// What kind of [`FrameError`] this is.
    FrameError => FrameErrorKind { TooLarge, NotJson, UnknownType, Malformed }
);

/// The relay message types of NIP-01, NIP-42 and NIP-45 (and NIP-77's,
/// which we never ask for but the crate parses).
const KNOWN: &[&str] = &[
    "EVENT", "OK", "EOSE", "NOTICE", "CLOSED", "AUTH", "COUNT", "NEG-MSG", "NEG-ERR",
];

/// Parses one frame. Checks the size first, so an oversize event costs
/// no parsing.
pub fn parse(text: &str, max_bytes: usize) -> Result<RelayMessage<'static>, FrameError> {
    if text.len() > max_bytes {
        return Err(FrameError::TooLarge {
            len: text.len(),
            max: max_bytes,
        });
    }
    match serde_json::from_str::<RelayMessage<'static>>(text) {
        Ok(message) => Ok(message),
        // Only a refused frame is parsed a second time, to say why.
        Err(source) => Err(classify(text, source)),
    }
}

fn classify(text: &str, source: serde_json::Error) -> FrameError {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(source) => return FrameError::NotJson { source },
    };
    let kind = value
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .map(|s| s.chars().take(32).collect::<String>());
    match kind {
        Some(kind) if !KNOWN.contains(&kind.as_str()) => FrameError::UnknownType { kind },
        Some(kind) => FrameError::Malformed { kind, source },
        None => FrameError::Malformed {
            kind: "non-array".to_string(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_message_type() {
        let id = "a".repeat(64);
        assert!(matches!(
            parse(&format!(r#"["OK","{id}",true,""]"#), 1000),
            Ok(RelayMessage::Ok { status: true, .. })
        ));
        assert!(matches!(
            parse(r#"["EOSE","s"]"#, 1000),
            Ok(RelayMessage::EndOfStoredEvents(_))
        ));
        assert!(matches!(
            parse(r#"["NOTICE","hi"]"#, 1000),
            Ok(RelayMessage::Notice(_))
        ));
        assert!(matches!(
            parse(r#"["CLOSED","s","auth-required: x"]"#, 1000),
            Ok(RelayMessage::Closed { .. })
        ));
        assert!(matches!(
            parse(r#"["AUTH","challenge"]"#, 1000),
            Ok(RelayMessage::Auth { .. })
        ));
    }

    #[test]
    fn refusals_are_classified() {
        let kind = |t: &str| parse(t, 100).unwrap_err().kind();
        assert_eq!(kind("not json"), FrameErrorKind::NotJson);
        assert_eq!(kind(r#"["WHAT","x"]"#), FrameErrorKind::UnknownType);
        assert_eq!(kind(r#"["EVENT","s",{"id":1}]"#), FrameErrorKind::Malformed);
        assert_eq!(kind(r#"{"a":1}"#), FrameErrorKind::Malformed);
        assert_eq!(kind(r#"[]"#), FrameErrorKind::Malformed);
        assert_eq!(
            kind(&format!(r#"["NOTICE","{}"]"#, "x".repeat(200))),
            FrameErrorKind::TooLarge
        );
    }
}
