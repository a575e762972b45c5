//! Regex triggers on chat text: the quickest way to write a bot.
//!
//! [`Triggers`] is a ready-made [`Operator`]: it listens to chat messages
//! (`chat.#.message` by default), runs each rule's regex over the text,
//! and answers with [`Context::reply`], so a reply goes back to the room
//! (or private conversation) it came from.
//!
//! Answers are rate-limited by default ([`AnswerLimits`]): per sender,
//! per room and per network, like Sopel's command rate limits, so nobody
//! can make the bot flood a room; an answer over a limit is dropped and
//! counted (heartbeat counter `rate_limited`).

use std::time::{Duration, Instant};

use serde::Deserialize;
use switchboard_proto::{ChatEvent, Pattern, PatternError};

use crate::error::kinds;
use crate::operator::{Context, HandlerResult, Operator};
use crate::ratelimit::{limit_or_off, Buckets, Hush, RateLimit};
use crate::subscription::Delivery;
use crate::Counter;

/// A chat message that matched a rule.
pub struct ChatTrigger<'a> {
    /// The message: room, sender, text, … (see [`ChatEvent`]).
    pub chat: &'a ChatEvent<'a>,
    /// The regex captures over the text (named groups included).
    pub captures: regex::Captures<'a>,
}

impl<'a> ChatTrigger<'a> {
    /// A named capture group, if it took part in the match.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.captures.name(name).map(|m| m.as_str())
    }

    /// Who sent the message.
    pub fn sender(&self) -> &'a str {
        self.chat.sender()
    }
}

type Handler = Box<dyn Fn(&ChatTrigger<'_>) -> Option<String> + Send + Sync>;

struct Rule {
    regex: regex::Regex,
    handler: Handler,
}

/// A rule's regex did not compile, or a pattern did not parse.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// Bad regex.
    #[error("trigger regex `{regex}` does not compile: {source}")]
    Regex {
        /// The regex as given.
        regex: String,
        /// The compiler's error.
        source: regex::Error,
    },
    /// Bad listen pattern.
    #[error("bad trigger listen pattern: {source}")]
    Pattern {
        /// Why it does not parse.
        #[from]
        source: PatternError,
    },
}

kinds! {
    /// Coarse classes of [`TriggerError`].
    TriggerError => TriggerErrorKind { Regex, Pattern }
}

/// How often a [`Triggers`] bot may answer: one token bucket per sender
/// (protocol, instance and sender name), per room (protocol, instance and
/// room) and per network (protocol and instance); an answer needs a token
/// from all three. `None` turns one off (`"off"` in a config).
///
/// The network limit also bounds what one protocol operator (one
/// instance, which only its owner may publish: docs/PROTOCOL.md,
/// "Authentic source") can make the bot say, whatever sender and room
/// names it makes up, without starving the other networks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnswerLimits {
    /// Per sender: default 5 at once, then one every 2 s.
    #[serde(deserialize_with = "limit_or_off")]
    pub sender: Option<RateLimit>,
    /// Per room: default 10 at once, then 2 a second.
    #[serde(deserialize_with = "limit_or_off")]
    pub room: Option<RateLimit>,
    /// Per network (instance): default 20 at once, then 5 per second.
    #[serde(deserialize_with = "limit_or_off")]
    pub network: Option<RateLimit>,
}

impl Default for AnswerLimits {
    fn default() -> Self {
        AnswerLimits {
            sender: Some(RateLimit {
                burst: 5,
                per_second: 0.5,
            }),
            room: Some(RateLimit {
                burst: 10,
                per_second: 2.0,
            }),
            network: Some(RateLimit {
                burst: 20,
                per_second: 5.0,
            }),
        }
    }
}

impl AnswerLimits {
    /// No limit at all (for tests and bots that only answer trusted rooms).
    pub fn off() -> AnswerLimits {
        AnswerLimits {
            sender: None,
            room: None,
            network: None,
        }
    }
}

/// The buckets of [`AnswerLimits`], and the count of answers dropped.
struct Limiter {
    sender: Option<Buckets>,
    room: Option<Buckets>,
    network: Option<Buckets>,
    dropped: Counter,
    warnings: Hush,
}

