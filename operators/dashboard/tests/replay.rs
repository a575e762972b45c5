//! The replay view's endpoint against a real daemon and its durable
//! stream: a login is needed; stored messages come back by pattern (a
//! `#` in the middle, several patterns at once), by sequence and time
//! range, a page at a time; bad queries say what is wrong; without the
//! manifest's `stream = ["read"]` nats-server refuses the reads and the
//! answer names the grant.

mod common;

use std::time::Instant;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use switchboard_bus::{ChatAddress, Envelope};
use switchboard_proto::Timestamp;
use switchboard_testkit::daemon::WAIT;

async fn replay(d: &common::Dash, query: &str) -> anyhow::Result<(u16, String)> {
    common::http(
        d.addr,
        "GET",
        &format!("/api/replay?{query}"),
        &[common::AUTH],
        "",
    )
    .await
}

/// A page that must be answered with 200.
async fn page(d: &common::Dash, query: &str) -> anyhow::Result<Value> {
    let (code, body) = replay(d, query).await?;
    anyhow::ensure!(code == 200, "{query}: {code} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// Each message's text (or `join:<sender>`), and its sequence.
fn texts(page: &Value) -> Vec<(String, u64)> {
    page["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let env: Value = serde_json::from_str(m["payload"].as_str().unwrap_or("null"))
                .unwrap_or(Value::Null);
            let body = &env["body"];
            let text = match body["text"].as_str() {
                Some(t) => t.to_owned(),
                None => format!("join:{}", body["sender"].as_str().unwrap_or("?")),
            };
            (text, m["seq"].as_u64().unwrap_or(0))
        })
        .collect()
}

fn only_texts(page: &Value) -> Vec<String> {
    texts(page).into_iter().map(|(t, _)| t).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reads_the_stream_by_pattern_range_and_page() -> anyhow::Result<()> {
    let d = common::start(true).await?;
    let (code, body) = common::http(d.addr, "GET", "/api/replay", &[], "").await?;
    assert_eq!(code, 401, "a login first: {body}");

    for i in 0..5 {
        for net in ["alpha", "beta"] {
            let room = ChatAddress::new(net, "x", "room");
            let env = Envelope::new("x", json!({"text": format!("{net}{i}"), "sender": "ann"}));
            d.daemon
                .bus
                .publish(&room.event_subject("message"), &env)
                .await?;
        }
    }
    let room = ChatAddress::new("alpha", "x", "room");
    let join = Envelope::new("x", json!({"sender": "carol"}));
    d.daemon
        .bus
        .publish(&room.event_subject("join"), &join)
        .await?;
    d.daemon.bus.flush().await?;

    // Stored a moment after the publish: wait for all six of alpha.
    let deadline = Instant::now() + WAIT;
    let alpha = loop {
        let p = page(&d, "pattern=chat.alpha.%23").await?;
        if only_texts(&p).len() == 6 {
            break p;
        }
        if Instant::now() > deadline {
            bail!("the stream never held alpha's six messages: {p}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        only_texts(&alpha),
        [
            "alpha0",
            "alpha1",
            "alpha2",
            "alpha3",
            "alpha4",
            "join:carol"
        ]
    );
    let seqs: Vec<u64> = texts(&alpha).into_iter().map(|(_, s)| s).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(alpha["more"], false, "{alpha}");
    assert_eq!(alpha["stream"], "SWITCHBOARD");
    assert!(alpha["last_seq"].as_u64() >= seqs.last().copied());

    // A `#` in the middle: read wider, filtered here (no join).
    let p = page(&d, "pattern=chat.%23.message").await?;
    let got = only_texts(&p);
    assert_eq!(got.len(), 10, "{got:?}");
    assert!(!got.iter().any(|t| t.starts_with("join")), "{got:?}");
    // Several patterns, merged in stream order.
    let p = page(&d, "pattern=chat.beta.%23&pattern=chat.alpha.*.*.join").await?;
    assert_eq!(
        only_texts(&p),
        ["beta0", "beta1", "beta2", "beta3", "beta4", "join:carol"]
    );

    // A page at a time: `next` is where the next one starts.
    let mut from = "1h".to_owned();
    let mut pages = Vec::new();
    loop {
        let p = page(&d, &format!("pattern=chat.alpha.%23&limit=2&from={from}")).await?;
        pages.push(only_texts(&p));
        if p["more"] != true {
            break;
        }
        from = p["next"].as_u64().context("next")?.to_string();
        anyhow::ensure!(pages.len() < 10, "pages never end: {pages:?}");
    }
    assert_eq!(
        pages,
        [
            vec!["alpha0", "alpha1"],
            vec!["alpha2", "alpha3"],
            vec!["alpha4", "join:carol"]
        ]
    );

    // By sequence: from and to inclusive.
    let p = page(
        &d,
        &format!("pattern=chat.alpha.%23&from={}&to={}", seqs[2], seqs[3]),
    )
    .await?;
    assert_eq!(only_texts(&p), ["alpha2", "alpha3"]);
    // By time: everything stored before the first message is nothing;
    // from the second message's time on, not the first.
    let p = page(
        &d,
        "pattern=chat.alpha.%23&from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z",
    )
    .await?;
    assert_eq!(only_texts(&p), Vec::<String>::new());
    let second_ms = alpha["messages"][1]["at_ms"].as_u64().context("at_ms")?;
    let first_ms = alpha["messages"][0]["at_ms"].as_u64().context("at_ms")?;
    if second_ms > first_ms {
        let t = Timestamp::from_unix_nanos(i128::from(second_ms) * 1_000_000)?;
        let p = page(&d, &format!("pattern=chat.alpha.%23&from={t}")).await?;
        let got = only_texts(&p);
        assert_eq!(got.first().map(String::as_str), Some("alpha1"), "{got:?}");
    }

    // Bad queries say what is wrong.
    for (query, says) in [
        ("pattern=chat..x", "not a pattern"),
        ("from=yesterday", "RFC 3339"),
        ("from=0", "start at 1"),
        ("limit=5000", "limit"),
    ] {
        let (code, body) = replay(&d, query).await?;
        assert_eq!(code, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_read_grant_the_server_refuses_and_the_answer_names_it() -> anyhow::Result<()> {
    let d = common::start_with(true, |m| {
        assert!(m.contains("stream = [\"read\"]\n"), "{m}");
        m.replace("stream = [\"read\"]\n", "")
    })
    .await?;
    let (code, body) = replay(&d, "pattern=chat.%23").await?;
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("stream = [\"read\"]"), "{body}");
    Ok(())
}
