//! Reading an operator's config into its `Config` type, with errors that
//! never quote the config.
//!
//! A config may hold resolved secrets (passwords, tokens: see
//! docs/PROTOCOL.md, "Launch environment"), and a config error travels
//! far: into the operator's log, the `reload` ack on the bus and the
//! orchestrator's status. serde_json's own messages quote the offending
//! value (`invalid type: string "hunter2", expected u16`), so the message
//! is rebuilt here from the key path (via `serde_path_to_error`), what was
//! expected, and the JSON *type* that was found.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// A config that does not fit the operator's `Config` type: where, and
/// what was wrong, without the value found there.
///
/// ```
/// #[derive(Debug, serde::Deserialize)]
/// struct Sasl { port: u16 }
/// #[derive(Debug, serde::Deserialize)]
/// struct Config { sasl: Sasl }
///
/// let bad = serde_json::json!({"sasl": {"port": "hunter2"}});
/// let err = switchboard_bus::parse_config::<Config>(&bad).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "config key `sasl.port`: invalid type: expected u16, found a string"
/// );
/// ```
///
/// It is also the error of an operator's own checks, after serde has
/// read the value ([`ConfigError::invalid`], [`duration`]): a port of 0,
/// a nick with a space. One type for both, so an operator's config
/// errors read the same whether serde or the operator refused.
///
/// A serde error has no [`source()`](std::error::Error::source), on
/// purpose: serde's error quotes the value, which may be a secret. An
/// operator's check may keep its cause ([`ConfigError::because`]), e.g.
/// the duration parser's error.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// Where: dotted keys and `[index]`es from the top of the config,
    /// e.g. `sasl.port` or `channels[2].name`; `.` for the config itself.
    /// For a missing key, the key that is missing.
    pub path: String,
    /// What was wrong, never quoting the value found.
    pub problem: String,
    kind: ConfigErrorKind,
    /// Shared, so the error stays `Clone` (an ack and a log line both
    /// carry it).
    cause: Option<std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", place(&self.path), self.problem)
    }
}

/// By hand, not derived: the cause is behind an `Arc`, and `source()`
/// must return the cause itself (so it can be downcast), not the `Arc`.
impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let cause: &(dyn std::error::Error + 'static) = self.cause.as_deref()?;
        Some(cause)
    }
}

/// The same place and problem (the cause is not compared: two parser
/// errors cannot be).
impl PartialEq for ConfigError {
    fn eq(&self, other: &Self) -> bool {
        (&self.path, &self.problem, self.kind) == (&other.path, &other.problem, other.kind)
    }
}

impl Eq for ConfigError {}

/// Coarse classes of [`ConfigError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// A required key is missing.
    Missing,
    /// A key the config type does not know (with `deny_unknown_fields`).
    UnknownField,
    /// A value of the wrong JSON type.
    InvalidType,
    /// A value of the right type that is not accepted (out of range, the
    /// wrong length).
    InvalidValue,
    /// A name that is none of an enum's variants.
    UnknownVariant,
    /// Anything else (a duplicate key, a custom check).
    Other,
}

impl ConfigError {
    /// Which kind of problem this is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// An operator's own check refused the value at `path` (a dotted key
    /// such as `polling.interval`, from the struct being checked: the top
    /// of the config for a top-level `#[serde(try_from)]`): `problem`
    /// says what is wrong and what to write instead, never quoting a
    /// secret.
    ///
    /// ```
    /// use switchboard_bus::{ConfigError, ConfigErrorKind};
    ///
    /// let e = ConfigError::invalid("port", "must be between 1 and 65535");
    /// assert_eq!(e.to_string(), "config key `port`: must be between 1 and 65535");
    /// assert_eq!(e.kind(), ConfigErrorKind::InvalidValue);
    /// ```
    pub fn invalid(path: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            problem: problem.into(),
            kind: ConfigErrorKind::InvalidValue,
            cause: None,
        }
    }

    /// The same error, keeping `source` as its cause (a parser's error).
    #[must_use]
    pub fn because(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(std::sync::Arc::new(source));
        self
    }

    /// What `parse_config` makes of an operator's own check that came
    /// back through serde: a `#[serde(try_from)]` error reaches serde as
    /// its text only, at the path of the struct it checked. Read back,
    /// the message names the key once (`config key `port`: …`) instead
    /// of `config: config key `port`: …`.
    fn from_check(at: &str, message: &str) -> Option<ConfigError> {
        let rest = message.strip_prefix("config key `")?;
        let (key, problem) = rest.split_once("`: ")?;
        let path = match at {
            "." => key.to_string(),
            _ => format!("{at}.{key}"),
        };
        Some(ConfigError::invalid(path, problem))
    }
}

