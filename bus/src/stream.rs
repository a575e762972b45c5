//! The durable stream: what the bus keeps after delivery.
//!
//! Core NATS forgets a message once it is delivered; a logger that was down,
//! `switchboard logs` after a daemon restart and `switchboard replay` need
//! what was said before they looked. The orchestrator keeps a JetStream
//! stream (a real store with retention, limits and a duplicate window, not
//! a home-made one) over [`STREAM_SUBJECTS`]; this module is the SDK's door
//! to it, without any async-nats type in its API:
//!
//! - [`Bus::ensure_stream`]: create or update the stream to a
//!   [`StreamSpec`] (idempotent; the orchestrator calls it at start and on
//!   reload).
//! - [`Bus::publish_stored`]: publish an envelope and wait until the stream
//!   has stored it (at-least-once for the publisher: a retry after a lost
//!   ack is stored once, because the stream dedupes on the envelope id).
//! - [`Bus::durable`]: a named consumer whose position the server keeps
//!   (the logger), with explicit acks.
//! - [`Bus::read_stored`]: read a slice of the stream by time or sequence,
//!   then optionally follow it (the CLI's `logs` and `replay`).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt as _;
use switchboard_proto::{Envelope, Timestamp};

use crate::client::Bus;
use crate::error::{kinds, BoxError, PublishError};

/// The NATS header JetStream dedupes on. [`Bus::publish`] sets it to the
/// envelope's `id` when the daemon keeps a stream that captures the
/// subject ([`crate::BusOptions::stream_ids`]), so a republish within the
/// stream's duplicate window is stored once.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// The header nats-server puts on a message a stream copied from another
/// (`<stream> <sequence> <filter> <transform>`): where the copy came from.
const SOURCE_HEADER: &str = "Nats-Stream-Source";

/// The source stream's sequence number in a [`SOURCE_HEADER`] value
/// (its second word; the first is the stream's name, with `:<hash>` when
/// the source is in another domain).
fn source_sequence(value: &str) -> Option<u64> {
    value.split_whitespace().nth(1)?.parse().ok()
}

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
            num_replicas: 1,
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

/// What [`Bus::ensure_stream`] did.
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

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The first message the stream still has.
    First,
    /// The first message stored at or after this time.
    Time(Timestamp),
    /// This stream sequence number.
    Seq(u64),
    /// Only messages stored from now on.
    New,
}

impl StartAt {
    fn policy(self) -> consumer::DeliverPolicy {
        match self {
            StartAt::First => consumer::DeliverPolicy::All,
            StartAt::Time(t) => consumer::DeliverPolicy::ByStartTime {
                start_time: t.as_offset_date_time(),
            },
            StartAt::Seq(s) => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: s.max(1),
            },
            StartAt::New => consumer::DeliverPolicy::New,
        }
    }
}

/// One message read from the stream.
pub struct Stored {
    /// The subject it was published on.
    pub subject: String,
    /// Its payload (an envelope on chat/send subjects, plain JSON on
    /// `sb.log`/`sb.event`).
    pub payload: Bytes,
    /// Its stream sequence number: unique and increasing.
    pub seq: u64,
    /// When the stream stored it.
    pub stored_at: Timestamp,
    /// Its `Nats-Msg-Id` header (the envelope id), when it had one.
    pub msg_id: Option<String>,
    /// For a copy in an operator's own stream ([`OperatorStreams`]): its
    /// sequence number in the stream it was copied from. A stream that
    /// copies by several filters interleaves them in the order the copies
    /// arrive, which need not be the source's order.
    pub source_seq: Option<u64>,
    /// How many messages the consumer still has after this one.
    pub pending: u64,
    /// How many times it was delivered (more than 1 after a crash before
    /// the ack).
    pub delivered: i64,
    acker: Option<jetstream::message::Acker>,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("subject", &self.subject)
            .field("seq", &self.seq)
            .field("stored_at", &self.stored_at)
            .field("msg_id", &self.msg_id)
            .finish_non_exhaustive()
    }
}

