//! Patterns against a reference matcher, and NATS plans against a tiny
//! model of NATS subject matching.

use proptest::prelude::*;
use switchboard_proto::{Pattern, PatternError};

/// Obviously-correct recursive matcher: `*` one token, `#` zero or more.
fn reference(pattern: &[&str], subject: &[&str]) -> bool {
    match pattern.split_first() {
        None => subject.is_empty(),
        Some((&"#", rest)) => (0..=subject.len()).any(|skip| reference(rest, &subject[skip..])),
        Some((&"*", rest)) => !subject.is_empty() && reference(rest, &subject[1..]),
        Some((literal, rest)) => subject.first() == Some(literal) && reference(rest, &subject[1..]),
    }
}

/// NATS semantics: `*` one token, `>` (last) one or more tokens.
fn nats_matches(filter: &str, subject: &str) -> bool {
    let f: Vec<&str> = filter.split('.').collect();
    let s: Vec<&str> = subject.split('.').collect();
    for (i, token) in f.iter().enumerate() {
        match *token {
            ">" => return s.len() > i,
            "*" => {
                if i >= s.len() {
                    return false;
                }
            }
            literal => {
                if s.get(i) != Some(&literal) {
                    return false;
                }
            }
        }
    }
    f.len() == s.len()
}

fn pattern_tokens() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "*", "#"]), 1..=6)
}

fn subject_tokens() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=7)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn matches_agrees_with_reference(p in pattern_tokens(), s in subject_tokens()) {
        let pattern = Pattern::parse(&p.join(".")).expect("generated patterns are valid");
        prop_assert_eq!(pattern.matches(&s.join(".")), reference(&p, &s), "{} vs {}", p.join("."), s.join("."));
    }

    #[test]
    fn plans_are_complete_disjoint_and_exact(p in pattern_tokens(), s in subject_tokens()) {
        let pattern = Pattern::parse(&p.join(".")).expect("valid");
        let plan = pattern.nats_plan();
        let subject = s.join(".");
        let hits = plan.subjects.iter().filter(|f| nats_matches(f, &subject)).count();
        let matches = reference(&p, &s);
        if matches {
            prop_assert!(hits >= 1, "{} misses {} with {:?}", pattern, subject, plan);
        }
        prop_assert!(hits <= 1, "{} delivers {} twice with {:?}", pattern, subject, plan);
        if !plan.needs_filter && hits == 1 {
            prop_assert!(matches, "{} lets {} through unfiltered with {:?}", pattern, subject, plan);
        }
    }

    #[test]
    fn display_round_trips(p in pattern_tokens()) {
        let pattern = Pattern::parse(&p.join(".")).expect("valid");
        let again = Pattern::parse(&pattern.to_string()).expect("canonical form parses");
        prop_assert_eq!(&again, &pattern);
        prop_assert!(!pattern.to_string().contains("#.#"));
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,20}", subject in "\\PC{0,20}") {
        if let Ok(p) = Pattern::parse(&text) {
            let _ = p.matches(&subject);
            let _ = p.nats_plan();
        }
    }
}

fn plan(p: &str) -> (Vec<String>, bool) {
    let plan = Pattern::parse(p).expect(p).nats_plan();
    (plan.subjects, plan.needs_filter)
}

#[test]
fn exact_plans() {
    assert_eq!(plan("#"), (vec![">".to_owned()], false));
    assert_eq!(
        plan("chat.#"),
        (vec!["chat".to_owned(), "chat.>".to_owned()], false)
    );
    assert_eq!(plan("chat.*.x"), (vec!["chat.*.x".to_owned()], false));
    assert_eq!(
        plan("chat.irc.#.chat"),
        (vec!["chat.irc.>".to_owned()], true)
    );
    assert_eq!(plan("#.chat"), (vec![">".to_owned()], true));
}

#[test]
fn parse_errors_explain_the_fix() {
    let cases: [(&str, PatternError, &str); 8] = [
        ("", PatternError::Empty, "`#`"),
        (
            "a..b",
            PatternError::EmptyToken {
                pattern: "a..b".into(),
                position: 2,
            },
            "position 2",
        ),
        (
            ".a",
            PatternError::EmptyToken {
                pattern: ".a".into(),
                position: 1,
            },
            "leading or trailing dot",
        ),
        (
            "a.",
            PatternError::EmptyToken {
                pattern: "a.".into(),
                position: 2,
            },
            "remove",
        ),
        (
            "chat.>",
            PatternError::NatsWildcard { position: 2 },
            "use `#`",
        ),
        (
            "a*.b",
            PatternError::MixedWildcard {
                position: 1,
                token: "a*".into(),
            },
            "stand alone",
        ),
        (
            "a.#b",
            PatternError::MixedWildcard {
                position: 2,
                token: "#b".into(),
            },
            "token 2",
        ),
        (
            "a.b c",
            PatternError::InvalidChar {
                position: 2,
                token: "b c".into(),
                ch: ' ',
            },
            "whitespace",
        ),
    ];
    for (text, expected, needle) in cases {
        let e = Pattern::parse(text).expect_err(text);
        assert_eq!(e, expected, "{text}");
        let msg = e.to_string();
        assert!(msg.contains(needle), "{text}: {msg}");
    }
    assert!(matches!(
        Pattern::parse("a.x>"),
        Err(PatternError::MixedWildcard { .. })
    ));
    assert!(matches!(
        Pattern::parse("a.\u{7}"),
        Err(PatternError::InvalidChar { .. })
    ));
}
