//! Topic patterns with RabbitMQ semantics, and how they map onto NATS.
//!
//! A pattern is dot-separated tokens where `*` matches exactly one token and
//! `#` matches zero or more tokens, anywhere in the pattern (several times if
//! wanted). NATS only has `*` and a trailing `>` (one or more), so
//! [`Pattern::nats_plan`] picks the tightest NATS subscriptions that cannot
//! miss a match, and says when the client must still filter with
//! [`Pattern::matches`].

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::subject::is_valid_token;

/// One token of a [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatternToken {
    /// Matches exactly this token.
    Literal(String),
    /// `*`: matches exactly one token.
    Star,
    /// `#`: matches zero or more tokens.
    Hash,
}

impl PatternToken {
    fn accepts(&self, token: &str) -> bool {
        match self {
            PatternToken::Literal(literal) => literal == token,
            PatternToken::Star => true,
            PatternToken::Hash => false,
        }
    }

    fn as_str(&self) -> &str {
        match self {
            PatternToken::Literal(literal) => literal,
            PatternToken::Star => "*",
            PatternToken::Hash => "#",
        }
    }
}

/// Why a text is not a pattern; every message gives the 1-based token
/// position and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// The pattern is the empty string.
    #[error("pattern is empty; use `#` to match every subject")]
    Empty,
    /// Two dots in a row, or a leading or trailing dot.
    #[error(
        "pattern `{pattern}` has an empty token at position {position} \
         (two dots in a row, or a leading or trailing dot); remove the extra dot"
    )]
    EmptyToken {
        /// The pattern (shortened when long).
        pattern: String,
        /// 1-based token position.
        position: usize,
    },
    /// `>` was used as a token.
    #[error(
        "pattern token {position} is `>`, which is NATS syntax; use `#` for zero or more tokens"
    )]
    NatsWildcard {
        /// 1-based token position.
        position: usize,
    },
    /// A token mixes a wildcard character with text, like `a*` or `#b`.
    #[error(
        "pattern token {position} (`{token}`) mixes `*`, `#` or `>` with text; wildcards must \
         stand alone between dots (escape names from outside with escape_token)"
    )]
    MixedWildcard {
        /// 1-based token position.
        position: usize,
        /// The token (shortened when long).
        token: String,
    },
    /// A token contains whitespace or a control character.
    #[error(
        "pattern token {position} (`{token}`) contains {ch:?}; whitespace and control \
         characters cannot appear in subjects (escape names with escape_token)"
    )]
    InvalidChar {
        /// 1-based token position.
        position: usize,
        /// The token (shortened when long).
        token: String,
        /// The offending character.
        ch: char,
    },
}

crate::error_kinds::error_kinds! {
    /// What kind of [`PatternError`] it is.
    PatternError => PatternErrorKind { Empty, EmptyToken, NatsWildcard, MixedWildcard, InvalidChar }
}

/// The NATS subscriptions that implement a [`Pattern`].
///
/// Invariants: every subject the pattern matches is matched by at least one
/// of `subjects`; no subject is matched by two of them (so each message
/// arrives once); and when `needs_filter` is false, every subject they match
/// also matches the pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscriptionPlan {
    /// NATS subjects (with `*` and `>`) to subscribe to.
    pub subjects: Vec<String>,
    /// Whether deliveries must be checked with [`Pattern::matches`] because
    /// the subscriptions are wider than the pattern.
    pub needs_filter: bool,
}

/// A parsed topic pattern: `*` is one token, `#` zero or more.
///
/// ```
/// use switchboard_proto::Pattern;
///
/// let p = Pattern::parse("chat.#.message")?;
/// assert!(p.matches("chat.message"));
/// assert!(p.matches("chat.irc.libera.=23rust.message"));
/// assert!(!p.matches("chat.irc.libera.=23rust.join"));
///
/// // NATS has no middle `#`: subscribe to the prefix and filter.
/// let plan = p.nats_plan();
/// assert_eq!(plan.subjects, ["chat.>"]);
/// assert!(plan.needs_filter);
/// # Ok::<(), switchboard_proto::PatternError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    tokens: Vec<PatternToken>,
    has_hash: bool,
}

