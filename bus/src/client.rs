//! [`Bus`]: a connected client that speaks envelopes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchboard_proto::{kinds, ChatAddress, Envelope, PatternToken, ToPattern};
use tokio::sync::watch;

use crate::error::{
    BoxError, ConnectError, PublishError, ReplyError, RequestError, SubscribeError,
};
use crate::fanout::{Claim, Lease, Source};
use crate::options::{inbox_prefix_problem, BusOptions};
use crate::stats::Stats;
use crate::subscription::{Delivery, RawSubscription, Subscription};

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
}

/// What [`Bus::publish`] reuses, so that a publish in the usual case
/// allocates nothing of its own (each allocation and its free on the
/// connection's thread cost ~150 instructions, the subject check ~450):
/// the vector envelopes are encoded into, the buffer each payload is
/// split off, and the last subject published on, already checked, as the
/// client's shared `Subject`.
///
/// Why both a vector and a buffer: encoding writes many small pieces,
/// which a `Vec` takes inline; the same writes into a `BytesMut` went
/// through its generic `put_slice` and cost ~900 instructions more per
/// 128-byte envelope than one copy of the finished bytes.
#[derive(Debug)]
struct PublishScratch {
    encoded: Vec<u8>,
    buf: BytesMut,
    subject: Option<async_nats::Subject>,
}

/// How much [`PublishScratch::buf`] takes at a time: payloads are split
/// off it until it is used up, then the next publish takes a new one (or
/// the same one again, once every payload split off it was written and
/// dropped). At most this much stays held by a payload still queued.
const PUBLISH_BUFFER: usize = 64 * 1024;

/// The heartbeat counter of publishes accepted but not yet written to the
/// connection (see [`Bus::counters`]).
pub const PUBLISH_PENDING: &str = "publish_pending";

/// How long an authorization refusal is retried before it is final (see
/// [`Bus::connect`]).
const AUTH_RETRY_WINDOW: Duration = Duration::from_millis(500);

