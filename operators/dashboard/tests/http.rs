//! The dashboard's routes against a real daemon: every view needs a login
//! (the session cookie or a bearer token), state changes the full token,
//! a halt through the page's endpoint halts the operator, the publish box
//! reaches the ping bot, the tail filters by several patterns, the page
//! and logs are served, and it listens on loopback.

mod common;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use switchboard_bus::{ChatAddress, Envelope};
use switchboard_proto::api::SupervisedState;
use switchboard_testkit::daemon::WAIT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HALT: &str = r#"{"verb":"halt","target":"pingbot"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_right_token_nothing_changes_and_with_it_halt_halts() -> anyhow::Result<()> {
    let d = common::start(true).await?;
    assert!(d.addr.ip().is_loopback(), "{}", d.addr);
    d.daemon
        .try_wait_for("pingbot", "running", |o| {
            o.state == SupervisedState::Running
        })
        .await?;

    let (code, body) = common::http(d.addr, "POST", "/api/ctl", &[], HALT).await?;
    assert_eq!(code, 401, "{body}");
    let wrong = [("Authorization", "Bearer not-the-token")];
    let (code, _) = common::http(d.addr, "POST", "/api/ctl", &wrong, HALT).await?;
    assert_eq!(code, 401);
    let prefix = [("Authorization", "Bearer s3cret")];
    let (code, _) = common::http(d.addr, "POST", "/api/ctl", &prefix, HALT).await?;
    assert_eq!(code, 401, "a prefix of the token is not the token");
    // Still running, after the daemon had time to act on anything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        d.daemon
            .operator("pingbot")
            .await
            .context("no pingbot")?
            .state,
        SupervisedState::Running
    );
    // The token never shows in what the dashboard says about itself.
    let logs = d.daemon.log();
    assert!(!logs.contains(common::TOKEN));

    let bearer = format!("Bearer {}", common::TOKEN);
    let auth = [("Authorization", bearer.as_str())];
    let (code, body) = common::http(
        d.addr,
        "POST",
        "/api/ctl",
        &auth,
        r#"{"verb":"halt","target":"pingbot","config":{}}"#,
    )
    .await?;
    assert_eq!(code, 400, "a config cannot be pushed from the page: {body}");
    let (code, body) = common::http(d.addr, "POST", "/api/ctl", &auth, HALT).await?;
    assert_eq!(code, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(reply["results"][0]["ok"], true, "{reply}");
    let status = common::cli_status(&d.daemon)?;
    let ping = status["operators"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["id"] == "pingbot"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ping["state"], "halted", "{status}");
    // `switchboard status` says where the page is (from its ready).
    let dash = status["operators"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["id"] == "dashboard"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        dash["links"]["dashboard"],
        format!("http://{}/", d.addr),
        "{status}"
    );

    let (code, metrics) = common::http(d.addr, "GET", "/metrics", &[], "").await?;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("switchboard_dashboard_unauthorized_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_dashboard_ctl_requests_total 1"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_configured_nothing_is_shown_or_changed() -> anyhow::Result<()> {
    let d = common::start(false).await?;
    let auth = [("Authorization", "Bearer anything")];
    let (code, body) = common::http(d.addr, "POST", "/api/ctl", &auth, HALT).await?;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("token"), "{body}");
    let (code, page) = common::http(d.addr, "GET", "/", &[], "").await?;
    assert_eq!(code, 200);
    assert!(page.contains("<title>Switchboard</title>"));
    // DNS rebinding: a page under another name that resolves here.
    let evil = [("Host", "rebind.example:8477")];
    let (code, body) = common::http(d.addr, "GET", "/api/snapshot", &evil, "").await?;
    assert_eq!(code, 403, "{body}");
    let local = format!("localhost:{}", d.addr.port());
    let (code, _) = common::http(d.addr, "GET", "/metrics", &[("Host", &local)], "").await?;
    assert_eq!(code, 200, "loopback /metrics stays open for Prometheus");
    for path in [
        "/api/snapshot",
        "/api/logs?id=pingbot",
        "/api/tail",
        "/api/history",
        "/api/events",
    ] {
        let (code, body) = common::http(d.addr, "GET", path, &[], "").await?;
        assert_eq!(code, 403, "{path}: {body}");
        assert!(body.contains("no token"), "{path}: {body}");
    }
    let (_, me) = common::http(d.addr, "GET", "/api/me", &[], "").await?;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&me)?["configured"],
        false
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_needs_a_login_and_a_cookie_keeps_it() -> anyhow::Result<()> {
    let d = common::start(true).await?;
    d.daemon
        .try_wait_for("pingbot", "running", |o| {
            o.state == SupervisedState::Running
        })
        .await?;
    // Issue 19: every read endpoint refused without a login.
    for path in [
        "/api/snapshot",
        "/api/logs?id=pingbot",
        "/api/tail?pattern=%23",
        "/api/history",
        "/api/events",
    ] {
        let (code, body) = common::http(d.addr, "GET", path, &[], "").await?;
        assert_eq!(code, 401, "{path}: {body}");
    }
    let login = |token: &str| format!("{{\"token\":\"{token}\"}}");
    let (code, _) = common::http(d.addr, "POST", "/api/login", &[], &login("wrong")).await?;
    assert_eq!(code, 401);
    let (code, head, body) =
        common::http_full(d.addr, "POST", "/api/login", &[], &login(common::TOKEN)).await?;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"admin\""), "{body}");
    let set = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .context("a session cookie")?
        .to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(
        !set.contains(common::TOKEN),
        "the cookie holds no token: {set}"
    );
    let cookie = set.split(';').next().unwrap_or_default().to_owned();
    let with = [("Cookie", cookie.as_str())];
    let (code, body) = common::http(d.addr, "GET", "/api/snapshot", &with, "").await?;
    assert_eq!(code, 200, "{body}");
    let (_, me) = common::http(d.addr, "GET", "/api/me", &with, "").await?;
    assert!(me.contains("\"admin\""), "{me}");
    // Another site's page cannot post with it.
    let forged = [
        ("Cookie", cookie.as_str()),
        ("Origin", "http://evil.example"),
    ];
    let (code, _) = common::http(d.addr, "POST", "/api/ctl", &forged, HALT).await?;
    assert_eq!(code, 403);

    // The viewer token: every view, no button.
    let (code, head, _) =
        common::http_full(d.addr, "POST", "/api/login", &[], &login(common::VIEWER)).await?;
    assert_eq!(code, 200);
    let viewer = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|v| v.split(';').next())
        .context("a viewer cookie")?
        .to_owned();
    let as_viewer = [("Cookie", viewer.as_str())];
    let (code, _) = common::http(d.addr, "GET", "/api/snapshot", &as_viewer, "").await?;
    assert_eq!(code, 200);
    let (code, body) = common::http(d.addr, "POST", "/api/ctl", &as_viewer, HALT).await?;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        d.daemon
            .operator("pingbot")
            .await
            .context("no pingbot")?
            .state,
        SupervisedState::Running
    );

    // The publish box (admin): the ping bot answers in the console room.
    let mut replies = d
        .daemon
        .bus
        .subscribe_raw("send.console.dashboard.lobby.message")
        .await?;
    d.daemon.bus.sync().await?;
    let body = r#"{"subject":"chat.console.dashboard.lobby.message","body":{"text":"!ping","sender":"web","room":"lobby"}}"#;
    let (code, _) = common::http(d.addr, "POST", "/api/publish", &as_viewer, body).await?;
    assert_eq!(code, 403, "a viewer does not publish");
    let (code, out) = common::http(d.addr, "POST", "/api/publish", &with, body).await?;
    assert_eq!(code, 200, "{out}");
    let reply = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut replies))
        .await
        .context("no answer to the page's !ping")?
        .context("subscription ended")?;
    assert!(String::from_utf8_lossy(&reply.payload).contains("pong"));
    let bad = r#"{"subject":"chat.#","body":{}}"#;
    let (code, _) = common::http(d.addr, "POST", "/api/publish", &with, bad).await?;
    assert_eq!(code, 400);
    Ok(())
}

