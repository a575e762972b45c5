//! Every subject shape: what the builders write, the parsers read back,
//! for any names (property tests), and the chat view agrees with both.

use proptest::prelude::*;
use serde_json::json;
use switchboard_proto::{
    api_subject, control_subject, event_subject, headers, heartbeat_subject, log_subject,
    ready_subject, Branch, ChatAddress, ChatEvent, ChatPattern, ChatSubject, Envelope, OperatorId,
    Pattern, SbSubject,
};

fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z.*>#= @:/_-]{0,12}",
        Just(String::new()),
        Just("#rust.beginners".to_string()),
    ]
}

fn operator_id() -> impl Strategy<Value = OperatorId> {
    "[A-Za-z0-9_-]{1,64}".prop_map(|s| OperatorId::new(s).expect("the regex only makes ids"))
}

/// One or more literal tokens that are not exactly `ready` or `heartbeat`.
fn op_rest() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9_=-]{1,8}", 1..4)
        .prop_map(|tokens| tokens.join("."))
        .prop_filter("reserved", |r| r != "ready" && r != "heartbeat")
}

fn sb_subject() -> impl Strategy<Value = SbSubject> {
    prop_oneof![
        operator_id().prop_map(|id| SbSubject::Ready { id }),
        operator_id().prop_map(|id| SbSubject::Heartbeat { id }),
        (operator_id(), op_rest()).prop_map(|(id, rest)| SbSubject::Op { id, rest }),
        operator_id().prop_map(|id| SbSubject::Ctl { id }),
        operator_id().prop_map(|id| SbSubject::Event { id }),
        (operator_id(), any_name()).prop_map(|(id, stream)| SbSubject::Log { id, stream }),
        any_name().prop_map(|method| SbSubject::Api { method }),
    ]
}

proptest! {
    #[test]
    fn sb_subjects_round_trip(subject in sb_subject()) {
        let text = subject.to_string();
        prop_assert_eq!(SbSubject::parse(&text), Ok(subject.clone()));
        // The builder functions write the same as Display.
        let built = match &subject {
            SbSubject::Ready { id } => ready_subject(id),
            SbSubject::Heartbeat { id } => heartbeat_subject(id),
            SbSubject::Ctl { id } => control_subject(id),
            SbSubject::Event { id } => event_subject(id),
            SbSubject::Log { id, stream } => log_subject(id, stream),
            SbSubject::Api { method } => api_subject(method),
            other => other.to_string(),
        };
        prop_assert_eq!(built, text);
    }

    #[test]
    fn sb_parse_then_write_is_identity(text in "sb\\.(op|ctl|event|log|api)(\\.[a-zA-Z0-9=_*>-]{0,4}){0,4}") {
        if let Ok(subject) = SbSubject::parse(&text) {
            prop_assert_eq!(subject.to_string(), text);
        }
    }

    #[test]
    fn chat_subjects_round_trip(
        p in any_name(), i in any_name(), r in any_name(), k in any_name(), send in any::<bool>()
    ) {
        let branch = if send { Branch::Send } else { Branch::Chat };
        let subject = ChatSubject::new(branch, ChatAddress::new(p, i, r), k);
        let text = subject.to_string();
        prop_assert_eq!(text.split('.').count(), 5);
        prop_assert_eq!(ChatSubject::parse(&text), Ok(subject.clone()));
        prop_assert_eq!(&subject.address.subject(branch, &subject.kind), &text);
        // A pattern built from the same names matches exactly that subject's room.
        let pattern = ChatPattern::new(branch).address(&subject.address).kind(&subject.kind).build();
        prop_assert!(pattern.matches(&text));
        prop_assert!(pattern.is_literal());
    }

    #[test]
    fn chat_events_see_any_room(room in any_name(), text in any::<String>(), with_header in any::<bool>()) {
        let address = ChatAddress::new("irc", "libera", room.clone());
        let subject = address.event_subject("message");
        let mut env = Envelope::new("irc-libera", json!({"sender": "ferris", "text": text, "room": room}));
        if with_header {
            env = env.with_header(headers::ROOM, room.clone());
        }
        let chat = ChatEvent::parse(&subject, &env).expect("a chat event");
        prop_assert_eq!(chat.room(), room.as_str());
        prop_assert_eq!(chat.text(), text.as_str());
        prop_assert_eq!(chat.address(), address.clone());
        prop_assert_eq!(chat.reply_subject("message"), address.send_subject("message"));
        let reply = chat.reply_envelope("bot", "ok");
        prop_assert_eq!(reply.header(headers::ROOM), Some(room.as_str()));
    }
}

#[test]
fn patterns_from_parts_equal_parsed_ones() {
    let p = ChatPattern::send()
        .protocol("irc")
        .instance("irc-libera")
        .build();
    assert_eq!(
        p,
        Pattern::parse("send.irc.irc-libera.*.*").expect("parses")
    );
}

#[test]
fn every_error_has_a_kind_and_keeps_its_cause() {
    use std::error::Error as _;
    use switchboard_proto::{
        unescape_token, Control, ControlParseErrorKind, EnvelopeErrorKind, IdErrorKind,
        PatternErrorKind, SubjectErrorKind, TokenErrorKind,
    };

    let e = Envelope::from_slice(b"[]").unwrap_err();
    assert_eq!(e.kind(), EnvelopeErrorKind::NotAnObject);
    assert_eq!(
        Pattern::parse("a.>").unwrap_err().kind(),
        PatternErrorKind::NatsWildcard
    );
    assert_eq!(
        unescape_token("=2e").unwrap_err().kind(),
        TokenErrorKind::BadEscape
    );
    assert_eq!(OperatorId::new("").unwrap_err().kind(), IdErrorKind::Empty);
    let e = Control::from_slice(br#"{"verb":"pause"}"#).unwrap_err();
    assert_eq!(e.kind(), ControlParseErrorKind::UnknownVerb);
    assert!(e.source().is_some());

    // A chat event error keeps the subject error, which keeps the token error.
    let env = Envelope::new("x", json!({"sender": "a"}));
    let e = ChatEvent::parse("chat.irc.x.=2e.message", &env).unwrap_err();
    let subject = e
        .source()
        .and_then(|s| s.downcast_ref::<switchboard_proto::SubjectError>())
        .expect("the subject error");
    assert_eq!(subject.kind(), SubjectErrorKind::BadToken);
    let token = subject
        .source()
        .and_then(|s| s.downcast_ref::<switchboard_proto::TokenError>())
        .expect("the token error");
    assert_eq!(token.kind(), TokenErrorKind::BadEscape);
}
