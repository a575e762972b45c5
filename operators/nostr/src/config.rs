//! The operator's configuration: the manifest's `[config]` table, typed.
//!
//! Every key, with its default (JSON as the operator receives it; in a
//! manifest these are TOML keys under `[config]`):
//!
//! | key | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `relays` | list of `"wss://…"` or `{url, read, write}` | required, at least one | relays to use; `read` (subscribe) and `write` (publish) both default to `true` |
//! | `secret_key` | string (secret) | required | the bot's key, `nsec1…` or 64 hex digits; give it by secret reference |
//! | `tls_ca` | path | none | PEM file of CAs to trust for `wss://` relays instead of the system roots |
//! | `subscriptions` | list of `{name, kinds, authors, mentions_me, mentions, hashtags, since, limit}` | `[]` | NIP-01 filters, see below |
//! | `reconnect` | list of durations | `["500ms", "1s", "5s", "10s", "30s"]` | wait before each reconnect attempt; stays at the last |
//! | `resume_overlap` | duration | `"60s"` | a resumed `REQ` asks from the last `created_at` seen minus this (clock skew between authors) |
//! | `collect` | duration | `"200ms"` | how long the first copy of an event waits for copies from other relays before it is published (their URLs go into its `nostr-relays` header); `"0s"` publishes at once |
//! | `publish_timeout` | duration | `"10s"` | how long a publish waits for each write relay's `OK` |
//! | `max_event_bytes` | integer | `131072` | larger relay frames are dropped and counted |
//! | `own_events` | bool | `false` | also publish events signed with the bot's own key (off: a bot does not hear itself, as on other chat networks) |
//! | `instance` | string | the operator id | the `<instance>` token of this operator's subjects; must equal the operator id (refused otherwise: PROTOCOL.md, "Authentic source") |
//! | `direct_messages` | bool | `true` | receive direct messages to the bot (NIP-17 gift wraps, kind 1059; see [`crate::dm`]) on the room `@<npub>`, through a built-in subscription named `direct-messages` |
//! | `relay_control` | bool | `false` | allow `relay-add` and `relay-remove` requests over the bus (off: anyone who may send to this operator could otherwise point it, and its NIP-42 signatures, at any URL) |
//! | `nip04` | bool | `true` | with `direct_messages`, also receive NIP-04 (kind 4) messages from older clients; the bot answers each in the scheme it was written in |
//!
//! A subscription (one `REQ` with one filter on every read relay):
//!
//! | key | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `name` | string | required | its subscription id on the wire and its key in the resume state: 1–32 of `A-Z a-z 0-9 _ -` |
//! | `kinds` | list of integers | `[1]` | event kinds |
//! | `authors` | list of `npub1…`/hex | any | only these authors |
//! | `mentions_me` | bool | `false` | only events that mention the bot (`#p` = its public key) |
//! | `mentions` | list of `npub1…`/hex | `[]` | `#p` values (added to the bot's own with `mentions_me`) |
//! | `hashtags` | list of strings | `[]` | `#t` values |
//! | `since` | integer (unix seconds) | the first start | where the first ever `REQ` starts; later ones resume from the state dir |
//! | `limit` | integer | none | `limit` of the first ever `REQ` |
//!
//! Durations are strings with a unit: `"500ms"`, `"30s"`, `"2m"`. Unknown
//! keys are errors. The secret key is never printed: `Debug` shows
//! `"***"`, and errors about it never quote it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nostr::prelude::{Filter, Keys, Kind, PublicKey, RelayUrl, Timestamp};
use serde::Deserialize;
use switchboard_bus::{duration, ConfigError, Secret};

/// The bot's keys: used to sign, never printed.
#[derive(Clone)]
pub struct BotKeys(Arc<Keys>);

impl BotKeys {
    /// The keys, for signing; the caller must not log the secret.
    pub fn keys(&self) -> &Keys {
        &self.0
    }

    /// The public key (safe to print).
    pub fn public_key(&self) -> PublicKey {
        self.0.public_key()
    }
}

impl PartialEq for BotKeys {
    fn eq(&self, other: &Self) -> bool {
        self.0.public_key() == other.0.public_key()
    }
}

impl fmt::Debug for BotKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BotKeys {{ public: {}, secret: \"***\" }}",
            self.0.public_key()
        )
    }
}

/// One relay and what it is used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// `ws://` or `wss://` URL, as written (it is also the key in the
    /// resume state and the value in `nostr-relays` headers).
    pub url: String,
    /// Subscribe on this relay.
    pub read: bool,
    /// Publish to this relay.
    pub write: bool,
}