/// A duration key of an operator's config, read with the one parser
/// every Switchboard config uses (`"500ms"`, `"1.5s"`, `"2m"`, `"1h"`, at
/// most a year: [`switchboard_proto::duration`]); `default` when the key
/// is not given.
///
/// # Errors
///
/// [`ConfigError`] naming `key`, with the parser's error as its source.
pub fn duration(
    key: &str,
    value: Option<&str>,
    default: std::time::Duration,
) -> Result<std::time::Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => switchboard_proto::duration::parse_duration(text)
            .map_err(|e| ConfigError::invalid(key, e.to_string()).because(e)),
    }
}

/// Deserialise an operator's config from `value`.
///
/// This is what the runtime does with the config from the launch
/// environment and with every `reload`; operators that read more config
/// of their own can use it too.
pub fn parse_config<T: DeserializeOwned>(value: &Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // serde points at the map that lacks the key; say the key itself.
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            let path = match path.as_str() {
                "." => field.to_string(),
                _ => format!("{path}.{field}"),
            };
            return ConfigError {
                path,
                problem: "missing (it is required)".to_string(),
                kind: ConfigErrorKind::Missing,
                cause: None,
            };
        }
        let kind = [
            ("invalid type: ", ConfigErrorKind::InvalidType),
            ("invalid value: ", ConfigErrorKind::InvalidValue),
            ("invalid length ", ConfigErrorKind::InvalidValue),
            ("unknown variant ", ConfigErrorKind::UnknownVariant),
            ("unknown field `", ConfigErrorKind::UnknownField),
        ]
        .iter()
        .find(|(prefix, _)| message.starts_with(prefix))
        .map_or(ConfigErrorKind::Other, |(_, kind)| *kind);
        let problem = describe(&message, at_path(value, e.path()));
        if kind == ConfigErrorKind::Other {
            if let Some(check) = ConfigError::from_check(&path, &problem) {
                return check;
            }
        }
        ConfigError {
            path,
            problem,
            kind,
            cause: None,
        }
    })
}

/// How a message names the place: the whole config, or one key in it.
fn place(path: &str) -> String {
    match path {
        "." => "config".to_string(),
        _ => format!("config key `{path}`"),
    }
}

/// The part of `root` that `path` leads to, or the deepest part it
/// reaches (errors about a missing key point at the map that lacks it).
fn at_path<'v>(root: &'v Value, path: &serde_path_to_error::Path) -> &'v Value {
    use serde_path_to_error::Segment;
    let mut here = root;
    for segment in path.iter() {
        let next = match segment {
            Segment::Map { key } => here.get(key.as_str()),
            Segment::Seq { index } => here.get(*index),
            // An externally tagged enum: `{"variant": inner}`.
            Segment::Enum { variant } => here.get(variant.as_str()),
            Segment::Unknown => None,
        };
        match next {
            Some(v) => here = v,
            None => break,
        }
    }
    here
}

/// serde's message without the value in it.
///
/// serde builds most messages from fixed templates (`invalid type: {found},
/// expected {what}` and so on); the found value is dropped and only its
/// kind is kept. The `expected` part comes from the Rust type, not the
/// input. Field names are keys, not values, so they stay. Any other
/// message (a custom `Deserialize` impl's) is shown only if it quotes no
/// string or number from the offending part of the config.
fn describe(message: &str, found: &Value) -> String {
    let expected = |rest: &str| {
        // The found value comes first and may itself contain
        // ", expected ", so the last one is serde's.
        rest.rfind(", expected ")
            .map(|i| rest[i + ", expected ".len()..].to_string())
    };
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        return match expected(rest) {
            Some(what) => format!("invalid type: expected {what}, found {}", kind(rest)),
            None => format!("invalid type: found {}", kind(rest)),
        };
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        return match expected(rest) {
            Some(what) => format!("invalid value: expected {what}, found {}", kind(rest)),
            None => format!("invalid value: found {}", kind(rest)),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return match expected(rest) {
            Some(what) => format!("unknown variant: expected {what}"),
            None => "unknown variant: this enum has no variants".to_string(),
        };
    }
    let fixed = [
        "missing field `",
        "unknown field `",
        "duplicate field `",
        "invalid length ",
    ];
    if fixed.iter().any(|p| message.starts_with(p)) {
        return message.to_string();
    }
    if quotes_a_value(message, found) {
        "invalid value (the reason is not shown because it quotes the value)".to_string()
    } else {
        message.to_string()
    }
}

