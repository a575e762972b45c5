//! Property tests: whatever a server sends, and whatever the bus asks,
//! the line handling never panics and never writes a line that holds CR,
//! LF or NUL or is longer than the server accepts.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::json;
use switchboard_irc::client::{Client, Output};
use switchboard_irc::line::{Framed, LineFramer};
use switchboard_irc::outbound::TextKind;
use switchboard_irc::IrcConfig;

fn client() -> Client {
    let config: IrcConfig = serde_json::from_value(json!({
        "server": "irc.test", "nick": "bot", "channels": ["#a", "#b"],
        "alt_nicks": ["bot2"], "rejoin_on_kick": true, "strip_formatting": true,
        "sasl": {"account": "acc", "password": "pw"}, "nickserv_password": "nspw",
        "allow_raw": true
    }))
    .unwrap();
    let now = Instant::now();
    let mut c = Client::new(config, now);
    c.on_connect(now);
    for l in [
        ":s CAP * LS :sasl server-time",
        ":s CAP bot ACK :sasl server-time",
        "AUTHENTICATE +",
        ":s 903 bot :ok",
        ":s 001 bot :Welcome bot!~bot@host",
        ":s 005 bot CHANTYPES=#& PREFIX=(ov)@+ STATUSMSG=@ :are supported",
        ":s 376 bot :End",
        ":bot!~bot@host JOIN #a",
        ":s 353 bot = #a :bot @alice bob",
    ] {
        c.handle_line(l, now);
    }
    c
}

/// Every line the client wants written is one clean line that fits.
fn check(outs: &[Output]) -> Result<(), TestCaseError> {
    for o in outs {
        if let Output::Send(l) | Output::SendNow(l) = o {
            prop_assert!(!l.as_str().contains(['\r', '\n', '\0']), "{l:?}");
            prop_assert!(!l.as_str().is_empty());
            prop_assert!(l.wire_len() <= 8192, "{} bytes", l.wire_len());
        }
    }
    Ok(())
}

fn feed_bytes(c: &mut Client, chunks: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let mut framer = LineFramer::new(8703);
    let mut lines = Vec::new();
    let now = Instant::now();
    for chunk in chunks {
        framer.push(chunk, &mut lines);
        for f in lines.drain(..) {
            if let Framed::Line(l) = f {
                check(&c.handle_line(&l, now))?;
            }
        }
    }
    check(&c.tick(now + Duration::from_secs(60)))
}

