//! Arbitrary text as a pattern and a subject: never a panic; a parsed
//! pattern prints back to text that parses to the same pattern, and its
//! NATS plan never misses a subject the pattern matches.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::Pattern;

/// NATS semantics: `*` one token, `>` one or more trailing tokens.
fn nats_matches(sub: &str, subject: &str) -> bool {
    let s: Vec<&str> = sub.split('.').collect();
    let t: Vec<&str> = subject.split('.').collect();
    for (i, tok) in s.iter().enumerate() {
        if *tok == ">" {
            return t.len() > i;
        }
        match t.get(i) {
            Some(x) if *tok == "*" || tok == x => {}
            _ => return false,
        }
    }
    s.len() == t.len()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (pattern, subject) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(p) = Pattern::parse(pattern) else { return };
    let reparsed = Pattern::parse(&p.to_string()).expect("canonical form parses");
    assert_eq!(reparsed.to_string(), p.to_string());
    if !subject.is_empty() && p.matches(subject) {
        let plan = p.nats_plan();
        assert!(plan.subjects.iter().any(|s| nats_matches(s, subject)));
    }
});
