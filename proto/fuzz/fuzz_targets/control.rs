//! Arbitrary bytes as a control request: never a panic, and a parsed
//! request survives its own encoding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::Control;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Control::from_slice(data) {
        assert_eq!(Control::from_slice(&c.to_vec()).expect("round trip"), c);
    }
});
