//! The [`Envelope`]: what every chat event and send request travels in.
//!
//! On the wire an envelope is one JSON object:
//!
//! ```json
//! {"source":"irc-libera","timestamp":"2024-05-01T12:00:00.000000Z",
//!  "headers":{"id":"Wl3Jf0VfQ1YkQmSgP3x1Zc","room":"#rust"},
//!  "body":{"text":"hello","sender":"ferris","room":"#rust"}}
//! ```
//!
//! JSON so that an operator in any language can read and write it with its
//! NATS client and a JSON parser; `docs/envelope.schema.json` is the JSON
//! Schema of this format and agrees with [`Envelope::from_slice`].
//!
//! Rules (checked by [`Envelope::from_slice`], in this order):
//!
//! 1. at most [`MAX_ENVELOPE_BYTES`];
//! 2. valid JSON, and a JSON object;
//! 3. `source`: required string, not empty, at most [`MAX_SOURCE_BYTES`];
//! 4. `timestamp`: required RFC 3339 string (see [`Timestamp`]);
//! 5. `headers`: optional object of string values (default: empty); names
//!    not empty, at most [`MAX_HEADER_NAME_BYTES`];
//! 6. `body`: required, any JSON value including `null`.
//!
//! Unknown top-level fields are ignored, so that a newer sender can add
//! fields without breaking older receivers (forward compatibility). They are
//! dropped when the envelope is decoded and re-encoded.

mod fast;
mod timestamp;
mod wire;

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::json;

pub use timestamp::{Timestamp, TimestampError};
pub use wire::WireEnvelope;

/// Largest encoded envelope accepted, in bytes: NATS's default
/// `max_payload` (1 MiB), so anything that passes here also fits a message.
pub const MAX_ENVELOPE_BYTES: usize = 1024 * 1024;

/// Longest `source` accepted, in bytes. A source names an operator (an
/// [`OperatorId`](crate::OperatorId) is at most 64 bytes); the margin leaves
/// room for other producers without letting the field carry payloads.
pub const MAX_SOURCE_BYTES: usize = 256;

/// Longest header name accepted, in bytes. Names are keys like `room`, not
/// data; values have no limit of their own beyond the envelope's.
pub const MAX_HEADER_NAME_BYTES: usize = 128;

/// Names of the headers Switchboard itself reads and writes.
///
/// Headers are free-form strings; these are the ones with an agreed meaning.
pub mod headers {
    /// Unique id of the envelope, set by [`Envelope::new`](super::Envelope::new).
    /// Receivers drop an envelope whose id they have just seen, since
    /// overlapping NATS subscriptions can deliver one message twice.
    pub const ID: &str = "id";

    /// The raw, unescaped room name (e.g. `#rust.beginners`), because the
    /// subject carries only its escaped form.
    pub const ROOM: &str = "room";

    /// The [`ID`] of the envelope this one answers, set by
    /// [`Envelope::reply`](super::Envelope::reply), so that requesters can
    /// match answers to questions.
    pub const IN_REPLY_TO: &str = "in-reply-to";
}

/// One message on the bus: who made it, when, metadata, and a JSON body.
///
/// Build one with [`Envelope::new`] (which stamps the time and a fresh id),
/// send [`Envelope::to_vec`], and read with [`Envelope::from_slice`].
///
/// ```
/// use switchboard_proto::{headers, Envelope};
/// use serde_json::json;
///
/// let question = Envelope::new("bot-a", json!({"text": "ping"}))
///     .with_header(headers::ROOM, "#lobby");
/// let bytes = question.to_vec();
///
/// let received = Envelope::from_slice(&bytes)?;
/// assert_eq!(received.header(headers::ROOM), Some("#lobby"));
///
/// let answer = received.reply("bot-b", json!({"text": "pong"}));
/// assert_eq!(answer.header(headers::IN_REPLY_TO), received.id());
/// # Ok::<(), switchboard_proto::EnvelopeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    /// Id of the operator (or other producer) that made the envelope.
    pub source: String,
    /// When the envelope was made (UTC, microseconds).
    pub timestamp: Timestamp,
    /// Metadata as a string map; see [`headers`] for the agreed names.
    pub headers: BTreeMap<String, String>,
    /// The payload: any JSON value, `null` included.
    pub body: Value,
}

