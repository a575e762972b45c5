//! The operator's configuration: the manifest's `[config]` table, typed.
//!
//! Every key, with its default (JSON as the operator receives it; in a
//! manifest these are TOML keys under `[config]`):
//!
//! | key | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `service` | URL | `"https://bsky.social"` | the PDS (or entryway) to log in to and call |
//! | `identifier` | string | required | handle, DID or e-mail of the account |
//! | `password` | string (secret) | required | an app password, by secret reference (`[secrets] password = …`) |
//! | `strategy` | `"polling"`, `"jetstream"` or `"firehose"` | `"polling"` | how mentions and replies arrive |
//! | `polling.interval` | duration | `"5s"` | time between `listNotifications` polls |
//! | `polling.process_from` | RFC 3339 time | the first start's "now" | notifications indexed before this are skipped (only read when nothing was processed yet) |
//! | `polling.page_size` | integer 1–100 | `50` | `limit` of each `listNotifications` page |
//! | `langs` | list of BCP 47 tags | `["en"]` | `langs` of the posts the operator creates (a request may give its own) |
//! | `reasons` | list of strings | all | notification reasons to publish (`mention`, `reply`, `quote`, `like`, `repost`, `follow`, or any other the server sends); others are skipped and counted |
//! | `jetstream.url` | ws(s) URL | `"wss://jetstream2.us-east.bsky.network/subscribe"` | the Jetstream endpoint |
//! | `jetstream.wanted_collections` | list of NSIDs | `["app.bsky.feed.post"]` | `wantedCollections` (only posts are published) |
//! | `jetstream.wanted_dids` | list of DIDs | `[]` (everyone) | `wantedDids`: only posts by these authors |
//! | `jetstream.overlap` | duration | `"3s"` | how far before the saved cursor a reconnect resumes (repeats are dropped by URI) |
//! | `jetstream.keepalive` | duration | `"30s"` | a websocket ping after this long without a frame; with no answer either, the connection is replaced 1.5 times as long after the ping |
//! | `firehose.relay_uri` | ws(s) URL | `"wss://bsky.network"` | a relay or the account's PDS; `/xrpc/com.atproto.sync.subscribeRepos` is added unless the URL ends with it |
//! | `firehose.cursor` | integer ≥ 0 | none (live) | the `seq` the first start resumes after; a cursor saved in the state directory for the same relay wins |
//! | `firehose.auto_reconnect` | bool | `true` | reconnect (with backoff, from the cursor) after the connection ends; `false` stops reading until a reload or a resume |
//! | `firehose.plc_url` | http(s) URL | `"https://plc.directory"` | the PLC directory that resolves `did:plc` repos to their signing keys |
//! | `firehose.keepalive` | duration | `"30s"` | as `jetstream.keepalive`, for the firehose connection |
//! | `retry.initial`, `retry.max` | durations | `"1s"`, `"60s"` | backoff after 5xx and network errors (doubling, with jitter) |
//! | `request_timeout` | duration | `"30s"` | timeout of one HTTP request |
//! | `instance` | string | the operator id | the `<instance>` token of this operator's subjects; must equal the operator id (refused otherwise: PROTOCOL.md, "Authentic source") |
//!
//! The `firehose` table is refused unless `strategy = "firehose"` (its
//! keys would otherwise be read by nothing).
//!
//! Durations are strings with a unit: `"500ms"`, `"5s"`, `"2m"`. Unknown
//! keys are errors (serde names the keys that exist). The password is
//! never printed: `Debug` shows `"***"`.

use std::time::Duration;

use serde::Deserialize;
use switchboard_bus::{duration, ConfigError};
use time::OffsetDateTime;

/// A password or token: used, never printed (the SDK's one secret type).
pub use switchboard_bus::Secret;

/// How mentions and replies reach the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// `app.bsky.notification.listNotifications` every `polling.interval`.
    Polling,
    /// A Jetstream websocket: posts that mention or answer the account.
    Jetstream,
    /// `com.atproto.sync.subscribeRepos` on a relay or PDS, signatures
    /// checked (see [`crate::firehose`]).
    Firehose,
}