impl Stored {
    /// A message not read from a stream (tests, tools): acknowledging it
    /// does nothing.
    pub fn new(
        subject: impl Into<String>,
        payload: impl Into<Bytes>,
        seq: u64,
        stored_at: Timestamp,
        msg_id: Option<String>,
    ) -> Stored {
        Stored {
            subject: subject.into(),
            payload: payload.into(),
            seq,
            stored_at,
            msg_id,
            source_seq: None,
            pending: 0,
            delivered: 1,
            acker: None,
        }
    }

    fn from_message(stream: &str, m: jetstream::Message) -> Result<Stored, StreamError> {
        let read = |source: BoxError| StreamError::Read {
            name: stream.to_string(),
            source,
        };
        let info = m.info().map_err(read)?;
        let (seq, pending, delivered, published) = (
            info.stream_sequence,
            info.pending,
            info.delivered,
            info.published,
        );
        let (msg, acker) = m.split();
        let msg_id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(MSG_ID_HEADER))
            .map(|v| v.as_str().to_string());
        let source_seq = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(SOURCE_HEADER))
            .and_then(|v| source_sequence(v.as_str()));
        Ok(Stored {
            subject: msg.subject.to_string(),
            payload: msg.payload,
            seq,
            stored_at: Timestamp::from_offset_date_time(published)
                .unwrap_or_else(|_| Timestamp::now()),
            msg_id,
            source_seq,
            pending,
            delivered,
            acker: Some(acker),
        })
    }

    /// Acknowledge this message and, the consumer acking "all", every one
    /// delivered before it. Waits for the server's confirmation, so an ack
    /// that returns is not lost with the connection.
    pub async fn ack(&mut self) -> Result<(), StreamError> {
        if let Some(acker) = self.acker.take() {
            let subject = self.subject.clone();
            acker
                .double_ack()
                .await
                .map_err(|source| StreamError::Ack { subject, source })?;
        }
        Ok(())
    }
}

/// [`Durable::fetch`] waits up to this long for more once it holds
/// [`LINGER_FROM`] messages and no more have arrived.
const LINGER: Duration = Duration::from_millis(2);
/// See [`LINGER`].
const LINGER_FROM: usize = 32;

/// A durable pull consumer: the server remembers what was acked, so a
/// restarted reader continues where the last one stopped, and anything
/// delivered but not acked comes again.
pub struct Durable {
    stream: String,
    consumer: consumer::PullConsumer,
    /// The acknowledged position it was opened at.
    floor: u64,
    /// The running pull (requests kept in flight by the client, with
    /// idle heartbeats); made on first use and after an error.
    messages: Option<consumer::pull::Stream>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("stream", &self.stream)
            .field("floor", &self.floor)
            .finish_non_exhaustive()
    }
}