/// Why bytes are not a valid envelope, precise enough to fix the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The encoded envelope is over [`MAX_ENVELOPE_BYTES`].
    #[error(
        "envelope is {size} bytes, over the {max}-byte limit (NATS's default max_payload); \
         send a smaller body, or a reference to the data instead of the data"
    )]
    TooLarge {
        /// Size of the rejected bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not JSON at all.
    #[error("envelope is not valid JSON (line {line}, column {column}): {reason}")]
    NotJson {
        /// 1-based line of the first problem.
        line: usize,
        /// 1-based column of the first problem.
        column: usize,
        /// What the JSON parser tripped over.
        reason: String,
    },
    /// Valid JSON, but not an object.
    #[error(
        "envelope must be a JSON object with source, timestamp and body \
         (headers optional), but it is a JSON {found}"
    )]
    NotAnObject {
        /// JSON type that was found instead.
        found: &'static str,
    },
    /// A required field is absent.
    #[error(
        "envelope field `{field}` is missing (an envelope needs source, timestamp and body; headers optional)"
    )]
    MissingField {
        /// The missing field.
        field: &'static str,
    },
    /// A field has the wrong JSON type (`headers.<name>` for a header value).
    #[error("envelope field `{field}` must be a JSON {expected}, but it is a JSON {found}")]
    WrongType {
        /// The field, e.g. `source` or `headers.room`.
        field: String,
        /// The JSON type required.
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// `timestamp` is a string but not RFC 3339.
    #[error("envelope field `timestamp` is not a valid RFC 3339 date-time (`{value}`): {reason}")]
    BadTimestamp {
        /// The rejected text (shortened when long).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `source` is the empty string.
    #[error("envelope field `source` is empty; set it to the id of the operator that sent it")]
    EmptySource,
    /// `source` is over [`MAX_SOURCE_BYTES`].
    #[error(
        "envelope field `source` is {len} bytes, over the {max}-byte limit; \
         use the sending operator's id",
        max = MAX_SOURCE_BYTES
    )]
    SourceTooLong {
        /// Length of the rejected source in bytes.
        len: usize,
    },
    /// A header name is empty or too long.
    #[error("envelope header `{name}` is invalid: {reason}")]
    BadHeader {
        /// The header name (shortened when long).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

crate::error_kinds::error_kinds! {
    /// What kind of [`EnvelopeError`] it is.
    EnvelopeError => EnvelopeErrorKind {
        TooLarge, NotJson, NotAnObject, MissingField, WrongType, BadTimestamp, EmptySource,
        SourceTooLong, BadHeader,
    }
}

impl From<TimestampError> for EnvelopeError {
    fn from(e: TimestampError) -> Self {
        EnvelopeError::BadTimestamp {
            value: e.value,
            reason: e.reason,
        }
    }
}

impl EnvelopeError {
    fn not_json(e: &serde_json::Error) -> Self {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let reason = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
        EnvelopeError::NotJson {
            line: e.line(),
            column: e.column(),
            reason,
        }
    }
}

thread_local! {
    /// One id generator per thread: ids stay unique (each generator has its
    /// own random prefix) without the global lock of `nuid::next()`.
    static IDS: RefCell<nuid::NUID> = const { RefCell::new(nuid::NUID::new()) };
}

/// A fresh, unique envelope id (22 base-62 characters).
fn fresh_id() -> String {
    IDS.with(|ids| ids.borrow_mut().next().as_str().to_owned())
}

/// Takes bytes: the receive scanner has them, and only their length
/// counts (a UTF-8 check to make a `str` of them cost ~50 instructions).
fn check_source(source: &[u8]) -> Result<(), EnvelopeError> {
    if source.is_empty() {
        Err(EnvelopeError::EmptySource)
    } else if source.len() > MAX_SOURCE_BYTES {
        Err(EnvelopeError::SourceTooLong { len: source.len() })
    } else {
        Ok(())
    }
}

/// Bytes, as [`check_source`]; the name is UTF-8 (checked by whoever
/// found it), the lossy conversion only keeps the error path panic-free.
fn check_header_name(name: &[u8]) -> Result<(), EnvelopeError> {
    if name.is_empty() {
        Err(EnvelopeError::BadHeader {
            name: String::new(),
            reason: "header names must not be empty".to_owned(),
        })
    } else if name.len() > MAX_HEADER_NAME_BYTES {
        Err(EnvelopeError::BadHeader {
            name: json::excerpt(&String::from_utf8_lossy(name)),
            reason: format!(
                "the name is {} bytes, over the {MAX_HEADER_NAME_BYTES}-byte limit; \
                 put long data in the value or the body",
                name.len()
            ),
        })
    } else {
        Ok(())
    }
}

/// The fast-path wire shape: serde-derive straight from bytes, no
/// intermediate `Value` tree for the envelope itself.
#[derive(Deserialize)]
struct Wire {
    source: String,
    timestamp: Timestamp,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Value,
}

impl Wire {
    fn into_envelope(self) -> Result<Envelope, EnvelopeError> {
        let envelope = Envelope {
            source: self.source,
            timestamp: self.timestamp,
            headers: self.headers,
            body: self.body,
        };
        envelope.validate()?;
        Ok(envelope)
    }
}

/// Slow path, only for bytes the fast path rejected: re-parse into a
/// [`Value`] and find the first rule that is broken.
fn diagnose(bytes: &[u8], fast_error: &serde_json::Error) -> EnvelopeError {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(e) => return EnvelopeError::not_json(&e),
    };
    let Value::Object(map) = &value else {
        return EnvelopeError::NotAnObject {
            found: json::type_name(&value),
        };
    };
    let wrong = |field: &str, expected: &'static str, found: &Value| EnvelopeError::WrongType {
        field: field.to_owned(),
        expected,
        found: json::type_name(found),
    };

    match map.get("source") {
        None => return EnvelopeError::MissingField { field: "source" },
        Some(Value::String(source)) => {
            if let Err(e) = check_source(source.as_bytes()) {
                return e;
            }
        }
        Some(other) => return wrong("source", "string", other),
    }
    match map.get("timestamp") {
        None => return EnvelopeError::MissingField { field: "timestamp" },
        Some(Value::String(text)) => {
            if let Err(e) = Timestamp::parse(text) {
                return e.into();
            }
        }
        Some(other) => return wrong("timestamp", "string", other),
    }
    match map.get("headers") {
        None => {}
        Some(Value::Object(headers)) => {
            for (name, value) in headers {
                if !value.is_string() {
                    let field = format!("headers.{}", json::excerpt(name));
                    return wrong(&field, "string", value);
                }
                if let Err(e) = check_header_name(name.as_bytes()) {
                    return e;
                }
            }
        }
        Some(other) => return wrong("headers", "object", other),
    }
    if !map.contains_key("body") {
        return EnvelopeError::MissingField { field: "body" };
    }
    // Every rule holds on the generic tree, so the fast path tripped over
    // something the tree hides, such as a duplicated field. Ambiguous input
    // is refused rather than guessed at.
    EnvelopeError::not_json(fast_error)
}