impl Bus {
    /// Connect with `opts`, retrying until `opts.connect_timeout` passes so
    /// that an operator started together with its server does not fail.
    ///
    /// `source` is what envelopes made by [`Bus::send`] carry as their
    /// `source` (an operator uses its ID).
    pub async fn connect(opts: &BusOptions, source: &str) -> Result<Bus, ConnectError> {
        if opts.urls.is_empty() {
            return Err(ConnectError::NoUrl);
        }
        if let Some(prefix) = &opts.inbox_prefix {
            if let Some(reason) = inbox_prefix_problem(prefix) {
                return Err(ConnectError::BadInboxPrefix {
                    prefix: prefix.clone(),
                    reason,
                });
            }
        }
        let mut addrs = Vec::with_capacity(opts.urls.len());
        for url in &opts.urls {
            let addr: async_nats::ServerAddr =
                url.parse()
                    .map_err(|source: std::io::Error| ConnectError::BadUrl {
                        url: url.clone(),
                        source,
                    })?;
            addrs.push(addr);
        }
        let stats = Stats::new();
        let refused = Arc::new(watch::Sender::new(None));
        let refused_data = Arc::new(watch::Sender::new(Vec::new()));
        let prefix = opts.inbox_prefix.as_deref().unwrap_or("_INBOX");
        let inbox_start: Arc<str> = Arc::from(format!("{prefix}."));
        let urls = opts.urls.join(",");
        let started = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let nats_opts = build_options(
                opts,
                source,
                &stats,
                (&refused, &refused_data),
                &inbox_start,
            )
            .await?;
            match nats_opts.connect(addrs.clone()).await {
                Ok(client) => {
                    return Ok(Bus {
                        client,
                        source: Arc::from(source),
                        stats,
                        dedupe_window: opts.dedupe_window,
                        refused,
                        refused_data,
                        fanout: Arc::default(),
                        subscription_capacity: opts.subscription_capacity,
                        stream_ids: opts.stream_ids,
                        inbox_start: Arc::clone(&inbox_start),
                        scratch: Arc::new(Mutex::new(PublishScratch {
                            encoded: Vec::new(),
                            buf: BytesMut::with_capacity(PUBLISH_BUFFER),
                            subject: None,
                        })),
                    });
                }
                Err(e) => {
                    let e = match permanent_failure(e, opts, &urls) {
                        // nats-server can refuse a client whose CONNECT
                        // arrives while it reloads its users (it re-checks
                        // every client, the half-connected one too); the
                        // orchestrator reloads whenever an operator starts
                        // or stops. A real refusal is still one after a
                        // short while, so only that is final.
                        Ok(fatal @ ConnectError::Auth { .. })
                            if started.elapsed() < AUTH_RETRY_WINDOW =>
                        {
                            tracing::debug!(%urls, error = %fatal, "refused; retrying once the server settles");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        Ok(fatal) => return Err(fatal),
                        Err(e) => e,
                    };
                    if started.elapsed() + delay > opts.connect_timeout {
                        return Err(ConnectError::Unreachable {
                            urls,
                            waited: started.elapsed(),
                            source: Box::new(e),
                        });
                    }
                    tracing::debug!(%urls, error = %e, "NATS not reachable yet, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

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

    /// `subject`, checked, and `envelope`'s encoding, from the
    /// [`PublishScratch`]: the subject is checked and copied only when it
    /// differs from the last one.
    fn encode(
        &self,
        subject: &str,
        envelope: &Envelope,
    ) -> Result<(async_nats::Subject, Bytes), PublishError> {
        // Nothing in here panics while holding the lock, but a poisoned
        // scratch is still a valid one.
        let mut scratch = self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
        let nats_subject = match &scratch.subject {
            Some(last) if last.as_str() == subject => last.clone(),
            _ => {
                validate_publish_subject(subject)?;
                let checked = async_nats::Subject::from(subject);
                scratch.subject = Some(checked.clone());
                checked
            }
        };
        let PublishScratch { encoded, buf, .. } = &mut *scratch;
        encoded.clear();
        envelope.write_to(encoded);
        buf.extend_from_slice(encoded);
        let payload = buf.split().freeze();
        if payload.len() > PUBLISH_BUFFER {
            // The buffers grew for this one: let them go (the buffer with
            // the payload) rather than keep large ones for the small
            // envelopes after it.
            *encoded = Vec::new();
            *buf = BytesMut::with_capacity(PUBLISH_BUFFER);
        }
        Ok((nats_subject, payload))
    }

    /// The NATS client underneath (for the stream module).
    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
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

    /// Flush what is queued and close the connection.
    pub async fn close(&self) {
        self.stats.closing.store(true, Ordering::Relaxed);
        let _ = self.client.flush().await;
        let _ = self.client.drain().await;
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

/// Pause before connection attempt number `attempts` (async-nats counts
/// from 1, the first connection included): none for the first, then 50,
/// 100, 200 ... ms up to `max`. A restarted local server is picked up
/// within a fraction of a second, and an operator's first connection
/// costs no sleep at all.
fn reconnect_delay(attempts: usize, max: Duration) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(10);
    Duration::from_millis(50u64 << exp).min(max)
}

/// The client is closed, or the connection gone for good: `e` says which.
fn closed(e: impl std::error::Error + Send + Sync + 'static) -> PublishError {
    PublishError::Closed {
        source: Box::new(e),
    }
}

/// Reject subjects NATS would silently mishandle, with a message that says
/// which token is wrong.
///
/// On every publish, so one pass over the bytes: ASCII tokens (the usual
/// case) are checked byte by byte; a token with other characters falls
/// back to Unicode's whitespace and control classes.
pub(crate) fn validate_publish_subject(subject: &str) -> Result<(), PublishError> {
    let bad = |reason: String| PublishError::BadSubject {
        subject: subject.to_string(),
        reason,
    };
    if subject.is_empty() {
        return Err(bad("the subject is empty".into()));
    }
    // One pass over the bytes: forbidden ASCII at once, token checks at
    // each dot and at the end.
    let bytes = subject.as_bytes();
    let mut start = 0;
    let mut index = 1;
    let mut plain = true;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'.' {
            // Most tokens are plain and longer than one byte: nothing
            // more to check for them.
            if !plain || i - start < 2 {
                check_token(subject, start, i, index, plain)?;
            }
            start = i + 1;
            index += 1;
            plain = true;
        } else if b <= b' ' || b == 0x7f {
            return Err(bad(format!("token {index} contains whitespace")));
        } else if b >= 0x80 {
            plain = false;
        }
    }
    check_token(subject, start, bytes.len(), index, plain)?;
    Ok(())
}

/// The checks of token number `index`, `subject[start..end]`, that need
/// the whole token: not empty, not a wildcard, and (when it has non-ASCII
/// characters) no Unicode whitespace or control character.
fn check_token(
    subject: &str,
    start: usize,
    end: usize,
    index: usize,
    plain: bool,
) -> Result<(), PublishError> {
    let bad = |reason: String| PublishError::BadSubject {
        subject: subject.to_string(),
        reason,
    };
    // Tokens end at ASCII dots, so these are char boundaries.
    let token = subject.get(start..end).unwrap_or_default();
    if token.is_empty() {
        return Err(bad(format!("token {index} is empty")));
    }
    if token == "*" || token == ">" {
        return Err(bad(format!(
            "token {index} is a wildcard; publish needs a literal subject"
        )));
    }
    if !plain && token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(format!("token {index} contains whitespace")));
    }
    Ok(())
}

/// The connect errors that waiting cannot cure (credentials the server
/// refuses, a certificate we do not trust, TLS that cannot be set up), as
/// the error `connect` returns at once (`Ok`); the ones worth another
/// attempt (server not up yet) are given back (`Err`).
fn permanent_failure(
    e: async_nats::ConnectError,
    opts: &BusOptions,
    urls: &str,
) -> Result<ConnectError, async_nats::ConnectError> {
    use async_nats::ConnectErrorKind as Kind;
    let problem = match e.kind() {
        // async-nats says "authorization violation: nats: authorization
        // violation"; once is enough.
        Kind::AuthorizationViolation => {
            return Ok(ConnectError::Auth {
                urls: urls.to_string(),
                method: credentials_offered(opts),
                reason: "authorization violation".to_string(),
                source: Box::new(e),
            })
        }
        // Raised on our side, before the server could judge them.
        Kind::Authentication => {
            return Ok(ConnectError::Auth {
                urls: urls.to_string(),
                method: credentials_offered(opts),
                reason: format!(
                    "they cannot sign the server's challenge; is the seed valid? ({e})"
                ),
                source: Box::new(e),
            })
        }
        // Raised before the handshake: the CA or client certificate files
        // do not parse, or the host is not a valid TLS server name.
        Kind::Tls => format!("cannot set up TLS: {e}"),
        // The handshake itself fails inside the socket, so async-nats
        // reports it as I/O; the rustls error underneath says what it was.
        _ => match rustls_error(&e) {
            Some(tls) => format!("TLS handshake failed: {}", handshake_problem(tls, opts)),
            None => return Err(e),
        },
    };
    Ok(ConnectError::Tls {
        urls: urls.to_string(),
        problem,
        source: Box::new(e),
    })
}

/// Which credentials `opts` offers, for messages (never their values).
fn credentials_offered(opts: &BusOptions) -> String {
    let mut offered = Vec::new();
    if let Some(user) = &opts.user {
        offered.push(format!("user `{user}` with a password"));
    }
    if opts.token.is_some() {
        offered.push("a token".to_string());
    }
    if let Some(path) = &opts.creds_file {
        offered.push(format!("credentials file {}", path.display()));
    }
    if let Some(path) = &opts.nkey_file {
        offered.push(format!("nkey seed from {}", path.display()));
    }
    if offered.is_empty() {
        "no credentials given".to_string()
    } else {
        offered.join(" and ")
    }
}

/// The rustls error somewhere in `e`'s chain. tokio-rustls wraps it in an
/// `io::Error`, whose `source()` skips it, so each level is unwrapped by
/// hand.
fn rustls_error(e: &async_nats::ConnectError) -> Option<&async_nats::rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<async_nats::rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<async_nats::rustls::Error>())
        {
            return Some(tls);
        }
        next = err.source();
    }
    None
}

