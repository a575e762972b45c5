//! Token escaping is a bijection: any string escapes to one valid token
//! that decodes back; any token that decodes is the canonical escape of
//! what it decodes to.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::{escape_token, is_valid_token, unescape_token};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let token = escape_token(text);
    assert!(is_valid_token(&token));
    assert_eq!(unescape_token(&token).expect("our escape decodes"), text);
    if let Ok(raw) = unescape_token(text) {
        assert_eq!(escape_token(&raw), text);
    }
});