/// Rough encoded size of a JSON value, looking a few levels deep, used only
/// to pre-size the output buffer.
fn estimate_len(value: &Value, depth: u32) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 12,
        Value::String(s) => s.len() + 2,
        _ if depth == 0 => 64,
        Value::Array(items) => {
            2 + items
                .iter()
                .map(|v| estimate_len(v, depth - 1) + 1)
                .sum::<usize>()
        }
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| k.len() + 4 + estimate_len(v, depth - 1))
                .sum::<usize>()
        }
    }
}

impl Envelope {
    /// A new envelope from `source` with `body`, stamped with the current
    /// time and a fresh unique [`headers::ID`].
    ///
    /// ```
    /// use switchboard_proto::Envelope;
    /// let a = Envelope::new("demo", serde_json::Value::Null);
    /// let b = Envelope::new("demo", serde_json::Value::Null);
    /// assert_ne!(a.id(), b.id());
    /// ```
    pub fn new(source: impl Into<String>, body: Value) -> Envelope {
        let mut headers = BTreeMap::new();
        headers.insert(headers::ID.to_owned(), fresh_id());
        Envelope {
            source: source.into(),
            timestamp: Timestamp::now(),
            headers,
            body,
        }
    }

    /// The envelope's unique id ([`headers::ID`]), if it has one.
    pub fn id(&self) -> Option<&str> {
        self.header(headers::ID)
    }

    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Sets header `name` to `value` (replacing any previous value), for
    /// building an envelope in one expression.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Envelope {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// A new envelope answering this one: fresh id and time, with
    /// [`headers::IN_REPLY_TO`] set to this envelope's id (left out when this
    /// envelope has none). Nothing else is copied.
    pub fn reply(&self, source: impl Into<String>, body: Value) -> Envelope {
        let reply = Envelope::new(source, body);
        match self.id() {
            Some(id) => reply.with_header(headers::IN_REPLY_TO, id),
            None => reply,
        }
    }