/// A handshake failure in words an operator's admin can act on.
fn handshake_problem(tls: &async_nats::rustls::Error, opts: &BusOptions) -> String {
    use async_nats::rustls::{CertificateError as Cert, Error};
    match tls {
        Error::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => match &opts.tls_ca {
            Some(ca) => format!(
                "the server's certificate is not signed by the CA in {}",
                ca.display()
            ),
            None => "the server's certificate is not signed by a CA this system trusts; \
                     give its CA with SWITCHBOARD_NATS_TLS_CA (BusOptions::tls_ca)"
                .to_string(),
        },
        Error::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            format!("the server's certificate is not valid for the host in the URL ({tls})")
        }
        Error::InvalidCertificate(
            Cert::Expired
            | Cert::ExpiredContext { .. }
            | Cert::NotValidYet
            | Cert::NotValidYetContext { .. },
        ) => format!("the server's certificate is outside its validity period ({tls})"),
        // What a plain-text server's first bytes look like to rustls.
        Error::InvalidMessage(_) => {
            format!("the server did not answer in TLS; does it have TLS enabled? ({tls})")
        }
        other => other.to_string(),
    }
}

/// The subject of a server error that refuses a subscription, e.g.
/// `Permissions Violation for Subscription to "_INBOX.x.*"`.
fn refused_subscription(server_error: &str) -> Option<&str> {
    let rest = server_error
        .trim()
        .strip_prefix("Permissions Violation for Subscription to ")?;
    let rest = rest.strip_prefix('"')?;
    rest.split('"').next().filter(|s| !s.is_empty())
}