/// Read a server-sent-event stream until `done` holds for what came so
/// far (or [`WAIT`] passes); the text read.
async fn sse_until(
    addr: std::net::SocketAddr,
    path: &str,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{}: {}\r\n\r\n",
            common::AUTH.0,
            common::AUTH.1
        )
        .as_bytes(),
    )
    .await?;
    let deadline = Instant::now() + WAIT;
    let mut text = String::new();
    let mut buf = vec![0u8; 8192];
    while !done(&text) {
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(
            !left.is_zero(),
            "stream never showed what was expected:\n{text}"
        );
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) => anyhow::bail!("stream ended:\n{text}"),
            Ok(Ok(n)) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {}
        }
    }
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_shows_only_what_the_patterns_match() -> anyhow::Result<()> {
    let d = common::start(true).await?;
    let wanted = ChatAddress::new("alpha", "x", "room");
    let other = ChatAddress::new("beta", "x", "room");
    let env = |t: &str| Envelope::new("test", json!({"text": t, "sender": "t", "room": "room"}));
    // One before the page connects (from the buffer), one after (live).
    d.daemon
        .bus
        .publish(&other.event_subject("message"), &env("not-this-one"))
        .await?;
    d.daemon
        .bus
        .publish(&wanted.event_subject("message"), &env("buffered-one"))
        .await?;
    d.daemon.bus.flush().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bus = d.daemon.bus.clone();
    let (w, o) = (wanted.clone(), other.clone());
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = bus
            .publish(&o.event_subject("message"), &env("nor-this-one"))
            .await;
        let _ = bus
            .publish(&w.event_subject("message"), &env("live-one"))
            .await;
        let _ = bus.flush().await;
    });
    let text = sse_until(
        d.addr,
        "/api/tail?pattern=chat.alpha.%23&pattern=chat.gamma.%23",
        |t| t.contains("live-one"),
    )
    .await?;
    later.await?;
    assert!(text.contains("buffered-one"), "{text}");
    assert!(
        !text.contains("not-this-one") && !text.contains("nor-this-one"),
        "{text}"
    );
    assert!(!text.contains("sb.op."), "{text}");

    let auth = [common::AUTH];
    let (code, body) = common::http(d.addr, "GET", "/api/tail?pattern=chat..x", &auth, "").await?;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not a pattern"), "{body}");

    // An operator's log: its recent lines, then new ones.
    let text = sse_until(d.addr, "/api/logs?id=dashboard", |t| {
        t.contains("dashboard on http://")
    })
    .await?;
    assert!(text.contains("event: line"), "{text}");
    let (code, _) = common::http(d.addr, "GET", "/api/logs?id=nobody", &auth, "").await?;
    assert_eq!(code, 404);
    Ok(())
}