/// What kind of value serde's `Unexpected` text describes (it starts with
/// the kind, then quotes the value).
fn kind(unexpected: &str) -> &'static str {
    let kinds = [
        ("string", "a string"),
        ("integer", "an integer"),
        ("floating point", "a number with a fraction"),
        ("boolean", "a boolean"),
        ("character", "a character"),
        ("null", "null"),
        ("unit value", "null"),
        ("sequence", "an array"),
        ("map", "an object"),
        ("byte array", "bytes"),
    ];
    kinds
        .iter()
        .find(|(prefix, _)| unexpected.starts_with(prefix))
        .map_or("a value of another kind", |(_, said)| said)
}

/// Whether `message` contains any string or number under `found`. Very
/// short ones are skipped: they are no secret, and would match nearly any
/// text.
fn quotes_a_value(message: &str, found: &Value) -> bool {
    let hit = |text: &str| text.chars().count() >= 3 && message.contains(text);
    match found {
        Value::String(s) => hit(s),
        Value::Number(n) => hit(&n.to_string()),
        Value::Array(items) => items.iter().any(|v| quotes_a_value(message, v)),
        Value::Object(map) => map.values().any(|v| quotes_a_value(message, v)),
        Value::Null | Value::Bool(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    const SECRET: &str = "hunter2-Zq8x";

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        server: String,
        sasl: Option<Sasl>,
        #[serde(default)]
        channels: Vec<Channel>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sasl {
        port: u16,
        password: String,
        mechanism: Mechanism,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mechanism {
        Plain,
        External,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Channel {
        name: String,
        #[serde(deserialize_with = "short_key")]
        key: String,
    }

    /// A custom check whose message quotes the value, as careless ones do.
    fn short_key<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let key = String::deserialize(d)?;
        if key.len() > 8 {
            return Err(serde::de::Error::custom(format!("key `{key}` is too long")));
        }
        Ok(key)
    }

    fn sasl(port: Value, mechanism: Value) -> Value {
        json!({
            "server": "irc.example.net",
            "sasl": {"port": port, "password": SECRET, "mechanism": mechanism},
        })
    }

    fn error(config: Value) -> String {
        let e = parse_config::<Config>(&config).unwrap_err();
        let text = e.to_string();
        assert!(!text.contains(SECRET), "the value leaked: {text}");
        text
    }

    #[test]
    fn kinds() {
        let kind = |config: Value| parse_config::<Config>(&config).unwrap_err().kind();
        assert_eq!(
            kind(sasl(json!("x"), json!("plain"))),
            ConfigErrorKind::InvalidType
        );
        assert_eq!(
            kind(sasl(json!(70_000), json!("plain"))),
            ConfigErrorKind::InvalidValue
        );
        assert_eq!(
            kind(sasl(json!(1), json!("gssapi"))),
            ConfigErrorKind::UnknownVariant
        );
        assert_eq!(kind(json!({})), ConfigErrorKind::Missing);
        assert_eq!(
            kind(json!({"server": "s", "nick": "x"})),
            ConfigErrorKind::UnknownField
        );
        let e = parse_config::<Config>(&json!({})).unwrap_err();
        assert!(
            std::error::Error::source(&e).is_none(),
            "no source: it would quote values"
        );
    }

    #[test]
    fn a_good_config_parses() {
        let c: Config = parse_config(&sasl(json!(6697), json!("plain"))).unwrap();
        assert_eq!(c.sasl.map(|s| s.port), Some(6697));
    }

    #[test]
    fn wrong_type_names_the_path_and_the_types_not_the_value() {
        // serde_json alone would say: invalid type: string "hunter2-Zq8x", expected u16
        let plain = serde_json::from_value::<Config>(sasl(json!(SECRET), json!("plain")))
            .unwrap_err()
            .to_string();
        assert!(plain.contains(SECRET), "the premise of this test: {plain}");
        assert_eq!(
            error(sasl(json!(SECRET), json!("plain"))),
            "config key `sasl.port`: invalid type: expected u16, found a string"
        );
        // Even a value that mimics serde's own wording is dropped.
        let tricky = format!("{SECRET}, expected u16");
        assert_eq!(
            error(sasl(json!(tricky), json!("plain"))),
            "config key `sasl.port`: invalid type: expected u16, found a string"
        );
    }

    #[test]
    fn out_of_range_number_is_not_quoted() {
        let text = error(sasl(json!(7_000_123), json!("plain")));
        assert_eq!(
            text,
            "config key `sasl.port`: invalid value: expected u16, found an integer"
        );
        assert!(!text.contains("7000123"), "{text}");
    }

    #[test]
    fn unknown_field_names_the_field_only() {
        let mut config = sasl(json!(6697), json!("plain"));
        config["sasl"]["pasword"] = json!(SECRET);
        let text = error(config);
        assert!(text.starts_with("config key `sasl.pasword`"), "{text}");
        assert!(text.contains("unknown field `pasword`"), "{text}");
    }

    #[test]
    fn missing_field_names_the_path() {
        // The value next to the missing one must not show either.
        let config = json!({"server": SECRET, "sasl": {"port": 6697, "mechanism": "plain"}});
        let text = error(config);
        assert_eq!(text, "config key `sasl.password`: missing (it is required)");
        let text = error(json!({"sasl": null}));
        assert_eq!(text, "config key `server`: missing (it is required)");
    }

    #[test]
    fn invalid_enum_variant_is_not_quoted() {
        let text = error(sasl(json!(6697), json!(SECRET)));
        assert_eq!(
            text,
            "config key `sasl.mechanism`: unknown variant: expected `plain` or `external`"
        );
    }

    #[test]
    fn custom_messages_that_quote_the_value_are_withheld() {
        let config = json!({"server": "s", "channels": [{"name": "#a", "key": SECRET}]});
        let text = error(config);
        assert!(text.starts_with("config key `channels[0].key`"), "{text}");
        assert!(text.contains("not shown"), "{text}");
        // One that does not quote it is kept: it is the useful part.
        let config = json!({"server": "s", "channels": [{"name": "#a", "key": 5}]});
        let text = error(config);
        assert_eq!(
            text,
            "config key `channels[0].key`: invalid type: expected a string, found an integer"
        );
    }

    /// A config type with a check of its own, as the operators have.
    #[derive(Debug, Deserialize)]
    #[serde(try_from = "RawChecked")]
    struct Checked {
        #[allow(dead_code)]
        every: std::time::Duration,
    }

    #[derive(Deserialize)]
    struct RawChecked {
        every: Option<String>,
        port: u16,
    }

    impl TryFrom<RawChecked> for Checked {
        type Error = ConfigError;
        fn try_from(raw: RawChecked) -> Result<Checked, ConfigError> {
            if raw.port == 0 {
                return Err(ConfigError::invalid("port", "must be between 1 and 65535"));
            }
            let every = duration(
                "every",
                raw.every.as_deref(),
                std::time::Duration::from_secs(5),
            )?;
            Ok(Checked { every })
        }
    }

    #[test]
    fn an_operators_check_names_its_key_once() {
        let e = parse_config::<Checked>(&json!({"port": 0})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config key `port`: must be between 1 and 65535"
        );
        assert_eq!(
            (e.path.as_str(), e.kind()),
            ("port", ConfigErrorKind::InvalidValue)
        );
        // A value of two characters is not withheld as a quote (see `quotes_a_value`).
        let e = parse_config::<Checked>(&json!({"port": 1, "every": "99"})).unwrap_err();
        assert!(e.to_string().starts_with("config key `every`: "), "{e}");
        // Called directly, the parser's error is kept as the cause.
        let e = duration("every", Some("soon"), std::time::Duration::ZERO).unwrap_err();
        let cause = std::error::Error::source(&e).expect("the parser's error");
        assert!(cause
            .downcast_ref::<switchboard_proto::duration::DurationError>()
            .is_some());
        assert_eq!(
            duration("every", None, std::time::Duration::from_secs(3)),
            Ok(std::time::Duration::from_secs(3))
        );
    }

    #[test]
    fn the_whole_config_is_named_config() {
        let text = error(json!(SECRET));
        assert_eq!(
            text,
            "config: invalid type: expected struct Config, found a string"
        );
    }
}
