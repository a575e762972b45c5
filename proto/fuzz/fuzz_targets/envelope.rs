//! Arbitrary bytes as an envelope: never a panic, and whatever decodes
//! encodes back to bytes that decode again with the same source,
//! timestamp and headers. (The body is compared only for decoding:
//! serde_json's default float parsing may differ in the last bit.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::from_slice(data) {
        let again = Envelope::from_slice(&env.to_vec()).expect("our own encoding decodes");
        assert_eq!(again.source, env.source);
        assert_eq!(again.timestamp, env.timestamp);
        assert_eq!(again.headers, env.headers);
    }
});
