//! Streams of envelopes for a pattern: filtered, decoded, de-duplicated.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{SelectAll, Stream, StreamExt};
use serde::Deserialize;
use switchboard_proto::{ChatEvent, ChatEventError, Envelope, Pattern, Timestamp, WireEnvelope};

use crate::fanout::{Lease, Source};
use crate::stats::Stats;

/// One envelope received on a subscription.
///
/// It keeps the payload as received and decodes on request: reading the
/// source, a header or the id costs no allocation, [`Delivery::body_as`]
/// decodes the body straight into the handler's own type (borrowing its
/// strings from the payload), and [`Delivery::chat`] reads `sender` and
/// `text` without building a JSON tree. The owned [`Envelope`] is built
/// only when [`Delivery::envelope`] is first called. Why: decoding every
/// envelope into an owned one was half of the bus's client CPU per
/// message (docs/benchmarks.md, "Receive path").
///
/// The envelope was validated on arrival like [`Envelope::from_slice`]
/// does: a `Delivery` always holds a valid envelope.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The subject it was published on.
    pub subject: String,
    /// Where to answer, when it was sent as a request.
    pub reply: Option<String>,
    envelope: WireEnvelope,
}

impl Delivery {
    /// A delivery of `envelope` on `subject` (not a request), e.g. to
    /// test a handler without a server.
    pub fn new(subject: impl Into<String>, envelope: impl Into<WireEnvelope>) -> Delivery {
        Delivery {
            subject: subject.into(),
            reply: None,
            envelope: envelope.into(),
        }
    }

    /// The same delivery, as a request answered on `reply`.
    pub fn with_reply(mut self, reply: impl Into<String>) -> Delivery {
        self.reply = Some(reply.into());
        self
    }

    /// The envelope as an owned [`Envelope`] (body as a JSON `Value`):
    /// built on the first call, then kept. The accessors below read the
    /// same fields without building it.
    pub fn envelope(&self) -> &Envelope {
        self.envelope.envelope()
    }

    /// The owned [`Envelope`], built unless it was already.
    pub fn into_envelope(self) -> Envelope {
        self.envelope.into_envelope()
    }

    /// The envelope as received: payload and field positions.
    pub fn wire(&self) -> &WireEnvelope {
        &self.envelope
    }

    /// Who made the envelope (its `source`).
    pub fn source(&self) -> &str {
        self.envelope.source()
    }

    /// When it was made.
    pub fn timestamp(&self) -> Timestamp {
        self.envelope.timestamp()
    }

    /// The envelope's unique id, if it has one.
    pub fn id(&self) -> Option<&str> {
        self.envelope.id()
    }

    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.envelope.header(name)
    }

    /// The body as text, when it is a JSON string (borrowed when it has
    /// no escapes); `None` for any other body.
    pub fn body_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.envelope.body_text()
    }

    /// The body's JSON text, as received.
    pub fn body_json(&self) -> &str {
        self.envelope.body_json()
    }

    /// The body decoded straight into `T` (the handler's own type; `&str`
    /// fields borrow from the payload when they have no escapes), without
    /// a `Value` tree.
    ///
    /// ```
    /// # use switchboard_bus::{Delivery, Envelope};
    /// # let d = Delivery::new("chat.irc.libera.=23rust.message",
    /// #     Envelope::new("irc-libera", serde_json::json!({"sender": "ferris", "text": "!ping"})));
    /// #[derive(serde::Deserialize)]
    /// struct Said<'a> {
    ///     sender: &'a str,
    ///     text: &'a str,
    /// }
    /// let said: Said = d.body_as()?;
    /// assert_eq!((said.sender, said.text), ("ferris", "!ping"));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// serde's error when the body does not fit `T`.
    pub fn body_as<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        self.envelope.body_as()
    }

    /// The delivery as a chat event: protocol, instance, room, kind,
    /// sender and text, borrowed from the subject and the payload (read
    /// without a JSON tree; nothing is copied unless it has escapes).
    /// Parsed on each call; keep the result if you read it often.
    ///
    /// ```
    /// # use switchboard_bus::{Delivery, Envelope};
    /// # use switchboard_bus::proto::headers;
    /// # let d = Delivery::new(
    /// #     "chat.irc.libera.=23rust.message",
    /// #     Envelope::new("irc-libera", serde_json::json!({"sender": "ferris", "text": "!ping"}))
    /// #         .with_header(headers::ROOM, "#rust"),
    /// # );
    /// let chat = d.chat()?;
    /// assert_eq!((chat.room(), chat.sender(), chat.text()), ("#rust", "ferris", "!ping"));
    /// # Ok::<(), switchboard_bus::proto::ChatEventError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ChatEventError`] when it is not a chat event: the subject is not
    /// `chat.<protocol>.<instance>.<room>.<kind>` (a `send.…` request, an
    /// `sb.…` subject), or the body is not an object with a string
    /// `sender` (see [`ChatEvent`]).
    pub fn chat(&self) -> Result<ChatEvent<'_>, ChatEventError> {
        ChatEvent::parse_wire(&self.subject, &self.envelope)
    }
}

