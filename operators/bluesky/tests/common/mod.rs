//! Shared pieces of the Bluesky operator's tests: the operator as a
//! separate process (launch environment as the orchestrator sets it, with
//! a state directory that outlives each process), a bus client on a real
//! nats-server, and the local XRPC and Jetstream servers.

#![allow(dead_code)] // each test uses a different part

pub mod firehose;
pub mod jetstream;
pub mod pds;

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use switchboard_bus::proto::{
    control_subject, launch, ready_subject, ChatAddress, ChatPattern, ControlAck, Envelope,
    OperatorId,
};
use switchboard_bus::{Bus, BusOptions, Delivery, RawSubscription, Subscription};
use switchboard_testkit::NatsServer;
use tokio::time::Instant;

pub use pds::{Pds, BOT_DID, BOT_HANDLE, PASSWORD, TOKEN_MARK};

pub const WAIT: Duration = Duration::from_secs(15);

/// A nats-server, a bus client, the bot's events, its state directory.
pub struct Harness {
    pub nats: NatsServer,
    pub bus: Bus,
    pub id: String,
    pub events: Subscription,
    pub ready: RawSubscription,
    pub bot: Option<Bot>,
    pub state: tempfile::TempDir,
    /// Every log line of every bot process so far.
    pub old_logs: String,
}

impl Harness {
    pub async fn new(id: &str) -> Harness {
        let nats = NatsServer::start().expect("nats-server (make tools)");
        let bus = Bus::connect(&BusOptions::new(&nats.url()), "test")
            .await
            .expect("bus");
        let events = bus
            .subscribe(&ChatPattern::chat().protocol("bluesky").instance(id))
            .await
            .unwrap();
        let ready = bus
            .subscribe_raw(&ready_subject(&OperatorId::new(id).expect("a valid id")))
            .await
            .unwrap();
        bus.sync().await.unwrap();
        Harness {
            nats,
            bus,
            id: id.to_string(),
            events,
            ready,
            bot: None,
            state: tempfile::tempdir().unwrap(),
            old_logs: String::new(),
        }
    }

    /// Starts the operator with `config` and waits for its `ready`.
    pub async fn start_bot(&mut self, config: &Value) {
        self.spawn_bot(config);
        tokio::time::timeout(WAIT, self.ready.next())
            .await
            .unwrap_or_else(|_| panic!("no ready within {WAIT:?}; log:\n{}", self.log()))
            .expect("ready subscription open");
    }

    /// Starts the operator without waiting.
    pub fn spawn_bot(&mut self, config: &Value) {
        if let Some(old) = self.bot.take() {
            self.old_logs.push_str(&old.log());
        }
        self.bot = Some(spawn_bot(
            &self.id,
            &self.nats.url(),
            config,
            self.state.path().to_path_buf(),
        ));
    }

    /// SIGKILL, no goodbye.
    pub async fn kill_bot(&mut self) {
        if let Some(mut bot) = self.bot.take() {
            bot.child.start_kill().unwrap();
            let _ = bot.child.wait().await;
            self.old_logs.push_str(&bot.log());
        }
    }

    /// Everything every bot process logged.
    pub fn all_logs(&self) -> String {
        format!("{}{}", self.old_logs, self.log())
    }

    pub fn log(&self) -> String {
        self.bot.as_ref().map(Bot::log).unwrap_or_default()
    }

    /// The next event matching `pred` (others are skipped).
    pub async fn event(&mut self, within: Duration, pred: impl Fn(&Delivery) -> bool) -> Delivery {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.next()).await {
                Ok(Some(d)) if pred(&d) => return d,
                Ok(Some(_)) => continue,
                _ => panic!(
                    "no matching event within {within:?}; bot log:\n{}",
                    self.log()
                ),
            }
        }
    }

    /// Every event that arrives within `within`.
    pub async fn drain(&mut self, within: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while let Ok(Some(d)) = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.events.next(),
        )
        .await
        {
            out.push(d);
        }
        out
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

    /// A control request to the bot.
    pub async fn control(&self, request: Value) -> ControlAck {
        self.bus
            .request_json(
                &control_subject(&OperatorId::new(&self.id).expect("a valid id")),
                &request,
                WAIT,
            )
            .await
            .unwrap_or_else(|e| panic!("control {request}: {e}"))
    }

    /// The last heartbeat's counters, waiting until `pred` holds.
    pub async fn counters_until(&self, pred: impl Fn(&Value) -> bool) -> Value {
        self.heartbeat_until(|hb| pred(&hb["counters"])).await["counters"].clone()
    }

    /// The first heartbeat for which `pred` holds.
    pub async fn heartbeat_until(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let mut beats = self
            .bus
            .subscribe_raw(&format!("sb.op.{}.heartbeat", self.id))
            .await
            .unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, beats.next())
                .await
                .unwrap_or_else(|_| panic!("no matching heartbeat; log:\n{}", self.log()))
                .expect("heartbeats");
            let hb: Value = serde_json::from_slice(&m.payload).unwrap();
            if pred(&hb) {
                return hb;
            }
        }
    }
}

/// The operator as a child process.
pub type Bot = switchboard_testkit::OperatorProcess;

/// Spawns the operator as `id` with its state in `state`.
pub fn spawn_bot(id: &str, nats_url: &str, config: &Value, state: PathBuf) -> Bot {
    let state = state.display().to_string();
    Bot::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_switchboard-bluesky")),
        id,
        nats_url,
        config,
        &[
            (launch::HEARTBEAT_MS, "300"),
            (launch::STATE_DIR, &state),
            ("SWITCHBOARD_LOG", "debug"),
        ],
    )
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
