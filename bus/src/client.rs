//! [`Bus`]: a connected client that speaks envelopes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchboard_proto::{Envelope, Pattern};

use crate::error::{ConnectError, PublishError, RequestError, SubscribeError};
use crate::options::BusOptions;
use crate::stats::Stats;
use crate::subscription::{RawSubscription, Subscription};

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
}

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
        let mut addrs = Vec::with_capacity(opts.urls.len());
        for url in &opts.urls {
            let addr: async_nats::ServerAddr =
                url.parse()
                    .map_err(|e: std::io::Error| ConnectError::BadUrl {
                        url: url.clone(),
                        reason: e.to_string(),
                    })?;
            addrs.push(addr);
        }
        let stats = Stats::new();
        let urls = opts.urls.join(",");
        let started = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let nats_opts = build_options(opts, source, &stats).await?;
            match nats_opts.connect(addrs.clone()).await {
                Ok(client) => {
                    return Ok(Bus {
                        client,
                        source: Arc::from(source),
                        stats,
                        dedupe_window: opts.dedupe_window,
                    })
                }
                Err(e) => {
                    let reason = e.to_string();
                    if matches!(
                        e.kind(),
                        async_nats::ConnectErrorKind::AuthorizationViolation
                            | async_nats::ConnectErrorKind::Authentication
                    ) {
                        return Err(ConnectError::Auth { urls, reason });
                    }
                    if started.elapsed() + delay > opts.connect_timeout {
                        return Err(ConnectError::Unreachable {
                            urls,
                            waited: started.elapsed(),
                            reason,
                        });
                    }
                    tracing::debug!(%urls, error = %reason, "NATS not reachable yet, retrying");
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

    /// The counters (received, published, malformed, ...) of this client.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Whether the connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Publish `envelope` on `subject` (a literal subject, no wildcards).
    ///
    /// Returns once the message is queued, not when it reached the server:
    /// call [`Bus::flush`] where that matters (before exit, after ready).
    pub async fn publish(&self, subject: &str, envelope: &Envelope) -> Result<(), PublishError> {
        self.publish_bytes(subject, Bytes::from(envelope.to_vec()))
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
        let bytes = serde_json::to_vec(value).map_err(|e| PublishError::BadSubject {
            subject: subject.to_string(),
            reason: format!("payload does not serialise to JSON: {e}"),
        })?;
        self.publish_bytes(subject, Bytes::from(bytes)).await
    }

    /// Publish raw bytes (for tests and bridges; envelopes should use
    /// [`Bus::publish`]).
    pub async fn publish_bytes(&self, subject: &str, payload: Bytes) -> Result<(), PublishError> {
        validate_publish_subject(subject)?;
        let size = payload.len();
        self.client
            .publish(subject.to_string(), payload)
            .await
            .map_err(|e| match e.kind() {
                async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
                    PublishError::TooLarge {
                        subject: subject.to_string(),
                        size,
                    }
                }
                async_nats::client::PublishErrorKind::InvalidSubject => PublishError::BadSubject {
                    subject: subject.to_string(),
                    reason: e.to_string(),
                },
                _ => PublishError::Closed(e.to_string()),
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
        self.client
            .flush()
            .await
            .map_err(|e| PublishError::Closed(e.to_string()))
    }

    /// Wait until the server has processed everything this client sent so
    /// far, subscriptions included.
    ///
    /// [`Bus::flush`] only empties the socket buffer; after `sync` a
    /// message published by *another* client is guaranteed to reach the
    /// subscriptions made before it. It costs one round trip: a message to
    /// a private inbox, which the server handles after our earlier
    /// commands because it processes a connection in order.
    pub async fn sync(&self) -> Result<(), PublishError> {
        use futures::StreamExt as _;
        let inbox = self.client.new_inbox();
        let mut sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| PublishError::Closed(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // A probe written just before a disconnect is noticed dies with the
        // socket; send another every half second until one comes back.
        loop {
            self.client
                .publish(inbox.clone(), Bytes::new())
                .await
                .map_err(|e| PublishError::Closed(e.to_string()))?;
            let _ = self.client.flush().await;
            let wait = (deadline - tokio::time::Instant::now()).min(Duration::from_millis(500));
            match tokio::time::timeout(wait, sub.next()).await {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => {
                    return Err(PublishError::Closed("connection closed during sync".into()))
                }
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(PublishError::Closed(
                        "no round trip through the server within 10 s".into(),
                    ))
                }
                Err(_) => {}
            }
        }
    }

    /// Subscribe to envelopes matching `pattern` (`*` one token, `#` zero
    /// or more, anywhere).
    ///
    /// The returned stream yields each matching envelope once: the NATS
    /// subscriptions of the pattern's plan never overlap, a client-side
    /// filter removes what NATS cannot express, and recent ids are
    /// remembered so a republished envelope is dropped (and counted).
    /// Malformed payloads are counted and logged, never returned.
    pub async fn subscribe(&self, pattern: &Pattern) -> Result<Subscription, SubscribeError> {
        let plan = pattern.nats_plan();
        let mut subs = Vec::with_capacity(plan.subjects.len());
        for subject in &plan.subjects {
            subs.push(self.nats_subscribe(subject).await?);
        }
        Ok(Subscription::new(
            pattern.clone(),
            plan.needs_filter,
            subs,
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
                        reason: e.to_string(),
                    }
                }
                _ => SubscribeError::Closed(e.to_string()),
            })
    }

    /// Send `value` as JSON to `subject` and parse the JSON answer.
    pub async fn request_json<T: Serialize, R: DeserializeOwned>(
        &self,
        subject: &str,
        value: &T,
        timeout: Duration,
    ) -> Result<R, RequestError> {
        let payload = serde_json::to_vec(value).map_err(|e| RequestError::Other {
            subject: subject.to_string(),
            reason: format!("request does not serialise to JSON: {e}"),
        })?;
        let reply = self.request_bytes(subject, payload.into(), timeout).await?;
        serde_json::from_slice(&reply).map_err(|e| RequestError::BadReply {
            subject: subject.to_string(),
            reason: e.to_string(),
        })
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
            reason: e.to_string(),
        })
    }

    /// Raw request/reply with a timeout.
    pub async fn request_bytes(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RequestError> {
        let req = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        match self.client.send_request(subject.to_string(), req).await {
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
                    reason: e.to_string(),
                },
            }),
        }
    }

    /// Flush what is queued and close the connection.
    pub async fn close(&self) {
        let _ = self.client.flush().await;
        let _ = self.client.drain().await;
    }
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