/// Time between two warnings about dropped answers; the rest are counted.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Limiter {
    fn new(limits: &AnswerLimits, dropped: Counter) -> Limiter {
        Limiter {
            sender: limits.sender.map(Buckets::new),
            room: limits.room.map(Buckets::new),
            network: limits.network.map(Buckets::new),
            dropped,
            warnings: Hush::new(WARN_EVERY),
        }
    }

    /// Whether one more answer to `chat` may go out now; takes its tokens
    /// if so, counts (and now and then logs) the drop if not.
    fn admit(&mut self, chat: &ChatEvent<'_>, now: Instant) -> bool {
        let network = format!("{}.{}", chat.protocol(), chat.instance());
        // Names may hold any character: two that happen to build the same
        // key only share a bucket, which errs on the quiet side.
        let room = format!("{network}\0{}", chat.room());
        let sender = format!("{network}\0{}", chat.sender());
        let mut buckets = [
            (self.network.as_mut(), network.as_str()),
            (self.room.as_mut(), room.as_str()),
            (self.sender.as_mut(), sender.as_str()),
        ];
        let allowed = buckets
            .iter_mut()
            .all(|(b, key)| b.as_mut().is_none_or(|b| b.has(key, now)));
        if allowed {
            for (b, key) in buckets.iter_mut() {
                if let Some(b) = b.as_mut() {
                    b.take(key, now);
                }
            }
            return true;
        }
        self.dropped.inc();
        if let Some(suppressed) = self.warnings.due(now) {
            tracing::warn!(
                network = %network,
                room = ?chat.room(),
                sender = ?chat.sender(),
                suppressed_since_last = suppressed,
                "answer dropped: over the rate limit (counted in `rate_limited`)"
            );
        }
        false
    }
}

/// A bot made of regex rules. See the module docs.
///
/// ```
/// use switchboard_bus::Triggers;
///
/// let bot = Triggers::new()
///     .on_chat(r"^!ping\b", |_| Some("pong".to_string()))?
///     .on_chat(r"^!echo (?P<text>.+)", |t| t.get("text").map(str::to_string))?
///     .on_chat(r"^!hello\b", |t| Some(format!("hello, {}", t.sender())))?;
/// # Ok::<(), switchboard_bus::TriggerError>(())
/// ```
pub struct Triggers {
    listen: Vec<Pattern>,
    rules: Vec<Rule>,
    limits: AnswerLimits,
    limiter: Option<Limiter>,
}

impl Default for Triggers {
    fn default() -> Self {
        Self::new()
    }
}

impl Triggers {
    /// No rules yet; listens on `chat.#.message`.
    pub fn new() -> Self {
        Triggers {
            listen: Vec::new(),
            rules: Vec::new(),
            limits: AnswerLimits::default(),
            limiter: None,
        }
    }

