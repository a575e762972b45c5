//! Envelope encoding and validation, driven through the public API with real
//! bad inputs.

use proptest::prelude::*;
use serde_json::{json, Value};
use switchboard_proto::{
    headers, Envelope, EnvelopeError, Timestamp, WireEnvelope, MAX_ENVELOPE_BYTES,
};

const TS: &str = "2024-05-01T12:00:00.000000Z";

fn parse(text: &str) -> Result<Envelope, EnvelopeError> {
    Envelope::from_slice(text.as_bytes())
}

fn err(text: &str) -> EnvelopeError {
    match parse(text) {
        Ok(env) => panic!("accepted {text}: {env:?}"),
        Err(e) => e,
    }
}

#[test]
fn round_trip() {
    let env = Envelope::new(
        "irc-libera",
        json!({"text": "hello", "n": [1, 2, {"x": null}]}),
    )
    .with_header(headers::ROOM, "#rust.beginners");
    let bytes = env.to_vec();
    let back = Envelope::from_slice(&bytes).expect("valid");
    assert_eq!(back, env);
    assert_eq!(back.to_vec(), bytes);
    assert_eq!(back.id().map(str::len), Some(22));
}

#[test]
fn wire_layout_is_fixed() {
    let env = Envelope {
        source: "demo".into(),
        timestamp: Timestamp::parse(TS).expect("valid"),
        headers: [("id".to_owned(), "abc".to_owned())].into(),
        body: Value::Null,
    };
    assert_eq!(
        String::from_utf8(env.to_vec()).expect("utf-8"),
        r#"{"source":"demo","timestamp":"2024-05-01T12:00:00.000000Z","headers":{"id":"abc"},"body":null}"#
    );
}

#[test]
fn reply_points_at_the_question() {
    let question = Envelope::new("a", json!("ping"));
    let answer = question.reply("b", json!("pong"));
    assert_eq!(answer.header(headers::IN_REPLY_TO), question.id());
    assert_ne!(answer.id(), question.id());

    let mut anonymous = Envelope::new("a", Value::Null);
    anonymous.headers.clear();
    assert_eq!(
        anonymous
            .reply("b", Value::Null)
            .header(headers::IN_REPLY_TO),
        None
    );
}

#[test]
fn minimal_envelope_defaults_headers() {
    let env = parse(&format!(
        r#"{{"source":"s","timestamp":"{TS}","body":null}}"#
    ))
    .expect("valid");
    assert!(env.headers.is_empty());
    assert_eq!(env.body, Value::Null);
}

