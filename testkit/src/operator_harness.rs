//! A protocol operator under test without the daemon: a real
//! nats-server, a bus client subscribed to everything the operator
//! publishes for its instance, and the operator as a separate process
//! started with the launch environment the orchestrator would give it.
//! The IRC, Nostr and Bluesky tests wrap it with their protocol's
//! requests and configs.

use std::path::Path;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use serde_json::Value;
use switchboard_bus::proto::{
    control_subject, heartbeat_subject, ready_subject, ChatPattern, ControlAck, OperatorId,
};
use switchboard_bus::{Bus, BusOptions, Delivery, RawSubscription, Subscription};
use tokio::time::Instant;

use crate::{NatsServer, TestOperator};

/// How long a wait in [`OperatorHarness`] may take.
pub const OPERATOR_WAIT: Duration = Duration::from_secs(20);

/// A nats-server, a bus client, one operator's events, lifecycle and
/// state directory (which outlives each of its processes).
pub struct OperatorHarness {
    /// The server the operator and the test talk through.
    pub nats: NatsServer,
    /// The test's client.
    pub bus: Bus,
    /// The operator's id (its instance is its id).
    pub id: String,
    /// `chat.<protocol>.<id>.>`.
    pub events: Subscription,
    /// `sb.op.<id>.ready`.
    pub ready: RawSubscription,
    /// `sb.op.<id>.heartbeat`.
    pub heartbeats: RawSubscription,
    /// The running process, if any.
    pub bot: Option<TestOperator>,
    /// Its state directory, kept across restarts.
    pub state: tempfile::TempDir,
    /// What earlier processes logged.
    pub old_logs: String,
    /// Every event received so far, in order (kept across restarts).
    pub seen: Vec<Delivery>,
}

impl OperatorHarness {
    /// A server and a client watching operator `id` of `protocol`.
    ///
    /// # Panics
    ///
    /// When nats-server is missing or the client cannot subscribe.
    pub async fn new(protocol: &str, id: &str) -> OperatorHarness {
        let nats = NatsServer::start().expect("nats-server (make tools)");
        let bus = Bus::connect(&BusOptions::new(&nats.url()), "test")
            .await
            .expect("bus");
        let events = bus
            .subscribe(&ChatPattern::chat().protocol(protocol).instance(id))
            .await
            .expect("subscribe to the operator's events");
        let oid = OperatorId::new(id).expect("a valid id");
        let ready = bus
            .subscribe_raw(&ready_subject(&oid))
            .await
            .expect("ready");
        let heartbeats = bus
            .subscribe_raw(&heartbeat_subject(&oid))
            .await
            .expect("heartbeats");
        bus.sync().await.expect("bus sync");
        OperatorHarness {
            nats,
            bus,
            id: id.to_string(),
            events,
            ready,
            heartbeats,
            bot: None,
            state: tempfile::tempdir().expect("a state directory"),
            old_logs: String::new(),
            seen: Vec::new(),
        }
    }

    /// The state directory's path, for `SWITCHBOARD_STATE_DIR`.
    pub fn state_path(&self) -> String {
        self.state.path().display().to_string()
    }

    /// Start `program` with `config` and `env`, without waiting; a
    /// previous process's log is kept in [`OperatorHarness::old_logs`].
    pub fn spawn(&mut self, program: &Path, config: &Value, env: &[(&str, &str)]) {
        if let Some(old) = self.bot.take() {
            self.old_logs.push_str(&old.log());
        }
        self.bot = Some(TestOperator::spawn(
            program,
            &self.id,
            &self.nats.url(),
            Some(config),
            env,
        ));
    }

    /// [`OperatorHarness::spawn`], then wait for its `ready`.
    ///
    /// # Panics
    ///
    /// When no `ready` comes within [`OPERATOR_WAIT`].
    pub async fn start(&mut self, program: &Path, config: &Value, env: &[(&str, &str)]) {
        self.spawn(program, config, env);
        tokio::time::timeout(OPERATOR_WAIT, self.ready.next())
            .await
            .unwrap_or_else(|_| panic!("no ready within {OPERATOR_WAIT:?}; log:\n{}", self.log()))
            .expect("ready subscription open");
    }

