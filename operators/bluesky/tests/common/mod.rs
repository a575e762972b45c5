//! Shared pieces of the Bluesky operator's tests: the testkit's operator
//! harness with Bluesky's requests, and the local XRPC and Jetstream
//! servers.

#![allow(dead_code, unused_imports)] // each test uses a different part

pub mod firehose;
pub mod jetstream;
pub mod pds;

use std::time::Duration;

use serde_json::{json, Value};
use switchboard_bus::proto::{launch, ChatAddress, Envelope};
use switchboard_testkit::OperatorHarness;

pub use pds::{Pds, BOT_DID, BOT_HANDLE, PASSWORD, TOKEN_MARK};

pub const WAIT: Duration = Duration::from_secs(15);

/// The testkit's operator harness with Bluesky's requests.
pub struct Harness(OperatorHarness);

switchboard_testkit::deref_to_operator_harness!(Harness);

impl Harness {
    pub async fn new(id: &str) -> Harness {
        Harness(OperatorHarness::new("bluesky", id).await)
    }

    /// Starts the operator with `config` and waits for its `ready`.
    pub async fn start_bot(&mut self, config: &Value) {
        let state = self.state_path();
        let program = std::path::Path::new(env!("CARGO_BIN_EXE_switchboard-bluesky"));
        self.0.start(program, config, &bot_env(&state)).await;
    }

    /// Starts the operator without waiting.
    pub fn spawn_bot(&mut self, config: &Value) {
        let state = self.state_path();
        let program = std::path::Path::new(env!("CARGO_BIN_EXE_switchboard-bluesky"));
        self.0.spawn(program, config, &bot_env(&state));
    }

    /// Sends a request on `send.bluesky.<id>.<room>.<kind>` and returns the
    /// answer as JSON.
    pub async fn request(&self, room: &str, kind: &str, env: Envelope) -> Value {
        let subject = ChatAddress::new("bluesky", &self.id, room).send_subject(kind);
        let env = env.with_header("room", room);
        let reply = self
            .bus
            .request_bytes(&subject, env.to_vec().into(), WAIT)
            .await
            .unwrap_or_else(|e| panic!("request on {subject}: {e}; log:\n{}", self.log()));
        assert_no_secrets("ack", &String::from_utf8_lossy(&reply));
        serde_json::from_slice(&reply).expect("the answer is JSON")
    }
}

/// The operator's launch environment beyond id, URL and config.
fn bot_env(state: &str) -> [(&str, &str); 3] {
    [
        (launch::HEARTBEAT_MS, "300"),
        (launch::STATE_DIR, state),
        ("SWITCHBOARD_LOG", "debug"),
    ]
}

/// Asserts that no secret is in `text`.
pub fn assert_no_secrets(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD),
        "the password is in the {what}:\n{text}"
    );
    assert!(
        !text.contains(TOKEN_MARK),
        "a token is in the {what}:\n{text}"
    );
}

/// A config for the local server, merged with `extra`.
pub fn config(pds: &Pds, extra: Value) -> Value {
    let mut c = json!({
        "service": pds.url,
        "identifier": BOT_HANDLE,
        "password": PASSWORD,
        "polling": {"interval": "200ms"},
        "retry": {"initial": "100ms", "max": "1s"},
    });
    merge(&mut c, extra);
    c
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, e) => *b = e,
    }
}