    /// Checks the rules [`Envelope::from_slice`] enforces on the fields
    /// (source and header names), for envelopes built in code.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError::EmptySource`], [`EnvelopeError::SourceTooLong`] or
    /// [`EnvelopeError::BadHeader`].
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        check_source(self.source.as_bytes())?;
        for name in self.headers.keys() {
            check_header_name(name.as_bytes())?;
        }
        Ok(())
    }

    /// Encodes the envelope as compact JSON:
    /// `{"source":…,"timestamp":…,"headers":{…},"body":…}`.
    ///
    /// This is on the publish hot path, so the buffer is sized up front and
    /// the fixed parts are written directly. The bytes are identical to
    /// `serde_json::to_vec(&envelope)`. No validation happens here; see
    /// [`Envelope::validate`].
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        self.write_to(&mut out);
        out
    }

    /// Appends the encoding of [`Envelope::to_vec`] to `out`, so that a
    /// caller can reuse one buffer across many envelopes.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"source\":");
        json::write_str(out, &self.source);
        out.extend_from_slice(b",\"timestamp\":\"");
        out.extend_from_slice(&self.timestamp.canonical_bytes());
        out.extend_from_slice(b"\",\"headers\":{");
        let mut first = true;
        for (name, value) in &self.headers {
            if !first {
                out.push(b',');
            }
            first = false;
            json::write_str(out, name);
            out.push(b':');
            json::write_str(out, value);
        }
        out.extend_from_slice(b"},\"body\":");
        match &self.body {
            Value::Null => out.extend_from_slice(b"null"),
            Value::String(s) => json::write_str(out, s),
            body => {
                // Writing a `Value` into a `Vec` has no failure path: the
                // writer cannot fail and `Value` keys are always strings.
                if let Err(e) = serde_json::to_writer(&mut *out, body) {
                    unreachable!("serializing a JSON value into memory failed: {e}");
                }
            }
        }
        out.push(b'}');
    }

    fn encoded_len_hint(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum();
        // 77 bytes of fixed keys, quotes, punctuation and the 27-byte
        // timestamp, rounded up.
        80 + self.source.len() + headers + estimate_len(&self.body, 3)
    }

    /// Decodes and validates an envelope (rules in the [module
    /// docs](self)).
    ///
    /// On the receive hot path: valid input is decoded in a single pass;
    /// only rejected input is parsed a second time to explain precisely what
    /// is wrong.
    ///
    /// # Errors
    ///
    /// An [`EnvelopeError`] naming the first broken rule.
    ///
    /// ```
    /// use switchboard_proto::{Envelope, EnvelopeError};
    ///
    /// let err = Envelope::from_slice(br#"{"source":"x","body":1}"#).unwrap_err();
    /// assert_eq!(err, EnvelopeError::MissingField { field: "timestamp" });
    /// ```
    pub fn from_slice(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge {
                size: bytes.len(),
                max: MAX_ENVELOPE_BYTES,
            });
        }
        match serde_json::from_slice::<Wire>(bytes) {
            Ok(wire) => wire.into_envelope(),
            Err(e) => Err(diagnose(bytes, &e)),
        }
    }
}

impl<'de> Deserialize<'de> for Envelope {
    /// Deserializes with the same rules as [`Envelope::from_slice`] (except
    /// the size limit, which only applies to bytes).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Wire::deserialize(deserializer)?
            .into_envelope()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn to_vec_equals_serde_json() {
        let env = Envelope::new("op\"1", json!({"a": [1, 2.5, "x\n"], "b": null}))
            .with_header("room", "#rust.beginners")
            .with_header("ctl", "\u{1}\u{7f}");
        let ours = env.to_vec();
        let theirs = serde_json::to_vec(&env).expect("serializes");
        assert_eq!(ours, theirs);
        for body in [json!(null), json!("text"), json!(3), json!([])] {
            let env = Envelope::new("s", body);
            assert_eq!(env.to_vec(), serde_json::to_vec(&env).expect("serializes"));
        }
    }

    #[test]
    fn hint_covers_small_envelopes() {
        let env = Envelope::new(
            "irc-libera",
            json!({"text": "hello there", "sender": "ferris"}),
        )
        .with_header("room", "#rust");
        let bytes = env.to_vec();
        assert!(env.encoded_len_hint() >= bytes.len());
    }

    #[test]
    fn ids_are_unique_across_threads() {
        let ids: Vec<String> = (0..4)
            .map(|_| std::thread::spawn(fresh_id))
            .map(|h| h.join().expect("thread ran"))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
    }

    #[test]
    fn duplicate_fields_are_refused() {
        let bytes = br#"{"source":"a","source":"b","timestamp":"2024-01-01T00:00:00Z","body":1}"#;
        let err = Envelope::from_slice(bytes).expect_err("duplicate");
        assert!(
            matches!(&err, EnvelopeError::NotJson { reason, .. } if reason.contains("duplicate")),
            "{err}"
        );
    }

    #[test]
    fn serde_deserialize_validates() {
        let value = json!({"source": "", "timestamp": "2024-01-01T00:00:00Z", "body": 1});
        let err = serde_json::from_value::<Envelope>(value).expect_err("empty source");
        assert!(err.to_string().contains("`source` is empty"), "{err}");
    }
}