impl Durable {
    /// The next messages: waits for one, then takes what has already
    /// arrived, up to `max`. Empty after `wait` without any.
    ///
    /// Cancel-safe: cancelled while waiting, it has taken nothing (and
    /// anything taken but not acknowledged is delivered again anyway).
    pub async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Stored>, StreamError> {
        use futures::FutureExt as _;
        let read = |name: &str, source: BoxError| StreamError::Read {
            name: name.to_string(),
            source,
        };
        let messages = match &mut self.messages {
            Some(m) => m,
            None => {
                let m = self
                    .consumer
                    .stream()
                    .max_messages_per_batch(max.max(1) * 2)
                    .heartbeat(Duration::from_secs(5))
                    .expires(Duration::from_secs(30))
                    .messages()
                    .await
                    .map_err(|e| read(&self.stream, Box::new(e)))?;
                self.messages.insert(m)
            }
        };
        let mut out = Vec::new();
        let first = match tokio::time::timeout(wait, messages.next()).await {
            Err(_) => return Ok(out),
            Ok(first) => first,
        };
        let mut next = first;
        loop {
            match next {
                Some(Ok(m)) => out.push(Stored::from_message(&self.stream, m)?),
                Some(Err(e)) => {
                    // Start a new pull next time (the server may be back
                    // by then); what was taken is returned.
                    self.messages = None;
                    if out.is_empty() {
                        return Err(read(&self.stream, Box::new(e)));
                    }
                    break;
                }
                None => {
                    self.messages = None;
                    break;
                }
            }
            if out.len() >= max {
                break;
            }
            match self.messages.as_mut().and_then(|m| m.next().now_or_never()) {
                Some(n) => next = n,
                // Under load (many were waiting), a moment more fills the
                // batch: fewer, larger writes and acknowledgements. A lone
                // message is not held back.
                None if out.len() >= LINGER_FROM => {
                    let Some(m) = self.messages.as_mut() else {
                        break;
                    };
                    match tokio::time::timeout(LINGER, m.next()).await {
                        Ok(n) => next = n,
                        Err(_) => break,
                    }
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// The last stream sequence the server has as acknowledged (every
    /// message up to it is done). After a crash, a batch written up to
    /// sequence `n` was acknowledged exactly when this is at least `n`.
    pub async fn acked_through(&mut self) -> Result<u64, StreamError> {
        let info = self.consumer.info().await.map_err(|e| StreamError::Read {
            name: self.stream.clone(),
            source: Box::new(e),
        })?;
        Ok(info.ack_floor.stream_sequence.max(self.floor))
    }

    /// Messages stored but not yet acked by this consumer.
    pub async fn pending(&mut self) -> Result<u64, StreamError> {
        let info = self.consumer.info().await.map_err(|e| StreamError::Read {
            name: self.stream.clone(),
            source: Box::new(e),
        })?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }
}

/// A read of the stream in order (an ordered consumer: no state on the
/// server, recreated by the client on a gap).
pub struct Reader {
    stream: String,
    messages: consumer::pull::Ordered,
    follow: bool,
    done: bool,
    backlog: u64,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("stream", &self.stream)
            .finish()
    }
}

impl Reader {
    /// How long a read that is not following waits for the next stored
    /// message before it takes the rest as evicted.
    pub const STALL: Duration = Duration::from_secs(2);

    /// How many stored messages there were to read when it was made (so a
    /// following reader with none does not wait for a live one to peek).
    pub fn backlog(&self) -> u64 {
        self.backlog
    }

    /// The next message; `None` once the stored messages are all read
    /// (unless following). A read that is not following also ends when no
    /// message comes for [`Reader::STALL`]: the messages it counted on
    /// were evicted while it read (a full stream still filling), and
    /// waiting for them would wait forever.
    pub async fn next(&mut self) -> Option<Result<Stored, StreamError>> {
        if self.done {
            return None;
        }
        let next = if self.follow {
            self.messages.next().await
        } else {
            match tokio::time::timeout(Self::STALL, self.messages.next()).await {
                Ok(next) => next,
                Err(_) => {
                    self.done = true;
                    return None;
                }
            }
        };
        let m = match next? {
            Ok(m) => m,
            Err(e) => {
                return Some(Err(StreamError::Read {
                    name: self.stream.clone(),
                    source: Box::new(e),
                }))
            }
        };
        let stored = match Stored::from_message(&self.stream, m) {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        if stored.pending == 0 && !self.follow {
            self.done = true;
        }
        Some(Ok(stored))
    }
}

impl Bus {
    /// Create the stream `spec` describes, or bring an existing one to it.
    /// Safe to call at every start and reload.
    pub async fn ensure_stream(&self, spec: &StreamSpec) -> Result<Ensured, StreamError> {
        self.ensure_config(spec.config()).await
    }

    async fn ensure_config(&self, wanted: stream::Config) -> Result<Ensured, StreamError> {
        let js = self.jetstream();
        let name = wanted.name.clone();
        let setup = |source: BoxError| StreamError::Setup {
            name: name.clone(),
            source,
        };
        match js.get_stream(&name).await {
            Ok(mut s) => {
                let have = s
                    .info()
                    .await
                    .map_err(|e| setup(Box::new(e)))?
                    .config
                    .clone();
                if same_shape(&have, &wanted) {
                    return Ok(Ensured::Unchanged);
                }
                js.update_stream(wanted)
                    .await
                    .map_err(|e| setup(Box::new(e)))?;
                Ok(Ensured::Updated)
            }
            Err(e) if is_not_found(&e) => {
                js.create_stream(wanted)
                    .await
                    .map_err(|e| setup(Box::new(e)))?;
                Ok(Ensured::Created)
            }
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(_) => Err(setup(Box::new(e))),
                _ => Err(StreamError::Unavailable {
                    source: Box::new(e),
                }),
            },
        }
    }

    /// Create or update operator `id`'s own stream ([`OperatorStreams`])
    /// next to the main stream `main` (which must exist).
    ///
    /// # Errors
    ///
    /// As [`Bus::ensure_stream`]; [`StreamErrorKind::Setup`] also when the
    /// server has no room left to reserve its quota.
    pub async fn ensure_operator_stream(
        &self,
        main: &StreamSpec,
        streams: &OperatorStreams,
        id: &str,
    ) -> Result<Ensured, StreamError> {
        self.ensure_config(streams.config(main, id)).await
    }

    /// Publish `envelope` on `subject` and wait until the stream stored it
    /// (or recognised its id as a duplicate). Returns the stream sequence.
    ///
    /// Only subjects the stream captures ([`STREAM_SUBJECTS`]) get an ack;
    /// anything else fails with [`PublishError::NotStored`] after the
    /// server says no stream took it.
    pub async fn publish_stored(
        &self,
        subject: &str,
        envelope: &Envelope,
    ) -> Result<u64, PublishError> {
        // The subject checked and the payload encoded as `publish` does
        // (the same reused buffers).
        let (nats_subject, payload) = self.encode(subject, envelope)?;
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = envelope.id() {
            headers.insert(MSG_ID_HEADER, id);
        }
        let not_stored = |source: BoxError| PublishError::NotStored {
            subject: subject.to_string(),
            source,
        };
        let ack = self
            .jetstream()
            .publish_with_headers(nats_subject, headers, payload)
            .await
            .map_err(|e| not_stored(Box::new(e)))?
            .await
            .map_err(|e| not_stored(Box::new(e)))?;
        crate::stats::Stats::add(&self.stats().published, 1);
        Ok(ack.sequence)
    }

    /// The durable consumer `name` on `stream` (created if missing; an
    /// existing one continues after its last acknowledged message), with
    /// explicit acks where an ack covers everything before it, reading the
    /// subjects matching `filters` (NATS wildcards; empty = all). Messages
    /// not acked within `ack_wait` are delivered again.
    pub async fn durable(
        &self,
        stream: &str,
        name: &str,
        filters: &[String],
        ack_wait: Duration,
        start: StartAt,
    ) -> Result<Durable, StreamError> {
        let js = self.jetstream();
        let s = get_stream(js, stream).await?;
        let mut config = consumer::pull::Config {
            durable_name: Some(name.to_string()),
            description: Some("Switchboard durable consumer".into()),
            ack_policy: consumer::AckPolicy::All,
            ack_wait,
            deliver_policy: start.policy(),
            filter_subjects: if filters.len() > 1 {
                filters.to_vec()
            } else {
                Vec::new()
            },
            filter_subject: if filters.len() == 1 {
                filters[0].clone()
            } else {
                String::new()
            },
            max_ack_pending: 10_000,
            ..Default::default()
        };
        let consumer_error = |source: BoxError| StreamError::Consumer {
            name: stream.to_string(),
            source,
        };
        // An existing consumer is re-made at its acknowledged position:
        // what a crashed reader had fetched but not acknowledged comes
        // again at once and in order (not after `ack_wait`, behind newer
        // messages, where an ack of a later one would cover it), and new
        // filters apply without losing the position.
        let mut floor = 0;
        if let Ok(mut old) = s.get_consumer::<consumer::pull::Config>(name).await {
            let info = old.info().await.map_err(|e| consumer_error(Box::new(e)))?;
            floor = info.ack_floor.stream_sequence;
            let started = info.delivered.stream_sequence > 0 || floor > 0;
            s.delete_consumer(name)
                .await
                .map_err(|e| consumer_error(Box::new(e)))?;
            if started {
                config.deliver_policy = StartAt::Seq(floor + 1).policy();
            }
        }
        let consumer = s
            .create_consumer(config)
            .await
            .map_err(|e| consumer_error(Box::new(e)))?;
        Ok(Durable {
            stream: stream.to_string(),
            consumer,
            floor,
            messages: None,
        })
    }

    /// Read the messages of `stream` matching `filters` (NATS subjects,
    /// wildcards allowed; empty = all) from `start`, in order. Without `follow` the
    /// read ends at the last message stored when it began; `None` when the
    /// stream has no match at all.
    pub async fn read_stored(
        &self,
        stream: &str,
        filters: &[String],
        start: StartAt,
        follow: bool,
    ) -> Result<Option<Reader>, StreamError> {
        let js = self.jetstream();
        let s = get_stream(js, stream).await?;
        let consumer_error = |source: BoxError| StreamError::Consumer {
            name: stream.to_string(),
            source,
        };
        let mut c = s
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: if filters.len() == 1 {
                    filters[0].clone()
                } else {
                    String::new()
                },
                filter_subjects: if filters.len() > 1 {
                    filters.to_vec()
                } else {
                    Vec::new()
                },
                deliver_policy: start.policy(),
                ..Default::default()
            })
            .await
            .map_err(|e| consumer_error(Box::new(e)))?;
        let pending = c
            .info()
            .await
            .map_err(|e| consumer_error(Box::new(e)))?
            .num_pending;
        if pending == 0 && !follow {
            return Ok(None);
        }
        let messages = c
            .messages()
            .await
            .map_err(|e| consumer_error(Box::new(e)))?;
        Ok(Some(Reader {
            stream: stream.to_string(),
            messages,
            follow,
            done: false,
            backlog: pending,
        }))
    }
}

/// How full a stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// Messages kept.
    pub messages: u64,
    /// Bytes kept.
    pub bytes: u64,
    /// Its size limit.
    pub max_bytes: u64,
    /// When the oldest kept message was stored (none when empty).
    pub oldest: Option<Timestamp>,
    /// Consumers.
    pub consumers: u64,
}

