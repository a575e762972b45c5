//! [`Bus`]: a connected client that speaks envelopes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchboard_proto::{kinds, ChatAddress, Envelope, PatternToken, ToPattern};
use tokio::sync::watch;

use crate::error::{BoxError, PublishError, ReplyError, RequestError, SubscribeError};
use crate::fanout::{Claim, Lease, Source};
use crate::stats::Stats;
use crate::subscription::{Delivery, RawSubscription, Subscription};

mod connect;
mod publish;

// The docs here link to the options (connect.rs reads them).
#[cfg(doc)]
use crate::options::BusOptions;

use publish::validate_publish_subject;
use publish::PublishScratch;

/// A connection to the bus. Cheap to clone; clones share the connection
/// and the counters.
///
/// Everything an operator sends goes through here: envelopes on chat and
/// send subjects, plain JSON for lifecycle and control. The connection
/// reconnects by itself; publishes made while it is down are queued (see
/// [`BusOptions::publish_buffer`]) and sent once it is back.
#[derive(Clone, Debug)]
pub struct Bus {
    client: async_nats::Client,
    source: Arc<str>,
    stats: Arc<Stats>,
    dedupe_window: usize,
    /// The last subscription to one of this client's inboxes that the
    /// server refused with a permissions violation. A request whose reply
    /// inbox is refused can never be answered, so it fails at once instead
    /// of at its timeout. Cleared on reconnect: the client subscribes
    /// again then, and hears again if it still may not.
    refused: Arc<watch::Sender<Option<String>>>,
    /// Every other subscription the server refused (its permissions do
    /// not cover it): a subscriber that would hear nothing there. The
    /// operator runtime reports these as health `failed`. Cleared on
    /// reconnect and by [`Bus::forget_refused_subscriptions`].
    refused_data: Arc<watch::Sender<Vec<String>>>,
    /// Which NATS subjects this client's subscriptions read, so that
    /// patterns with the same plan share one NATS subscription.
    fanout: Arc<crate::fanout::Fanout>,
    subscription_capacity: usize,
    /// See [`BusOptions::stream_ids`].
    stream_ids: bool,
    /// `<inbox prefix>.`: this client's private replies and sync probes,
    /// which a pattern starting with a wildcard would otherwise receive
    /// (and count as malformed envelopes).
    inbox_start: Arc<str>,
    /// What [`Bus::publish`] keeps from one message to the next (shared
    /// by clones, like the connection).
    scratch: Arc<Mutex<PublishScratch>>,
    /// The JetStream context [`crate::stream`] works through, made on
    /// first use and kept (shared by clones): one per call spawned an ack
    /// task each time and cost ~5,000 instructions per
    /// [`Bus::publish_stored`].
    jetstream: Arc<OnceLock<async_nats::jetstream::Context>>,
}

/// The heartbeat counter of publishes accepted but not yet written to the
/// connection (see [`Bus::counters`]).
pub const PUBLISH_PENDING: &str = "publish_pending";

/// How long [`Bus::close`] waits for the server to take what is queued. A
/// server that is gone never does: Ctrl-C on `switchboard run` signals the
/// daemon and its embedded nats-server together (one process group), and
/// the daemon's close waited for it forever.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

impl Bus {
    /// The `source` this client stamps on envelopes it creates.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The subscriptions (other than to this client's inboxes) that the
    /// server refused since connecting, or since
    /// [`Bus::forget_refused_subscriptions`]; watch it to hear of new
    /// ones. A refused subscription never delivers anything.
    pub fn refused_subscriptions(&self) -> watch::Receiver<Vec<String>> {
        self.refused_data.subscribe()
    }

    /// Forget the refusals [`Bus::refused_subscriptions`] reports, when
    /// the subscriptions they were about are gone (a reload makes new
    /// ones, which the server judges again).
    pub fn forget_refused_subscriptions(&self) {
        self.refused_data.send_if_modified(|all| {
            let had = !all.is_empty();
            all.clear();
            had
        });
    }

    /// The counters (received, published, malformed, ...) of this client.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// What heartbeats report: [`Stats::snapshot`], with `published`
    /// counting messages written to the connection (not merely queued in
    /// the client), and `publish_pending` the ones accepted but not yet
    /// written (waiting for a reconnect; lost if the process ends first).
    pub fn counters(&self) -> switchboard_proto::Counters {
        use std::sync::atomic::Ordering;
        let mut c = self.stats.snapshot();
        let queued = c.published;
        let written = self
            .client
            .statistics()
            .out_messages
            .load(Ordering::Relaxed);
        c.published = written;
        c.extra
            .insert(PUBLISH_PENDING.to_string(), queued.saturating_sub(written));
        c
    }