#[test]
fn offsets_are_normalized_to_utc() {
    let env = parse(r#"{"source":"s","timestamp":"2024-05-01T14:00:00.25+02:00","body":1}"#)
        .expect("valid");
    assert_eq!(env.timestamp.to_string(), "2024-05-01T12:00:00.250000Z");
    let text = String::from_utf8(env.to_vec()).expect("utf-8");
    assert!(
        text.contains(r#""timestamp":"2024-05-01T12:00:00.250000Z""#),
        "{text}"
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let env = parse(&format!(
        r#"{{"version":2,"source":"s","extra":{{"deep":[1]}},"timestamp":"{TS}","body":{{}},"trace":"x"}}"#
    ))
    .expect("forward compatible");
    assert_eq!(env.source, "s");
    assert!(!String::from_utf8(env.to_vec())
        .expect("utf-8")
        .contains("trace"));
}

#[test]
fn too_large() {
    let filler = "x".repeat(MAX_ENVELOPE_BYTES);
    let text = format!(r#"{{"source":"s","timestamp":"{TS}","body":"{filler}"}}"#);
    let over = &text.as_bytes()[..MAX_ENVELOPE_BYTES + 1];
    let e = Envelope::from_slice(over).expect_err("too large");
    assert_eq!(
        e,
        EnvelopeError::TooLarge {
            size: MAX_ENVELOPE_BYTES + 1,
            max: MAX_ENVELOPE_BYTES
        }
    );
    assert!(e.to_string().contains("1048576"), "{e}");

    // Exactly at the limit is fine.
    let body_len =
        MAX_ENVELOPE_BYTES - format!(r#"{{"source":"s","timestamp":"{TS}","body":""}}"#).len();
    let exact = format!(
        r#"{{"source":"s","timestamp":"{TS}","body":"{}"}}"#,
        "y".repeat(body_len)
    );
    assert_eq!(exact.len(), MAX_ENVELOPE_BYTES);
    assert!(parse(&exact).is_ok());
}

#[test]
fn not_json() {
    let e = err(r#"{"source": "s", "#);
    assert!(matches!(e, EnvelopeError::NotJson { line: 1, .. }), "{e:?}");
    assert!(e.to_string().contains("not valid JSON"), "{e}");
    assert!(matches!(err(""), EnvelopeError::NotJson { .. }));
    assert!(matches!(
        Envelope::from_slice(b"\xff\xfe"),
        Err(EnvelopeError::NotJson { .. })
    ));
}

#[test]
fn not_an_object() {
    for (text, found) in [
        ("[1]", "array"),
        ("\"s\"", "string"),
        ("null", "null"),
        ("3", "number"),
    ] {
        let e = err(text);
        assert_eq!(e, EnvelopeError::NotAnObject { found });
        assert!(e.to_string().contains("JSON object"), "{e}");
    }
}

#[test]
fn missing_fields() {
    let cases = [
        (format!(r#"{{"timestamp":"{TS}","body":1}}"#), "source"),
        (r#"{"source":"s","body":1}"#.to_owned(), "timestamp"),
        (format!(r#"{{"source":"s","timestamp":"{TS}"}}"#), "body"),
    ];
    for (text, field) in cases {
        let e = err(&text);
        assert_eq!(e, EnvelopeError::MissingField { field });
        let msg = e.to_string();
        assert!(msg.contains(&format!("`{field}` is missing")), "{msg}");
    }
}

#[test]
fn wrong_types() {
    let cases = [
        (
            format!(r#"{{"source":5,"timestamp":"{TS}","body":1}}"#),
            "source",
            "string",
            "number",
        ),
        (
            r#"{"source":"s","timestamp":1714564800,"body":1}"#.to_owned(),
            "timestamp",
            "string",
            "number",
        ),
        (
            format!(r#"{{"source":"s","timestamp":"{TS}","headers":[],"body":1}}"#),
            "headers",
            "object",
            "array",
        ),
        (
            format!(r#"{{"source":"s","timestamp":"{TS}","headers":null,"body":1}}"#),
            "headers",
            "object",
            "null",
        ),
        (
            format!(
                r#"{{"source":"s","timestamp":"{TS}","headers":{{"room":"x","n":1}},"body":1}}"#
            ),
            "headers.n",
            "string",
            "number",
        ),
    ];
    for (text, field, expected, found) in cases {
        let e = err(&text);
        assert_eq!(
            e,
            EnvelopeError::WrongType {
                field: field.to_owned(),
                expected,
                found
            },
            "{text}"
        );
        assert!(e.to_string().contains(&format!("`{field}`")), "{e}");
    }
}

#[test]
fn bad_timestamp() {
    let e = err(r#"{"source":"s","timestamp":"2024-13-01T00:00:00Z","body":1}"#);
    match &e {
        EnvelopeError::BadTimestamp { value, reason } => {
            assert_eq!(value, "2024-13-01T00:00:00Z");
            assert!(reason.contains("month"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("`timestamp`"), "{e}");
    assert!(matches!(
        err(r#"{"source":"s","timestamp":"yesterday","body":1}"#),
        EnvelopeError::BadTimestamp { .. }
    ));
}

#[test]
fn bad_source() {
    let e = err(&format!(r#"{{"source":"","timestamp":"{TS}","body":1}}"#));
    assert_eq!(e, EnvelopeError::EmptySource);
    assert!(e.to_string().contains("`source`"), "{e}");

    let long = "s".repeat(257);
    let e = err(&format!(
        r#"{{"source":"{long}","timestamp":"{TS}","body":1}}"#
    ));
    assert_eq!(e, EnvelopeError::SourceTooLong { len: 257 });
    assert!(e.to_string().contains("`source`"), "{e}");

    let ok = "s".repeat(256);
    assert!(parse(&format!(
        r#"{{"source":"{ok}","timestamp":"{TS}","body":1}}"#
    ))
    .is_ok());
}

#[test]
fn bad_headers() {
    let e = err(&format!(
        r#"{{"source":"s","timestamp":"{TS}","headers":{{"":"x"}},"body":1}}"#
    ));
    assert!(
        matches!(&e, EnvelopeError::BadHeader { name, .. } if name.is_empty()),
        "{e:?}"
    );
    assert!(e.to_string().contains("empty"), "{e}");

    let long = "h".repeat(129);
    let e = err(&format!(
        r#"{{"source":"s","timestamp":"{TS}","headers":{{"{long}":"x"}},"body":1}}"#
    ));
    assert!(matches!(&e, EnvelopeError::BadHeader { .. }), "{e:?}");
    assert!(e.to_string().contains("128"), "{e}");
}

#[test]
fn validate_matches_from_slice_rules() {
    let mut env = Envelope::new("", Value::Null);
    assert_eq!(env.validate(), Err(EnvelopeError::EmptySource));
    env.source = "ok".into();
    assert_eq!(env.validate(), Ok(()));
    let env = env.with_header("", "x");
    assert!(matches!(
        env.validate(),
        Err(EnvelopeError::BadHeader { .. })
    ));
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        "\\PC{1,40}",
        any::<i64>(),
        prop::collection::btree_map("\\PC{1,20}", any::<String>(), 0..4),
        json_value(),
    )
        .prop_map(|(source, secs, headers, body)| {
            // Spread over years 0000..=9999.
            let nanos = i128::from(secs.rem_euclid(315_537_897_599)) * 1_000_000_000
                - 62_167_219_200 * 1_000_000_000
                + i128::from(secs.rem_euclid(1_000_000_000));
            Envelope {
                source,
                timestamp: Timestamp::from_unix_nanos(nanos).expect("in range by construction"),
                headers,
                body,
            }
        })
}

proptest! {
    #[test]
    fn arbitrary_envelopes_round_trip(env in envelope()) {
        let bytes = env.to_vec();
        prop_assert_eq!(&bytes, &serde_json::to_vec(&env).expect("serializes"));
        let back = Envelope::from_slice(&bytes);
        prop_assert_eq!(back.as_ref(), Ok(&env));
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::from_slice(&bytes);
    }

    #[test]
    fn mutated_envelopes_never_panic(
        env in envelope(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = env.to_vec();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(decoded) = Envelope::from_slice(&bytes) {
            // Whatever is accepted must re-encode to something accepted.
            prop_assert!(Envelope::from_slice(&decoded.to_vec()).is_ok());
        }
    }

    /// The receive path's decoder (a fast scanner, serde_json behind it)
    /// accepts and refuses exactly what `from_slice` does, with the same
    /// fields and the same errors.
    #[test]
    fn wire_envelopes_agree_with_from_slice(
        env in envelope(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        let mut bytes = env.to_vec();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let owned = Envelope::from_slice(&bytes);
        let wire = WireEnvelope::parse(bytes.clone().into());
        match (&owned, &wire) {
            (Ok(o), Ok(w)) => {
                prop_assert_eq!(w.envelope(), o);
                prop_assert_eq!(w.source(), o.source.as_str());
                prop_assert_eq!(w.id(), o.id());
                let body: Value = w.body_as().expect("an accepted body is JSON");
                prop_assert_eq!(&body, &o.body);
            }
            (Err(o), Err(w)) => prop_assert_eq!(o, w),
            _ => prop_assert!(false, "from_slice {:?}, wire {:?}", owned, wire),
        }
    }
}