/// Polling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Polling {
    /// Time between polls.
    pub interval: Duration,
    /// Skip notifications indexed before this (first start only).
    pub process_from: Option<OffsetDateTime>,
    /// `limit` per page.
    pub page_size: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolling {
    interval: Option<String>,
    process_from: Option<String>,
    page_size: Option<u32>,
}

/// Jetstream settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Jetstream {
    /// The `subscribe` endpoint.
    pub url: String,
    /// `wantedCollections`.
    pub wanted_collections: Vec<String>,
    /// `wantedDids`.
    pub wanted_dids: Vec<String>,
    /// How far before the saved cursor to resume.
    pub overlap: Duration,
    /// Ping after this long without a frame.
    pub keepalive: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawJetstream {
    url: Option<String>,
    wanted_collections: Option<Vec<String>>,
    #[serde(default)]
    wanted_dids: Vec<String>,
    overlap: Option<String>,
    keepalive: Option<String>,
}

/// Firehose settings. Checked on their own (not with the whole config) so
/// that an error naming a `firehose.*` key is shown even though the
/// config holds the value `"firehose"` (the bus hides messages that quote
/// a config value, in case it is a secret).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawFirehose")]
pub struct Firehose {
    /// The `subscribeRepos` endpoint (path included).
    pub relay_uri: String,
    /// The `seq` a first start resumes after.
    pub cursor: Option<i64>,
    /// Whether a lost connection is made again.
    pub auto_reconnect: bool,
    /// The PLC directory (no trailing slash).
    pub plc_url: String,
    /// Ping after this long without a frame.
    pub keepalive: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFirehose {
    relay_uri: Option<String>,
    cursor: Option<i64>,
    auto_reconnect: Option<bool>,
    plc_url: Option<String>,
    keepalive: Option<String>,
}

/// The relay used when `firehose.relay_uri` is not given.
pub const DEFAULT_RELAY: &str = "wss://bsky.network";
/// The PLC directory used when `firehose.plc_url` is not given.
pub const DEFAULT_PLC: &str = "https://plc.directory";
/// The path of the firehose endpoint.
pub const SUBSCRIBE_REPOS: &str = "/xrpc/com.atproto.sync.subscribeRepos";

/// Backoff after server and network errors.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// First wait.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial: Option<String>,
    max: Option<String>,
}

/// The Jetstream endpoint used when `jetstream.url` is not given.
pub const DEFAULT_JETSTREAM: &str = "wss://jetstream2.us-east.bsky.network/subscribe";
/// The collection of posts.
pub const POST: &str = "app.bsky.feed.post";

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct BskyConfig {
    /// Base URL of the PDS, without a trailing slash.
    pub service: String,
    /// Handle, DID or e-mail.
    pub identifier: String,
    /// App password.
    pub password: Secret,
    /// Polling or Jetstream.
    pub strategy: Strategy,
    /// Polling settings (used with `strategy = "polling"`).
    pub polling: Polling,
    /// Langs of created posts.
    pub langs: Vec<String>,
    /// Reasons to publish; `None` is all.
    pub reasons: Option<Vec<String>>,
    /// Jetstream settings.
    pub jetstream: Jetstream,
    /// Firehose settings (defaults unless `strategy = "firehose"`).
    pub firehose: Firehose,
    /// Backoff after 5xx and network errors.
    pub retry: Retry,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Subject instance token (defaults to the operator id at start).
    pub instance: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    service: Option<String>,
    identifier: String,
    password: Secret,
    #[serde(default)]
    strategy: Option<Strategy>,
    #[serde(default)]
    polling: RawPolling,
    #[serde(default)]
    langs: Option<Vec<String>>,
    #[serde(default)]
    reasons: Option<Vec<String>>,
    #[serde(default)]
    jetstream: RawJetstream,
    #[serde(default)]
    firehose: Option<Firehose>,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    request_timeout: Option<String>,
    #[serde(default)]
    instance: Option<String>,
}

fn url(key: &str, value: &str, schemes: &[&str]) -> Result<String, ConfigError> {
    let parsed = reqwest::Url::parse(value)
        .map_err(|e| ConfigError::invalid(key, format!("is not a URL ({e})")).because(e))?;
    if !schemes.contains(&parsed.scheme()) {
        let problem = format!("must be a {} URL", schemes.join(" or "));
        return Err(ConfigError::invalid(key, problem));
    }
    Ok(value.trim_end_matches('/').to_string())
}