/// One named NIP-01 filter.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionConfig {
    /// Subscription id and resume key.
    pub name: String,
    /// Kinds to receive.
    pub kinds: Vec<u16>,
    /// Authors (empty: anyone).
    pub authors: Vec<PublicKey>,
    /// `#p` values, the bot's own included when `mentions_me`.
    pub mentions: Vec<PublicKey>,
    /// `#t` values.
    pub hashtags: Vec<String>,
    /// Start of the first ever `REQ` (unix seconds); `None`: the first start.
    pub since: Option<u64>,
    /// `limit` of the first ever `REQ`.
    pub limit: Option<usize>,
    /// Seconds asked for before the resume point on top of the overlap:
    /// NIP-59 gift wraps are stamped up to two days in the past, so the
    /// direct-message subscription looks that far back (what comes again
    /// is recognised by id). `0` for configured subscriptions.
    pub lookback: u64,
}

impl SubscriptionConfig {
    /// The NIP-01 filter, from `since` (the resume point), without `limit`
    /// unless this is the first `REQ` ever.
    pub fn filter(&self, since: u64, first: bool) -> Filter {
        let mut f = Filter::new()
            .kinds(self.kinds.iter().map(|k| Kind::from(*k)))
            .since(Timestamp::from_secs(since.saturating_sub(self.lookback)));
        if !self.authors.is_empty() {
            f = f.authors(self.authors.iter().copied());
        }
        if !self.mentions.is_empty() {
            f = f.pubkeys(self.mentions.iter().copied());
        }
        if !self.hashtags.is_empty() {
            f = f.hashtags(self.hashtags.clone());
        }
        if let (true, Some(limit)) = (first, self.limit) {
            f = f.limit(limit);
        }
        f
    }
}

/// Default reconnect schedule (GenNostr's): 500 ms, 1 s, 5 s, 10 s, 30 s.
pub const DEFAULT_RECONNECT_MS: [u64; 5] = [500, 1_000, 5_000, 10_000, 30_000];

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct NostrConfig {
    /// Relays, in order.
    pub relays: Vec<RelayConfig>,
    /// The bot's keys.
    pub keys: BotKeys,
    /// CAs for `wss://` relays instead of the system roots.
    pub tls_ca: Option<PathBuf>,
    /// Subscriptions.
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Waits before reconnect attempts; the last repeats.
    pub reconnect: Vec<Duration>,
    /// Overlap of a resumed `REQ`.
    pub resume_overlap: Duration,
    /// Wait for copies from other relays before publishing.
    pub collect: Duration,
    /// Wait for `OK`s.
    pub publish_timeout: Duration,
    /// Largest relay frame accepted.
    pub max_event_bytes: usize,
    /// Publish the bot's own events too.
    pub own_events: bool,
    /// Subject instance token (defaults to the operator id at start).
    pub instance: Option<String>,
    /// Receive direct messages (the built-in subscription is in
    /// `subscriptions`).
    pub direct_messages: bool,
    /// Also NIP-04 direct messages.
    pub nip04: bool,
    /// `relay-add` and `relay-remove` are allowed.
    pub relay_control: bool,
}

