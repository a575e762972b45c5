//! Escaping outside names into subject tokens: reversible, canonical, and
//! never more or less than one token.

use proptest::prelude::*;
use switchboard_proto::{escape_token, is_valid_token, unescape_token, ChatAddress};

#[test]
fn examples_round_trip() {
    for (raw, token) in [
        ("#rust.beginners", "=23rust=2Ebeginners"),
        ("did:plc:abc123", "did=3Aplc=3Aabc123"),
        (
            "wss://relay.example.com/",
            "wss=3A=2F=2Frelay=2Eexample=2Ecom=2F",
        ),
        ("", "="),
        ("=", "=3D"),
        ("@ferris", "=40ferris"),
        ("plain_name-1", "plain_name-1"),
        ("*", "=2A"),
        (">", "=3E"),
        ("a b", "a=20b"),
    ] {
        assert_eq!(escape_token(raw), token, "escape {raw:?}");
        assert_eq!(
            unescape_token(token).as_deref(),
            Ok(raw),
            "unescape {token}"
        );
        assert!(is_valid_token(token), "{token}");
    }
}

#[test]
fn rooms_cannot_add_tokens() {
    let addr = ChatAddress::new("irc", "libera.chat", "#a.b.c");
    let subject = addr.event_subject("message");
    assert_eq!(subject.split('.').count(), 5);
}

fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z.*>#= @:/_-]{0,12}",
        "[=0-9A-Fa-f]{0,9}",
    ]
}

proptest! {
    #[test]
    fn escape_then_unescape_is_identity(s in interesting_string()) {
        let token = escape_token(&s);
        prop_assert!(is_valid_token(&token), "{:?} -> {:?}", s, token);
        prop_assert!(!token.contains('.'));
        prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'='));
        prop_assert_eq!(unescape_token(&token), Ok(s));
    }

    #[test]
    fn unescape_is_canonical(t in "[A-Za-z0-9_=.*>#é-]{0,12}") {
        if let Ok(s) = unescape_token(&t) {
            prop_assert_eq!(escape_token(&s), t);
        }
    }

    #[test]
    fn unescape_is_canonical_near_valid_tokens(s in any::<String>(), at in any::<prop::sample::Index>(), b in "[=0-9A-Fa-f]") {
        let mut t = escape_token(&s);
        let i = at.index(t.len() + 1);
        t.insert_str(i, &b);
        if let Ok(s2) = unescape_token(&t) {
            prop_assert_eq!(escape_token(&s2), t);
        }
    }

    #[test]
    fn distinct_strings_get_distinct_tokens(a in interesting_string(), b in interesting_string()) {
        prop_assume!(a != b);
        prop_assert_ne!(escape_token(&a), escape_token(&b));
    }

    #[test]
    fn chat_addresses_round_trip(p in any::<String>(), i in any::<String>(), r in any::<String>(), k in any::<String>()) {
        let addr = ChatAddress::new(p, i, r);
        let subject = addr.send_subject(&k);
        prop_assert_eq!(subject.split('.').count(), 5);
        let parsed = switchboard_proto::ChatSubject::parse(&subject).expect("own subjects parse");
        prop_assert_eq!(parsed.branch, switchboard_proto::Branch::Send);
        prop_assert_eq!(parsed.address, addr);
        prop_assert_eq!(parsed.kind, k);
    }
}
