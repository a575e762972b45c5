//! Reading the stream: where a read starts, one stored message, the
//! durable consumer (the logger's) and the ordered reader (`logs`,
//! `replay`).

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use switchboard_proto::Timestamp;

use bytes::Bytes;

use super::{StreamError, MSG_ID_HEADER};
use crate::error::BoxError;

/// The header nats-server puts on a message a stream copied from another
/// (`<stream> <sequence> <filter> <transform>`): where the copy came from.
const SOURCE_HEADER: &str = "Nats-Stream-Source";

/// The source stream's sequence number in a [`SOURCE_HEADER`] value
/// (its second word; the first is the stream's name, with `:<hash>` when
/// the source is in another domain).
fn source_sequence(value: &str) -> Option<u64> {
    value.split_whitespace().nth(1)?.parse().ok()
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
    pub(super) fn policy(self) -> consumer::DeliverPolicy {
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
    /// For a copy in an operator's own stream ([`OperatorStreams`](super::OperatorStreams)): its
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

    pub(super) fn from_message(stream: &str, m: jetstream::Message) -> Result<Stored, StreamError> {
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
    pub(super) stream: String,
    pub(super) consumer: consumer::PullConsumer,
    /// The acknowledged position it was opened at.
    pub(super) floor: u64,
    /// The running pull (requests kept in flight by the client, with
    /// idle heartbeats); made on first use and after an error.
    pub(super) messages: Option<consumer::pull::Stream>,
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
    pub(super) stream: String,
    pub(super) messages: consumer::pull::Ordered,
    pub(super) follow: bool,
    pub(super) done: bool,
    pub(super) backlog: u64,
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
