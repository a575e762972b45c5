//! The stream operations on [`Bus`]: ensure the stream and the operators'
//! copies, publish and wait for the store, open a durable consumer or a
//! reader, and how full a stream is.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use switchboard_proto::{Envelope, Timestamp};

use super::*;
use crate::client::Bus;
use crate::error::{BoxError, PublishError};

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
