//! Helpers for the client's unit tests.

use super::*;
use serde_json::{json, Value};

pub(super) fn config(extra: Value) -> IrcConfig {
    let mut base = json!({"server": "irc.test", "nick": "bot", "channels": ["#a"]});
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        b.extend(e);
    }
    serde_json::from_value(base).unwrap()
}

pub(super) fn sent(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(l) | Output::SendNow(l) => Some(l.as_str().to_string()),
            _ => None,
        })
        .collect()
}

pub(super) fn events(out: &[Output]) -> Vec<&InboundEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

pub(super) fn feed(c: &mut Client, lines: &[&str]) -> Vec<Output> {
    let now = Instant::now();
    lines.iter().flat_map(|l| c.handle_line(l, now)).collect()
}

/// A client through registration and in #a.
pub(super) fn registered(extra: Value) -> Client {
    let mut c = Client::new(config(extra), Instant::now());
    c.on_connect(Instant::now());
    feed(
        &mut c,
        &[
            ":irc.test CAP * LS :multi-prefix",
            ":irc.test 001 bot :Welcome bot!~bot@host.test",
            ":irc.test 005 bot CHANTYPES=# PREFIX=(ov)@+ STATUSMSG=@+ CASEMAPPING=rfc1459 :are supported",
            ":irc.test 376 bot :End of MOTD",
            ":bot!~bot@host.test JOIN #a",
            ":irc.test 353 bot = #a :bot @alice +bob",
        ],
    );
    c
}
