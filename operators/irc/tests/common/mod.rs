//! Shared pieces of the IRC operator's end-to-end tests: the testkit's
//! operator harness with IRC's requests, and its raw IRC client.

#![allow(dead_code)] // each test uses a different part

use std::time::Duration;

use serde_json::{json, Value};
use switchboard_bus::proto::{launch, ChatAddress, Envelope, SendResult};
use switchboard_bus::{Bus, Delivery};
use switchboard_testkit::OperatorHarness;

pub use switchboard_testkit::{privmsg_text, RawIrcClient};

pub const WAIT: Duration = Duration::from_secs(15);

/// A nats-server, a bus client, and the IRC operator's events and
/// lifecycle.
pub struct Harness(OperatorHarness);

switchboard_testkit::deref_to_operator_harness!(Harness);

impl Harness {
    /// A bus for operator `id` (its instance is its id), subscribed to
    /// everything the bot publishes.
    pub async fn new(id: &str) -> Harness {
        Harness(OperatorHarness::new("irc", id).await)
    }

    /// Starts the operator with `config` and waits for its `ready`.
    pub async fn start_bot(&mut self, config: Value) {
        self.0
            .start(
                std::path::Path::new(env!("CARGO_BIN_EXE_switchboard-irc")),
                &config,
                &[
                    (launch::HEARTBEAT_MS, "500"),
                    ("SWITCHBOARD_LOG", "info,switchboard_irc=debug"),
                ],
            )
            .await;
    }

    /// Waits until the bot says it joined `channel` (its own join event).
    pub async fn joined(&mut self, channel: &str) -> Delivery {
        let subject = ChatAddress::new("irc", &self.id, channel).event_subject("join");
        self.event(WAIT, |d| {
            d.subject == subject && d.envelope().body["self"] == true
        })
        .await
    }

    /// Sends a request on `send.irc.<id>.<room>.<kind>` and returns the ack.
    pub async fn request(&self, room: &str, kind: &str, body: Value) -> SendResult {
        request(&self.bus, &self.id, room, kind, body, WAIT).await
    }
}

/// Sends one request envelope and parses the `SendResult` answer.
pub async fn request(
    bus: &Bus,
    instance: &str,
    room: &str,
    kind: &str,
    body: Value,
    within: Duration,
) -> SendResult {
    let subject = ChatAddress::new("irc", instance, room).send_subject(kind);
    let env = Envelope::new("test", body).with_header("room", room);
    let reply = bus
        .request_bytes(&subject, env.to_vec().into(), within)
        .await
        .unwrap_or_else(|e| panic!("request on {subject}: {e}"));
    serde_json::from_slice(&reply).expect("the answer is a SendResult")
}

/// A config for a server on 127.0.0.1:`port`, merged with `extra`.
pub fn config(port: u16, nick: &str, channels: &[&str], extra: Value) -> Value {
    let mut c = json!({
        "server": "127.0.0.1",
        "port": port,
        "nick": nick,
        "channels": channels,
    });
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    c
}
