//! Arbitrary bytes as an envelope: never a panic, and whatever decodes
//! encodes back to bytes that decode again with the same source,
//! timestamp, headers and body (proto reads JSON numbers exactly, with
//! serde_json's `float_roundtrip`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::from_slice(data) {
        let again = Envelope::from_slice(&env.to_vec()).expect("our own encoding decodes");
        assert_eq!(again.source, env.source);
        assert_eq!(again.timestamp, env.timestamp);
        assert_eq!(again.headers, env.headers);
        assert_eq!(again.body, env.body);
    }
});