impl TryFrom<RawConfig> for BskyConfig {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<BskyConfig, ConfigError> {
        let service = url(
            "service",
            raw.service.as_deref().unwrap_or("https://bsky.social"),
            &["https", "http"],
        )?;
        if raw.identifier.trim().is_empty() {
            return Err(ConfigError::invalid(
                "identifier",
                "must not be empty: the account's handle, DID or e-mail",
            ));
        }
        if raw.password.expose().is_empty() {
            return Err(ConfigError::invalid(
                "password",
                "is empty: give an app password by secret reference",
            ));
        }
        let process_from = match raw.polling.process_from {
            None => None,
            Some(text) => Some(
                OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                        ConfigError::invalid(
                            "polling.process_from",
                            "must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z",
                        )
                        .because(e)
                    })?,
            ),
        };
        let interval = duration(
            "polling.interval",
            raw.polling.interval.as_deref(),
            Duration::from_secs(5),
        )?;
        if interval < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                "polling.interval",
                "must be at least 100ms",
            ));
        }
        let page_size = raw.polling.page_size.unwrap_or(50);
        if !(1..=100).contains(&page_size) {
            return Err(ConfigError::invalid(
                "polling.page_size",
                "must be between 1 and 100 (the lexicon's limit)",
            ));
        }
        let langs = raw.langs.unwrap_or_else(|| vec!["en".to_string()]);
        if langs.len() > 3 {
            return Err(ConfigError::invalid(
                "langs",
                "a post carries at most 3 languages",
            ));
        }
        if langs
            .iter()
            .any(|l| l.is_empty() || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(ConfigError::invalid(
                "langs",
                "must be BCP 47 tags such as \"en\" or \"pt-BR\"",
            ));
        }
        if let Some(reasons) = &raw.reasons {
            if reasons.is_empty() {
                return Err(ConfigError::invalid(
                    "reasons",
                    "is empty: leave it out to publish every reason",
                ));
            }
            if reasons.iter().any(|r| r.is_empty()) {
                return Err(ConfigError::invalid(
                    "reasons",
                    "must not contain an empty string",
                ));
            }
        }
        let jetstream = Jetstream {
            url: url(
                "jetstream.url",
                raw.jetstream.url.as_deref().unwrap_or(DEFAULT_JETSTREAM),
                &["wss", "ws"],
            )?,
            wanted_collections: raw
                .jetstream
                .wanted_collections
                .unwrap_or_else(|| vec![POST.to_string()]),
            wanted_dids: raw.jetstream.wanted_dids,
            overlap: duration(
                "jetstream.overlap",
                raw.jetstream.overlap.as_deref(),
                Duration::from_secs(3),
            )?,
            keepalive: duration(
                "jetstream.keepalive",
                raw.jetstream.keepalive.as_deref(),
                Duration::from_secs(30),
            )?,
        };
        if jetstream.keepalive < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                "jetstream.keepalive",
                "must be at least 100ms",
            ));
        }
        if !jetstream.wanted_collections.iter().any(|c| c == POST) {
            return Err(ConfigError::invalid(
                "jetstream.wanted_collections",
                format!("must include {POST}: the operator publishes posts"),
            ));
        }
        if jetstream.wanted_dids.iter().any(|d| !d.starts_with("did:")) {
            return Err(ConfigError::invalid(
                "jetstream.wanted_dids",
                "must be DIDs (did:plc:… or did:web:…)",
            ));
        }
        let strategy = raw.strategy.unwrap_or(Strategy::Polling);
        if raw.firehose.is_some() && strategy != Strategy::Firehose {
            return Err(ConfigError::invalid(
                "firehose",
                "is read only with strategy = \"firehose\": set the strategy or remove the table",
            ));
        }
        let firehose = match raw.firehose {
            Some(f) => f,
            None => Firehose::try_from(RawFirehose::default())?,
        };
        let retry = Retry {
            initial: duration(
                "retry.initial",
                raw.retry.initial.as_deref(),
                Duration::from_secs(1),
            )?,
            max: duration(
                "retry.max",
                raw.retry.max.as_deref(),
                Duration::from_secs(60),
            )?,
        };
        if retry.max < retry.initial {
            return Err(ConfigError::invalid(
                "retry.max",
                "must not be shorter than `retry.initial`",
            ));
        }
        let request_timeout = duration(
            "request_timeout",
            raw.request_timeout.as_deref(),
            Duration::from_secs(30),
        )?;
        if let Some(instance) = &raw.instance {
            if instance.is_empty() {
                return Err(ConfigError::invalid("instance", "must not be empty"));
            }
        }
        Ok(BskyConfig {
            service,
            identifier: raw.identifier.trim().to_string(),
            password: raw.password,
            strategy,
            polling: Polling {
                interval,
                process_from,
                page_size,
            },
            langs,
            reasons: raw.reasons,
            jetstream,
            firehose,
            retry,
            request_timeout,
            instance: raw.instance,
        })
    }
}

