//! Arbitrary bytes through both decoders: `WireEnvelope::parse` (the
//! receive path, with its fast scanner) must accept exactly what
//! `Envelope::from_slice` accepts, with the same fields and the same
//! error, and never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::{Envelope, WireEnvelope};

fuzz_target!(|data: &[u8]| {
    let owned = Envelope::from_slice(data);
    let wire = WireEnvelope::parse(bytes::Bytes::copy_from_slice(data));
    match (owned, wire) {
        (Ok(o), Ok(w)) => {
            assert_eq!(w.source(), o.source);
            assert_eq!(w.timestamp(), o.timestamp);
            assert_eq!(w.id(), o.id());
            assert_eq!(w.envelope(), &o);
        }
        (Err(o), Err(w)) => assert_eq!(o, w),
        (o, w) => panic!("from_slice {o:?}, wire {w:?}"),
    }
});
