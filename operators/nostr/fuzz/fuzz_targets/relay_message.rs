//! Arbitrary frames from "a relay" through parsing, verification and the
//! inbound envelope: must never panic, and an event reaches the envelope
//! only when its id and signature verify.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nostr::prelude::RelayMessage;
use switchboard_nostr::{frame, inbound};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(message) = frame::parse(text, 64 * 1024) else {
        return;
    };
    if let RelayMessage::Event { event, .. } = message {
        if event.verify().is_ok() {
            let relays = ["ws://relay.test".to_string()];
            let (subject, envelope) =
                inbound::envelope(&event, "fuzz", "fuzz", &relays, &["s".to_string()]);
            assert!(subject.starts_with("chat.nostr.fuzz."));
            assert_eq!(envelope.body["id"], event.id.to_hex());
        }
    }
});