impl NostrConfig {
    /// TLS for the `wss://` relays, or `None` when there are none (so a
    /// machine without root certificates can still use `ws://`).
    pub fn tls(&self) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
        if self.relays.iter().any(|r| r.url.starts_with("wss://")) {
            crate::relay::tls::client_config(self.tls_ca.as_deref()).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The wait before reconnect attempt `attempt` (0-based).
    pub fn reconnect_delay(&self, attempt: usize) -> Duration {
        let last = self.reconnect.len().saturating_sub(1);
        self.reconnect
            .get(attempt.min(last))
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }

    /// Whether going from `self` to `new` needs new relay connections
    /// (keys, CAs, schedule or limits changed); relay list and filter changes
    /// are applied to running connections.
    pub fn needs_reconnect(&self, new: &NostrConfig) -> bool {
        self.keys != new.keys
            || self.tls_ca != new.tls_ca
            || self.reconnect != new.reconnect
            || self.max_event_bytes != new.max_event_bytes
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRelay {
    Url(String),
    Full(RawRelayFull),
}

/// A relay as a table, `{url, read, write}`; also the body of a
/// `relay-add` request ([`crate::outbound`]), which names a relay the
/// same way.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRelayFull {
    pub(crate) url: String,
    #[serde(default = "yes")]
    pub(crate) read: bool,
    #[serde(default = "yes")]
    pub(crate) write: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubscription {
    name: String,
    #[serde(default)]
    kinds: Option<Vec<u16>>,
    #[serde(default)]
    authors: Vec<String>,
    #[serde(default)]
    mentions_me: bool,
    #[serde(default)]
    mentions: Vec<String>,
    #[serde(default)]
    hashtags: Vec<String>,
    #[serde(default)]
    since: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    relays: Vec<RawRelay>,
    /// As it arrives; never printed, overwritten when dropped.
    secret_key: Secret,
    #[serde(default)]
    tls_ca: Option<PathBuf>,
    #[serde(default)]
    subscriptions: Vec<RawSubscription>,
    #[serde(default)]
    reconnect: Option<Vec<String>>,
    #[serde(default)]
    resume_overlap: Option<String>,
    #[serde(default)]
    collect: Option<String>,
    #[serde(default)]
    publish_timeout: Option<String>,
    #[serde(default)]
    max_event_bytes: Option<usize>,
    #[serde(default)]
    own_events: bool,
    #[serde(default)]
    instance: Option<String>,
    #[serde(default = "yes")]
    direct_messages: bool,
    #[serde(default = "yes")]
    nip04: bool,
    #[serde(default)]
    relay_control: bool,
}

/// A public key given as `npub1…` or hex.
fn public_key(key: &str, value: &str) -> Result<PublicKey, ConfigError> {
    PublicKey::parse(value.trim()).map_err(|_| {
        ConfigError::invalid(
            key,
            format!("{value:?} is not a public key; give `npub1…` or 64 hex digits"),
        )
    })
}

/// A relay URL: `ws://` or `wss://`, parsed by the `nostr` crate.
pub fn check_relay_url(url: &str) -> Result<(), ConfigError> {
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return Err(ConfigError::invalid(
            "relays",
            format!("{url:?} is not a websocket URL; write ws://host:port or wss://host"),
        ));
    }
    RelayUrl::parse(url)
        .map_err(|e| ConfigError::invalid("relays", format!("{url:?}: {e}")).because(e))?;
    Ok(())
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl TryFrom<RawConfig> for NostrConfig {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<NostrConfig, ConfigError> {
        let keys = Keys::parse(raw.secret_key.expose().trim()).map_err(|_| {
            ConfigError::invalid(
                "secret_key",
                "is not a Nostr secret key; give `nsec1…` or 64 hex digits \
                 (by secret reference, never in the manifest)",
            )
        })?;
        let keys = BotKeys(Arc::new(keys));
        if raw.relays.is_empty() {
            return Err(ConfigError::invalid(
                "relays",
                "is empty; list at least one ws:// or wss:// URL",
            ));
        }
        let mut relays: Vec<RelayConfig> = Vec::new();
        for r in raw.relays {
            let (url, read, write) = match r {
                RawRelay::Url(url) => (url, true, true),
                RawRelay::Full(f) => (f.url, f.read, f.write),
            };
            let url = url.trim().to_string();
            check_relay_url(&url)?;
            if relays.iter().any(|r| r.url == url) {
                return Err(ConfigError::invalid(
                    "relays",
                    format!("{url} is listed twice"),
                ));
            }
            if !read && !write {
                return Err(ConfigError::invalid(
                    "relays",
                    format!("{url} has read = false and write = false; remove it instead"),
                ));
            }
            relays.push(RelayConfig { url, read, write });
        }
        let mut subscriptions: Vec<SubscriptionConfig> = Vec::new();
        for s in raw.subscriptions {
            if !valid_name(&s.name) {
                return Err(ConfigError::invalid(
                    "subscriptions",
                    format!("name {:?} must be 1-32 of A-Z a-z 0-9 _ -", s.name),
                ));
            }
            if subscriptions.iter().any(|o| o.name == s.name) {
                return Err(ConfigError::invalid(
                    "subscriptions",
                    format!("{} is listed twice", s.name),
                ));
            }
            let kinds = s.kinds.unwrap_or_else(|| vec![1]);
            if kinds.is_empty() {
                return Err(ConfigError::invalid(
                    "subscriptions",
                    format!(
                        "{} has no kinds; leave `kinds` out for text notes (1)",
                        s.name
                    ),
                ));
            }
            let authors = s
                .authors
                .iter()
                .map(|a| public_key("subscriptions.authors", a))
                .collect::<Result<Vec<_>, _>>()?;
            let mut mentions = s
                .mentions
                .iter()
                .map(|a| public_key("subscriptions.mentions", a))
                .collect::<Result<Vec<_>, _>>()?;
            if s.mentions_me && !mentions.contains(&keys.public_key()) {
                mentions.push(keys.public_key());
            }
            if s.hashtags.iter().any(|t| t.is_empty()) {
                return Err(ConfigError::invalid(
                    "subscriptions.hashtags",
                    "a hashtag is empty",
                ));
            }
            subscriptions.push(SubscriptionConfig {
                name: s.name,
                kinds,
                authors,
                mentions,
                hashtags: s.hashtags,
                since: s.since,
                limit: s.limit,
                lookback: 0,
            });
        }
        if raw.direct_messages {
            if subscriptions
                .iter()
                .any(|s| s.name == crate::dm::SUBSCRIPTION)
            {
                return Err(ConfigError::invalid(
                    "subscriptions",
                    format!(
                        "the name {} is the built-in direct-message subscription's; \
                         choose another (or set direct_messages = false)",
                        crate::dm::SUBSCRIPTION
                    ),
                ));
            }
            subscriptions.push(crate::dm::subscription(keys.public_key(), raw.nip04));
        }
        let reconnect = match raw.reconnect {
            None => DEFAULT_RECONNECT_MS
                .iter()
                .map(|ms| Duration::from_millis(*ms))
                .collect(),
            Some(list) => list
                .iter()
                .map(|d| duration("reconnect", Some(d), Duration::ZERO))
                .collect::<Result<Vec<_>, _>>()?,
        };
        if reconnect.is_empty() {
            return Err(ConfigError::invalid(
                "reconnect",
                "is empty; leave it out for the default schedule",
            ));
        }
        if reconnect.iter().any(|d| *d < Duration::from_millis(10)) {
            return Err(ConfigError::invalid(
                "reconnect",
                "every wait must be at least 10ms",
            ));
        }
        let resume_overlap = duration(
            "resume_overlap",
            raw.resume_overlap.as_deref(),
            Duration::from_secs(60),
        )?;
        let collect = duration(
            "collect",
            raw.collect.as_deref(),
            Duration::from_millis(200),
        )?;
        if collect > Duration::from_secs(10) {
            return Err(ConfigError::invalid(
                "collect",
                "must be at most 10s (it delays every event)",
            ));
        }
        let publish_timeout = duration(
            "publish_timeout",
            raw.publish_timeout.as_deref(),
            Duration::from_secs(10),
        )?;
        if publish_timeout < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                "publish_timeout",
                "must be at least 100ms",
            ));
        }
        let max_event_bytes = raw.max_event_bytes.unwrap_or(128 * 1024);
        if !(1024..=16 * 1024 * 1024).contains(&max_event_bytes) {
            return Err(ConfigError::invalid(
                "max_event_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if let Some(instance) = &raw.instance {
            if instance.is_empty() {
                return Err(ConfigError::invalid("instance", "must not be empty"));
            }
        }
        Ok(NostrConfig {
            relays,
            keys,
            tls_ca: raw.tls_ca,
            subscriptions,
            reconnect,
            resume_overlap,
            collect,
            publish_timeout,
            max_event_bytes,
            own_events: raw.own_events,
            instance: raw.instance,
            direct_messages: raw.direct_messages,
            nip04: raw.nip04,
            relay_control: raw.relay_control,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SK: &str = "6b911fd37cdf5c81d4c0adb1ab7fa822ed253ab0ad9aa18d77257c88b29b718e";

    fn parse(v: serde_json::Value) -> Result<NostrConfig, String> {
        serde_json::from_value::<NostrConfig>(v).map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(json!({"relays": ["ws://127.0.0.1:7000"], "secret_key": SK})).unwrap();
        assert!(c.relays[0].read && c.relays[0].write);
        assert_eq!(c.reconnect_delay(0), Duration::from_millis(500));
        assert_eq!(c.reconnect_delay(3), Duration::from_secs(10));
        assert_eq!(c.reconnect_delay(4), Duration::from_secs(30));
        assert_eq!(c.reconnect_delay(99), Duration::from_secs(30));
        assert_eq!(c.collect, Duration::from_millis(200));
        assert_eq!(c.max_event_bytes, 131072);
    }

    #[test]
    fn tls_only_when_a_relay_needs_it() {
        let ws = parse(json!({"relays": ["ws://h:1"], "secret_key": SK})).unwrap();
        assert!(ws.tls().unwrap().is_none());
        let bad_ca =
            parse(json!({"relays": ["wss://h"], "secret_key": SK, "tls_ca": "/nonexistent.pem"}))
                .unwrap();
        assert!(bad_ca.tls().unwrap_err().contains("tls_ca"));
    }

    #[test]
    fn nsec_and_hex_are_the_same_key() {
        let hex = parse(json!({"relays": ["ws://h:1"], "secret_key": SK})).unwrap();
        let nsec = nostr::prelude::ToBech32::to_bech32(hex.keys.keys().secret_key()).unwrap();
        let from_nsec = parse(json!({"relays": ["ws://h:1"], "secret_key": nsec})).unwrap();
        assert_eq!(hex.keys, from_nsec.keys);
    }

    #[test]
    fn subscriptions_build_filters() {
        let c = parse(json!({
            "relays": [{"url": "wss://relay.example", "write": false}], "secret_key": SK,
            "subscriptions": [{"name": "dm-ish", "kinds": [1, 7], "mentions_me": true,
                               "hashtags": ["rust"], "since": 1700000000, "limit": 10}],
            "reconnect": ["100ms", "2s"]
        }))
        .unwrap();
        assert!(!c.relays[0].write);
        let s = &c.subscriptions[0];
        assert_eq!(s.mentions, vec![c.keys.public_key()]);
        let f = serde_json::to_value(s.filter(1700000000, true)).unwrap();
        assert_eq!(f["kinds"], json!([1, 7]));
        assert_eq!(f["#p"], json!([c.keys.public_key().to_hex()]));
        assert_eq!(f["#t"], json!(["rust"]));
        assert_eq!(f["since"], json!(1700000000));
        assert_eq!(f["limit"], json!(10));
        let later = serde_json::to_value(s.filter(1700000500, false)).unwrap();
        assert!(later.get("limit").is_none());
        assert_eq!(c.reconnect_delay(5), Duration::from_secs(2));
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        let base = || json!({"relays": ["ws://h:1"], "secret_key": SK});
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base();
            b[k] = v;
            parse(b)
        };
        assert!(with("relay", json!([]))
            .unwrap_err()
            .contains("unknown field"));
        assert!(with("relays", json!([]))
            .unwrap_err()
            .contains("at least one"));
        assert!(with("relays", json!(["http://h"]))
            .unwrap_err()
            .contains("websocket"));
        assert!(with("relays", json!(["ws://h:1", "ws://h:1"])).is_err());
        assert!(with(
            "relays",
            json!([{"url": "ws://h:1", "read": false, "write": false}])
        )
        .is_err());
        assert!(with("relays", json!([{"url": "ws://h:1", "wirte": false}])).is_err());
        assert!(with("reconnect", json!([])).is_err());
        assert!(with("reconnect", json!(["5"])).is_err());
        assert!(with("collect", json!("1m")).is_err());
        assert!(with("max_event_bytes", json!(10)).is_err());
        assert!(with("subscriptions", json!([{"name": "a b"}])).is_err());
        assert!(with("subscriptions", json!([{"name": "a", "authors": ["bob"]}])).is_err());
        assert!(with("subscriptions", json!([{"name": "a", "kinds": []}])).is_err());
        assert!(with("subscriptions", json!([{"name": "a", "kind": [1]}])).is_err());
    }

    #[test]
    fn direct_messages_are_a_built_in_subscription() {
        let c = parse(json!({"relays": ["ws://h:1"], "secret_key": SK})).unwrap();
        assert!(c.direct_messages && c.nip04 && !c.relay_control);
        let dm = c
            .subscriptions
            .iter()
            .find(|s| s.name == crate::dm::SUBSCRIPTION)
            .expect("the direct-message subscription");
        assert_eq!(dm.kinds, vec![4, 1059]);
        assert_eq!(dm.mentions, vec![c.keys.public_key()]);
        assert_eq!(dm.lookback, crate::dm::LOOKBACK);
        let no04 =
            parse(json!({"relays": ["ws://h:1"], "secret_key": SK, "nip04": false})).unwrap();
        assert_eq!(no04.subscriptions[0].kinds, vec![1059]);
        let off =
            parse(json!({"relays": ["ws://h:1"], "secret_key": SK, "direct_messages": false}))
                .unwrap();
        assert!(off.subscriptions.is_empty());
        let e = parse(json!({"relays": ["ws://h:1"], "secret_key": SK,
                             "subscriptions": [{"name": "direct-messages"}]}))
        .unwrap_err();
        assert!(e.contains("built-in"), "{e}");
    }

    #[test]
    fn the_secret_key_is_never_printed() {
        let c = parse(json!({"relays": ["ws://h:1"], "secret_key": SK})).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains(SK), "{dbg}");
        let nsec = nostr::prelude::ToBech32::to_bech32(c.keys.keys().secret_key()).unwrap();
        assert!(!dbg.contains(&nsec), "{dbg}");
        let bad = "zz".repeat(32);
        let e = parse(json!({"relays": ["ws://h:1"], "secret_key": bad})).unwrap_err();
        assert!(!e.contains(&bad) && e.contains("secret_key"), "{e}");
    }
}