impl Pattern {
    /// Parses a pattern. Adjacent `#` tokens collapse into one (`a.#.#` is
    /// `a.#`), since they mean the same.
    ///
    /// # Errors
    ///
    /// [`PatternError`] for an empty pattern or token, a `>` token, a token
    /// mixing wildcards with text, or whitespace/control characters.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let mut tokens: Vec<PatternToken> = Vec::new();
        for (index, raw) in text.split('.').enumerate() {
            let position = index + 1;
            let token = match raw {
                "" => {
                    return Err(PatternError::EmptyToken {
                        pattern: crate::json::excerpt(text),
                        position,
                    })
                }
                "*" => PatternToken::Star,
                "#" => PatternToken::Hash,
                ">" => return Err(PatternError::NatsWildcard { position }),
                literal => {
                    if let Some(ch) = literal
                        .chars()
                        .find(|c| c.is_whitespace() || c.is_control())
                    {
                        return Err(PatternError::InvalidChar {
                            position,
                            token: crate::json::excerpt(literal),
                            ch,
                        });
                    }
                    if !is_valid_token(literal) {
                        return Err(PatternError::MixedWildcard {
                            position,
                            token: crate::json::excerpt(literal),
                        });
                    }
                    PatternToken::Literal(literal.to_owned())
                }
            };
            if token == PatternToken::Hash && tokens.last() == Some(&PatternToken::Hash) {
                continue;
            }
            tokens.push(token);
        }
        let has_hash = tokens.contains(&PatternToken::Hash);
        Ok(Pattern { tokens, has_hash })
    }

    /// A pattern from tokens known to be valid (literals that pass
    /// [`is_valid_token`], no adjacent `#`), as the subject builders make.
    pub(crate) fn from_valid_tokens(tokens: Vec<PatternToken>) -> Pattern {
        debug_assert!(tokens.iter().all(|t| match t {
            PatternToken::Literal(l) => is_valid_token(l),
            _ => true,
        }));
        let has_hash = tokens.contains(&PatternToken::Hash);
        Pattern { tokens, has_hash }
    }

    /// The tokens, after collapsing adjacent `#`.
    pub fn tokens(&self) -> &[PatternToken] {
        &self.tokens
    }

    /// Whether the pattern has no wildcard (it then matches one subject).
    pub fn is_literal(&self) -> bool {
        self.tokens
            .iter()
            .all(|t| matches!(t, PatternToken::Literal(_)))
    }

    /// Whether `subject` matches the pattern.
    ///
    /// Runs for every delivered message when the plan needs filtering, so it
    /// allocates nothing: patterns without `#` compare token by token;
    /// patterns with `#` use greedy matching that only backtracks to the
    /// latest `#` (linear for one `#`, at worst tokens × tokens).
    pub fn matches(&self, subject: &str) -> bool {
        if self.has_hash {
            self.matches_with_hash(subject)
        } else {
            self.matches_fixed(subject)
        }
    }

    fn matches_fixed(&self, subject: &str) -> bool {
        let mut parts = subject.split('.');
        for token in &self.tokens {
            match parts.next() {
                Some(part) if token.accepts(part) => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }

    fn matches_with_hash(&self, subject: &str) -> bool {
        let tokens = &self.tokens;
        let mut p = 0;
        // Start of the next subject token; `None` once all are consumed.
        let mut s = Some(0);
        // The latest `#`: the pattern index after it, and the subject
        // position from which it could absorb one more token.
        let mut retry: Option<(usize, usize)> = None;
        while let Some(start) = s {
            if let Some(token) = tokens.get(p) {
                if *token == PatternToken::Hash {
                    p += 1;
                    retry = Some((p, start));
                    continue;
                }
                let (part, next) = token_at(subject, start);
                if token.accepts(part) {
                    p += 1;
                    s = next;
                    continue;
                }
            }
            // Mismatch, or pattern used up with subject left: let the latest
            // `#` absorb one more token and try again from after it.
            let Some((after_hash, absorbed_to)) = retry else {
                return false;
            };
            let (_, next) = token_at(subject, absorbed_to);
            p = after_hash;
            s = next;
            if let Some(next) = next {
                retry = Some((after_hash, next));
            }
        }
        tokens[p..].iter().all(|t| *t == PatternToken::Hash)
    }

    /// The tightest NATS subscriptions for this pattern (see
    /// [`SubscriptionPlan`] for the guarantees).
    ///
    /// - no `#`: the pattern itself (`*` is the same in NATS);
    /// - a `#` whose tail (from the first `#` on) has no literal: it only
    ///   demands "at least k more tokens" (k = number of `*` in the tail), so
    ///   the mapping is exact: `P` and `P.>` for a lone trailing `#` (or `>`
    ///   for `#` itself), else `P` + (k−1)×`.*` + `.>`;
    /// - otherwise (a literal after a `#`): the same "at least k" subject,
    ///   with k now counting the literals and `*` of the tail, and
    ///   `needs_filter`.
    ///
    /// ```
    /// use switchboard_proto::Pattern;
    ///
    /// let plan = Pattern::parse("chat.#")?.nats_plan();
    /// assert_eq!(plan.subjects, ["chat", "chat.>"]);
    /// assert!(!plan.needs_filter);
    /// # Ok::<(), switchboard_proto::PatternError>(())
    /// ```
    pub fn nats_plan(&self) -> SubscriptionPlan {
        let Some(first_hash) = self.tokens.iter().position(|t| *t == PatternToken::Hash) else {
            return SubscriptionPlan {
                subjects: vec![self.to_string()],
                needs_filter: false,
            };
        };
        let prefix: Vec<&str> = self.tokens[..first_hash]
            .iter()
            .map(PatternToken::as_str)
            .collect();
        let tail = &self.tokens[first_hash..];
        let at_least = tail.iter().filter(|t| **t != PatternToken::Hash).count();
        let needs_filter = tail.iter().any(|t| matches!(t, PatternToken::Literal(_)));

        if at_least == 0 {
            // Tail is one `#` (adjacent ones were collapsed): the prefix
            // alone, or the prefix and one or more tokens. Disjoint.
            let subjects = if prefix.is_empty() {
                vec![">".to_owned()]
            } else {
                let exact = prefix.join(".");
                let deeper = format!("{exact}.>");
                vec![exact, deeper]
            };
            return SubscriptionPlan {
                subjects,
                needs_filter: false,
            };
        }
        let mut parts = prefix;
        parts.extend(std::iter::repeat_n("*", at_least - 1));
        parts.push(">");
        SubscriptionPlan {
            subjects: vec![parts.join(".")],
            needs_filter,
        }
    }
}

/// The subject token starting at byte `start`, and where the next one
/// starts (`None` after the last).
fn token_at(subject: &str, start: usize) -> (&str, Option<usize>) {
    let rest = subject.get(start..).unwrap_or("");
    match rest.find('.') {
        Some(len) => (&rest[..len], Some(start + len + 1)),
        None => (rest, None),
    }
}

/// Anything a subscription can take as its pattern: a [`Pattern`], its
/// text (`str`, `String`: parsed on use) or a
/// [`ChatPattern`](crate::ChatPattern).
///
/// ```
/// use switchboard_proto::{Pattern, ToPattern};
///
/// assert_eq!(*"chat.#".to_pattern()?, Pattern::parse("chat.#")?);
/// assert!("chat.>".to_pattern().is_err());
/// # Ok::<(), switchboard_proto::PatternError>(())
/// ```
pub trait ToPattern {
    /// The pattern, borrowed when it already is one.
    ///
    /// # Errors
    ///
    /// [`PatternError`] when a text does not parse.
    fn to_pattern(&self) -> Result<Cow<'_, Pattern>, PatternError>;
}

impl ToPattern for Pattern {
    fn to_pattern(&self) -> Result<Cow<'_, Pattern>, PatternError> {
        Ok(Cow::Borrowed(self))
    }
}

