//! Operators' structured output: a line that is a JSON object (the Rust
//! SDK's `tracing` JSON) keeps its fields in [`LogLine::fields`] and gets a
//! readable `line`, so `switchboard logs`, the daemon's own log and the
//! logger all see `INFO operator{id=x}: ready took=12ms` while tools read
//! the fields.
//!
//! [`LogLine::fields`]: switchboard_proto::api::LogLine::fields

use serde_json::{Map, Value};

/// The fields of `text` when it is one JSON object, and its rendering;
/// `None` for any other line (plain text, a JSON array, a cut line).
///
/// ```
/// use switchboard_orchestrator::structured::parse;
/// let line = r#"{"timestamp":"t","level":"INFO","fields":{"message":"ready","took":"12ms"},"target":"x","span":{"id":"bot","name":"operator"},"spans":[{"id":"bot","name":"operator"}]}"#;
/// let (text, fields) = parse(line).unwrap();
/// assert_eq!(text, "INFO operator{id=bot}: ready took=12ms");
/// assert_eq!(fields["level"], "INFO");
/// assert!(parse("plain text").is_none());
/// ```
pub fn parse(text: &str) -> Option<(String, Map<String, Value>)> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    Some((render(&map), map))
}

/// `LEVEL span{k=v}:span2: message k=v ...`; keys in the order given.
fn render(map: &Map<String, Value>) -> String {
    let mut out = String::new();
    if let Some(level) = map.get("level").and_then(Value::as_str) {
        out.push_str(level);
        out.push(' ');
    }
    if let Some(spans) = map.get("spans").and_then(Value::as_array) {
        for span in spans.iter().filter_map(Value::as_object) {
            let name = span.get("name").and_then(Value::as_str).unwrap_or("span");
            out.push_str(name);
            let attrs: Vec<String> = span
                .iter()
                .filter(|(k, _)| k.as_str() != "name")
                .map(|(k, v)| format!("{k}={}", plain(v)))
                .collect();
            if !attrs.is_empty() {
                out.push('{');
                out.push_str(&attrs.join(" "));
                out.push('}');
            }
            out.push_str(": ");
        }
    }
    let fields = map.get("fields").and_then(Value::as_object);
    let message = fields
        .and_then(|f| f.get("message"))
        .or_else(|| map.get("message"))
        .or_else(|| map.get("msg"));
    if let Some(m) = message {
        out.push_str(&plain(m));
    }
    // Other loggers put their fields at the top level: show what is not
    // already shown.
    let shown = [
        "level",
        "spans",
        "span",
        "fields",
        "message",
        "msg",
        "timestamp",
        "target",
        "time",
    ];
    let rest = fields
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "message")
        .chain(map.iter().filter(|(k, _)| !shown.contains(&k.as_str())));
    for (k, v) in rest {
        out.push(' ');
        out.push_str(k);
        out.push('=');
        out.push_str(&plain(v));
    }
    out.trim_end().to_owned()
}

/// A string without its quotes; anything else as JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