fn irc_line() -> impl Strategy<Value = String> {
    let tags = prop::option::of("[a-z+/=;\\\\ a-zA-Z0-9:.-]{0,40}")
        .prop_map(|t| t.map(|t| format!("@{t} ")).unwrap_or_default());
    let prefix = prop::option::of(prop_oneof![
        "[a-zA-Z]{1,8}![~a-z]{0,5}@[a-z.]{0,10}",
        "(bot|alice|bob)![~a-z]{0,5}@[a-z.]{0,10}",
        "[a-z.]{1,12}",
        "[^ \r\n]{0,10}",
    ])
    .prop_map(|p| p.map(|p| format!(":{p} ")).unwrap_or_default());
    let command = prop_oneof![
        Just("PRIVMSG".to_string()),
        Just("NOTICE".to_string()),
        Just("JOIN".to_string()),
        Just("PART".to_string()),
        Just("QUIT".to_string()),
        Just("NICK".to_string()),
        Just("KICK".to_string()),
        Just("TOPIC".to_string()),
        Just("PING".to_string()),
        Just("PONG".to_string()),
        Just("CAP".to_string()),
        Just("AUTHENTICATE".to_string()),
        Just("MODE".to_string()),
        Just("ERROR".to_string()),
        Just("CHGHOST".to_string()),
        "(001|005|353|366|376|422|401|403|404|421|431|432|433|436|437|438|442|471|473|474|475|900|902|903|904|908)",
        "[A-Za-z0-9]{1,8}",
    ];
    let middle = prop::collection::vec(
        prop_oneof![
            "#[a-z]{0,3}",
            "(bot|alice|\\*|LS|ACK|NAK)",
            "[^\r\n\0 :]{0,12}"
        ],
        0..6,
    );
    let trailing = prop::option::of("[^\r\n]{0,60}");
    (tags, prefix, command, middle, trailing).prop_map(|(t, p, c, m, tr)| {
        let mut line = format!("{t}{p}{c}");
        for x in m {
            line.push(' ');
            line.push_str(&x);
        }
        if let Some(tr) = tr {
            line.push_str(" :");
            line.push_str(&tr);
        }
        line
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20)) {
        let mut c = client();
        feed_bytes(&mut c, &chunks)?;
    }

    #[test]
    fn irc_like_lines_never_panic(lines in prop::collection::vec(irc_line(), 0..40)) {
        let mut c = client();
        let now = Instant::now();
        for l in &lines {
            check(&c.handle_line(l, now))?;
        }
        check(&c.tick(now + Duration::from_secs(60)))?;
        // Disconnect and register again on the same state.
        check(&c.on_disconnect("test"))?;
        check(&c.on_connect(now))?;
        for l in &lines {
            check(&c.handle_line(l, now))?;
        }
    }

    #[test]
    fn requests_never_produce_bad_lines(
        room in prop_oneof!["#a", "@alice", "#[^\0]{0,20}", "@[^\0]{0,20}", any::<String>()],
        text in any::<String>(),
        key in prop::option::of(any::<String>()),
    ) {
        let mut c = client();
        let now = Instant::now();
        for kind in [TextKind::Message, TextKind::Action, TextKind::Notice] {
            if let Ok(lines) = c.text_lines(kind, &room, &text) {
                for l in lines {
                    prop_assert!(!l.as_str().contains(['\r', '\n', '\0']));
                    prop_assert!(l.wire_len() <= 512);
                }
            }
        }
        check(&c.join(&room, key.clone(), Some("r".into()), now))?;
        check(&c.part(&room, Some(text.clone()), Some("r".into()), now))?;
        check(&c.change_nick(&text, Some("r".into()), now))?;
        if let Ok(l) = c.raw_line(&text) {
            prop_assert!(!l.as_str().contains(['\r', '\n', '\0']));
        }
    }
}

#[test]
fn known_nasty_lines() {
    let mut c = client();
    let now = Instant::now();
    let nasty = [
        "",
        " ",
        ":",
        "@",
        "@;",
        "@=",
        "@a=\\",
        "@a=\\\\\\ :x PRIVMSG #a :x",
        ": PRIVMSG",
        ":x",
        ":x ",
        "PRIVMSG",
        "PRIVMSG #a",
        ":bot!u@h JOIN",
        ":bot!u@h KICK #a",
        ":bot!u@h KICK #a bot",
        ":s 353 bot",
        ":s 353 bot = #nowhere :a b",
        ":s 005",
        ":s CAP",
        ":s CAP * LS",
        ":s CAP * LS *",
        "AUTHENTICATE",
        ":s 001",
        ":s 433",
        ":s 433 *",
        ":a!b@c NICK",
        ":a!b@c PRIVMSG bot :\x01",
        ":a!b@c PRIVMSG bot :\x01\x01",
        ":a!b@c PRIVMSG bot :\x01PING",
        ":a!b@c PRIVMSG @ :x",
        ":a!b@c PRIVMSG @@@ :x",
        ":s MODE #a +b-o+l x y",
        ":s MODE #a +zzzz",
        ":s MODE bot",
        "CAP * ACK :",
        ":!@ PRIVMSG #a :x",
        ":!u@h QUIT",
        "@time=garbage :a!b@c PRIVMSG #a :x",
        ":s 900",
        ":s 904",
        ":s 471",
        ":s 442",
        ":a!b@c TOPIC #a",
        ":a!b@c CHGHOST",
    ];
    for l in nasty {
        for out in c.handle_line(l, now) {
            if let Output::Send(line) | Output::SendNow(line) = out {
                assert!(!line.as_str().contains(['\r', '\n', '\0']));
            }
        }
    }
}