impl ToPattern for str {
    fn to_pattern(&self) -> Result<Cow<'_, Pattern>, PatternError> {
        Pattern::parse(self).map(Cow::Owned)
    }
}

impl ToPattern for String {
    fn to_pattern(&self) -> Result<Cow<'_, Pattern>, PatternError> {
        self.as_str().to_pattern()
    }
}

impl ToPattern for crate::ChatPattern {
    fn to_pattern(&self) -> Result<Cow<'_, Pattern>, PatternError> {
        Ok(Cow::Owned(self.build()))
    }
}

impl<T: ToPattern + ?Sized> ToPattern for &T {
    fn to_pattern(&self) -> Result<Cow<'_, Pattern>, PatternError> {
        (**self).to_pattern()
    }
}

impl fmt::Display for Pattern {
    /// The canonical text (adjacent `#` collapsed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, token) in self.tokens.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(token.as_str())?;
        }
        Ok(())
    }
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Pattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(p: &str) -> (Vec<String>, bool) {
        let plan = Pattern::parse(p).expect(p).nats_plan();
        (plan.subjects, plan.needs_filter)
    }

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn exact_plans() {
        assert_eq!(plan("#"), (v(&[">"]), false));
        assert_eq!(plan("#.#"), (v(&[">"]), false));
        assert_eq!(plan("chat.#"), (v(&["chat", "chat.>"]), false));
        assert_eq!(plan("chat.*.#"), (v(&["chat.*", "chat.*.>"]), false));
        assert_eq!(plan("chat.*.x"), (v(&["chat.*.x"]), false));
        assert_eq!(plan("a.b"), (v(&["a.b"]), false));
        assert_eq!(plan("chat.irc.#.chat"), (v(&["chat.irc.>"]), true));
        assert_eq!(plan("#.chat"), (v(&[">"]), true));
        assert_eq!(plan("#.*"), (v(&[">"]), false));
        assert_eq!(plan("a.#.*.*"), (v(&["a.*.>"]), false));
        assert_eq!(plan("a.#.*.#.b"), (v(&["a.*.>"]), true));
        assert_eq!(plan("#.a.#"), (v(&[">"]), true));
    }

    #[test]
    fn matching() {
        let cases = [
            ("#", "a", true),
            ("#", "a.b.c", true),
            ("a.#", "a", true),
            ("a.#", "b", false),
            ("#.a", "a", true),
            ("#.a", "b.a", true),
            ("#.a", "a.b", false),
            ("a.#.b", "a.b", true),
            ("a.#.b", "a.x.y.b", true),
            ("a.#.b", "a.x.y", false),
            ("#.b.#.c", "x.b.c", true),
            ("#.b.#.c", "b.b.b", false),
            ("#.b.#.c", "c.b.x.c.c", true),
            ("*.#", "a", true),
            ("*.*.#", "a", false),
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a.*", "a.b.c", false),
        ];
        for (pattern, subject, expected) in cases {
            let p = Pattern::parse(pattern).expect(pattern);
            assert_eq!(p.matches(subject), expected, "{pattern} vs {subject}");
        }
    }

    #[test]
    fn canonical_display_and_serde() {
        let p = Pattern::parse("a.#.#.b.*").expect("valid");
        assert_eq!(p.to_string(), "a.#.b.*");
        let json = serde_json::to_string(&p).expect("serializes");
        assert_eq!(json, "\"a.#.b.*\"");
        let back: Pattern = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, p);
        assert!(serde_json::from_str::<Pattern>("\"a.>\"").is_err());
        assert!(Pattern::parse("a.b").expect("valid").is_literal());
        assert!(!Pattern::parse("a.*").expect("valid").is_literal());
    }
}
