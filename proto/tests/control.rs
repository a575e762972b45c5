//! Lifecycle and control payloads: round trips and error messages.

use serde_json::json;
use switchboard_proto::{
    kinds, launch, ChatMessage, Control, ControlAck, ControlParseError, Counters, FailureCode,
    Heartbeat, OperatorState, Ready, SendRequest, SendResult, Timestamp, Verb, PROTOCOL_VERSION,
};

#[test]
fn every_verb_round_trips() {
    let requests = [
        Control::Halt,
        Control::Resume,
        Control::Reload {
            config: json!({"channels": ["#rust"], "nick": "sb"}),
        },
        Control::Restart,
        Control::Shutdown,
    ];
    for (request, verb) in requests.iter().zip(Verb::ALL) {
        assert_eq!(request.verb(), verb);
        let bytes = request.to_vec();
        assert_eq!(bytes, serde_json::to_vec(request).expect("serializes"));
        assert_eq!(Control::from_slice(&bytes).as_ref(), Ok(request));
        assert_eq!(
            serde_json::from_slice::<Control>(&bytes).expect("serde agrees"),
            *request
        );
        assert_eq!(verb.to_string().parse::<Verb>(), Ok(verb));
        assert_eq!(
            serde_json::to_string(&verb).expect("serializes"),
            format!("\"{verb}\"")
        );
    }
    assert_eq!(Control::Halt.to_vec(), br#"{"verb":"halt"}"#);
}

#[test]
fn control_errors() {
    let unknown = Control::from_slice(br#"{"verb":"pause"}"#).expect_err("unknown");
    assert!(matches!(unknown, ControlParseError::UnknownVerb(_)));
    let msg = unknown.to_string();
    assert!(
        msg.contains("`pause`") && msg.contains("halt, resume, reload, restart, shutdown"),
        "{msg}"
    );

    let missing = Control::from_slice(br#"{"verb":"reload"}"#).expect_err("no config");
    assert_eq!(missing, ControlParseError::MissingConfig);
    assert!(missing.to_string().contains("`config`"), "{missing}");

    assert_eq!(
        Control::from_slice(b"{}"),
        Err(ControlParseError::MissingVerb)
    );
    assert!(Control::from_slice(b"{}")
        .expect_err("x")
        .to_string()
        .contains("`verb`"));
    assert_eq!(
        Control::from_slice(br#"{"verb":1}"#),
        Err(ControlParseError::VerbNotString { found: "number" })
    );
    assert_eq!(
        Control::from_slice(b"[]"),
        Err(ControlParseError::NotAnObject { found: "array" })
    );
    assert!(matches!(
        Control::from_slice(b"halt"),
        Err(ControlParseError::NotJson { .. })
    ));
    // Extra fields are ignored; a null config is still a config.
    assert_eq!(
        Control::from_slice(br#"{"verb":"halt","by":"cli"}"#),
        Ok(Control::Halt)
    );
    assert_eq!(
        Control::from_slice(br#"{"verb":"reload","config":null}"#),
        Ok(Control::Reload {
            config: json!(null)
        })
    );
    let e = "Halt".parse::<Verb>().expect_err("case matters");
    assert!(e.to_string().contains("valid verbs"), "{e}");
}

#[test]
fn acks() {
    let ok = ControlAck::success("irc-1", Verb::Reload, OperatorState::Running);
    let text = serde_json::to_string(&ok).expect("serializes");
    assert_eq!(
        text,
        r#"{"ok":true,"id":"irc-1","verb":"reload","state":"running"}"#
    );
    assert_eq!(
        serde_json::from_str::<ControlAck>(&text).expect("parses"),
        ok
    );

    let failed = ControlAck::failure(
        "irc-1",
        Verb::Reload,
        OperatorState::Running,
        FailureCode::InvalidConfig,
        "`nick` is required",
    );
    let value = serde_json::to_value(&failed).expect("serializes");
    assert_eq!(value["error"]["code"], "invalid_config");
    assert_eq!(value["verb"], "reload");

    let unparsed = ControlAck::failure(
        "irc-1",
        None,
        OperatorState::Halted,
        FailureCode::BadRequest,
        "not JSON",
    );
    let value = serde_json::to_value(&unparsed).expect("serializes");
    assert!(value.get("verb").is_none());
    assert_eq!(value["state"], "halted");
    assert_eq!(
        serde_json::from_value::<ControlAck>(value).expect("parses"),
        unparsed
    );
}

#[test]
fn ready_and_heartbeat_round_trip() {
    let ts = Timestamp::parse("2024-05-01T12:00:00Z").expect("valid");
    let ready = Ready {
        id: "demo".into(),
        pid: 4242,
        protocol: PROTOCOL_VERSION,
        version: Some("0.1.0".into()),
        links: [("dashboard".to_owned(), "http://127.0.0.1:8477/".to_owned())].into(),
        timestamp: ts,
    };
    let text = serde_json::to_string(&ready).expect("serializes");
    assert_eq!(serde_json::from_str::<Ready>(&text).expect("parses"), ready);

    let mut counters = Counters {
        received: 10,
        published: 3,
        ..Counters::default()
    };
    counters.extra.insert("irc_lines".into(), 99);
    let beat = Heartbeat {
        id: "demo".into(),
        pid: 4242,
        seq: 7,
        state: OperatorState::Halted,
        uptime_ms: 1500,
        counters,
        health: Default::default(),
        health_reason: None,
        timestamp: ts,
    };
    let value = serde_json::to_value(&beat).expect("serializes");
    assert_eq!(value["counters"]["irc_lines"], 99);
    assert_eq!(value["state"], "halted");
    assert_eq!(value["pid"], 4242);
    assert_eq!(
        serde_json::from_value::<Heartbeat>(value).expect("parses"),
        beat
    );

    // Another language may send only some counters.
    let sparse: Heartbeat = serde_json::from_value(json!({
        "id": "py", "pid": 77, "seq": 0, "state": "running", "uptime_ms": 5,
        "counters": {"received": 1}, "timestamp": "2024-05-01T12:00:00Z"
    }))
    .expect("sparse counters are fine");
    assert_eq!(sparse.counters.received, 1);
    assert_eq!(sparse.counters.dropped, 0);
    assert!(sparse.counters.extra.is_empty());
}

#[test]
fn states() {
    for state in OperatorState::ALL {
        assert_eq!(state.to_string().parse::<OperatorState>(), Ok(state));
        assert_eq!(
            serde_json::to_string(&state).expect("serializes"),
            format!("\"{state}\"")
        );
    }
    assert!("paused".parse::<OperatorState>().is_err());
}

#[test]
fn chat_bodies() {
    let m = ChatMessage::new("hi", "ferris", "@ferris");
    assert!(m.private);
    let value = serde_json::to_value(&m).expect("serializes");
    assert_eq!(
        value,
        json!({"text": "hi", "sender": "ferris", "room": "@ferris", "private": true})
    );
    let m2: ChatMessage = serde_json::from_value(json!({"text": "a", "sender": "b", "room": "#c"}))
        .expect("private defaults");
    assert!(!m2.private);

    let req: SendRequest = serde_json::from_str(r#"{"text":"hello","ignored":1}"#).expect("parses");
    assert_eq!(req, SendRequest::new("hello"));
    assert_eq!(
        serde_json::to_string(&SendResult::sent()).expect("ok"),
        r#"{"ok":true}"#
    );
    assert_eq!(
        serde_json::to_string(&SendResult::failed("flood")).expect("ok"),
        r#"{"ok":false,"error":"flood"}"#
    );
    assert_eq!(kinds::ALL.len(), 9);
}

#[test]
fn launch_variables() {
    let mut names = launch::ALL.to_vec();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), launch::ALL.len(), "duplicate names");
    assert!(launch::ALL.iter().all(|n| n.starts_with("SWITCHBOARD_")));
    let secrets: Vec<_> = launch::ALL
        .iter()
        .filter(|n| launch::is_secret(n))
        .collect();
    assert_eq!(secrets, [&launch::NATS_PASSWORD, &launch::NATS_TOKEN]);
}

/// Found by the `control` fuzz target: serde_json's default float parser is
/// not correctly rounded, so a number in a reload config could change on
/// every hop (`1666.66666666666666` read as `1666.6666666666663`, whose
/// own encoding read back as `1666.6666666666665`). proto turns on
/// serde_json's `float_roundtrip`: numbers read exactly and survive.
#[test]
fn reload_config_numbers_survive_round_trips() {
    for text in [
        "1666.66666666666666",
        "1666.6666666666663",
        "0.1",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "9007199254740993.0",
        "-3.141592653589793238462643383279",
    ] {
        let bytes = format!(r#"{{"verb":"reload","config":{{"x":{text}}}}}"#);
        let first = Control::from_slice(bytes.as_bytes()).expect("parses");
        let Control::Reload { config } = &first else {
            panic!("not a reload: {first:?}");
        };
        let exact: f64 = text.parse().expect("a float");
        assert_eq!(config["x"].as_f64(), Some(exact), "{text} read exactly");
        let again = Control::from_slice(&first.to_vec()).expect("reparses");
        assert_eq!(again, first, "{text} survives its own encoding");
    }
}

/// The behaviour above is only as good as proto's own declaration of the
/// feature: in test builds the jsonschema dev-dependency turns
/// `float_roundtrip` on anyway, so the test above would pass without it
/// while the daemon and operators (built without dev-dependencies) lose it.
#[test]
fn proto_itself_asks_for_float_roundtrip() {
    let manifest = include_str!("../Cargo.toml");
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("serde_json"))
        .expect("proto depends on serde_json");
    assert!(line.contains("\"float_roundtrip\""), "{line}");
}
