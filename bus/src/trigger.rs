//! Regex triggers on chat text: the quickest way to write a bot.
//!
//! [`Triggers`] is a ready-made [`Operator`]: it listens to chat messages
//! (`chat.#.message` by default), runs each rule's regex over the text,
//! and publishes the handler's answer on the matching `send.` subject, so
//! a reply goes back to the room (or private conversation) it came from.

use serde::Deserialize;
use switchboard_proto::{headers, kinds, ChatAddress, ChatMessage, Pattern, SendRequest};

use crate::operator::{Context, HandlerResult, Operator};
use crate::subscription::Delivery;

/// A chat message that matched a rule.
pub struct ChatTrigger<'a> {
    /// The decoded message body.
    pub message: &'a ChatMessage,
    /// Where it came from (protocol, instance, raw room name).
    pub address: &'a ChatAddress,
    /// The regex captures over `message.text` (named groups included).
    pub captures: regex::Captures<'a>,
}

impl ChatTrigger<'_> {
    /// A named capture group, if it took part in the match.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.captures.name(name).map(|m| m.as_str())
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
    #[error(transparent)]
    Pattern(#[from] switchboard_proto::PatternError),
}

/// A bot made of regex rules. See the module docs.
///
/// ```
/// use switchboard_bus::Triggers;
///
/// let bot = Triggers::new()
///     .on_chat(r"^!ping\b", |_| Some("pong".to_string()))?
///     .on_chat(r"^!echo (?P<text>.+)", |t| t.get("text").map(str::to_string))?;
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

    /// Answers for `message` (one per matching rule), without publishing:
    /// the pure part, for tests and for operators that embed rules.
    pub fn answers(&self, message: &ChatMessage, address: &ChatAddress) -> Vec<String> {
        let mut out = Vec::new();
        for rule in &self.rules {
            if let Some(captures) = rule.regex.captures(&message.text) {
                let trigger = ChatTrigger {
                    message,
                    address,
                    captures,
                };
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

    async fn message(&mut self, ctx: &mut Context, delivery: Delivery) -> HandlerResult {
        let (_, address, _kind) = ChatAddress::parse(&delivery.subject)?;
        let message: ChatMessage = serde_json::from_value(delivery.envelope.body.clone())?;
        let subject = address.send_subject(kinds::MESSAGE);
        for text in self.answers(&message, &address) {
            let body = serde_json::to_value(SendRequest { text })?;
            let mut env = delivery.envelope.reply(ctx.bus().source(), body);
            env = env.with_header(headers::ROOM, address.room.clone());
            ctx.bus().publish(&subject, &env).await?;
        }
        Ok(())
    }
}
