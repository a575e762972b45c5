//! Arbitrary bytes from "the server" through framing, parsing and the
//! client state machine: must never panic, and every line the client
//! wants to write must be a single clean line.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard_irc::client::{Client, Output};
use switchboard_irc::line::{Framed, LineFramer};
use switchboard_irc::IrcConfig;

fuzz_target!(|data: &[u8]| {
    let config: IrcConfig = serde_json::from_str(
        r##"{"server": "irc.test", "nick": "bot", "channels": ["#a"], "alt_nicks": ["bot2"],
            "sasl": {"account": "a", "password": "p"}, "nickserv_password": "n",
            "rejoin_on_kick": true, "strip_formatting": true}"##,
    )
    .expect("config");
    let now = Instant::now();
    let mut client = Client::new(config, now);
    client.on_connect(now);
    let mut framer = LineFramer::new(8703);
    let mut lines = Vec::new();
    // Feed in two uneven chunks to exercise framing across reads.
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    for chunk in [&data[..split], &data[split..]] {
        framer.push(chunk, &mut lines);
        for framed in lines.drain(..) {
            if let Framed::Line(line) = framed {
                for out in client.handle_line(&line, now) {
                    if let Output::Send(l) | Output::SendNow(l) = out {
                        assert!(!l.as_str().contains(['\r', '\n', '\0']));
                    }
                }
            }
        }
    }
    let _ = client.tick(now + Duration::from_secs(60));
});