impl Bus {
    /// How full stream `name` is.
    pub async fn stream_state(&self, name: &str) -> Result<StreamState, StreamError> {
        let js = self.jetstream();
        let mut s = get_stream(js, name).await?;
        let info = s.info().await.map_err(|e| StreamError::Read {
            name: name.to_string(),
            source: Box::new(e),
        })?;
        let st = &info.state;
        Ok(StreamState {
            messages: st.messages,
            bytes: st.bytes,
            max_bytes: u64::try_from(info.config.max_bytes).unwrap_or(0),
            oldest: (st.messages > 0)
                .then(|| Timestamp::from_offset_date_time(st.first_timestamp).ok())
                .flatten(),
            consumers: u64::try_from(st.consumer_count).unwrap_or(0),
        })
    }
}

async fn get_stream(js: &jetstream::Context, name: &str) -> Result<stream::Stream, StreamError> {
    match js.get_stream(name).await {
        Ok(s) => Ok(s),
        Err(e) if is_not_found(&e) => Err(StreamError::NoStream {
            name: name.to_string(),
        }),
        Err(e) => Err(StreamError::Unavailable {
            source: Box::new(e),
        }),
    }
}

/// JetStream's "stream not found" (API error code 10059).
fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(ref api)
            if api.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// The parts of a stream's config that [`StreamSpec`] sets.
fn same_shape(have: &stream::Config, want: &stream::Config) -> bool {
    let mut a = have.subjects.clone();
    let mut b = want.subjects.clone();
    a.sort();
    b.sort();
    let filters = |c: &stream::Config| {
        let mut f: Vec<(String, Option<String>)> = c
            .sources
            .iter()
            .flatten()
            .map(|s| (s.name.clone(), s.filter_subject.clone()))
            .collect();
        f.sort();
        f
    };
    a == b
        && have.max_age == want.max_age
        && have.max_bytes == want.max_bytes
        && have.duplicate_window == want.duplicate_window
        && have.discard == want.discard
        && have.max_message_size == want.max_message_size
        && filters(have) == filters(want)
}

#[cfg(test)]
mod tests {
    use super::source_sequence;

    #[test]
    fn the_source_header_names_the_sequence_copied() {
        assert_eq!(source_sequence("SWITCHBOARD 1234 sb.log.a.> >"), Some(1234));
        assert_eq!(source_sequence("SWITCHBOARD:9f8e 7 > >"), Some(7));
        assert_eq!(source_sequence("SWITCHBOARD"), None);
        assert_eq!(source_sequence("SWITCHBOARD x > >"), None);
    }
}
