//! The durable stream: what the bus keeps after delivery.
//!
//! Core NATS forgets a message once it is delivered; a logger that was down,
//! `switchboard logs` after a daemon restart and `switchboard replay` need
//! what was said before they looked. The orchestrator keeps a JetStream
//! stream (a real store with retention, limits and a duplicate window, not
//! a home-made one) over [`STREAM_SUBJECTS`]; this module is the SDK's door
//! to it, without any async-nats type in its API:
//!
//! - [`Bus::ensure_stream`](crate::Bus::ensure_stream): create or update the stream to a
//!   [`StreamSpec`] (idempotent; the orchestrator calls it at start and on
//!   reload).
//! - [`Bus::publish_stored`](crate::Bus::publish_stored): publish an envelope and wait until the stream
//!   has stored it (at-least-once for the publisher: a retry after a lost
//!   ack is stored once, because the stream dedupes on the envelope id).
//! - [`Bus::durable`](crate::Bus::durable): a named consumer whose position the server keeps
//!   (the logger), with explicit acks.
//! - [`Bus::read_stored`](crate::Bus::read_stored): read a slice of the stream by time or sequence,
//!   then optionally follow it (the CLI's `logs` and `replay`).

use std::time::Duration;

use async_nats::jetstream::stream;

use crate::error::{kinds, BoxError};

/// The NATS header JetStream dedupes on. [`Bus::publish`](crate::Bus::publish) sets it to the
/// envelope's `id` when the daemon keeps a stream that captures the
/// subject ([`crate::BusOptions::stream_ids`]), so a republish within the
/// stream's duplicate window is stored once.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// The stream's name unless `switchboard.toml` says otherwise.
pub const DEFAULT_STREAM: &str = "SWITCHBOARD";

/// What the stream captures: chat events, send requests, operators' output
/// lines and the orchestrator's lifecycle events. Heartbeats, control and
/// API traffic are not kept (they are only meaningful live).
pub const STREAM_SUBJECTS: [&str; 4] = ["chat.>", "send.>", "sb.log.>", "sb.event.>"];

/// Whether the stream captures `subject` (it is under one of
/// [`STREAM_SUBJECTS`]).
pub fn captures(subject: &str) -> bool {
    STREAM_SUBJECTS
        .iter()
        .any(|s| subject.starts_with(s.trim_end_matches('>')))
}

/// What an operator's own stream keeps (see [`OperatorStreams`]): the
/// subjects only it (or the daemon, about it) publishes: chat events of
/// its instance, its output lines, its lifecycle events. `{id}` is the
/// operator's id.
pub const OPERATOR_SUBJECTS: [&str; 3] = ["chat.*.{id}.>", "sb.log.{id}.>", "sb.event.{id}"];

/// The shape of the stream: its name and retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Stream name (`A-Z a-z 0-9 - _`).
    pub name: String,
    /// Messages older than this are removed.
    pub max_age: Duration,
    /// Past this many bytes the oldest messages are removed.
    pub max_bytes: u64,
    /// A message whose `Nats-Msg-Id` was seen within this window is
    /// acknowledged but not stored again.
    pub duplicate_window: Duration,
    /// The largest message kept (0: up to the server's `max_payload`).
    /// Larger ones are still delivered live, only not stored, so nobody
    /// fills the stream with a few huge messages.
    pub max_message_bytes: u32,
    /// Copies JetStream keeps, each on another server: 1 on one host; 3
    /// in cluster mode, so the history survives the loss of any host
    /// (and a dead host's stream does not stop every publish to it).
    pub replicas: usize,
}

/// Each operator's own stream: a copy of its subjects
/// ([`OPERATOR_SUBJECTS`]) sourced from the main stream, with a quota of
/// its own.
///
/// Why: the main stream evicts its oldest messages when full, whoever
/// sent them, so one operator flooding its own subjects (a few seconds of
/// large messages) would empty everyone's history. JetStream has no
/// per-publisher byte limit inside one stream (`max_msgs_per_subject`
/// counts per subject, and a flooder can use as many subjects as it
/// likes), and streams may not capture overlapping subjects, so each
/// operator's subjects are copied out of the main stream into a stream of
/// its own (a JetStream *source*: the server copies, filtered, within
/// milliseconds). A flood then evicts only the flooder's copies, and what
/// reads one operator's history (`switchboard logs`) reads its own
/// stream. The main stream stays whole for the readers of everything (the
/// logger, `replay`); its space is reserved per operator on the server, so
/// a full main stream never takes it away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorStreams {
    /// Each operator's stream keeps at most this many bytes (reserved on
    /// the server).
    pub max_bytes: u64,
}