    /// SIGKILL the operator, no goodbye.
    pub async fn kill_bot(&mut self) {
        if let Some(mut bot) = self.bot.take() {
            bot.child.start_kill().expect("SIGKILL the bot");
            let _ = bot.child.wait().await;
            self.old_logs.push_str(&bot.log());
        }
    }

    /// The running process's log so far.
    pub fn log(&self) -> String {
        self.bot.as_ref().map(TestOperator::log).unwrap_or_default()
    }

    /// Everything every process logged.
    pub fn all_logs(&self) -> String {
        format!("{}{}", self.old_logs, self.log())
    }

    /// The next event matching `pred` (every event is kept in `seen`).
    ///
    /// # Panics
    ///
    /// When none comes within `within`.
    pub async fn event(&mut self, within: Duration, pred: impl Fn(&Delivery) -> bool) -> Delivery {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.next()).await {
                Ok(Some(d)) => {
                    self.seen.push(d.clone());
                    if pred(&d) {
                        return d;
                    }
                }
                _ => panic!(
                    "no matching event within {within:?}; bot log:\n{}",
                    self.log()
                ),
            }
        }
    }

    /// Every event that arrives within `within` (also kept in `seen`).
    pub async fn drain(&mut self, within: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while let Ok(Some(d)) = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.events.next(),
        )
        .await
        {
            self.seen.push(d.clone());
            out.push(d);
        }
        out
    }

    /// A control request to the operator.
    ///
    /// # Panics
    ///
    /// When it does not answer.
    pub async fn control(&self, request: Value) -> ControlAck {
        self.bus
            .request_json(
                &control_subject(&OperatorId::new(&self.id).expect("a valid id")),
                &request,
                OPERATOR_WAIT,
            )
            .await
            .unwrap_or_else(|e| panic!("control {request}: {e}"))
    }

    /// The first heartbeat sent from now on (queued older ones are
    /// skipped) for which `pred` holds.
    ///
    /// # Panics
    ///
    /// When none comes within [`OPERATOR_WAIT`].
    pub async fn heartbeat_until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        while let Some(Some(_)) = self.heartbeats.next().now_or_never() {}
        let deadline = Instant::now() + OPERATOR_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, self.heartbeats.next())
                .await
                .unwrap_or_else(|_| panic!("no matching heartbeat; log:\n{}", self.log()))
                .expect("heartbeat subscription open");
            let hb: Value = serde_json::from_slice(&m.payload).expect("heartbeat JSON");
            if pred(&hb) {
                return hb;
            }
        }
    }

    /// The counters of the first heartbeat from now on for which `pred`
    /// holds on them.
    pub async fn counters_until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        self.heartbeat_until(|hb| pred(&hb["counters"])).await["counters"].clone()
    }
}

impl Drop for OperatorHarness {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.old_logs.is_empty() {
            eprintln!(
                "---- earlier operator processes' log ----\n{}\n---- end ----",
                self.old_logs
            );
        }
    }
}

/// `Deref` and `DerefMut` from a test crate's `struct Harness(OperatorHarness)`
/// to the harness it wraps: each protocol's tests add their requests to
/// their own type (a foreign type takes no inherent methods) and still
/// reach the shared ones, without repeating these impls per crate.
#[macro_export]
macro_rules! deref_to_operator_harness {
    ($wrapper:ty) => {
        impl ::std::ops::Deref for $wrapper {
            type Target = $crate::OperatorHarness;
            fn deref(&self) -> &$crate::OperatorHarness {
                &self.0
            }
        }

        impl ::std::ops::DerefMut for $wrapper {
            fn deref_mut(&mut self) -> &mut $crate::OperatorHarness {
                &mut self.0
            }
        }
    };
}