/// Reject subjects NATS would silently mishandle, with a message that says
/// which token is wrong.
fn validate_publish_subject(subject: &str) -> Result<(), PublishError> {
    let bad = |reason: String| PublishError::BadSubject {
        subject: subject.to_string(),
        reason,
    };
    if subject.is_empty() {
        return Err(bad("the subject is empty".into()));
    }
    for (i, token) in subject.split('.').enumerate() {
        if token.is_empty() {
            return Err(bad(format!("token {} is empty", i + 1)));
        }
        if token == "*" || token == ">" {
            return Err(bad(format!(
                "token {} is a wildcard; publish needs a literal subject",
                i + 1
            )));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(format!("token {} contains whitespace", i + 1)));
        }
    }
    Ok(())
}

async fn build_options(
    opts: &BusOptions,
    source: &str,
    stats: &Arc<Stats>,
) -> Result<async_nats::ConnectOptions, ConnectError> {
    let mut o = async_nats::ConnectOptions::new()
        .name(opts.name.clone().unwrap_or_else(|| source.to_string()))
        .client_capacity(opts.publish_buffer)
        .subscription_capacity(opts.subscription_capacity)
        .connection_timeout(opts.connect_timeout)
        .max_reconnects(None::<usize>)
        .require_tls(opts.require_tls);
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
    if let Some(ca) = &opts.tls_ca {
        o = o.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &opts.tls_client {
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    let stats = Arc::clone(stats);
    let was_down = Arc::new(AtomicBool::new(false));
    o = o.event_callback(move |event| {
        let stats = Arc::clone(&stats);
        let was_down = Arc::clone(&was_down);
        async move {
            match event {
                async_nats::Event::Disconnected => {
                    was_down.store(true, Ordering::Relaxed);
                    Stats::add(&stats.disconnects, 1);
                    tracing::warn!("lost the NATS connection; queueing publishes and reconnecting");
                }
                async_nats::Event::Connected => {
                    if was_down.swap(false, Ordering::Relaxed) {
                        Stats::add(&stats.reconnects, 1);
                        tracing::info!("reconnected to NATS");
                    }
                }
                async_nats::Event::SlowConsumer(sid) => {
                    // One event per message the client had to drop.
                    Stats::add(&stats.dropped, 1);
                    tracing::warn!(sid, "subscription is too slow: a message was dropped");
                }
                async_nats::Event::ServerError(e) => {
                    tracing::warn!(error = %e, "NATS server error");
                }
                async_nats::Event::ClientError(e) => {
                    tracing::warn!(error = %e, "NATS client error");
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
    fn publish_subject_validation() {
        assert!(validate_publish_subject("chat.irc.x.y.message").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b"] {
            let e = validate_publish_subject(bad).unwrap_err();
            assert!(e.to_string().contains("cannot publish"), "{e}");
        }
    }
}