impl OperatorStreams {
    /// The name of operator `id`'s stream next to main stream `main`.
    pub fn name(main: &str, id: &str) -> String {
        format!("{main}_{id}")
    }

    /// The subjects of operator `id` its stream keeps.
    pub fn subjects(id: &str) -> Vec<String> {
        OPERATOR_SUBJECTS
            .iter()
            .map(|s| s.replace("{id}", id))
            .collect()
    }

    fn config(&self, main: &StreamSpec, id: &str) -> stream::Config {
        stream::Config {
            name: Self::name(&main.name, id),
            description: Some(format!(
                "Switchboard: what operator {id} published and its output, copied from {}",
                main.name
            )),
            sources: Some(
                Self::subjects(id)
                    .into_iter()
                    .map(|filter| stream::Source {
                        name: main.name.clone(),
                        filter_subject: Some(filter),
                        ..Default::default()
                    })
                    .collect(),
            ),
            max_bytes: i64::try_from(self.max_bytes).unwrap_or(i64::MAX),
            ..main.limits()
        }
    }
}

impl StreamSpec {
    /// Retention and limits, shared by the main stream and the operators'.
    fn limits(&self) -> stream::Config {
        stream::Config {
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            max_age: self.max_age,
            max_bytes: i64::try_from(self.max_bytes).unwrap_or(i64::MAX),
            max_message_size: if self.max_message_bytes == 0 {
                -1
            } else {
                i32::try_from(self.max_message_bytes).unwrap_or(i32::MAX)
            },
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas.max(1),
            ..Default::default()
        }
    }

    fn config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            description: Some("Switchboard: chat, send requests, operator logs and events".into()),
            subjects: STREAM_SUBJECTS.iter().map(|s| s.to_string()).collect(),
            ..self.limits()
        }
    }
}

/// What [`Bus::ensure_stream`](crate::Bus::ensure_stream) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// The stream did not exist.
    Created,
    /// It existed with other subjects or limits, and now has these.
    Updated,
    /// It already had this shape.
    Unchanged,
}

/// Why a stream operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The server has no JetStream (or this user may not use it).
    #[error("JetStream is not available on the NATS server (enable it, or check this user's permissions on $JS.API.>): {source}")]
    Unavailable {
        /// The client's error.
        source: BoxError,
    },
    /// The stream does not exist.
    #[error("stream `{name}` does not exist (the daemon creates it when JetStream is on)")]
    NoStream {
        /// Its name.
        name: String,
    },
    /// Creating or updating the stream was refused.
    #[error("cannot set up stream `{name}`: {source}")]
    Setup {
        /// Its name.
        name: String,
        /// The server's answer.
        source: BoxError,
    },
    /// Creating a consumer was refused.
    #[error("cannot create a consumer on stream `{name}`: {source}")]
    Consumer {
        /// The stream.
        name: String,
        /// The server's answer.
        source: BoxError,
    },
    /// The stream did not confirm an acknowledgement (it will deliver the
    /// message again).
    #[error("the acknowledgement of a message on `{subject}` was not confirmed: {source}")]
    Ack {
        /// The message's subject.
        subject: String,
        /// The client's error.
        source: BoxError,
    },
    /// Fetching or reading messages failed.
    #[error("reading stream `{name}` failed: {source}")]
    Read {
        /// The stream.
        name: String,
        /// The client's error.
        source: BoxError,
    },
}

kinds! {
    /// Coarse classes of [`StreamError`].
    StreamError => StreamErrorKind { Unavailable, NoStream, Setup, Consumer, Ack, Read }
}

mod ops;
mod read;

pub use ops::StreamState;
pub use read::{Durable, Reader, StartAt, Stored};