/// The two records of refused subscriptions: this client's inboxes, and
/// everything else.
type Refusals<'a> = (
    &'a Arc<watch::Sender<Option<String>>>,
    &'a Arc<watch::Sender<Vec<String>>>,
);

async fn build_options(
    opts: &BusOptions,
    source: &str,
    stats: &Arc<Stats>,
    (refused, refused_data): Refusals<'_>,
    inbox_start: &Arc<str>,
) -> Result<async_nats::ConnectOptions, ConnectError> {
    let mut o = async_nats::ConnectOptions::new()
        .name(opts.name.clone().unwrap_or_else(|| source.to_string()))
        .client_capacity(opts.publish_buffer)
        .subscription_capacity(opts.subscription_capacity)
        .connection_timeout(opts.connect_timeout)
        .max_reconnects(None::<usize>)
        .require_tls(opts.require_tls);
    if let Some(prefix) = &opts.inbox_prefix {
        o = o.custom_inbox_prefix(prefix);
    }
    let max_delay = opts.max_reconnect_delay;
    o = o.reconnect_delay_callback(move |attempts| reconnect_delay(attempts, max_delay));
    if let (Some(user), Some(pass)) = (&opts.user, &opts.password) {
        o = o.user_and_password(user.clone(), pass.clone());
    }
    if let Some(token) = &opts.token {
        o = o.token(token.clone());
    }
    if let Some(path) = &opts.creds_file {
        o = o
            .credentials_file(path)
            .await
            .map_err(|source| ConnectError::File {
                what: "NATS credentials",
                path: path.display().to_string(),
                source,
            })?;
    }
    if let Some(path) = &opts.nkey_file {
        let seed = std::fs::read_to_string(path).map_err(|source| ConnectError::File {
            what: "nkey seed",
            path: path.display().to_string(),
            source,
        })?;
        o = o.nkey(seed.trim().to_string());
    }
    // async-nats reads these files only during the handshake and reports
    // a missing one as a TLS error; checked here, the message names the
    // file and says what it is for.
    let readable = |what: &'static str, path: &std::path::Path| {
        std::fs::File::open(path)
            .map(drop)
            .map_err(|source| ConnectError::File {
                what,
                path: path.display().to_string(),
                source,
            })
    };
    if let Some(ca) = &opts.tls_ca {
        readable("TLS CA", ca)?;
        o = o.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &opts.tls_client {
        readable("TLS client certificate", cert)?;
        readable("TLS client key", key)?;
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    let stats = Arc::clone(stats);
    let refused = Arc::clone(refused);
    let refused_data = Arc::clone(refused_data);
    let inbox_start = Arc::clone(inbox_start);
    let was_down = Arc::new(AtomicBool::new(false));
    o = o.event_callback(move |event| {
        let stats = Arc::clone(&stats);
        let refused = Arc::clone(&refused);
        let refused_data = Arc::clone(&refused_data);
        let inbox_start = Arc::clone(&inbox_start);
        let was_down = Arc::clone(&was_down);
        async move {
            match event {
                async_nats::Event::Disconnected => {
                    was_down.store(true, Ordering::Relaxed);
                    Stats::add(&stats.disconnects, 1);
                    if stats.closing.load(Ordering::Relaxed) {
                        tracing::debug!("NATS connection closed");
                    } else {
                        tracing::warn!(
                            "lost the NATS connection; queueing publishes and reconnecting"
                        );
                    }
                }
                async_nats::Event::Connected => {
                    if was_down.swap(false, Ordering::Relaxed) {
                        refused.send_replace(None);
                        refused_data.send_replace(Vec::new());
                        Stats::add(&stats.reconnects, 1);
                        tracing::info!("reconnected to NATS");
                    }
                }
                async_nats::Event::SlowConsumer(sid) => {
                    // One event per message the client had to drop.
                    stats.slow_consumer(&format_args!("subscription {sid}"));
                }
                async_nats::Event::ServerError(e) => {
                    if let async_nats::ServerError::Other(text) = &e {
                        // Only inboxes: other refused subscriptions are the
                        // caller's (logged below), not every request's.
                        match refused_subscription(text) {
                            Some(s) if s.starts_with(inbox_start.as_ref()) => {
                                refused.send_replace(Some(s.to_string()));
                            }
                            Some(s) => {
                                refused_data.send_if_modified(|all| {
                                    let new = !all.iter().any(|a| a == s);
                                    if new {
                                        all.push(s.to_string());
                                    }
                                    new
                                });
                            }
                            None => {}
                        }
                    }
                    tracing::warn!(error = %e, "NATS server error");
                }
                async_nats::Event::ClientError(e) => {
                    if stats.closing.load(Ordering::Relaxed) {
                        tracing::debug!(error = %e, "NATS client error while closing");
                    } else {
                        tracing::warn!(error = %e, "NATS client error");
                    }
                }
                async_nats::Event::LameDuckMode => {
                    tracing::info!("NATS server is entering lame duck mode");
                }
                async_nats::Event::Draining | async_nats::Event::Closed => {}
            }
        }
    });
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays() {
        let max = Duration::from_secs(2);
        let d: Vec<u128> = (1..=8)
            .map(|a| reconnect_delay(a, max).as_millis())
            .collect();
        assert_eq!(d, vec![0, 50, 100, 200, 400, 800, 1600, 2000]);
        assert_eq!(reconnect_delay(usize::MAX, max), max);
    }

    #[test]
    fn refused_subscriptions_are_recognised() {
        assert_eq!(
            refused_subscription(r#"Permissions Violation for Subscription to "_INBOX.abc.*""#),
            Some("_INBOX.abc.*")
        );
        assert_eq!(
            refused_subscription(
                r#"Permissions Violation for Subscription to "a.b" using queue "q""#
            ),
            Some("a.b")
        );
        assert_eq!(
            refused_subscription(r#"Permissions Violation for Publish to "a.b""#),
            None
        );
        assert_eq!(refused_subscription("Authorization Violation"), None);
    }

    #[test]
    fn credentials_are_named_not_shown() {
        let opts = BusOptions::new("nats://x:1")
            .token("s3cret-token")
            .nkey_file("/run/sb/seed");
        let said = credentials_offered(&opts);
        assert_eq!(said, "a token and nkey seed from /run/sb/seed");
        assert_eq!(
            credentials_offered(&BusOptions::new("nats://x:1").user_password("bot", "hunter2")),
            "user `bot` with a password"
        );
        assert_eq!(
            credentials_offered(&BusOptions::new("nats://x:1")),
            "no credentials given"
        );
    }

    #[test]
    fn publish_subject_validation() {
        assert!(validate_publish_subject("chat.irc.x.y.message").is_ok());
        assert!(validate_publish_subject("chat.irc.x.=23caf\u{e9}.message").is_ok());
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "a.*",
            "a.>",
            "a b",
            "a.\tb",
            "a.b\u{7f}",
            "a.\u{a0}",
            "x.\u{85}",
        ] {
            let e = validate_publish_subject(bad).unwrap_err();
            assert!(e.to_string().contains("cannot publish"), "{e}");
        }
    }
}
