//! The session against the local XRPC server: refresh before and after
//! expiry, a new login only when the refresh is refused, the saved
//! session reused, and a wrong password failing once, clearly, under the
//! real daemon.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{assert_no_secrets, config, Harness, Pds, BOT_DID, PASSWORD, WAIT};
use serde_json::{json, Value};
use switchboard_testkit::bin_path;
use switchboard_testkit::daemon::DaemonConfig;

const CREATE: &str = "com.atproto.server.createSession";
const REFRESH: &str = "com.atproto.server.refreshSession";

fn mention(pds: &Pds, n: usize) {
    let record = json!({"$type": "app.bsky.feed.post", "text": format!("@bot.test {n}")});
    pds.notify(
        "mention",
        &format!("at://did:plc:alice/app.bsky.feed.post/m{n}"),
        "bafym",
        ("did:plc:alice", "alice.test"),
        record,
        &format!("2026-06-01T00:00:{n:02}.000Z"),
        None,
    );
}

fn polling() -> Value {
    json!({"polling": {"process_from": "2026-05-31T00:00:00Z", "interval": "100ms"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_access_token_is_refreshed_once_without_a_new_login() {
    let pds = Pds::start().await;
    let mut h = Harness::new("bsky-exp").await;
    h.start_bot(&config(&pds, polling())).await;
    mention(&pds, 1);
    h.event(WAIT, |_| true).await;
    pds.expire_access_tokens();
    mention(&pds, 2);
    let d = h.event(WAIT, |_| true).await;
    assert_eq!(d.envelope().body["text"], "@bot.test 2");
    assert_eq!(pds.calls(REFRESH).len(), 1);
    assert_eq!(pds.calls(CREATE).len(), 1, "no second login");
    let c = h.counters_until(|c| c["bluesky_refreshes"] == 1).await;
    assert_eq!(c["bluesky_logins"], 1, "{c}");
    // The new tokens were saved (0600): a restart neither logs in nor
    // refreshes.
    let file = h.state.path().join("session.json");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    h.kill_bot().await;
    h.start_bot(&config(&pds, polling())).await;
    mention(&pds, 3);
    h.event(WAIT, |_| true).await;
    assert_eq!(pds.calls(CREATE).len(), 1);
    assert_eq!(pds.calls(REFRESH).len(), 1);
    assert_no_secrets("log", &h.all_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_logs_in_exactly_once_more() {
    let pds = Pds::start().await;
    let mut h = Harness::new("bsky-rev").await;
    h.start_bot(&config(&pds, polling())).await;
    mention(&pds, 1);
    h.event(WAIT, |_| true).await;
    pds.expire_access_tokens();
    pds.revoke_refresh_tokens();
    mention(&pds, 2);
    h.event(WAIT, |_| true).await;
    let refreshes = pds.calls(REFRESH);
    assert_eq!(refreshes.len(), 1);
    assert_eq!(refreshes[0].status, 400);
    assert_eq!(pds.calls(CREATE).len(), 2, "exactly one new login");
    mention(&pds, 3);
    h.event(WAIT, |_| true).await;
    assert_eq!(pds.calls(CREATE).len(), 2);
    assert_no_secrets("log", &h.all_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_is_refreshed_before_it_expires() {
    let pds = Pds::start().await;
    // exp 62 s after issue: within the 60 s margin about 2 s later.
    pds.lock().access_ttl = Duration::from_secs(62);
    let mut h = Harness::new("bsky-pre").await;
    h.start_bot(&config(&pds, polling())).await;
    h.counters_until(|c| c["bluesky_refreshes"].as_u64() >= Some(1))
        .await;
    let expired = pds.lock().calls.iter().filter(|c| c.status == 400).count();
    assert_eq!(expired, 0, "no call was refused for an expired token");
    assert_eq!(pds.calls(CREATE).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_once_with_a_clear_reason() {
    let pds = Pds::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("bsky-password");
    let wrong = format!("{PASSWORD}-wrong");
    std::fs::write(&secret, &wrong).unwrap();
    let daemon = DaemonConfig::new()
        .manifest(
            "bsky.toml",
            format!(
                "id = \"bsky-pw\"\ncommand = \"{}\"\nrestart = \"always\"\nheartbeat_interval = \"500ms\"\n\
                 publish = [\"chat.bluesky.bsky-pw.#\"]\nsubscribe = [\"send.bluesky.bsky-pw.#\"]\n\
                 [backoff]\ninitial = \"50ms\"\nmax = \"200ms\"\n\
                 [config]\nservice = \"{}\"\nidentifier = \"bot.test\"\n\
                 [secrets]\npassword = {{ file = \"{}\" }}\n",
                bin_path("switchboard-bluesky").display(),
                pds.url,
                secret.display()
            ),
        )
        .start_in(dir)
        .await;
    let cli = |args: &[&str]| {
        let out = daemon.cli(args);
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let text = cli(&["status", "--json"]);
        let status: Value = serde_json::from_str(&text).unwrap_or_default();
        let op = status["operators"]
            .as_array()
            .and_then(|ops| ops.iter().find(|o| o["id"] == "bsky-pw"))
            .cloned()
            .unwrap_or_default();
        if op["health"] == "failed" {
            break op;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reported failed health: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        pds.calls(CREATE).len(),
        1,
        "one login attempt, however many restarts"
    );
    let table = cli(&["status"]);
    let logs = cli(&["logs", "bsky-pw"]);
    assert!(
        logs.contains("wrong identifier or password") && logs.contains("refused"),
        "the reason is in the logs: {logs}"
    );
    // Not a crash loop: it stays up, says why in status, and waits for
    // other credentials (no retry against the login endpoint).
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["restarts"], 0, "{status}");
    let reason = status["health_reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("wrong identifier or password") && reason.contains("ctl reload"),
        "{status}"
    );
    assert!(table.contains("failed: "), "{table}");
    // The right password and a reload: one more login, health ok again.
    std::fs::write(&secret, PASSWORD).unwrap();
    let reloaded = cli(&["ctl", "reload", "bsky-pw"]);
    assert!(reloaded.contains("bsky-pw"), "{reloaded}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = cli(&["status", "--json"]);
        let now: Value = serde_json::from_str(&text).unwrap_or_default();
        let op = now["operators"]
            .as_array()
            .and_then(|ops| ops.iter().find(|o| o["id"] == "bsky-pw"))
            .cloned()
            .unwrap_or_default();
        if op["state"] == "running" && op.get("health").is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never healthy again: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        pds.calls(CREATE).len(),
        2,
        "one more login after the reload"
    );
    for (what, text) in [
        ("status", status.to_string()),
        ("status table", table),
        ("logs", logs),
    ] {
        assert!(
            !text.contains(&wrong),
            "the password is in the {what}: {text}"
        );
    }
    let _ = BOT_DID;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_login_waits_for_the_reset() {
    let pds = Pds::start().await;
    let reset = pds.rate_limit(CREATE, 2);
    let mut h = Harness::new("bsky-rl-login").await;
    // Ready at once (a 429 is not the password's fault), logged in later.
    h.start_bot(&config(&pds, polling())).await;
    mention(&pds, 1);
    h.event(WAIT, |_| true).await;
    let calls = pds.calls(CREATE);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].status, 429);
    assert!(
        calls[1].at >= reset as f64,
        "asked again at {} before the reset at {reset}",
        calls[1].at
    );
    let c = h
        .counters_until(|c| c["bluesky_rate_limit_waits"] == 1)
        .await;
    assert_eq!(c["bluesky_logins"], 2, "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_logs_in_again_only_for_another_account_and_halt_pauses_reading() {
    let pds = Pds::start().await;
    let mut h = Harness::new("bsky-reload").await;
    let cfg = config(&pds, polling());
    h.start_bot(&cfg).await;
    mention(&pds, 1);
    h.event(WAIT, |_| true).await;
    // Same account, other settings: no login.
    let mut same = cfg.clone();
    same["langs"] = json!(["de"]);
    same["polling"]["interval"] = json!("150ms");
    assert!(
        h.control(json!({"verb": "reload", "config": same}))
            .await
            .ok
    );
    mention(&pds, 2);
    h.event(WAIT, |_| true).await;
    assert_eq!(pds.calls(CREATE).len(), 1);
    // Another identifier: a new login (here the DID of the same account).
    let mut other = cfg.clone();
    other["identifier"] = json!(BOT_DID);
    assert!(
        h.control(json!({"verb": "reload", "config": other}))
            .await
            .ok
    );
    mention(&pds, 3);
    let d = h.event(WAIT, |_| true).await;
    assert_eq!(d.envelope().body["text"], "@bot.test 3");
    assert_eq!(pds.calls(CREATE).len(), 2);
    // The marks belong to the DID: nothing was published again (the
    // subscription would hide a repeat, the counter does not).
    let c = h
        .counters_until(|c| c["bluesky_notifications_published"].as_u64() >= Some(3))
        .await;
    assert_eq!(c["bluesky_notifications_published"], 3, "{c}");

    // Halted: nothing is read; resumed: what came meanwhile arrives.
    assert!(h.control(json!({"verb": "halt"})).await.ok);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let polls = pds.calls("app.bsky.notification.listNotifications").len();
    mention(&pds, 4);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        pds.calls("app.bsky.notification.listNotifications").len(),
        polls
    );
    assert!(h.drain(Duration::from_millis(100)).await.is_empty());
    assert!(h.control(json!({"verb": "resume"})).await.ok);
    let d = h.event(WAIT, |_| true).await;
    assert_eq!(d.envelope().body["text"], "@bot.test 4");
    assert_no_secrets("log", &h.all_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_changed_while_running_stops_the_operator_once() {
    let pds = Pds::start().await;
    let js = common::jetstream::Jetstream::start().await;
    let mut h = Harness::new("bsky-pwchange").await;
    // Jetstream: no poll would notice; the send request does.
    let cfg = config(
        &pds,
        json!({"strategy": "jetstream", "jetstream": {"url": js.url}}),
    );
    h.start_bot(&cfg).await;
    let (root, _) = pds.add_post(BOT_DID, "bot.test", "root", json!({"text": "x"}));
    // The session is revoked and the password changed elsewhere.
    pds.expire_access_tokens();
    pds.revoke_refresh_tokens();
    pds.lock().password = "changed-elsewhere".into();
    let ack = h
        .request(
            &root,
            "message",
            switchboard_bus::proto::Envelope::new("test", json!({"text": "hi"})),
        )
        .await;
    assert_eq!(ack["ok"], false);
    let error = ack["error"].as_str().unwrap();
    assert!(error.contains("wrong identifier or password"), "{error}");
    let status = h.bot.as_mut().unwrap().exit_within(WAIT).await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(pds.calls(CREATE).len(), 2);
    // The restart that follows knows the password was refused: it stays
    // up with health `failed` and the reason, without asking again.
    h.spawn_bot(&cfg);
    let hb = h.heartbeat_until(|hb| hb["health"] == "failed").await;
    let reason = hb["health_reason"].as_str().unwrap_or("");
    assert!(reason.contains("refused at an earlier start"), "{hb}");
    assert_eq!(
        pds.calls(CREATE).len(),
        2,
        "no login attempt with a refused password"
    );
    assert!(
        h.log().contains("refused at an earlier start"),
        "{}",
        h.log()
    );
    assert_no_secrets("log", &h.all_logs());
}
