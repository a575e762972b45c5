//! docs/envelope.schema.json and `Envelope::from_slice` must agree: what
//! the crate writes validates, and what the schema rejects the parser
//! rejects too.

use serde_json::{json, Value};
use switchboard_proto::{headers, Envelope};

const SCHEMA: &str = include_str!("../../docs/envelope.schema.json");

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(SCHEMA).expect("the schema file is JSON");
    assert!(
        jsonschema::meta::is_valid(&schema),
        "the schema is not a valid draft 2020-12 schema"
    );
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles")
}

#[test]
fn schema_metadata() {
    let schema: Value = serde_json::from_str(SCHEMA).expect("JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(schema["$id"].is_string());
    assert!(schema["title"].is_string());
    assert!(schema["description"].is_string());
    assert_eq!(schema["required"], json!(["source", "timestamp", "body"]));
}

#[test]
fn envelopes_the_crate_writes_validate() {
    let v = validator();
    let samples = [
        Envelope::new(
            "irc-libera",
            json!({"text": "hi", "sender": "ferris", "room": "#rust"}),
        )
        .with_header(headers::ROOM, "#rust"),
        Envelope::new("demo", Value::Null),
        Envelope::new("x", json!([1, "two", {"three": 3.5}])),
        Envelope::new("ünïcödé", json!("\u{0}\n\"")).with_header("in-reply-to", "abc"),
    ];
    for env in samples {
        let bytes = env.to_vec();
        let instance: Value = serde_json::from_slice(&bytes).expect("JSON");
        if let Err(e) = v.validate(&instance) {
            panic!("schema rejects {instance}: {e}");
        }
    }
}

#[test]
fn schema_and_parser_agree_on_invalid_envelopes() {
    let v = validator();
    let ts = "2024-05-01T12:00:00.000000Z";
    let invalid = [
        json!({"timestamp": ts, "body": 1}),
        json!({"source": "s", "body": 1}),
        json!({"source": "s", "timestamp": ts}),
        json!({"source": "", "timestamp": ts, "body": 1}),
        json!({"source": 7, "timestamp": ts, "body": 1}),
        json!({"source": "s", "timestamp": ts, "headers": {"n": 1}, "body": 1}),
        json!({"source": "s", "timestamp": ts, "headers": {"": "x"}, "body": 1}),
        json!({"source": "s", "timestamp": ts, "headers": ["id"], "body": 1}),
        json!({"source": "s", "timestamp": "yesterday", "body": 1}),
        json!({"source": "s", "timestamp": "2024-05-01 12:00:00Z", "body": 1}),
        json!({"source": "s", "timestamp": "2024-05-01T12:00:00", "body": 1}),
        json!({"source": "s", "timestamp": "2024-13-01T12:00:00Z", "body": 1}),
        json!({"source": "s", "timestamp": 1714564800, "body": 1}),
        json!(["not", "an", "object"]),
    ];
    for instance in invalid {
        assert!(!v.is_valid(&instance), "schema accepts {instance}");
        let bytes = serde_json::to_vec(&instance).expect("serializes");
        assert!(
            Envelope::from_slice(&bytes).is_err(),
            "parser accepts {instance}"
        );
    }
}

#[test]
fn schema_and_parser_agree_on_valid_variants() {
    let v = validator();
    let valid = [
        json!({"source": "s", "timestamp": "2024-05-01T12:00:00Z", "body": null}),
        json!({"source": "s", "timestamp": "2024-05-01T14:00:00.5+02:00", "body": {}}),
        json!({"source": "s", "timestamp": "2024-05-01t12:00:00z", "headers": {}, "body": 0}),
        json!({"source": "s", "timestamp": "2024-05-01T12:00:00.123456789Z", "body": [], "future": true}),
    ];
    for instance in valid {
        if let Err(e) = v.validate(&instance) {
            panic!("schema rejects {instance}: {e}");
        }
        let bytes = serde_json::to_vec(&instance).expect("serializes");
        if let Err(e) = Envelope::from_slice(&bytes) {
            panic!("parser rejects {instance}: {e}");
        }
    }
}
