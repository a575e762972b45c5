//! Arbitrary bytes as a firehose frame (DAG-CBOR header and body), as a
//! Jetstream frame, as a `listNotifications` body and as post text:
//! nothing may panic, every event lands in a room, and every facet is a
//! byte range on character boundaries of its text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_bluesky::lexicon::ListNotificationsOutput;
use switchboard_bluesky::firehose::frame;
use switchboard_bluesky::{inbound, jetstream, richtext};

fuzz_target!(|data: &[u8]| {
    // Any bytes: a frame or an error, never a panic.
    if let Ok(f) = frame::decode(data) {
        assert!(f.seq().is_none_or(|_| !matches!(f, frame::Frame::Info { .. })));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = jetstream::parse_frame(text) {
        if let Some(event) = jetstream::event_for("did:plc:bot", &frame) {
            assert!(!event.room.is_empty());
            assert!(event.post.uri.starts_with("at://"));
        }
    }
    if let Ok(page) = serde_json::from_str::<ListNotificationsOutput>(text) {
        for n in &page.notifications {
            let event = inbound::from_notification(n, None);
            assert_eq!(event.kind, n.reason);
        }
    }
    for span in richtext::spans(text) {
        let (start, end) = match &span {
            richtext::Span::Mention { start, end, .. }
            | richtext::Span::Link { start, end, .. } => (*start, *end),
        };
        assert!(start < end && end <= text.len());
        assert!(text.is_char_boundary(start) && text.is_char_boundary(end));
    }
    if text.len() < 20_000 {
        for part in richtext::split(text) {
            assert!(richtext::fits(&part), "a part too long");
            assert!(!part.is_empty());
        }
    }
});