impl TryFrom<RawFirehose> for Firehose {
    type Error = ConfigError;

    fn try_from(raw: RawFirehose) -> Result<Firehose, ConfigError> {
        let relay = url(
            "firehose.relay_uri",
            raw.relay_uri.as_deref().unwrap_or(DEFAULT_RELAY),
            &["wss", "ws"],
        )?;
        if relay.contains('?') {
            return Err(ConfigError::invalid(
                "firehose.relay_uri",
                "must not have a query: the operator adds `cursor` itself",
            ));
        }
        let relay_uri = if relay.ends_with(SUBSCRIBE_REPOS) {
            relay
        } else {
            format!("{relay}{SUBSCRIBE_REPOS}")
        };
        if raw.cursor.is_some_and(|c| c < 0) {
            return Err(ConfigError::invalid(
                "firehose.cursor",
                "must be a sequence number (0 or more)",
            ));
        }
        let keepalive = duration(
            "firehose.keepalive",
            raw.keepalive.as_deref(),
            Duration::from_secs(30),
        )?;
        if keepalive < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                "firehose.keepalive",
                "must be at least 100ms",
            ));
        }
        Ok(Firehose {
            relay_uri,
            cursor: raw.cursor,
            auto_reconnect: raw.auto_reconnect.unwrap_or(true),
            plc_url: url(
                "firehose.plc_url",
                raw.plc_url.as_deref().unwrap_or(DEFAULT_PLC),
                &["https", "http"],
            )?,
            keepalive,
        })
    }
}

impl BskyConfig {
    /// Whether going from `self` to `new` needs a new login: another
    /// account or another server. Everything else applies in place.
    pub fn needs_login(&self, new: &BskyConfig) -> bool {
        self.service != new.service
            || self.identifier != new.identifier
            || self.password != new.password
    }

