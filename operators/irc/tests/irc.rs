//! The IRC operator as a separate process against real IRC servers
//! (Debian ngIRCd; InspIRCd with Atheme for SASL), a real nats-server,
//! and a plain raw-socket IRC client playing the human.

mod common;

use std::time::{Duration, Instant};

use common::{config, privmsg_text, Harness, RawIrcClient, WAIT};
use futures::StreamExt;
use serde_json::json;
use switchboard_bus::proto::{headers, Timestamp};
use switchboard_testkit::{InspIrcd, NgIrcd, NgIrcdOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_message_becomes_an_envelope() {
    let irc = NgIrcd::start().expect("ngircd");
    let mut h = Harness::new("irc-in").await;
    h.start_bot(config(irc.port(), "sbbot", &["#test.room"], json!({})))
        .await;
    h.joined("#test.room").await;
    let mut alice = RawIrcClient::connect(irc.port(), "alice").await;
    alice.join("#test.room").await;

    alice.send("PRIVMSG #test.room :hello bus").await;
    let d = h.event(WAIT, |d| d.subject.ends_with(".message")).await;
    assert_eq!(d.subject, "chat.irc.irc-in.=23test=2Eroom.message");
    assert_eq!(d.envelope().source, "irc-in");
    assert_eq!(d.envelope().header(headers::ROOM), Some("#test.room"));
    assert!(d.envelope().id().is_some());
    let b = &d.envelope().body;
    assert_eq!(b["text"], "hello bus");
    assert_eq!(b["sender"], "alice");
    assert_eq!(b["room"], "#test.room");
    assert_eq!(b["private"], false);
    assert_eq!(b["user"], "~alice");
    assert_eq!(b["host"], "127.0.0.1");

    alice.send("PRIVMSG sbbot :psst").await;
    let d = h.event(WAIT, |d| d.subject.ends_with(".message")).await;
    assert_eq!(d.subject, "chat.irc.irc-in.=40alice.message");
    assert_eq!(d.envelope().body["private"], true);
    assert_eq!(d.envelope().body["room"], "@alice");
    assert_eq!(d.envelope().body["text"], "psst");

    alice.send("PRIVMSG #test.room :\x01ACTION waves\x01").await;
    let d = h.event(WAIT, |d| d.subject.ends_with(".action")).await;
    assert_eq!(d.envelope().body["text"], "waves");

    alice.send("PRIVMSG sbbot :\x01VERSION\x01").await;
    alice
        .expect(WAIT, |l| {
            l.contains("NOTICE alice :\x01VERSION switchboard-irc")
        })
        .await;

    alice.send("PART #test.room :see you").await;
    let d = h.event(WAIT, |d| d.subject.ends_with(".part")).await;
    assert_eq!(d.envelope().body["sender"], "alice");
    assert_eq!(d.envelope().body["text"], "see you");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_request_is_said_in_the_channel() {
    let irc = NgIrcd::start().expect("ngircd");
    let mut h = Harness::new("irc-out").await;
    h.start_bot(config(irc.port(), "sbbot", &["#test"], json!({})))
        .await;
    let mut alice = RawIrcClient::connect(irc.port(), "alice").await;
    alice.join("#test").await;
    h.joined("#test").await;

    let r = h
        .request("#test", "message", json!({"text": "hello irc"}))
        .await;
    assert!(r.ok, "{r:?}");
    alice
        .expect(WAIT, |l| {
            privmsg_text(l, "sbbot", "#test") == Some("hello irc")
        })
        .await;

    let r = h
        .request("#test", "action", json!({"text": "waves back"}))
        .await;
    assert!(r.ok, "{r:?}");
    alice
        .expect(WAIT, |l| {
            privmsg_text(l, "sbbot", "#test") == Some("\x01ACTION waves back\x01")
        })
        .await;

    let r = h
        .request("#test", "notice", json!({"text": "a notice"}))
        .await;
    assert!(r.ok, "{r:?}");
    alice
        .expect(WAIT, |l| l.ends_with(" NOTICE #test :a notice"))
        .await;

    let r = h
        .request("@alice", "message", json!({"text": "just you"}))
        .await;
    assert!(r.ok, "{r:?}");
    alice
        .expect(WAIT, |l| {
            privmsg_text(l, "sbbot", "alice") == Some("just you")
        })
        .await;

    // Refusals are answered, with the reason.
    let r = h
        .request("#elsewhere", "message", json!({"text": "x"}))
        .await;
    assert_eq!(r.error.as_deref(), Some("not joined to #elsewhere"));
    let r = h.request("#test", "shout", json!({"text": "x"})).await;
    assert!(r.error.unwrap().contains("unknown kind"));
    let r = h.request("#test", "message", json!({"txt": "x"})).await;
    assert!(r.error.unwrap().contains("bad body"));
    let r = h
        .request("#test", "raw", json!({"text": "PRIVMSG #test :raw"}))
        .await;
    assert!(r.error.unwrap().contains("allow_raw"));

    // Join and part through the bus, confirmed by the server.
    let r = h.request("#second", "join", json!({})).await;
    assert!(r.ok, "{r:?}");
    let r = h
        .request("#second", "message", json!({"text": "in second"}))
        .await;
    assert!(r.ok, "{r:?}");
    let r = h.request("#second", "part", json!({"text": "bye"})).await;
    assert!(r.ok, "{r:?}");
    let r = h.request("#second", "part", json!({})).await;
    assert!(!r.ok);
}

/// 60 requests at once, some over 512 bytes and non-ASCII, under ngIRCd's
/// default throttling and the operator's default flood settings: every
/// line arrives, complete and in order, and the bot stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_lines_at_once_arrive_in_order_without_flood_kick() {
    let irc = NgIrcd::start().expect("ngircd");
    let mut h = Harness::new("irc-many").await;
    h.start_bot(config(irc.port(), "sbmany", &["#many"], json!({})))
        .await;
    let mut alice = RawIrcClient::connect(irc.port(), "alice").await;
    alice.join("#many").await;
    h.joined("#many").await;

    let texts: Vec<String> = (0..60)
        .map(|i| {
            if i % 10 == 3 {
                // ~760 bytes: two lines after splitting.
                format!("{i:02} long: {}", "héllo wörld 日本語 ".repeat(30))
            } else {
                format!("{i:02} short ünïcödé line")
            }
        })
        .collect();
    assert!(texts.iter().filter(|t| t.len() > 512).count() == 6);

    let started = Instant::now();
    let bus = h.bus.clone();
    let requests = texts.iter().map(|t| {
        let bus = bus.clone();
        let body = json!({ "text": t });
        async move {
            common::request(
                &bus,
                "irc-many",
                "#many",
                "message",
                body,
                Duration::from_secs(120),
            )
            .await
        }
    });
    let collect = tokio::spawn(async move {
        let mut got: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while got.len() < 66 && Instant::now() < deadline {
            match alice.next(Duration::from_secs(10)).await {
                Some(l) => {
                    assert!(
                        !l.starts_with(":sbmany!") || !l.contains(" QUIT "),
                        "the bot quit: {l}"
                    );
                    if let Some(t) = privmsg_text(&l, "sbmany", "#many") {
                        got.push(t.to_string());
                    }
                }
                None => break,
            }
        }
        (got, alice)
    });
    let acks = futures::future::join_all(requests).await;
    for (i, a) in acks.iter().enumerate() {
        assert!(a.ok, "request {i}: {a:?}");
    }
    let (got, mut alice) = collect.await.unwrap();
    let elapsed = started.elapsed();
    eprintln!("60 requests ({} lines) delivered in {elapsed:?}", got.len());

    // Complete and in order: the pieces, glued back, are the texts.
    assert_eq!(got.len(), 66, "lines received: {got:#?}");
    assert!(got.iter().all(|l| l.len() <= 512));
    let squash = |s: &str| s.replace(' ', "");
    assert_eq!(squash(&got.concat()), squash(&texts.concat()));
    let firsts: Vec<&str> = got.iter().filter_map(|l| l.get(..2)).collect();
    let mut numbers: Vec<u32> = firsts.iter().filter_map(|n| n.parse().ok()).collect();
    numbers.dedup();
    assert_eq!(numbers, (0..60).collect::<Vec<_>>());

    // Still connected, not killed for flooding.
    let r = h
        .request("#many", "message", json!({"text": "still here"}))
        .await;
    assert!(r.ok, "{r:?}");
    alice
        .expect(WAIT, |l| {
            privmsg_text(l, "sbmany", "#many") == Some("still here")
        })
        .await;
    assert!(!irc.log().to_lowercase().contains("flood"), "{}", irc.log());
    assert!(!h.log().contains("disconnected"), "{}", h.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_rejoins_after_a_server_restart() {
    let mut irc = NgIrcd::start().expect("ngircd");
    let mut h = Harness::new("irc-restart").await;
    h.start_bot(config(
        irc.port(),
        "sbbot",
        &["#one", "#two"],
        json!({"reconnect": {"initial": "200ms", "max": "1s"}}),
    ))
    .await;
    h.joined("#one").await;
    h.joined("#two").await;

    irc.kill();
    let deadline = Instant::now() + WAIT;
    while !h.log().contains("disconnected") {
        assert!(
            Instant::now() < deadline,
            "the bot did not notice:\n{}",
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = h
        .request("#one", "message", json!({"text": "into the void"}))
        .await;
    assert!(r.error.unwrap().contains("not connected"));
    irc.restart().expect("ngircd again");
    h.joined("#one").await;
    h.joined("#two").await;

    let mut alice = RawIrcClient::connect(irc.port(), "alice").await;
    alice.join("#two").await;
    alice.send("PRIVMSG #two :welcome back").await;
    let d = h
        .event(WAIT, |d| d.subject == "chat.irc.irc-restart.=23two.message")
        .await;
    assert_eq!(d.envelope().body["text"], "welcome back");
    let r = h
        .request("#two", "message", json!({"text": "I am back"}))
        .await;
    assert!(r.ok, "{r:?}");
    alice
        .expect(WAIT, |l| {
            privmsg_text(l, "sbbot", "#two") == Some("I am back")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nick_in_use_takes_the_alternate_and_regains_it() {
    let irc = NgIrcd::start().expect("ngircd");
    let mut holder = RawIrcClient::connect(irc.port(), "sbnick").await;
    holder.join("#nick").await;
    let mut h = Harness::new("irc-nick").await;
    h.start_bot(config(
        irc.port(),
        "sbnick",
        &["#nick"],
        json!({"alt_nicks": ["sbnick-alt"]}),
    ))
    .await;
    let d = h.joined("#nick").await;
    assert_eq!(d.envelope().body["sender"], "sbnick-alt");
    holder
        .expect(WAIT, |l| {
            l.starts_with(":sbnick-alt!") && l.contains(" JOIN ")
        })
        .await;

    // The holder leaves: the bot takes its nick back.
    holder.send("QUIT :bye").await;
    let d = h
        .event(WAIT, |d| {
            d.subject.ends_with(".nick") && d.envelope().body["self"] == true
        })
        .await;
    assert_eq!(d.envelope().body["sender"], "sbnick-alt");
    assert_eq!(d.envelope().body["new_name"], "sbnick");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_logs_in_with_atheme() {
    let irc = InspIrcd::start_with_services().expect("inspircd + atheme");
    irc.register_account("sbacct", "sasl-pw-7f3a")
        .expect("register");
    let mut h = Harness::new("irc-sasl").await;
    h.start_bot(config(
        irc.port(),
        "sbsasl",
        &["#sasl"],
        json!({"sasl": {"account": "sbacct", "password": "sasl-pw-7f3a"}}),
    ))
    .await;
    h.joined("#sasl").await;
    let mut alice = RawIrcClient::connect(irc.port(), "alice").await;
    alice.send("WHOIS sbsasl").await;
    // RPL_WHOISACCOUNT: the server knows the bot as account sbacct.
    alice
        .expect(WAIT, |l| l.contains(" 330 alice sbsasl sbacct "))
        .await;
    assert!(h.log().contains("logged in"), "{}", h.log());
    assert!(!h.log().contains("sasl-pw-7f3a"), "the password was logged");

    // server-time: the envelope carries the server's time.
    alice.join("#sasl").await;
    alice.send("PRIVMSG #sasl :what time is it").await;
    let d = h.event(WAIT, |d| d.subject.ends_with(".message")).await;
    let tag = d.envelope().body["tags"]["time"]
        .as_str()
        .expect("time tag");
    assert_eq!(d.envelope().timestamp, Timestamp::parse(tag).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_failures_do_not_stop_the_bot() {
    // Wrong password against Atheme: logged out, but connected and joined.
    let irc = InspIrcd::start_with_services().expect("inspircd + atheme");
    irc.register_account("sbacct2", "right-pw")
        .expect("register");
    let mut h = Harness::new("irc-sasl-bad").await;
    h.start_bot(config(
        irc.port(),
        "sbsasl2",
        &["#sasl"],
        json!({"sasl": {"account": "sbacct2", "password": "wrong-pw"}}),
    ))
    .await;
    h.joined("#sasl").await;
    assert!(
        h.log().contains("SASL authentication failed"),
        "{}",
        h.log()
    );

    // A server without SASL (ngIRCd): negotiation ends, the bot goes on.
    let ng = NgIrcd::start().expect("ngircd");
    let mut h2 = Harness::new("irc-sasl-none").await;
    h2.start_bot(config(
        ng.port(),
        "sbsasl3",
        &["#plain"],
        json!({"sasl": {"account": "a", "password": "p"}}),
    ))
    .await;
    h2.joined("#plain").await;
    assert!(h2.log().contains("does not offer SASL"), "{}", h2.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_in_requests_never_injects_a_command() {
    let irc = NgIrcd::start().expect("ngircd");
    let mut h = Harness::new("irc-inject").await;
    h.start_bot(config(irc.port(), "sbinj", &["#inj"], json!({})))
        .await;
    let mut alice = RawIrcClient::connect(irc.port(), "alice").await;
    alice.join("#inj").await;
    h.joined("#inj").await;

    let r = h
        .request(
            "#inj",
            "message",
            json!({"text": "before\r\nQUIT :pwned\nafter\0nul"}),
        )
        .await;
    assert!(r.ok, "{r:?}");
    for want in ["before", "QUIT :pwned", "afternul"] {
        alice
            .expect(WAIT, |l| privmsg_text(l, "sbinj", "#inj") == Some(want))
            .await;
    }
    // Other fields refuse line breaks outright.
    for (room, kind, body) in [
        ("#inj\r\nQUIT :x", "message", json!({"text": "x"})),
        ("@alice\r\nQUIT", "message", json!({"text": "x"})),
        ("#new", "join", json!({"key": "k\r\nQUIT"})),
        ("=", "nick", json!({"nick": "n\r\nQUIT"})),
    ] {
        let r = h.request(room, kind, body).await;
        assert!(!r.ok, "{room:?} {kind}: {r:?}");
    }
    let r = h
        .request("#inj", "part", json!({"text": "x\r\nQUIT :y"}))
        .await;
    assert!(r.ok, "{r:?}");
    alice
        .expect(WAIT, |l| {
            l.starts_with(":sbinj!") && l.contains(" PART #inj")
        })
        .await;
    let r = h.request("#inj", "join", json!({})).await;
    assert!(r.ok, "{r:?}");
    let r = h
        .request("#inj", "message", json!({"text": "still here"}))
        .await;
    assert!(r.ok, "{r:?}");
    alice
        .expect(WAIT, |l| {
            privmsg_text(l, "sbinj", "#inj") == Some("still here")
        })
        .await;
    let quits: Vec<_> = alice
        .seen
        .iter()
        .filter(|l| l.starts_with(":sbinj!") && l.split(' ').nth(1) == Some("QUIT"))
        .collect();
    assert!(quits.is_empty(), "{quits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_channels_and_nick_without_reconnecting() {
    let irc = NgIrcd::start().expect("ngircd");
    let mut alice = RawIrcClient::connect(irc.port(), "alice").await;
    for c in ["#keep", "#old", "#new"] {
        alice.join(c).await;
    }
    let mut h = Harness::new("irc-reload").await;
    h.start_bot(config(irc.port(), "sbrel", &["#keep", "#old"], json!({})))
        .await;
    h.joined("#keep").await;
    h.joined("#old").await;

    let ack = h
        .control(json!({"verb": "reload",
            "config": config(irc.port(), "sbrel2", &["#keep", "#new"], json!({}))}))
        .await;
    assert!(ack.ok, "{ack:?}");
    alice
        .expect(WAIT, |l| {
            l.starts_with(":sbrel!") && l.contains(" PART #old")
        })
        .await;
    alice
        .expect(WAIT, |l| {
            l.starts_with(":sbrel!") && l.contains(" JOIN :#new")
        })
        .await;
    alice
        .expect(WAIT, |l| {
            l.starts_with(":sbrel!") && l.contains(" NICK :sbrel2")
        })
        .await;
    let r = h
        .request("#new", "message", json!({"text": "hi new"}))
        .await;
    assert!(r.ok, "{r:?}");
    alice
        .expect(WAIT, |l| {
            privmsg_text(l, "sbrel2", "#new") == Some("hi new")
        })
        .await;
    assert!(
        !alice
            .seen
            .iter()
            .any(|l| l.split(' ').nth(1) == Some("QUIT")),
        "the bot reconnected: {:#?}",
        alice.seen
    );

    // A different server is a reconnect.
    let other = NgIrcd::start().expect("second ngircd");
    let ack = h
        .control(json!({"verb": "reload",
            "config": config(other.port(), "sbrel3", &["#elsewhere"], json!({}))}))
        .await;
    assert!(ack.ok, "{ack:?}");
    h.joined("#elsewhere").await;
    alice
        .expect(WAIT, |l| l.starts_with(":sbrel2!") && l.contains(" QUIT"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_configured_ca_and_server_password() {
    let irc = NgIrcd::start_with(NgIrcdOptions {
        password: Some("server-pw".into()),
        tls: true,
    })
    .expect("ngircd with TLS");
    let mut h = Harness::new("irc-tls").await;
    h.start_bot(config(
        irc.tls_port().unwrap(),
        "sbtls",
        &["#tls"],
        json!({"tls": true, "tls_ca": irc.ca_file().unwrap(), "password": "server-pw"}),
    ))
    .await;
    h.joined("#tls").await;
    assert!(!h.log().contains("server-pw"), "the password was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_timeout_on_a_frozen_server_reconnects() {
    let irc = NgIrcd::start().expect("ngircd");
    let mut h = Harness::new("irc-ping").await;
    h.start_bot(config(
        irc.port(),
        "sbping",
        &["#ping"],
        // Short enough to keep the test quick, long enough that a server
        // on a loaded machine is not mistaken for a frozen one.
        json!({"ping_interval": "1s", "ping_timeout": "2s",
               "reconnect": {"initial": "100ms", "max": "500ms"}}),
    ))
    .await;
    h.joined("#ping").await;

    let pid = irc.pid().unwrap().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let deadline = Instant::now() + WAIT;
    while !h.log().contains("ping timeout") {
        if Instant::now() > deadline {
            signal("-CONT");
            panic!("no ping timeout:\n{}", h.log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal("-CONT");
    h.joined("#ping").await;
    let mut alice = RawIrcClient::connect(irc.port(), "alice").await;
    alice.join("#ping").await;
    let r = h
        .request("#ping", "message", json!({"text": "alive"}))
        .await;
    assert!(r.ok, "{r:?}");
    alice
        .expect(WAIT, |l| {
            privmsg_text(l, "sbping", "#ping") == Some("alive")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halt_resume_and_shutdown_with_quit() {
    let irc = NgIrcd::start().expect("ngircd");
    let mut h = Harness::new("irc-life").await;
    h.start_bot(config(
        irc.port(),
        "sblife",
        &["#life"],
        json!({"quit_message": "gone fishing"}),
    ))
    .await;
    let mut alice = RawIrcClient::connect(irc.port(), "alice").await;
    alice.join("#life").await;
    h.joined("#life").await;

    let mut beats = h
        .bus
        .subscribe_raw("sb.op.irc-life.heartbeat")
        .await
        .unwrap();
    h.bus.sync().await.unwrap();
    let ack = h.control(json!({"verb": "halt"})).await;
    assert!(ack.ok, "{ack:?}");
    alice.send("PRIVMSG #life :while halted").await;
    // Dropped while halted, by design, and counted: never silent.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = tokio::time::timeout(WAIT, beats.next())
            .await
            .expect("heartbeats")
            .expect("open");
        let hb: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        if hb["counters"]["irc_events_dropped_halted"].as_u64() >= Some(1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not counted: {hb}");
    }
    let ack = h.control(json!({"verb": "resume"})).await;
    assert!(ack.ok, "{ack:?}");
    alice.send("PRIVMSG #life :after resume").await;
    let d = h.event(WAIT, |d| d.subject.ends_with(".message")).await;
    assert_eq!(d.envelope().body["text"], "after resume");

    let ack = h.control(json!({"verb": "shutdown"})).await;
    assert!(ack.ok, "{ack:?}");
    alice
        .expect(WAIT, |l| {
            l.starts_with(":sblife!") && l.contains(" QUIT ") && l.contains("gone fishing")
        })
        .await;
    let status = h.bot.as_mut().unwrap().exit_within(WAIT).await;
    assert!(status.success(), "{status:?}");
}

/// Join requests go through the send queue like messages: past
/// `flood.max_queue` they are refused with the reason, not queued without
/// bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_requests_are_bounded_by_the_send_queue() {
    let irc = NgIrcd::start().expect("ngircd");
    let mut h = Harness::new("irc-joins").await;
    h.start_bot(config(
        irc.port(),
        "sbjoins",
        &["#base"],
        json!({"flood": {"max_queue": 2, "burst": 1, "per_second": 0.5}}),
    ))
    .await;
    h.joined("#base").await;
    let rooms: Vec<String> = (0..12).map(|i| format!("#j{i}")).collect();
    let results =
        futures::future::join_all(rooms.iter().map(|room| h.request(room, "join", json!({}))))
            .await;
    let refused = results
        .iter()
        .filter(|r| {
            !r.ok
                && r.error
                    .as_deref()
                    .is_some_and(|e| e.contains("send queue full"))
        })
        .count();
    assert!(refused >= 5, "{refused} refused: {results:?}");
}
