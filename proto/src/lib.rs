//! The Switchboard wire contract.
//!
//! Everything that crosses NATS between the orchestrator, the bus library and
//! operators (in any language) is defined here, and only here:
//!
//! - [`envelope`]: the JSON [`Envelope`] every chat event travels in, with a
//!   fast encoder/decoder and precise validation errors.
//! - [`subject`]: the subject hierarchy (`chat.…`, `send.…`, `sb.…`), each
//!   shape built and parsed in one place ([`ChatSubject`], [`SbSubject`]),
//!   and the reversible escaping that turns any outside name into exactly
//!   one token.
//! - [`pattern`]: RabbitMQ-style topic patterns (`*` one token, `#` zero or
//!   more) and their tightest mapping onto NATS subscriptions.
//! - [`control`]: lifecycle (`ready`, heartbeats) and control verbs with
//!   their acknowledgements.
//! - [`chat`]: the common bodies protocol operators publish and accept, and
//!   [`ChatEvent`], a borrowed, typed view of one chat event.
//! - [`launch`]: the environment variables an operator is started with.
//!
//! The crate does no I/O at all (no sockets, no files, no async runtime), so
//! it can be used anywhere: in the orchestrator, in operators, in tests and in
//! fuzzers.
//!
//! ```
//! use switchboard_proto::{ChatAddress, Envelope, Pattern, headers};
//! use serde_json::json;
//!
//! let room = ChatAddress::new("irc", "libera", "#rust.beginners");
//! let subject = room.event_subject("message");
//! assert_eq!(subject, "chat.irc.libera.=23rust=2Ebeginners.message");
//!
//! let env = Envelope::new("irc-libera", json!({"text": "hi"}))
//!     .with_header(headers::ROOM, &room.room);
//! let bytes = env.to_vec();
//! assert_eq!(Envelope::from_slice(&bytes)?, env);
//!
//! let pattern: Pattern = "chat.irc.#".parse()?;
//! assert!(pattern.matches(&subject));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod chat;
pub mod control;
pub mod duration;
pub mod envelope;
pub mod launch;
pub mod pattern;
pub mod subject;

mod error_kinds;
mod json;

pub use chat::{
    kinds, ChatEvent, ChatEventError, ChatEventErrorKind, ChatKick, ChatMessage, ChatPresence,
    ChatRename, ChatTopic, SendRequest, SendResult,
};
pub use control::{
    Control, ControlAck, ControlFailure, ControlParseError, ControlParseErrorKind, Counters,
    FailureCode, Health, Heartbeat, OperatorState, ParseStateError, ParseVerbError, Ready, Verb,
    PROTOCOL_VERSION,
};
pub use envelope::{
    headers, Envelope, EnvelopeError, EnvelopeErrorKind, Timestamp, TimestampError, WireEnvelope,
    MAX_ENVELOPE_BYTES, MAX_HEADER_NAME_BYTES, MAX_SOURCE_BYTES,
};
pub use pattern::{
    Pattern, PatternError, PatternErrorKind, PatternToken, SubscriptionPlan, ToPattern,
};
pub use subject::{
    api_subject, control_reply_subject, control_subject, escape_token, event_subject,
    heartbeat_subject, is_valid_token, log_subject, log_wildcard, op_wildcard, ready_subject,
    unescape_token, Branch, ChatAddress, ChatPattern, ChatSubject, IdError, IdErrorKind,
    OperatorId, SbSubject, SubjectError, SubjectErrorKind, TokenError, TokenErrorKind, ALL_API,
    ALL_EVENTS, ALL_HEARTBEATS, ALL_LOGS, ALL_READY,
};
