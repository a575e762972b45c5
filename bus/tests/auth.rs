//! Least privilege on the bus, against a real nats-server: TLS, tokens,
//! nkeys, and users that may only subscribe to their own reply inboxes.
//!
//! Every refusal here must come at once with a message that says what to
//! fix; none may wait out a timeout.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use switchboard_bus::{Bus, BusOptions, ConnectError, RequestErrorKind};
use switchboard_testkit::{NatsServer, NatsServerOptions, NkeyUser, TestCa};

/// Longer than any refusal may take: a refusal that waits for it has
/// retried or timed out instead of failing fast.
const PATIENCE: Duration = Duration::from_secs(10);

/// What "at once" means here: well under [`PATIENCE`], with room for a
/// loaded machine.
const AT_ONCE: Duration = Duration::from_millis(1500);

/// A connect that must fail, and how long it took.
async fn refused(opts: &BusOptions) -> (ConnectError, Duration) {
    let started = Instant::now();
    let err = Bus::connect(&opts.clone().connect_timeout(PATIENCE), "t")
        .await
        .expect_err("the connection must be refused");
    (err, started.elapsed())
}

/// A message published after `sync` reaches a subscription made before
/// it: the connection really works (and `sync`'s inbox is allowed).
async fn round_trip(bus: &Bus) {
    let mut sub = bus.subscribe_raw("auth.check").await.expect("subscribe");
    bus.sync().await.expect("sync");
    bus.publish_json("auth.check", &json!({"ok": true}))
        .await
        .expect("publish");
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the message comes back")
        .expect("subscription open");
    assert_eq!(&msg.payload[..], br#"{"ok":true}"#);
}

#[tokio::test]
async fn tls_with_the_servers_ca_connects() {
    let server = NatsServer::start_with(NatsServerOptions {
        tls: true,
        ..Default::default()
    })
    .expect("nats-server");
    let ca = server.ca_file().expect("a TLS server has a CA");
    assert!(server.url().starts_with("tls://"), "{}", server.url());
    let bus = Bus::connect(&BusOptions::new(&server.url()).tls_ca(&ca), "t")
        .await
        .expect("the right CA is trusted");
    round_trip(&bus).await;
    // A nats:// URL works too: the server's INFO asks for TLS, and
    // tls_ca makes the client insist on it.
    let plain_url = format!("nats://127.0.0.1:{}", server.port());
    let bus = Bus::connect(&BusOptions::new(&plain_url).tls_ca(&ca), "t")
        .await
        .expect("nats:// upgrades to TLS");
    round_trip(&bus).await;
}

#[tokio::test]
async fn tls_with_another_ca_fails_at_once_naming_the_ca_file() {
    let server = NatsServer::start_with(NatsServerOptions {
        tls: true,
        ..Default::default()
    })
    .expect("nats-server");
    let stranger = TestCa::new().expect("openssl");
    let (err, took) = refused(&BusOptions::new(&server.url()).tls_ca(stranger.ca_file())).await;
    let msg = err.to_string();
    assert!(matches!(err, ConnectError::Tls { .. }), "{err:?}");
    assert!(took < AT_ONCE, "took {took:?}: {msg}");
    assert!(msg.contains("TLS handshake failed"), "{msg}");
    assert!(
        msg.contains(&format!(
            "the server's certificate is not signed by the CA in {}",
            stranger.ca_file().display()
        )),
        "{msg}"
    );

    // No CA given: the system's roots do not know a test CA either.
    let (err, took) = refused(&BusOptions::new(&server.url())).await;
    let msg = err.to_string();
    assert!(took < AT_ONCE, "took {took:?}: {msg}");
    assert!(
        msg.contains("not signed by a CA this system trusts"),
        "{msg}"
    );
    assert!(msg.contains("SWITCHBOARD_NATS_TLS_CA"), "{msg}");
}

#[tokio::test]
async fn a_missing_ca_file_is_named() {
    let server = NatsServer::start_with(NatsServerOptions {
        tls: true,
        ..Default::default()
    })
    .expect("nats-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-ca.pem");
    let (err, took) = refused(&BusOptions::new(&server.url()).tls_ca(&missing)).await;
    let msg = err.to_string();
    assert!(took < AT_ONCE, "took {took:?}: {msg}");
    assert!(
        msg.contains(&format!("cannot read TLS CA file {}", missing.display())),
        "{msg}"
    );
}

#[tokio::test]
async fn token_auth_works_and_a_wrong_token_fails_at_once() {
    let server = NatsServer::start_with(NatsServerOptions {
        token: Some("right-token-7Hq".into()),
        ..Default::default()
    })
    .expect("nats-server");
    let bus = Bus::connect(
        &BusOptions::new(&server.url()).token("right-token-7Hq"),
        "t",
    )
    .await
    .expect("the right token is accepted");
    round_trip(&bus).await;

    let (err, took) = refused(&BusOptions::new(&server.url()).token("wrong-token-3Xp")).await;
    let msg = err.to_string();
    assert!(matches!(err, ConnectError::Auth { .. }), "{err:?}");
    assert!(
        took < AT_ONCE,
        "retried instead of failing: took {took:?}: {msg}"
    );
    assert!(
        msg.ends_with("refused the credentials (a token): authorization violation"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-token-3Xp"), "secret leaked: {msg}");
    assert!(!msg.contains("right-token-7Hq"), "secret leaked: {msg}");

    let (err, took) = refused(&BusOptions::new(&server.url())).await;
    let msg = err.to_string();
    assert!(took < AT_ONCE, "took {took:?}: {msg}");
    assert!(msg.contains("(no credentials given)"), "{msg}");
}

#[tokio::test]
async fn nkey_seed_file_auth_works_and_an_unknown_key_fails_at_once() {
    let user = NkeyUser::new();
    let server = NatsServer::start_with(NatsServerOptions {
        nkeys: vec![user.public_key().to_string()],
        ..Default::default()
    })
    .expect("nats-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("op.nk");
    user.write_seed_file(&seed).expect("seed file");
    let bus = Bus::connect(&BusOptions::new(&server.url()).nkey_file(&seed), "t")
        .await
        .expect("the listed nkey is accepted");
    round_trip(&bus).await;

    let stranger = dir.path().join("stranger.nk");
    NkeyUser::new()
        .write_seed_file(&stranger)
        .expect("seed file");
    let (err, took) = refused(&BusOptions::new(&server.url()).nkey_file(&stranger)).await;
    let msg = err.to_string();
    assert!(matches!(err, ConnectError::Auth { .. }), "{err:?}");
    assert!(took < AT_ONCE, "took {took:?}: {msg}");
    assert!(
        msg.contains(&format!("(nkey seed from {})", stranger.display())),
        "{msg}"
    );
    assert!(msg.ends_with("authorization violation"), "{msg}");

    // Not a seed at all: refused on our side, as quickly.
    let garbage = dir.path().join("garbage.nk");
    std::fs::write(&garbage, "not-a-seed\n").expect("write");
    let (err, took) = refused(&BusOptions::new(&server.url()).nkey_file(&garbage)).await;
    let msg = err.to_string();
    assert!(took < AT_ONCE, "took {took:?}: {msg}");
    assert!(msg.contains("is the seed valid?"), "{msg}");
}

/// Users as a least-privilege deployment has them: `op` may publish
/// requests to `svc.echo` and subscribe only to its own inboxes; `svc`
/// may only listen on `svc.echo` and answer (allow_responses).
const INBOX_USERS: &str = r#"
authorization {
  users = [
    { user: "op", password: "op-pass",
      permissions: { publish: { allow: ["svc.echo"] },
                     subscribe: { allow: ["_INBOX_op.>"] } } },
    { user: "svc", password: "svc-pass",
      permissions: { publish: { deny: [">"] },
                     subscribe: { allow: ["svc.echo"] },
                     allow_responses: true } }
  ]
}
"#;

#[tokio::test]
async fn requests_need_the_inbox_prefix_the_server_allows() {
    let server = NatsServer::start_with(NatsServerOptions {
        extra_config: INBOX_USERS.into(),
        ..Default::default()
    })
    .expect("nats-server");
    let svc = Bus::connect(
        &BusOptions::new(&server.url()).user_password("svc", "svc-pass"),
        "svc",
    )
    .await
    .expect("svc connects");
    let mut requests = svc.subscribe_raw("svc.echo").await.expect("subscribe");
    let answered = tokio::spawn(async move {
        let mut n = 0;
        while let Some(msg) = requests.next().await {
            if let Some(reply) = msg.reply {
                let asked: Value = serde_json::from_slice(&msg.payload).expect("JSON");
                svc.respond_json(&reply, &json!({"echo": asked}))
                    .await
                    .expect("allow_responses lets svc answer");
                n += 1;
            }
        }
        n
    });

    let op = BusOptions::new(&server.url()).user_password("op", "op-pass");
    let with_prefix = Bus::connect(&op.clone().inbox_prefix("_INBOX_op"), "op")
        .await
        .expect("op connects");
    // `svc` cannot sync (it may subscribe to nothing but svc.echo), so
    // wait for its subscription by asking until someone answers.
    let deadline = Instant::now() + Duration::from_secs(5);
    let answer: Value = loop {
        match with_prefix
            .request_json("svc.echo", &json!({"n": 1}), Duration::from_secs(2))
            .await
        {
            Ok(answer) => break answer,
            Err(e) if e.kind() == RequestErrorKind::NoResponders && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("request with the allowed inbox prefix failed: {e}"),
        }
    };
    assert_eq!(answer, json!({"echo": {"n": 1}}));

    // The same user with the default `_INBOX`: the server refuses the
    // reply subscription, and the request says so long before its timeout.
    let without = Bus::connect(&op, "op").await.expect("op connects");
    for attempt in 1..=2 {
        let started = Instant::now();
        let err = without
            .request_json::<_, Value>("svc.echo", &json!({"n": 2}), PATIENCE)
            .await
            .expect_err("no answer can reach a refused inbox");
        let took = started.elapsed();
        let msg = err.to_string();
        assert_eq!(err.kind(), RequestErrorKind::ReplyDenied, "{msg}");
        assert!(took < AT_ONCE, "attempt {attempt} took {took:?}: {msg}");
        assert!(msg.contains("`_INBOX."), "{msg}");
        assert!(msg.contains("SWITCHBOARD_NATS_INBOX_PREFIX"), "{msg}");
    }

    // `sync` uses an inbox too, and hears the same refusal.
    let started = Instant::now();
    let err = without.sync().await.expect_err("sync's inbox is refused");
    assert!(
        matches!(err, switchboard_bus::PublishError::Denied { .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < AT_ONCE, "took {:?}", started.elapsed());

    // And the prefixed client still works after its neighbour's refusals.
    let answer: Value = with_prefix
        .request_json("svc.echo", &json!({"n": 3}), Duration::from_secs(2))
        .await
        .expect("still answered");
    assert_eq!(answer, json!({"echo": {"n": 3}}));
    answered.abort();
}

#[tokio::test]
async fn tls_to_a_server_without_tls_fails_at_once() {
    let server = NatsServer::start().expect("nats-server");
    let ca = TestCa::new().expect("openssl");
    let (err, took) = refused(&BusOptions::new(&server.url()).tls_ca(ca.ca_file())).await;
    let msg = err.to_string();
    assert!(matches!(err, ConnectError::Tls { .. }), "{err:?}");
    assert!(took < AT_ONCE, "took {took:?}: {msg}");
    assert!(
        msg.contains("the server did not answer in TLS; does it have TLS enabled?"),
        "{msg}"
    );
}