/// Poll `/api/snapshot` until `cond` holds.
async fn snapshot_until(
    addr: std::net::SocketAddr,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, body) = common::http(addr, "GET", "/api/snapshot", &[common::AUTH], "").await?;
        anyhow::ensure!(code == 200, "{body}");
        let snap: serde_json::Value = serde_json::from_str(&body)?;
        if cond(&snap) {
            return Ok(snap);
        }
        anyhow::ensure!(Instant::now() < deadline, "never: {snap}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_says_when_the_bus_is_down_and_recovers() -> anyhow::Result<()> {
    let d = common::start(true).await?;
    snapshot_until(d.addr, |s| s["bus_up"] == true).await?;
    let nats = d.daemon.nats_pid().context("the embedded nats-server")?;
    // The daemon restarts its server within milliseconds: held with
    // SIGSTOP, it cannot, so the outage lasts until SIGCONT.
    let signal = |pid: u32, s: nix::sys::signal::Signal| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), s)
    };
    signal(d.daemon.pid(), nix::sys::signal::Signal::SIGSTOP)?;
    signal(nats, nix::sys::signal::Signal::SIGKILL)?;
    // The web server stays up and says why, keeping the last status.
    let down = snapshot_until(d.addr, |s| s["bus_up"] == false).await?;
    assert!(
        down["bus_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{down}"
    );
    assert!(down["status"]["operators"].is_array(), "{down}");
    let (_, metrics) = common::http(d.addr, "GET", "/metrics", &[], "").await?;
    assert!(
        metrics.contains("\nswitchboard_up 0\n") || metrics.starts_with("switchboard_up 0"),
        "{metrics}"
    );
    // The daemon restarts its server; the dashboard reconnects.
    signal(d.daemon.pid(), nix::sys::signal::Signal::SIGCONT)?;
    snapshot_until(d.addr, |s| s["bus_up"] == true).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_moves_the_server_even_with_a_page_open() -> anyhow::Result<()> {
    let d = common::start(true).await?;
    // A page following events: its stream must not hold the old server.
    let mut open = tokio::net::TcpStream::connect(d.addr).await?;
    open.write_all(
        format!(
            "GET /api/events HTTP/1.1\r\nHost: {}\r\n{}: {}\r\n\r\n",
            d.addr,
            common::AUTH.0,
            common::AUTH.1
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = [0u8; 1024];
    let n = open.read(&mut buf).await?;
    assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));

    let req = switchboard_proto::api::CtlRequest {
        verb: switchboard_proto::Verb::Reload,
        target: "dashboard".into(),
        config: Some(
            json!({"listen": "127.0.0.1:0", "poll_interval": "100ms", "rate_window": "10s",
                "token": common::TOKEN}),
        ),
        in_place: false,
    };
    let reply: switchboard_proto::api::CtlReply = d
        .daemon
        .bus
        .request_json("sb.api.ctl", &req, Duration::from_secs(10))
        .await?;
    assert!(reply.results.first().is_some_and(|r| r.ok), "{reply:?}");
    let deadline = Instant::now() + WAIT;
    let moved = loop {
        let a = common::address_from_log(&d.daemon).await?;
        if a != d.addr {
            break a;
        }
        anyhow::ensure!(Instant::now() < deadline, "no new address logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        tokio::net::TcpStream::connect(d.addr).await.is_err(),
        "the old address still listens"
    );
    // `switchboard status` follows it to the new address.
    let deadline = Instant::now() + WAIT;
    loop {
        let status = common::cli_status(&d.daemon)?;
        let link = status["operators"]
            .as_array()
            .and_then(|a| a.iter().find(|o| o["id"] == "dashboard"))
            .map(|o| o["links"]["dashboard"].clone())
            .unwrap_or_default();
        if link == format!("http://{moved}/") {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "status still shows {link}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new config applies: a 10 s rate window.
    let snap = snapshot_until(moved, |s| s["rates"][0]["per_second"].is_array()).await?;
    assert_eq!(
        snap["rates"][0]["per_second"].as_array().map(Vec::len),
        Some(10),
        "{snap}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_too_slow_for_the_tail_is_told_and_the_drop_counted() -> anyhow::Result<()> {
    let d = common::start(true).await?;
    // A page that asks for the tail and then does not read.
    let mut slow = tokio::net::TcpStream::connect(d.addr).await?;
    slow.write_all(
        format!(
            "GET /api/tail?pattern=chat.flood.%23 HTTP/1.1\r\nHost: {}\r\n{}: {}\r\n\r\n",
            d.addr,
            common::AUTH.0,
            common::AUTH.1
        )
        .as_bytes(),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Far more than the socket buffers and the 1024-entry channel hold.
    let room = ChatAddress::new("flood", "x", "room");
    let subject = room.event_subject("message");
    let pad = "x".repeat(1000);
    for i in 0..20_000 {
        let env = Envelope::new(
            "test",
            json!({"text": format!("{i} {pad}"), "sender": "t", "room": "room"}),
        );
        d.daemon.bus.publish(&subject, &env).await?;
    }
    d.daemon.bus.flush().await?;
    let seen = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("switchboard_bus_messages_total{branch=\"chat.flood\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, m) = common::http(d.addr, "GET", "/metrics", &[], "").await?;
        if seen(&m) == 20_000 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the dashboard never saw the flood:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Now the page reads: it is told how many it missed.
    let mut text = String::new();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + WAIT;
    let lagged: u64 = loop {
        if let Some(n) = text
            .split("event: lagged\ndata: ")
            .skip(1)
            .map(|rest| {
                rest.split('\n')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0)
            })
            .reduce(|a, b| a + b)
        {
            if text.contains(&format!("19999 {}", &pad[..10])) {
                break n;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no lagged event");
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
            anyhow::ensure!(n > 0, "stream ended");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    assert!(lagged > 0);
    let (_, m) = common::http(d.addr, "GET", "/metrics", &[], "").await?;
    assert!(
        m.contains(&format!(
            "switchboard_dashboard_tail_dropped_total {lagged}\n"
        )),
        "lagged {lagged}:\n{m}"
    );
    Ok(())
}

/// Whether `text` is Prometheus samples and comments only: every other
/// line `name{labels} value`, the value a number. Text from operators
/// (chat, log lines) would not fit.
fn counters_only(text: &str) -> Result<(), String> {
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').ok_or(line)?;
        if value.parse::<f64>().is_err() {
            return Err(format!("not a number: {line}"));
        }
        let name = series.split('{').next().unwrap_or("");
        if !name.starts_with("switchboard_")
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!("not a metric name: {line}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_login_beyond_loopback_and_only_counters_show_on_it() -> anyhow::Result<()> {
    // Loopback: open, as Prometheus scrapes it, and nothing but numbers.
    let d = common::start(true).await?;
    let said = "a line nobody may read without a login";
    let room = ChatAddress::new("irc", "libera", "room");
    d.daemon
        .bus
        .publish(
            &room.event_subject("message"),
            &Envelope::new("libera", json!({"text": said, "sender": "ann"})),
        )
        .await?;
    d.daemon.bus.flush().await?;
    let deadline = Instant::now() + WAIT;
    let metrics = loop {
        let (code, m) = common::http(d.addr, "GET", "/metrics", &[], "").await?;
        assert_eq!(code, 200, "loopback /metrics is open: {m}");
        if m.contains("branch=\"chat.irc\"") {
            break m;
        }
        anyhow::ensure!(Instant::now() < deadline, "the chat never counted: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    counters_only(&metrics).map_err(anyhow::Error::msg)?;
    assert!(!metrics.contains(said), "{metrics}");
    assert!(!metrics.contains(common::TOKEN), "{metrics}");
    drop(d);

    // Beyond loopback (every interface): a login first, either token.
    let d = common::start_with(true, |m| {
        m.replace("[config]\n", "[config]\nlisten = \"0.0.0.0:0\"\n")
    })
    .await?;
    assert!(d.addr.ip().is_unspecified(), "{}", d.addr);
    let (code, body) = common::http(d.addr, "GET", "/metrics", &[], "").await?;
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains("switchboard_up"), "{body}");
    let wrong = [("Authorization", "Bearer not-the-token")];
    let (code, _) = common::http(d.addr, "GET", "/metrics", &wrong, "").await?;
    assert_eq!(code, 401);
    let (code, m) = common::http(d.addr, "GET", "/metrics", &[common::AUTH], "").await?;
    assert_eq!(code, 200, "{m}");
    assert!(m.contains("switchboard_up"), "{m}");
    let viewer = format!("Bearer {}", common::VIEWER);
    let (code, m) = common::http(
        d.addr,
        "GET",
        "/metrics",
        &[("Authorization", viewer.as_str())],
        "",
    )
    .await?;
    assert_eq!(code, 200, "the viewer token may read counters: {m}");
    counters_only(&m).map_err(anyhow::Error::msg)?;
    Ok(())
}
