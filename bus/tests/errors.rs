//! Every error says what kind it is (`kind()`) and keeps its cause
//! (`source()`), from real failures against a real nats-server.

use std::collections::{BTreeMap, HashMap};
use std::error::Error as _;
use std::time::Duration;

use serde_json::json;
use switchboard_bus::proto::{
    launch, ChatEventError, ChatEventErrorKind, PatternError, SubjectError, SubjectErrorKind,
};
use switchboard_bus::{
    run_with, Bus, BusOptions, ConfigError, ConfigErrorKind, ConnectErrorKind, Context, Delivery,
    Envelope, HandlerError, HandlerErrorKind, HandlerResult, LaunchEnv, LaunchErrorKind, Operator,
    PublishErrorKind, ReplyErrorKind, RequestErrorKind, RunError, RunErrorKind, SubscribeErrorKind,
};
use switchboard_testkit::NatsServer;

/// A value serde_json refuses: a map with non-string keys.
fn not_json() -> BTreeMap<(u8, u8), u8> {
    BTreeMap::from([((1, 2), 3)])
}

#[tokio::test]
async fn connect_errors() {
    let err = Bus::connect(&BusOptions::new("nats://[not a url"), "t")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::BadUrl);
    assert!(err
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some());

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = BusOptions::new(&format!("nats://127.0.0.1:{port}"))
        .connect_timeout(Duration::from_millis(200));
    let err = Bus::connect(&opts, "t").await.unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Unreachable);
    let cause = err.source().expect("the last attempt's error");
    assert!(err.to_string().contains(&cause.to_string()), "{err}");
}

#[tokio::test]
async fn publish_subscribe_and_request_errors() {
    let server = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&BusOptions::new(&server.url()), "t")
        .await
        .unwrap();

    let err = bus.publish_json("a.b", &not_json()).await.unwrap_err();
    assert_eq!(err.kind(), PublishErrorKind::Serialize);
    assert!(err
        .source()
        .and_then(|s| s.downcast_ref::<serde_json::Error>())
        .is_some());

    let err = bus.publish_json("a.*", &1).await.unwrap_err();
    assert_eq!(err.kind(), PublishErrorKind::BadSubject);

    let err = bus.subscribe("chat.>").await.unwrap_err();
    assert_eq!(err.kind(), SubscribeErrorKind::BadPattern);
    assert!(err
        .source()
        .and_then(|s| s.downcast_ref::<PatternError>())
        .is_some());

    let err = bus
        .request_json::<_, serde_json::Value>("nobody.home", &json!({}), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RequestErrorKind::NoResponders);

    let err = bus
        .request_json::<_, serde_json::Value>("x", &not_json(), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RequestErrorKind::Serialize);
    assert!(err.source().is_some());

    // A reply that is not an envelope: BadReply, keeping the envelope error.
    let mut echo = bus.subscribe_raw("echo").await.unwrap();
    let responder = bus.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(m) = echo.next().await {
            if let Some(reply) = m.reply {
                let _ = responder.respond_json(&reply, &json!([1])).await;
            }
        }
    });
    bus.sync().await.unwrap();
    let env = Envelope::new("t", json!(null));
    let err = bus
        .request("echo", &env, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RequestErrorKind::BadReply);
    assert!(err
        .source()
        .and_then(|s| s.downcast_ref::<switchboard_bus::proto::EnvelopeError>())
        .is_some());

    // Replying to something that is not a chat event.
    let request = Delivery::new(
        "send.irc.libera.=23rust.message",
        Envelope::new("t", json!({"text": "hi"})),
    );
    let err = bus.reply(&request, "no").await.unwrap_err();
    assert_eq!(err.kind(), ReplyErrorKind::NotChat);
    let cause = err
        .source()
        .and_then(|s| s.downcast_ref::<ChatEventError>())
        .expect("the chat error");
    assert_eq!(cause.kind(), ChatEventErrorKind::SendRequest);
    let odd = Delivery::new("chat.irc", Envelope::new("t", json!({"sender": "a"})));
    let err = bus.reply(&odd, "no").await.unwrap_err();
    // ReplyError -> ChatEventError -> SubjectError: the whole chain.
    let subject = err
        .source()
        .and_then(|s| s.source())
        .and_then(|s| s.downcast_ref::<SubjectError>())
        .expect("the subject error");
    assert_eq!(subject.kind(), SubjectErrorKind::WrongTokenCount);
}

struct FailsToStart;

#[derive(Debug, thiserror::Error)]
#[error("the widget is missing")]
struct NoWidget;

impl Operator for FailsToStart {
    type Config = Strict;

    async fn start(&mut self, _: &mut Context, _: Strict) -> HandlerResult {
        Err(HandlerError::other(NoWidget))
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Strict {
    #[allow(dead_code)]
    port: u16,
}

fn env(url: &str, config: &str) -> LaunchEnv {
    let vars = HashMap::from([
        (launch::ID, "op".to_string()),
        (launch::NATS_URL, url.to_string()),
        (launch::CONFIG, config.to_string()),
    ]);
    LaunchEnv::from_lookup(|name| vars.get(name).cloned()).expect("launch environment")
}

async fn run_error(config: &str) -> RunError {
    let server = NatsServer::start().expect("nats-server");
    let url = server.url();
    let config = config.to_string();
    // Operators need not be `Send`: run it on a thread of its own.
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(run_with(FailsToStart, env(&url, &config)))
    })
    .await
    .expect("no panic")
    .expect_err("fails")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_errors_keep_the_handlers_error() {
    let err = run_error(r#"{"port": 1}"#).await;
    assert_eq!(err.kind(), RunErrorKind::Start);
    assert!(err.to_string().contains("the widget is missing"), "{err}");
    // RunError -> HandlerError (with its kind) -> the handler's own error.
    let handler = err
        .source()
        .and_then(|s| s.downcast_ref::<HandlerError>())
        .expect("the handler error");
    assert_eq!(handler.kind(), HandlerErrorKind::Other);
    assert!(handler
        .source()
        .and_then(|s| s.downcast_ref::<NoWidget>())
        .is_some());

    let err = run_error(r#"{"port": "secret-value"}"#).await;
    assert_eq!(err.kind(), RunErrorKind::Config);
    assert!(!err.to_string().contains("secret-value"), "{err}");
    let config = err
        .source()
        .and_then(|s| s.downcast_ref::<ConfigError>())
        .expect("the config error");
    assert_eq!(config.kind(), ConfigErrorKind::InvalidType);
    assert_eq!(config.path, "port");
}

#[test]
fn launch_errors() {
    let err = LaunchEnv::from_lookup(|_| None).unwrap_err();
    assert_eq!(err.kind(), LaunchErrorKind::Missing);
    let err =
        LaunchEnv::from_lookup(|name| (name == launch::ID).then(|| "a.b".to_string())).unwrap_err();
    assert_eq!(err.kind(), LaunchErrorKind::Invalid);
    assert!(err
        .source()
        .and_then(|s| s.downcast_ref::<switchboard_bus::proto::IdError>())
        .is_some());
    let run: RunError = err.into();
    assert_eq!(run.kind(), RunErrorKind::Launch);
}