/// One raw message (lifecycle/control JSON) from [`crate::Bus::subscribe_raw`].
#[derive(Debug, Clone)]
pub struct RawMessage {
    /// The subject it was published on.
    pub subject: String,
    /// The payload bytes, unparsed.
    pub payload: Bytes,
    /// Where to answer, when it was sent as a request.
    pub reply: Option<String>,
}

/// A stream of raw messages on one NATS subject.
#[derive(Debug)]
pub struct RawSubscription {
    inner: async_nats::Subscriber,
}

impl RawSubscription {
    pub(crate) fn new(inner: async_nats::Subscriber) -> Self {
        RawSubscription { inner }
    }
}

impl Stream for RawSubscription {
    type Item = RawMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RawMessage>> {
        self.inner.poll_next_unpin(cx).map(|m| {
            m.map(|m| RawMessage {
                subject: m.subject.as_str().to_owned(),
                payload: m.payload,
                reply: m.reply.map(|r| r.as_str().to_owned()),
            })
        })
    }
}

/// Envelopes matching a [`Pattern`], each once.
///
/// Built by [`crate::Bus::subscribe`]. Dropping it unsubscribes.
pub struct Subscription {
    pattern: Pattern,
    needs_filter: bool,
    /// This client's `<inbox prefix>.`, when the pattern starts with a
    /// wildcard: its replies and sync probes are not bus traffic.
    skip_inbox: Option<Arc<str>>,
    inner: Inner,
    stats: Arc<Stats>,
    dedupe: Dedupe,
    malformed: BurstLog,
    /// Gives the NATS subjects back to the client's fan-out on drop.
    _lease: Lease,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("pattern", &self.pattern.to_string())
            .field("needs_filter", &self.needs_filter)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(
        pattern: Pattern,
        needs_filter: bool,
        skip_inbox: Option<Arc<str>>,
        sources: Vec<Source>,
        lease: Lease,
        stats: Arc<Stats>,
        dedupe_window: usize,
    ) -> Self {
        Subscription {
            pattern,
            needs_filter,
            skip_inbox,
            inner: Inner::new(sources),
            stats,
            dedupe: Dedupe::new(dedupe_window),
            malformed: BurstLog::new(Duration::from_secs(10)),
            _lease: lease,
        }
    }

    /// The pattern this subscription serves.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }
}

/// Most patterns map to one NATS subscription; polling it directly skips
/// `SelectAll`'s bookkeeping (measured: about 7% more throughput).
enum Inner {
    One(Source),
    Many(SelectAll<Source>),
}

impl Inner {
    fn new(mut subs: Vec<Source>) -> Inner {
        match (subs.pop(), subs.is_empty()) {
            (Some(only), true) => Inner::One(only),
            (Some(last), false) => {
                subs.push(last);
                Inner::Many(futures::stream::select_all(subs))
            }
            (None, _) => Inner::Many(SelectAll::new()),
        }
    }

    fn poll_next_unpin(&mut self, cx: &mut Context<'_>) -> Poll<Option<async_nats::Message>> {
        match self {
            Inner::One(s) => s.poll_next_unpin(cx),
            Inner::Many(s) => s.poll_next_unpin(cx),
        }
    }
}

impl Stream for Subscription {
    type Item = Delivery;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let this = self.get_mut();
        loop {
            let msg = match this.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(msg)) => msg,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            if this.needs_filter && !this.pattern.matches(msg.subject.as_str()) {
                continue;
            }
            if let Some(inbox) = &this.skip_inbox {
                if msg.subject.as_str().starts_with(&**inbox) {
                    continue;
                }
            }
            let envelope = match WireEnvelope::parse(msg.payload) {
                Ok(env) => env,
                Err(e) => {
                    Stats::add(&this.stats.malformed, 1);
                    let pattern = &this.pattern;
                    this.malformed.record(|suppressed| {
                        tracing::warn!(
                            subject = %msg.subject,
                            %pattern,
                            suppressed,
                            error = %e,
                            "dropped a malformed envelope"
                        );
                    });
                    continue;
                }
            };
            // Bytes: the id as a `str` would be checked for UTF-8 again.
            if let Some(id) = envelope.id_bytes() {
                if !this.dedupe.first_time(id) {
                    Stats::add(&this.stats.duplicates, 1);
                    continue;
                }
            }
            Stats::add(&this.stats.received, 1);
            // `as_str().to_owned()`: a copy; `to_string()` would go through
            // `Display` and the formatter (~500 instructions per message).
            return Poll::Ready(Some(Delivery {
                subject: msg.subject.as_str().to_owned(),
                reply: msg.reply.map(|r| r.as_str().to_owned()),
                envelope,
            }));
        }
    }
}

