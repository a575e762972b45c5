//! An operator written with the chat API (`d.chat()`, `ctx.reply`,
//! `ctx.send`) answering commands through a real nats-server: the answer's
//! subject, source, id, in-reply-to and room header.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use switchboard_bus::proto::{headers, launch, ChatMessage, ControlAck, Verb};
use switchboard_bus::{
    run_with, Bus, BusOptions, ChatAddress, Context, Delivery, Envelope, HandlerResult, LaunchEnv,
    Operator, RunError,
};
use switchboard_testkit::NatsServer;

const WAIT: Duration = Duration::from_secs(10);

/// The README's Greeter, plus a command that speaks in another room.
struct Greeter;

impl Operator for Greeter {
    type Config = serde_json::Value;

    async fn start(&mut self, ctx: &mut Context, _config: serde_json::Value) -> HandlerResult {
        ctx.subscribe("chat.#.message").await?;
        Ok(())
    }

    async fn message(&mut self, ctx: &mut Context, d: Delivery) -> HandlerResult {
        let chat = d.chat()?;
        if chat.text().starts_with("hello") {
            ctx.reply(&d, format!("hello, {}", chat.sender())).await?;
        } else if let Some(news) = chat.text().strip_prefix("!announce ") {
            let room = ChatAddress::new(chat.protocol(), chat.instance(), "#announcements");
            ctx.send(&room, format!("{} says: {news}", chat.sender()))
                .await?;
        }
        Ok(())
    }
}

fn launch_env(id: &str, url: &str) -> LaunchEnv {
    let vars = HashMap::from([
        (launch::ID, id.to_string()),
        (launch::NATS_URL, url.to_string()),
        (launch::HEARTBEAT_MS, "50".to_string()),
    ]);
    LaunchEnv::from_lookup(|name| vars.get(name).cloned()).expect("launch environment")
}

/// Runs `op` on a thread of its own (operator futures need not be `Send`).
fn spawn<O: Operator + Send + 'static>(
    op: O,
    env: LaunchEnv,
) -> std::thread::JoinHandle<Result<(), RunError>> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(run_with(op, env))
    })
}

