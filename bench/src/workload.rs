//! What the benchmark sends, and the connections it sends it over.
//!
//! Raw and bus clients are configured alike (same queue depths, same
//! server, same subject) so that the difference between their numbers is
//! what the bus adds: envelope encoding, subject validation, decoding,
//! pattern filtering and de-duplication.

use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::StreamExt as _;
use serde_json::Value;
use switchboard_bus::proto::headers;
use switchboard_bus::{Bus, BusOptions, Envelope};

/// Where every benchmark message is published: a chat event subject of
/// realistic depth (5 tokens), so that pattern matching has work to do.
pub const SUBJECT: &str = "chat.irc.libera.room.message";

/// A pattern NATS cannot express (`#` in the middle): the bus subscribes
/// to `chat.>` and filters each delivery with `Pattern::matches`.
pub const MIDDLE_HASH_PATTERN: &str = "chat.#.message";

/// Publish queue depth for both clients. The bus's default, set
/// explicitly on both so that raw async-nats (default 2,048) is not
/// penalised by a shallower queue.
const CLIENT_CAPACITY: usize = 65_536;

/// Messages a subscription may hold before the client drops (the bus's
/// and async-nats's default, pinned so both stay equal).
pub const SUBSCRIPTION_CAPACITY: usize = 65_536;

/// How long a round trip through the server may take before the
/// benchmark gives up on a connection.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// Characters the body text is made of: plain ASCII, so that the JSON
/// string needs no escapes and its encoded size is exact.
const FILLER: &str = "the quick brown fox jumps over the lazy dog ";

/// An envelope like the ones chat operators publish (source, id and room
/// headers) whose body is a JSON string encoding to exactly `body_bytes`
/// bytes (quotes included).
pub fn envelope(body_bytes: usize) -> Envelope {
    let text: String = FILLER
        .chars()
        .cycle()
        .take(body_bytes.saturating_sub(2))
        .collect();
    Envelope::new("irc-libera", Value::String(text)).with_header(headers::ROOM, "#bench")
}

/// How the messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// async-nats `publish` of the envelope's bytes; the subscriber gets
    /// the messages without looking inside.
    Raw,
    /// Raw async-nats as above, but the subscriber decodes each payload
    /// with `WireEnvelope::parse`, the bus's own decoder, and decodes its
    /// body as the bus consumer does: a reference
    /// that splits the bus's cost into "decoding JSON" and "the rest".
    RawDecode,
    /// `Bus::publish` of an envelope; the subscriber reads decoded
    /// envelopes from `Bus::subscribe(pattern)`.
    Bus {
        /// The pattern the subscriber uses.
        pattern: &'static str,
    },
}

/// Length of the random prefix of an envelope id that [`restamp`] keeps.
const ID_PREFIX: usize = 10;

/// Gives `envelope` a new unique id (in place, no allocation, same
/// length), derived from the message number `n`.
///
/// Every message needs its own id: the bus drops an envelope whose id it
/// has just seen, so republishing one envelope would measure the
/// de-duplication path instead of delivery. Rewriting the id costs a few
/// nanoseconds on the publisher, far below anything measured here.
pub fn restamp(envelope: &mut Envelope, n: u64) {
    // `Envelope::new` always sets a 22-character id; the kept prefix is
    // random per envelope and the 12 digits make it unique per message.
    if let Some(id) = envelope.headers.get_mut(headers::ID) {
        id.truncate(ID_PREFIX);
        // The 12 low decimal digits of n, by hand: `write!` cost more than
        // the rest of the publisher's own work (a real publisher's fresh
        // id, a nuid, is cheap too).
        let mut digits = [b'0'; 12];
        let mut rest = n;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        id.push_str(std::str::from_utf8(&digits).unwrap_or_default());
    }
}

/// The publishing side of a measurement: one message per call, message
/// number `n` (for a unique id).
///
/// A trait rather than a closure so that the bus publisher can hold its
/// envelope across the `await` of `Bus::publish`.
pub trait Sender {
    /// Publish message number `n`.
    async fn send(&mut self, n: u64) -> anyhow::Result<()>;
}

/// Raw async-nats: the same bytes every time (async-nats does not look
/// inside; cloning `Bytes` is a reference count).
pub struct RawSender {
    /// The publishing connection.
    pub client: async_nats::Client,
    /// The envelope's encoded bytes.
    pub payload: bytes::Bytes,
}

impl Sender for RawSender {
    async fn send(&mut self, _n: u64) -> anyhow::Result<()> {
        self.client
            .publish(SUBJECT, self.payload.clone())
            .await
            .context("raw publish")
    }
}

/// The bus: a fresh id, then `Bus::publish`, which encodes the envelope
/// and validates the subject, as for any operator.
pub struct BusSender {
    /// The publishing connection.
    pub bus: Bus,
    /// Re-stamped with a new id before each publish.
    pub envelope: Envelope,
}

impl Sender for BusSender {
    async fn send(&mut self, n: u64) -> anyhow::Result<()> {
        restamp(&mut self.envelope, n);
        self.bus
            .publish(SUBJECT, &self.envelope)
            .await
            .context("bus publish")
    }
}

/// A raw async-nats connection, configured like the bus's.
pub async fn raw_connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .client_capacity(CLIENT_CAPACITY)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .connect(url)
        .await
        .with_context(|| format!("raw async-nats client could not connect to {url}"))
}

/// A bus connection with the same queue depths as [`raw_connect`].
pub async fn bus_connect(url: &str, name: &str) -> anyhow::Result<Bus> {
    let opts = BusOptions::new(url)
        .name(name)
        .publish_buffer(CLIENT_CAPACITY)
        .subscription_capacity(SUBSCRIPTION_CAPACITY);
    Bus::connect(&opts, name)
        .await
        .with_context(|| format!("bus client could not connect to {url}"))
}

/// Waits until the server has processed everything `client` sent so far
/// (its subscriptions in particular), like `Bus::sync`.
///
/// `Client::flush` only empties the socket buffer; a message to our own
/// inbox comes back only after the server has handled every earlier
/// command of this connection, because it processes a connection in
/// order.
pub async fn raw_sync(client: &async_nats::Client) -> anyhow::Result<()> {
    let inbox = client.new_inbox();
    let mut sub = client
        .subscribe(inbox.clone())
        .await
        .context("subscribing to the sync inbox")?;
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .context("publishing to the sync inbox")?;
    client.flush().await.context("flushing the sync message")?;
    match tokio::time::timeout(SYNC_TIMEOUT, sub.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => bail!("connection closed during a sync round trip"),
        Err(_) => bail!("no round trip through nats-server within {SYNC_TIMEOUT:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_encodes_to_the_requested_size() {
        for size in [128, 1024] {
            let env = envelope(size);
            let body = serde_json::to_vec(&env.body).expect("a string serialises");
            assert_eq!(body.len(), size);
        }
    }

    #[test]
    fn restamp_gives_unique_ids_of_constant_length() {
        let mut env = envelope(128);
        let len = env.to_vec().len();
        restamp(&mut env, 1);
        let a = env.id().map(str::to_owned);
        restamp(&mut env, 2);
        assert_ne!(a.as_deref(), env.id());
        assert_eq!(env.to_vec().len(), len);
        assert!(Envelope::from_slice(&env.to_vec()).is_ok());
    }
}
