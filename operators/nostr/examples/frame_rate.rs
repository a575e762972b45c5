//! Measures the per-event CPU cost on the inbound path, without any I/O:
//! one relay `EVENT` frame parsed ([`switchboard_nostr::frame::parse`]),
//! its id and signature verified, and its bus envelope built.
//!
//!     cargo run --release -p switchboard-nostr --example frame_rate
//!
//! Prints microseconds per event; nothing is asserted.

use std::time::Instant;

use nostr::prelude::{EventBuilder, FinalizeEvent, Keys, Kind, RelayMessage, Tag};
use switchboard_nostr::{frame, inbound};

fn main() {
    let keys = Keys::parse("1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f")
        .expect("key");
    let n = 20_000;
    let frames: Vec<String> = (0..n)
        .map(|i| {
            let e = EventBuilder::new(Kind::TextNote, format!("note {i} with a little text in it"))
                .tags([Tag::parse(["t", "switchboard"]).expect("tag")])
                .finalize(&keys)
                .expect("sign");
            serde_json::json!(["EVENT", "notes", e]).to_string()
        })
        .collect();
    let relays = ["wss://relay.example".to_string()];
    let subs = ["notes".to_string()];
    for (what, build) in [("parse+verify", false), ("parse+verify+envelope", true)] {
        let start = Instant::now();
        for f in &frames {
            let Ok(RelayMessage::Event { event, .. }) = frame::parse(f, 128 * 1024) else {
                panic!("a valid frame");
            };
            event.verify().expect("valid");
            if build {
                let (_subject, env) = inbound::envelope(&event, "bench", "bench", &relays, &subs);
                std::hint::black_box(env.to_vec());
            }
        }
        let per = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!(
            "{what}: {per:.1} µs/event ({:.0} events/s on one core)",
            1e6 / per
        );
    }
}