    /// Answer limits instead of [`AnswerLimits::default`] (a config's
    /// `rate` table overrides them).
    pub fn limits(mut self, limits: AnswerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Listen on `pattern` instead of (or besides) `chat.#.message`.
    pub fn listen(mut self, pattern: &str) -> Result<Self, TriggerError> {
        self.listen.push(Pattern::parse(pattern)?);
        Ok(self)
    }

    /// When a message's text matches `regex`, call `handler`; a `Some`
    /// answer is sent back to where the message came from.
    pub fn on_chat<F>(mut self, regex: &str, handler: F) -> Result<Self, TriggerError>
    where
        F: Fn(&ChatTrigger<'_>) -> Option<String> + Send + Sync + 'static,
    {
        let compiled = regex::Regex::new(regex).map_err(|source| TriggerError::Regex {
            regex: regex.to_string(),
            source,
        })?;
        self.rules.push(Rule {
            regex: compiled,
            handler: Box::new(handler),
        });
        Ok(self)
    }

    /// Answers for `chat` (one per matching rule), without publishing:
    /// the pure part, for tests and for operators that embed rules.
    pub fn answers(&self, chat: &ChatEvent<'_>) -> Vec<String> {
        let mut out = Vec::new();
        for rule in &self.rules {
            if let Some(captures) = rule.regex.captures(chat.text()) {
                let trigger = ChatTrigger { chat, captures };
                if let Some(answer) = (rule.handler)(&trigger) {
                    out.push(answer);
                }
            }
        }
        out
    }
}

/// Configuration of a [`Triggers`] operator (the manifest's `[config]`).
///
/// ```toml
/// [config]
/// listen = ["chat.irc.#.message"]
/// [config.rate]
/// sender = { burst = 5, per_second = 0.5 }
/// room = "off"
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggersConfig {
    /// Patterns to listen on, replacing the default `chat.#.message`.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Answer limits (each key left out keeps its default; `"off"` turns
    /// one off). Default: the bot's own ([`Triggers::limits`]).
    #[serde(default)]
    pub rate: Option<AnswerLimits>,
}

/// The heartbeat counter of answers dropped by the limits.
pub const RATE_LIMITED_COUNTER: &str = "rate_limited";

impl Operator for Triggers {
    type Config = TriggersConfig;

    async fn start(&mut self, ctx: &mut Context, config: TriggersConfig) -> HandlerResult {
        let mut patterns = self.listen.clone();
        for p in &config.listen {
            patterns.push(Pattern::parse(p)?);
        }
        if patterns.is_empty() {
            patterns.push(Pattern::parse("chat.#.message")?);
        }
        let limits = config.rate.as_ref().unwrap_or(&self.limits);
        let dropped = ctx.bus().stats().counter(RATE_LIMITED_COUNTER);
        self.limiter = Some(Limiter::new(limits, dropped));
        for p in &patterns {
            ctx.subscribe(p).await?;
        }
        Ok(())
    }

    async fn message(&mut self, ctx: &mut Context, d: Delivery) -> HandlerResult {
        let chat = d.chat()?;
        for answer in self.answers(&chat) {
            if let Some(limiter) = self.limiter.as_mut() {
                if !limiter.admit(&chat, Instant::now()) {
                    continue;
                }
            }
            ctx.reply(&d, answer).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchboard_proto::{headers, Envelope};

    use super::*;

    #[test]
    fn answers_come_from_matching_rules() {
        let bot = Triggers::new()
            .on_chat(r"^!ping\b", |_| Some("pong".to_string()))
            .and_then(|b| {
                b.on_chat(r"^!hi (?P<who>\w+)", |t| {
                    Some(format!("{} greets {}", t.sender(), t.get("who")?))
                })
            })
            .expect("rules compile");
        let env = Envelope::new("irc", json!({"sender": "ferris", "text": "!hi crab"}))
            .with_header(headers::ROOM, "#rust");
        let chat = ChatEvent::parse("chat.irc.x.=23rust.message", &env).expect("chat");
        assert_eq!(bot.answers(&chat), ["ferris greets crab"]);
        let env = Envelope::new("irc", json!({"sender": "ferris", "text": "!ping"}));
        let chat = ChatEvent::parse("chat.irc.x.=23rust.message", &env).expect("chat");
        assert_eq!(bot.answers(&chat), ["pong"]);
    }

    #[test]
    fn answers_are_limited_per_sender_room_and_network() {
        let stats = crate::Stats::default();
        let dropped = stats.counter(RATE_LIMITED_COUNTER);
        let mut limiter = Limiter::new(&AnswerLimits::default(), dropped.clone());
        let t0 = Instant::now();
        let said = |room: &str, sender: &str| {
            Envelope::new(
                "x",
                json!({"sender": sender, "text": "!ping", "room": room}),
            )
            .with_header(headers::ROOM, room)
        };
        let mut admitted = |subject_net: &str, room: &str, sender: &str, at: Instant| {
            let env = said(room, sender);
            let subject = switchboard_proto::ChatAddress::new("irc", subject_net, room)
                .event_subject("message");
            let chat = ChatEvent::parse(&subject, &env).expect("chat");
            limiter.admit(&chat, at)
        };
        // One sender: its burst of 5.
        let n = (0..10).filter(|_| admitted("a", "#r", "ann", t0)).count();
        assert_eq!(n, 5);
        // Others in the same room: the room's burst of 10 in all.
        let n = (0..10)
            .filter(|i| admitted("a", "#r", &format!("u{i}"), t0))
            .count();
        assert_eq!(n, 5);
        // New senders in new rooms: the network's burst of 20 in all.
        let n = (0..100)
            .filter(|i| admitted("a", &format!("#r{i}"), &format!("v{i}"), t0))
            .count();
        assert_eq!(n, 10);
        assert_eq!(dropped.get(), 5 + 5 + 90);
        // Another network is not starved.
        assert!(admitted("b", "#r", "ann", t0));
        // 5 per second on the network afterwards (each in a fresh room).
        let later = t0 + Duration::from_secs(1);
        let n = (0..100)
            .filter(|i| admitted("a", &format!("#s{i}"), &format!("w{i}"), later))
            .count();
        assert_eq!(n, 5);
    }

    #[test]
    fn limits_come_from_the_config() {
        let c: TriggersConfig = serde_json::from_value(json!({
            "rate": {"sender": "off", "room": {"burst": 1, "per_second": 0.5}}
        }))
        .expect("config");
        let rate = c.rate.expect("rate");
        assert_eq!(rate.sender, None);
        assert_eq!(
            rate.room,
            Some(RateLimit {
                burst: 1,
                per_second: 0.5
            })
        );
        assert_eq!(rate.network, AnswerLimits::default().network);
        let err = serde_json::from_value::<TriggersConfig>(
            json!({"rate": {"room": {"burst": 0, "per_second": 1}}}),
        )
        .expect_err("burst 0");
        assert!(err.to_string().contains("at least 1"), "{err}");
        assert!(
            serde_json::from_value::<TriggersConfig>(json!({"rate": {"rooms": "off"}})).is_err()
        );
    }

    #[test]
    fn errors_have_kinds_and_sources() {
        let err = Triggers::new()
            .on_chat("(", |_| None)
            .err()
            .expect("bad regex");
        assert_eq!(err.kind(), TriggerErrorKind::Regex);
        assert!(std::error::Error::source(&err).is_some());
        let err = Triggers::new().listen("a.>").err().expect("bad pattern");
        assert_eq!(err.kind(), TriggerErrorKind::Pattern);
        assert!(std::error::Error::source(&err).is_some());
    }
}