    /// Whether a notification with `reason` is published.
    pub fn publishes(&self, reason: &str) -> bool {
        self.reasons
            .as_ref()
            .is_none_or(|list| list.iter().any(|r| r == reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<BskyConfig, String> {
        switchboard_bus::parse_config::<BskyConfig>(&v).map_err(|e| e.to_string())
    }

    fn base() -> serde_json::Value {
        json!({"identifier": "bot.example.com", "password": "hunter2-pw"})
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(base()).unwrap();
        assert_eq!(c.service, "https://bsky.social");
        assert_eq!(c.strategy, Strategy::Polling);
        assert_eq!(c.polling.interval, Duration::from_secs(5));
        assert_eq!(c.polling.process_from, None);
        assert_eq!(c.langs, vec!["en"]);
        assert!(c.publishes("mention") && c.publishes("starterpack-joined"));
        assert_eq!(c.jetstream.url, DEFAULT_JETSTREAM);
        assert_eq!(c.jetstream.wanted_collections, vec![POST]);
    }

    #[test]
    fn full_config_parses() {
        let mut v = base();
        v["service"] = json!("http://127.0.0.1:2583/");
        v["strategy"] = json!("jetstream");
        v["polling"] =
            json!({"interval": "10s", "process_from": "2026-01-31T12:00:00Z", "page_size": 20});
        v["langs"] = json!(["en", "pt-BR"]);
        v["reasons"] = json!(["mention", "reply"]);
        v["jetstream"] = json!({"url": "ws://127.0.0.1:6008/subscribe", "wanted_dids": ["did:plc:x"], "overlap": "1s"});
        v["retry"] = json!({"initial": "100ms", "max": "2s"});
        let c = parse(v).unwrap();
        assert_eq!(c.service, "http://127.0.0.1:2583");
        assert_eq!(c.strategy, Strategy::Jetstream);
        assert_eq!(c.polling.page_size, 20);
        assert!(c.polling.process_from.is_some());
        assert!(c.publishes("reply") && !c.publishes("like"));
        assert_eq!(c.jetstream.overlap, Duration::from_secs(1));
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        let with = |path: &[&str], value: serde_json::Value| {
            let mut v = base();
            match path {
                [k] => v[*k] = value,
                [a, b] => v[*a] = json!({ *b: value }),
                _ => unreachable!(),
            }
            parse(v).unwrap_err()
        };
        let e = with(&["strategi"], json!("polling"));
        assert!(
            e.contains("unknown field `strategi`") && e.contains("`strategy`"),
            "{e}"
        );
        let e = with(&["polling", "intervall"], json!("5s"));
        assert!(e.contains("`interval`"), "{e}");
        assert!(with(&["strategy"], json!("firehoze")).contains("`firehose`"));
        assert!(with(&["polling", "interval"], json!("5")).contains("polling.interval"));
        assert!(with(&["polling", "process_from"], json!("yesterday")).contains("RFC 3339"));
        assert!(with(&["service"], json!("ftp://x")).contains("service"));
        assert!(with(&["reasons"], json!([])).contains("reasons"));
        assert!(with(&["langs"], json!(["en us"])).contains("langs"));
        assert!(with(
            &["jetstream", "wanted_collections"],
            json!(["app.bsky.feed.like"])
        )
        .contains(POST));
        assert!(parse(json!({"identifier": "x"}))
            .unwrap_err()
            .contains("password"));
    }

    #[test]
    fn firehose_settings_need_the_firehose_strategy() {
        let mut v = base();
        v["strategy"] = json!("firehose");
        let c = parse(v.clone()).unwrap();
        assert_eq!(
            c.firehose.relay_uri,
            format!("{DEFAULT_RELAY}{SUBSCRIBE_REPOS}")
        );
        assert_eq!(c.firehose.plc_url, DEFAULT_PLC);
        assert!(c.firehose.auto_reconnect && c.firehose.cursor.is_none());
        v["firehose"] = json!({"relay_uri": format!("ws://127.0.0.1:2583{SUBSCRIBE_REPOS}"),
            "cursor": 42, "auto_reconnect": false, "plc_url": "http://127.0.0.1:2582/", "keepalive": "1s"});
        let c = parse(v.clone()).unwrap();
        assert_eq!(
            c.firehose.relay_uri,
            format!("ws://127.0.0.1:2583{SUBSCRIBE_REPOS}")
        );
        assert_eq!(c.firehose.cursor, Some(42));
        assert!(!c.firehose.auto_reconnect);
        assert_eq!(c.firehose.plc_url, "http://127.0.0.1:2582");
        let refused = |key: &str, value: serde_json::Value, says: &str| {
            let mut v = v.clone();
            v["firehose"][key] = value;
            let e = parse(v).unwrap_err();
            assert!(e.contains(says), "{key}: {e}");
        };
        refused(
            "relay_uri",
            json!("https://bsky.network"),
            "firehose.relay_uri",
        );
        refused("relay_uri", json!("wss://bsky.network/?cursor=1"), "query");
        refused("cursor", json!(-1), "firehose.cursor");
        refused("plc_url", json!("ftp://x"), "firehose.plc_url");
        refused("keepalive", json!("1ms"), "firehose.keepalive");
        refused("curser", json!(1), "`cursor`");
        let mut v = base();
        v["firehose"] = json!({"cursor": 1});
        assert!(parse(v).unwrap_err().contains("strategy = \"firehose\""));
    }

    #[test]
    fn the_password_is_not_printed() {
        let c = parse(base()).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn login_needed_only_for_account_keys() {
        let a = parse(base()).unwrap();
        let mut v = base();
        v["polling"] = json!({"interval": "1s"});
        v["strategy"] = json!("jetstream");
        v["langs"] = json!(["de"]);
        let b = parse(v).unwrap();
        assert!(!a.needs_login(&b));
        let mut v = base();
        v["identifier"] = json!("other.example.com");
        assert!(a.needs_login(&parse(v).unwrap()));
    }
}