    /// Whether the connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Publish `envelope` on `subject` (a literal subject, no wildcards).
    ///
    /// Returns once the message is queued, not when it reached the server:
    /// call [`Bus::flush`] where that matters (before exit, after ready).
    /// When the daemon keeps a durable stream ([`BusOptions::stream_ids`])
    /// and it captures `subject`, the envelope's `id` also goes in the
    /// `Nats-Msg-Id` header, so the stream stores a republished envelope
    /// once (see [`crate::stream`]); [`Bus::publish_stored`] waits for the
    /// stream.
    pub async fn publish(&self, subject: &str, envelope: &Envelope) -> Result<(), PublishError> {
        let (nats_subject, payload) = self.encode(subject, envelope)?;
        // `stream_ids` first: looking the id up costs ~60 instructions.
        let stored_id = if self.stream_ids { envelope.id() } else { None };
        let headers = match stored_id {
            Some(id) if crate::stream::captures(subject) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(crate::stream::MSG_ID_HEADER, id);
                Some(headers)
            }
            _ => None,
        };
        self.send_checked(subject, nats_subject, headers, payload)
            .await
    }

    /// This connection's JetStream context (for the stream module).
    pub(crate) fn jetstream(&self) -> &async_nats::jetstream::Context {
        self.jetstream
            .get_or_init(|| async_nats::jetstream::new(self.client.clone()))
    }

    /// Answer a chat event with `text`, in the room it came from: publish
    /// on `send.<protocol>.<instance>.<room>.message` an envelope from this
    /// client with a fresh id, `in-reply-to` the event's id and the raw
    /// `room` header. See [`ChatEvent`](switchboard_proto::ChatEvent) for
    /// what counts as a chat event.
    ///
    /// # Errors
    ///
    /// [`ReplyError::NotChat`] when `to` is not a chat event (a `send.…`
    /// request, or a body without `sender`), [`ReplyError::Publish`] when
    /// publishing fails.
    pub async fn reply(&self, to: &Delivery, text: impl Into<String>) -> Result<(), ReplyError> {
        let chat = to.chat()?;
        let envelope = chat.reply_envelope(&self.source, text);
        self.publish(&chat.reply_subject(kinds::MESSAGE), &envelope)
            .await?;
        Ok(())
    }

    /// Say `text` in `room`: publish a `message` request on
    /// `send.<protocol>.<instance>.<room>.message`, from this client, with
    /// a fresh id and the raw `room` header.
    pub async fn send_text(
        &self,
        room: &ChatAddress,
        text: impl Into<String>,
    ) -> Result<(), PublishError> {
        let mut body = serde_json::Map::with_capacity(1);
        body.insert("text".to_owned(), serde_json::Value::String(text.into()));
        let envelope = Envelope::new(self.source.as_ref(), serde_json::Value::Object(body))
            .with_header(switchboard_proto::headers::ROOM, room.room.as_str());
        self.publish(&room.send_subject(kinds::MESSAGE), &envelope)
            .await
    }

    /// Build an envelope from `body` (source = this client, fresh id and
    /// timestamp), publish it, and return it.
    pub async fn send(
        &self,
        subject: &str,
        body: serde_json::Value,
    ) -> Result<Envelope, PublishError> {
        let env = Envelope::new(self.source.as_ref(), body);
        self.publish(subject, &env).await?;
        Ok(env)
    }

    /// Publish any serialisable value as plain JSON (lifecycle and control
    /// payloads, which are not envelopes).
    pub async fn publish_json<T: Serialize>(
        &self,
        subject: &str,
        value: &T,
    ) -> Result<(), PublishError> {
        let bytes = serde_json::to_vec(value).map_err(|source| PublishError::Serialize {
            subject: subject.to_string(),
            source,
        })?;
        self.publish_bytes(subject, Bytes::from(bytes)).await
    }

    /// Publish raw bytes (for tests and bridges; envelopes should use
    /// [`Bus::publish`]).
    pub async fn publish_bytes(&self, subject: &str, payload: Bytes) -> Result<(), PublishError> {
        self.publish_with_headers(subject, None, payload).await
    }

    /// Publish `payload` with NATS headers (none: a plain publish).
    async fn publish_with_headers(
        &self,
        subject: &str,
        headers: Option<async_nats::HeaderMap>,
        payload: Bytes,
    ) -> Result<(), PublishError> {
        validate_publish_subject(subject)?;
        let nats_subject = async_nats::Subject::from(subject);
        self.send_checked(subject, nats_subject, headers, payload)
            .await
    }

    /// Publish on `nats_subject`, which is `subject` after
    /// [`validate_publish_subject`] passed it.
    async fn send_checked(
        &self,
        subject: &str,
        nats_subject: async_nats::Subject,
        headers: Option<async_nats::HeaderMap>,
        payload: Bytes,
    ) -> Result<(), PublishError> {
        let size = payload.len();
        let sent = match headers {
            None => self.client.publish(nats_subject, payload).await,
            Some(headers) => {
                self.client
                    .publish_with_headers(nats_subject, headers, payload)
                    .await
            }
        };
        sent.map_err(|e| match e.kind() {
            async_nats::client::PublishErrorKind::MaxPayloadExceeded => PublishError::TooLarge {
                subject: subject.to_string(),
                size,
            },
            async_nats::client::PublishErrorKind::InvalidSubject => PublishError::BadSubject {
                subject: subject.to_string(),
                reason: e.to_string(),
            },
            _ => closed(e),
        })?;
        Stats::add(&self.stats.published, 1);
        Ok(())
    }

    /// Send a reply to a request's reply subject.
    pub async fn respond_json<T: Serialize>(
        &self,
        reply_to: &str,
        value: &T,
    ) -> Result<(), PublishError> {
        self.publish_json(reply_to, value).await?;
        // Replies are latency-sensitive and often the last thing a handler
        // does before a shutdown: push them out now.
        let _ = self.client.flush().await;
        Ok(())
    }

    /// Wait until everything published so far has been written to the
    /// server.
    pub async fn flush(&self) -> Result<(), PublishError> {
        self.client.flush().await.map_err(closed)
    }

    /// Wait until the server has processed everything this client sent so
    /// far, subscriptions included.
    ///
    /// [`Bus::flush`] only empties the socket buffer; after `sync` a
    /// message published by *another* client is guaranteed to reach the
    /// subscriptions made before it. It costs one round trip: a message to
    /// a private inbox, which the server handles after our earlier
    /// commands because it processes a connection in order.
    ///
    /// The inbox is under [`BusOptions::inbox_prefix`], and the user must
    /// be allowed to both subscribe and publish there; a refused
    /// subscription fails at once with [`PublishError::Denied`].
    pub async fn sync(&self) -> Result<(), PublishError> {
        use futures::StreamExt as _;
        let inbox = self.client.new_inbox();
        let mut sub = self.client.subscribe(inbox.clone()).await.map_err(closed)?;
        let waited = Duration::from_secs(10);
        let deadline = tokio::time::Instant::now() + waited;
        // A probe written just before a disconnect is noticed dies with the
        // socket; send another every half second until one comes back.
        loop {
            if self.refused.borrow().as_deref() == Some(inbox.as_str()) {
                return Err(PublishError::Denied {
                    subject: inbox,
                    reason: "sync needs a subscription to an inbox of this client; if this \
                             user may only subscribe to its own inbox prefix, set \
                             SWITCHBOARD_NATS_INBOX_PREFIX (BusOptions::inbox_prefix) to it"
                        .into(),
                });
            }
            self.client
                .publish(inbox.clone(), Bytes::new())
                .await
                .map_err(closed)?;
            let _ = self.client.flush().await;
            let wait = (deadline - tokio::time::Instant::now()).min(Duration::from_millis(500));
            match tokio::time::timeout(wait, sub.next()).await {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => {
                    return Err(PublishError::Closed {
                        source: "the connection closed during sync".into(),
                    })
                }
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(PublishError::TimedOut { waited })
                }
                Err(_) => {}
            }
        }
    }

    /// Subscribe to envelopes matching `pattern` (`*` one token, `#` zero
    /// or more, anywhere): a [`Pattern`](switchboard_proto::Pattern), its
    /// text, or a [`ChatPattern`](switchboard_proto::ChatPattern).
    ///
    /// The returned stream yields each matching envelope once: the NATS
    /// subscriptions of the pattern's plan never overlap, a client-side
    /// filter removes what NATS cannot express, and recent ids are
    /// remembered so a republished envelope is dropped (and counted).
    /// Malformed payloads are counted and logged, never returned.
    pub async fn subscribe<P: ToPattern + ?Sized>(
        &self,
        pattern: &P,
    ) -> Result<Subscription, SubscribeError> {
        let pattern = pattern
            .to_pattern()
            .map_err(|source| SubscribeError::BadPattern { source })?;
        let plan = pattern.nats_plan();
        let mut sources = Vec::with_capacity(plan.subjects.len());
        let mut lease = Lease::new(&self.fanout);
        let capacity = self.subscription_capacity;
        for subject in &plan.subjects {
            let source = match self.fanout.claim(subject, capacity) {
                Claim::Direct => match self.nats_subscribe(subject).await {
                    Ok(sub) => {
                        lease.add_direct(subject);
                        Source::Direct(sub)
                    }
                    Err(e) => {
                        self.fanout.unclaim_direct(subject);
                        return Err(e);
                    }
                },
                Claim::Shared(rx, id) => {
                    lease.add_route(subject, id);
                    Source::Shared(rx)
                }
                Claim::NeedsShared => {
                    let sub = self.nats_subscribe(subject).await?;
                    let (rx, id) = self.fanout.share(subject, sub, capacity, &self.stats);
                    lease.add_route(subject, id);
                    Source::Shared(rx)
                }
            };
            sources.push(source);
        }
        let sees_inbox = matches!(
            pattern.tokens().first(),
            Some(PatternToken::Star | PatternToken::Hash)
        );
        Ok(Subscription::new(
            pattern.into_owned(),
            plan.needs_filter,
            sees_inbox.then(|| Arc::clone(&self.inbox_start)),
            sources,
            lease,
            Arc::clone(&self.stats),
            self.dedupe_window,
        ))
    }

    /// Subscribe to one literal subject (or NATS wildcard subject) and get
    /// the raw messages: for lifecycle/control JSON, not envelopes.
    pub async fn subscribe_raw(&self, subject: &str) -> Result<RawSubscription, SubscribeError> {
        Ok(RawSubscription::new(self.nats_subscribe(subject).await?))
    }

    async fn nats_subscribe(
        &self,
        subject: &str,
    ) -> Result<async_nats::Subscriber, SubscribeError> {
        self.client
            .subscribe(subject.to_string())
            .await
            .map_err(|e| match e.kind() {
                async_nats::client::SubscribeErrorKind::InvalidSubject => {
                    SubscribeError::BadSubject {
                        subject: subject.to_string(),
                        source: Box::new(e),
                    }
                }
                _ => SubscribeError::Closed {
                    source: Box::new(e),
                },
            })
    }

    /// Send `value` as JSON to `subject` and parse the JSON answer.
    pub async fn request_json<T: Serialize, R: DeserializeOwned>(
        &self,
        subject: &str,
        value: &T,
        timeout: Duration,
    ) -> Result<R, RequestError> {
        let payload = json_request(subject, value)?;
        let reply = self.request_bytes(subject, payload, timeout).await?;
        json_reply(subject, &reply)
    }

    /// Send an envelope as a request and parse the envelope that answers.
    pub async fn request(
        &self,
        subject: &str,
        envelope: &Envelope,
        timeout: Duration,
    ) -> Result<Envelope, RequestError> {
        let reply = self
            .request_bytes(subject, envelope.to_vec().into(), timeout)
            .await?;
        Envelope::from_slice(&reply).map_err(|e| RequestError::BadReply {
            subject: subject.to_string(),
            source: Box::new(e),
        })
    }

    /// Raw request/reply with a timeout.
    ///
    /// Fails with [`RequestError::ReplyDenied`] as soon as the server
    /// refuses the subscription to this client's reply inbox (a user
    /// allowed only `<prefix>.>` whose client uses another prefix), rather
    /// than waiting out `timeout` for an answer that cannot come.
    pub async fn request_bytes(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RequestError> {
        let mut refused = self.refused.subscribe();
        let denied = |inbox: &Option<String>| RequestError::ReplyDenied {
            subject: subject.to_string(),
            inbox: inbox.clone().unwrap_or_default(),
        };
        // Already refused on this connection: do not make the responder
        // work for an answer nobody can receive.
        let already = refused.borrow_and_update().clone();
        if already.is_some() {
            return Err(denied(&already));
        }
        let req = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        let answer = tokio::select! {
            answer = self.client.send_request(subject.to_string(), req) => answer,
            r = refused.wait_for(Option::is_some) => {
                // `Err` only if the sender is gone, which it is not while
                // `self` holds it.
                return Err(denied(&r.map(|r| r.clone()).unwrap_or_default()));
            }
        };
        match answer {
            Ok(msg) => Ok(msg.payload),
            Err(e) => Err(match e.kind() {
                async_nats::RequestErrorKind::NoResponders => RequestError::NoResponders {
                    subject: subject.to_string(),
                },
                async_nats::RequestErrorKind::TimedOut => RequestError::TimedOut {
                    subject: subject.to_string(),
                    timeout,
                },
                _ => RequestError::Other {
                    subject: subject.to_string(),
                    source: Box::new(e),
                },
            }),
        }
    }

    /// A request whose answer must come on `reply`, a subject the
    /// responder may publish on by its own permissions, rather than on
    /// this client's inbox. The orchestrator sends control requests this
    /// way (`sb.op.<id>.ack.<token>`): nats-server forgets the "reply
    /// allowed" it grants for inbox answers whenever it reloads its config,
    /// which it does each time an operator starts or stops, and an ack
    /// lost that way would look like a hung operator.
    pub async fn request_bytes_via(
        &self,
        subject: &str,
        reply: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RequestError> {
        let other = |e: BoxError| RequestError::Other {
            subject: subject.to_string(),
            source: e,
        };
        let mut answers = self
            .client
            .subscribe(reply.to_string())
            .await
            .map_err(|e| other(Box::new(e)))?;
        self.client
            .publish_with_reply(subject.to_string(), reply.to_string(), payload)
            .await
            .map_err(|e| other(Box::new(e)))?;
        use futures::StreamExt as _;
        match tokio::time::timeout(timeout, answers.next()).await {
            Ok(Some(msg)) => Ok(msg.payload),
            Ok(None) => Err(other("the connection closed".into())),
            Err(_) => Err(RequestError::TimedOut {
                subject: subject.to_string(),
                timeout,
            }),
        }
    }

    /// A request several responders may answer (NATS service discovery:
    /// every instance of a service answers `$SRV.PING`): every answer
    /// that arrives on this client's inbox within `window`, in order of
    /// arrival; none is not an error.
    pub async fn request_all(
        &self,
        subject: &str,
        payload: Bytes,
        window: Duration,
    ) -> Result<Vec<Bytes>, RequestError> {
        let other = |e: BoxError| RequestError::Other {
            subject: subject.to_string(),
            source: e,
        };
        let inbox = self.client.new_inbox();
        let mut answers = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| other(Box::new(e)))?;
        self.client
            .publish_with_reply(subject.to_string(), inbox, payload)
            .await
            .map_err(|e| other(Box::new(e)))?;
        use futures::StreamExt as _;
        let mut out = Vec::new();
        let end = tokio::time::Instant::now() + window;
        while let Ok(Some(msg)) = tokio::time::timeout_at(end, answers.next()).await {
            out.push(msg.payload);
        }
        Ok(out)
    }

    /// [`Bus::request_bytes_via`] with JSON both ways.
    pub async fn request_json_via<T: Serialize, R: DeserializeOwned>(
        &self,
        subject: &str,
        reply: &str,
        value: &T,
        timeout: Duration,
    ) -> Result<R, RequestError> {
        let payload = json_request(subject, value)?;
        let answer = self
            .request_bytes_via(subject, reply, payload, timeout)
            .await?;
        json_reply(subject, &answer)
    }

    /// Flush what is queued and close the connection; without a server
    /// to take it, give up after 2 s (what was queued is
    /// lost, and said so).
    pub async fn close(&self) {
        self.stats.closing.store(true, Ordering::Relaxed);
        let done = async {
            let _ = self.client.flush().await;
            let _ = self.client.drain().await;
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, done).await.is_err() {
            tracing::warn!(
                "the NATS server did not take what was queued within {CLOSE_TIMEOUT:?}; \
                 closed without it"
            );
        }
    }
}

/// A request's JSON payload, or why it has none.
fn json_request<T: Serialize>(subject: &str, value: &T) -> Result<Bytes, RequestError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|source| RequestError::Serialize {
            subject: subject.to_string(),
            source,
        })
}

/// A JSON answer as the caller's type, or why not.
fn json_reply<R: DeserializeOwned>(subject: &str, answer: &[u8]) -> Result<R, RequestError> {
    serde_json::from_slice(answer).map_err(|e| RequestError::BadReply {
        subject: subject.to_string(),
        source: Box::new(e),
    })
}

/// The client is closed, or the connection gone for good: `e` says which.
fn closed(e: impl std::error::Error + Send + Sync + 'static) -> PublishError {
    PublishError::Closed {
        source: Box::new(e),
    }
}