/// Remembers the last `window` envelope ids (as 64-bit hashes) to drop
/// repeats. Hashes, not strings: no allocation per message, and a false
/// match within a window of thousands is vanishingly unlikely (~1e-12).
///
/// The hash is a word-at-a-time multiply-mix (a few instructions per 8
/// bytes; SipHash cost ~60 ns per message here) seeded at random per
/// `Dedupe`, so that a sender cannot pick an id that collides with
/// another's to have it dropped.
#[derive(Debug)]
pub(crate) struct Dedupe {
    window: usize,
    seed: u64,
    seen: HashSet<u64, BuildHasherDefault<IdentityHasher>>,
    order: VecDeque<u64>,
}

impl Dedupe {
    pub(crate) fn new(window: usize) -> Self {
        use std::hash::BuildHasher as _;
        Dedupe {
            window,
            seed: std::collections::hash_map::RandomState::new().hash_one(window),
            seen: HashSet::with_capacity_and_hasher(window, Default::default()),
            order: VecDeque::with_capacity(window),
        }
    }

    /// True the first time `id` is seen within the window.
    pub(crate) fn first_time(&mut self, id: impl AsRef<[u8]>) -> bool {
        if self.window == 0 {
            return true;
        }
        let key = mix_hash(self.seed, id.as_ref());
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.window {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// A seeded 64-bit hash of `bytes`: each 8-byte word is mixed in with a
/// multiply and a rotate, and the result goes through splitmix64's
/// finaliser so that every input bit moves every output bit.
fn mix_hash(seed: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word))
            .wrapping_mul(K)
            .rotate_left(31);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(word))
            .wrapping_mul(K)
            .rotate_left(31);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The keys are already hashes; hashing them again is waste.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Logs the first event of a burst, then stays quiet until `quiet` has
/// passed, reporting how many were suppressed in between. A flood of
/// garbage costs one log line per period, not one per message.
#[derive(Debug)]
pub(crate) struct BurstLog {
    quiet: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl BurstLog {
    pub(crate) fn new(quiet: Duration) -> Self {
        BurstLog {
            quiet,
            last: None,
            suppressed: 0,
        }
    }

    /// Call `log(suppressed_since_last_line)` if a line is due.
    pub(crate) fn record(&mut self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.quiet => self.suppressed += 1,
            _ => {
                log(self.suppressed);
                self.suppressed = 0;
                self.last = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_remembers_a_window() {
        let mut d = Dedupe::new(3);
        assert!(d.first_time("a"));
        assert!(!d.first_time("a"));
        assert!(d.first_time("b"));
        assert!(d.first_time("c"));
        assert!(d.first_time("d")); // evicts a
        assert!(d.first_time("a"));
        assert!(!d.first_time("d"));
        // Ids that differ in one byte, or only in length, hash apart.
        let ids: Vec<String> = (0..2000).map(|n| format!("id{n:020}")).collect();
        let mut hashes: Vec<u64> = ids.iter().map(|i| mix_hash(7, i.as_bytes())).collect();
        hashes
            .extend(["", "a", "a\0", "abcdefgh", "abcdefgh\0"].map(|i| mix_hash(7, i.as_bytes())));
        let mut unique = hashes.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), hashes.len());
        let mut off = Dedupe::new(0);
        assert!(off.first_time("x") && off.first_time("x"));
    }

    #[test]
    fn burst_log_suppresses_within_quiet_period() {
        let mut b = BurstLog::new(Duration::from_secs(60));
        let mut lines = Vec::new();
        for _ in 0..5 {
            b.record(|s| lines.push(s));
        }
        assert_eq!(lines, vec![0]);
        assert_eq!(b.suppressed, 4);
        b.last = Some(Instant::now() - Duration::from_secs(61));
        b.record(|s| lines.push(s));
        assert_eq!(lines, vec![0, 4]);
    }
}
