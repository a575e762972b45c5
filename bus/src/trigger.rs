//! Regex triggers on chat text: the quickest way to write a bot.
//!
//! [`Triggers`] is a ready-made [`Operator`]: it listens to chat messages
//! (`chat.#.message` by default), runs each rule's regex over the text,
//! and answers with [`Context::reply`], so a reply goes back to the room
//! (or private conversation) it came from.

use serde::Deserialize;
use switchboard_proto::{ChatEvent, Pattern, PatternError};

use crate::error::kinds;
use crate::operator::{Context, HandlerResult, Operator};
use crate::subscription::Delivery;

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
        }
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
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggersConfig {
    /// Patterns to listen on, replacing the default `chat.#.message`.
    #[serde(default)]
    pub listen: Vec<String>,
}

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
        for p in &patterns {
            ctx.subscribe(p).await?;
        }
        Ok(())
    }

    async fn message(&mut self, ctx: &mut Context, d: Delivery) -> HandlerResult {
        for answer in self.answers(&d.chat()?) {
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