fn say(room: &ChatAddress, sender: &str, text: &str) -> Envelope {
    let body = serde_json::to_value(ChatMessage::new(text, sender, room.room.clone())).unwrap();
    // From the owner of `chat.irc.libera.…` (docs/PROTOCOL.md, Authentic source).
    Envelope::new("libera", body).with_header(headers::ROOM, room.room.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_answers_a_command_in_the_room_it_came_from() {
    let server = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&BusOptions::new(&server.url()), "irc-libera")
        .await
        .unwrap();
    let mut ready = bus.subscribe_raw("sb.op.greeter.ready").await.unwrap();
    let mut heartbeats = bus.subscribe_raw("sb.op.greeter.heartbeat").await.unwrap();
    let mut requests = bus.subscribe("send.#").await.unwrap();
    bus.sync().await.unwrap();
    let operator = spawn(Greeter, launch_env("greeter", &server.url()));
    tokio::time::timeout(WAIT, ready.next())
        .await
        .expect("ready")
        .unwrap();

    // A room whose name needs escaping: the answer goes back to it.
    let room = ChatAddress::new("irc", "libera", "#rust.beginners");
    let question = say(&room, "ferris", "hello there");
    bus.publish(&room.event_subject("message"), &question)
        .await
        .unwrap();
    let answer = tokio::time::timeout(WAIT, requests.next())
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(
        answer.subject,
        "send.irc.libera.=23rust=2Ebeginners.message"
    );
    let env = &answer.envelope();
    assert_eq!(env.source, "greeter");
    assert_eq!(env.body, json!({"text": "hello, ferris"}));
    let id = env.id().expect("the answer has an id");
    assert_eq!(id.len(), 22);
    assert_ne!(Some(id), question.id());
    assert_eq!(env.header(headers::IN_REPLY_TO), question.id());
    assert_eq!(env.header(headers::ROOM), Some("#rust.beginners"));

    // ctx.send: another room, no in-reply-to.
    let question = say(&room, "ferris", "!announce lunch");
    bus.publish(&room.event_subject("message"), &question)
        .await
        .unwrap();
    let said = tokio::time::timeout(WAIT, requests.next())
        .await
        .expect("an announcement")
        .unwrap();
    assert_eq!(said.subject, "send.irc.libera.=23announcements.message");
    assert_eq!(said.envelope().source, "greeter");
    assert_eq!(said.envelope().body, json!({"text": "ferris says: lunch"}));
    assert_eq!(
        said.envelope().header(headers::ROOM),
        Some("#announcements")
    );
    assert_eq!(said.envelope().header(headers::IN_REPLY_TO), None);
    assert!(said.envelope().id().is_some());

    // Not a chat body: `d.chat()` fails, the handler error is counted,
    // nothing is sent, and the operator goes on answering.
    let odd = Envelope::new("libera", json!({"text": "hello"}));
    bus.publish(&room.event_subject("message"), &odd)
        .await
        .unwrap();
    let question = say(&room, "crab", "hello again");
    bus.publish(&room.event_subject("message"), &question)
        .await
        .unwrap();
    let answer = tokio::time::timeout(WAIT, requests.next())
        .await
        .expect("an answer after the odd one")
        .unwrap();
    assert_eq!(answer.envelope().body, json!({"text": "hello, crab"}));
    assert_eq!(
        answer.envelope().header(headers::IN_REPLY_TO),
        question.id()
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let beat = tokio::time::timeout(WAIT, heartbeats.next())
            .await
            .expect("heartbeats")
            .unwrap();
        let beat: serde_json::Value = serde_json::from_slice(&beat.payload).unwrap();
        if beat["counters"]["handler_errors"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{beat}");
    }

    let ack: ControlAck = bus
        .request_json("sb.ctl.greeter", &json!({"verb": "shutdown"}), WAIT)
        .await
        .unwrap();
    assert!(ack.ok && ack.verb == Some(Verb::Shutdown), "{ack:?}");
    operator.join().expect("no panic").expect("clean shutdown");
}

/// A handler slower than what it subscribed to: 8 deliveries fit its
/// queue, the rest are dropped. Never silent: counted in `dropped`, and
/// the operator reports `degraded` with the reason until a heartbeat
/// interval passes without drops.
struct Slow;

impl Operator for Slow {
    type Config = serde_json::Value;

    async fn start(&mut self, ctx: &mut Context, _config: serde_json::Value) -> HandlerResult {
        ctx.subscribe("chat.slow.#").await?;
        Ok(())
    }

    async fn message(&mut self, _ctx: &mut Context, _d: Delivery) -> HandlerResult {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_counted_and_degraded_then_ok_again() {
    let server = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&BusOptions::new(&server.url()), "t")
        .await
        .unwrap();
    let mut ready = bus.subscribe_raw("sb.op.slow.ready").await.unwrap();
    let mut heartbeats = bus.subscribe_raw("sb.op.slow.heartbeat").await.unwrap();
    bus.sync().await.unwrap();
    let mut env = launch_env("slow", &server.url());
    env.nats = env.nats.subscription_capacity(8);
    let operator = spawn(Slow, env);
    tokio::time::timeout(WAIT, ready.next())
        .await
        .expect("ready")
        .unwrap();
    for i in 0..200 {
        let env = Envelope::new("t", json!({ "n": i }));
        bus.publish("chat.slow.x", &env).await.unwrap();
    }
    bus.flush().await.unwrap();
    let mut saw_degraded = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let beat = tokio::time::timeout(WAIT, heartbeats.next())
            .await
            .expect("heartbeats")
            .unwrap();
        let beat: serde_json::Value = serde_json::from_slice(&beat.payload).unwrap();
        if beat["health"] == "degraded" {
            let reason = beat["health_reason"].as_str().unwrap_or_default();
            assert!(reason.starts_with("slow consumer: "), "{beat}");
            assert!(beat["counters"]["dropped"].as_u64() > Some(0), "{beat}");
            saw_degraded = true;
        } else if saw_degraded {
            // Ok again once the drops stopped (health left out when ok).
            assert!(beat.get("health").is_none(), "{beat}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{beat}");
    }
    let ack: ControlAck = bus
        .request_json("sb.ctl.slow", &json!({"verb": "shutdown"}), WAIT)
        .await
        .unwrap();
    assert!(ack.ok, "{ack:?}");
    operator.join().expect("no panic").expect("clean shutdown");
}
