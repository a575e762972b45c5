//! Shared pieces of the Nostr operator's end-to-end tests: the testkit's
//! operator harness with Nostr's requests, and the independent Python
//! client (`peer/nostr_peer.py`:
//! PyPI `nostr-sdk` for keys and signatures, `websockets` for the wire).

#![allow(dead_code)] // each test uses a different part

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use switchboard_bus::proto::{launch, ChatAddress, Envelope};
use switchboard_bus::Delivery;
use switchboard_testkit::OperatorHarness;
use tokio::time::Instant;

pub const WAIT: Duration = Duration::from_secs(20);

/// The bot's secret key in every test (each test has its own relays).
pub const BOT_SECRET: &str = "6b911fd37cdf5c81d4c0adb1ab7fa822ed253ab0ad9aa18d77257c88b29b718e";

/// The testkit's operator harness with Nostr's requests.
pub struct Harness(OperatorHarness);

switchboard_testkit::deref_to_operator_harness!(Harness);

impl Harness {
    pub async fn new(id: &str) -> Harness {
        Harness(OperatorHarness::new("nostr", id).await)
    }

    /// Starts the operator with `config` and waits for its `ready`.
    pub async fn start_bot(&mut self, config: Value) {
        let state = self.state_path();
        self.0
            .start(
                std::path::Path::new(env!("CARGO_BIN_EXE_switchboard-nostr")),
                &config,
                &[
                    (launch::HEARTBEAT_MS, "300"),
                    (launch::STATE_DIR, &state),
                    ("SWITCHBOARD_LOG", "info,switchboard_nostr=debug"),
                ],
            )
            .await;
    }

    /// The event with Nostr id `id` (already received, or the next one).
    pub async fn event_with_id(&mut self, id: &str) -> Delivery {
        if let Some(d) = self.seen.iter().find(|d| d.envelope().body["id"] == id) {
            return d.clone();
        }
        let id = id.to_string();
        self.event(WAIT, move |d| d.envelope().body["id"] == id.as_str())
            .await
    }

    /// How many times each Nostr id was published so far (relay events,
    /// which have none, are not counted).
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for d in &self.seen {
            if let Some(id) = d.envelope().body["id"].as_str() {
                *m.entry(id.to_string()).or_insert(0) += 1;
            }
        }
        m
    }

    /// The relay event `kind` (`relay-connected`, …) of relay `url`
    /// matching `pred` (already received, or the next one).
    pub async fn relay_event(
        &mut self,
        url: &str,
        kind: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Delivery {
        let subject = ChatAddress::new("nostr", &self.id, url).event_subject(kind);
        if let Some(d) = self
            .seen
            .iter()
            .find(|d| d.subject == subject && pred(&d.envelope().body))
        {
            return d.clone();
        }
        self.event(WAIT, move |d| {
            d.subject == subject && pred(&d.envelope().body)
        })
        .await
    }

    /// A request with envelope `env` on `send.nostr.<id>.<room>.<kind>`;
    /// the JSON answer.
    pub async fn request_env(&self, room: &str, kind: &str, env: Envelope) -> Value {
        let subject = ChatAddress::new("nostr", &self.id, room).send_subject(kind);
        let reply = self
            .bus
            .request_bytes(&subject, env.to_vec().into(), WAIT)
            .await
            .unwrap_or_else(|e| panic!("request on {subject}: {e}"));
        serde_json::from_slice(&reply).expect("a JSON answer")
    }

    /// A request on `send.nostr.<id>.<room>.<kind>`; the JSON answer.
    pub async fn request(&self, room: &str, kind: &str, body: Value) -> Value {
        let subject = ChatAddress::new("nostr", &self.id, room).send_subject(kind);
        let env = Envelope::new("test", body);
        let reply = self
            .bus
            .request_bytes(&subject, env.to_vec().into(), WAIT)
            .await
            .unwrap_or_else(|e| panic!("request on {subject}: {e}"));
        serde_json::from_slice(&reply).expect("a JSON answer")
    }

    /// The relays' status (a `relays` request), by URL.
    pub async fn relays(&self) -> HashMap<String, Value> {
        let reply = self.request("_", "relays", json!({})).await;
        reply["relays"]
            .as_array()
            .expect("relays")
            .iter()
            .map(|r| (r["url"].as_str().unwrap().to_string(), r.clone()))
            .collect()
    }

    /// Waits until relay `url` is in `state`.
    pub async fn relay_state(&self, url: &str, state: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let relays = self.relays().await;
            if let Some(r) = relays.get(url) {
                if r["state"] == state {
                    return r.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{url} never reached {state}: {relays:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The counters of the next heartbeat sent from now on (queued older
    /// ones are skipped).
    pub async fn counters(&mut self) -> Value {
        while let Some(Some(_)) = futures::FutureExt::now_or_never(self.heartbeats.next()) {}
        let hb = tokio::time::timeout(WAIT, self.heartbeats.next())
            .await
            .expect("a heartbeat")
            .expect("heartbeat subscription open");
        let hb: Value = serde_json::from_slice(&hb.payload).expect("heartbeat JSON");
        hb["counters"].clone()
    }

    /// Waits until heartbeat counter `name` is at least `at_least`.
    pub async fn counter_reaches(&mut self, name: &str, at_least: u64) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let c = self.counters().await;
            if c[name].as_u64().unwrap_or(0) >= at_least {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "counter {name} stays below {at_least}: {c}"
            );
        }
    }
}

/// A bot config for `relays`, one subscription to text notes, and a fast
/// reconnect schedule, merged with `extra`.
pub fn config(relays: &[String], extra: Value) -> Value {
    let mut c = json!({
        "relays": relays,
        "secret_key": BOT_SECRET,
        "subscriptions": [{"name": "notes", "kinds": [1]}],
        "reconnect": ["200ms", "400ms"],
    });
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    c
}

/// The independent client.
pub struct Peer;

impl Peer {
    fn run(args: &[&str]) -> Value {
        let python = switchboard_testkit::workspace_root().join(".tools/venv/bin/python");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peer/nostr_peer.py");
        let out = std::process::Command::new(&python)
            .arg(script)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e} (run `make tools`)", python.display()));
        assert!(
            out.status.success(),
            "peer {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("peer output is JSON")
    }

    /// A new key pair: `{secret, pubkey, npub}`.
    pub fn keygen() -> Value {
        Peer::run(&["keygen"])
    }

    /// A signed text note, not sent anywhere.
    pub fn sign(secret: &str, content: &str) -> Value {
        Peer::run(&["sign", secret, content])
    }

    /// Signs a text note and sends it to each of `relays`; `{id, event,
    /// ok}` where `ok` maps each relay to `[accepted, message]`.
    pub fn try_publish(relays: &[&str], secret: &str, content: &str, tags: Value) -> Value {
        let tags = tags.to_string();
        Peer::run(&["publish", &relays.join(","), secret, content, &tags])
    }

    /// [`Peer::try_publish`], asserting that every relay accepted it.
    pub fn publish(relays: &[&str], secret: &str, content: &str, tags: Value) -> Value {
        let out = Peer::try_publish(relays, secret, content, tags);
        for (url, ok) in out["ok"].as_object().expect("ok results") {
            assert_eq!(ok[0], true, "{url} refused the peer's event: {ok}");
        }
        out
    }

    /// A text note with another event's signature, sent to `relays`.
    pub fn publish_bad_signature(relays: &[&str], secret: &str, content: &str) -> Value {
        Peer::run(&["badsig", &relays.join(","), secret, content])
    }

    /// A direct message from `secret` to `to` (npub or hex) in `scheme`
    /// (`nip17` or `nip04`), answering message `reply_to` when given; the
    /// publish answer plus `message_id`.
    pub fn dm(
        relays: &[&str],
        secret: &str,
        to: &str,
        text: &str,
        scheme: &str,
        reply_to: Option<&str>,
    ) -> Value {
        let mut args = vec!["dm", secret, to, text, scheme];
        let relays = relays.join(",");
        args.insert(1, &relays);
        if let Some(r) = reply_to {
            args.push(r);
        }
        let out = Peer::run(&args);
        for (url, ok) in out["ok"].as_object().expect("ok results") {
            assert_eq!(ok[0], true, "{url} refused the peer's message: {ok}");
        }
        out
    }

    /// Every direct message to `secret`'s key on `relay`, opened by the
    /// peer: `[{sender, text, kind, scheme, tags, id}]`.
    pub fn inbox(relay: &str, secret: &str) -> Vec<Value> {
        Peer::run(&["inbox", relay, secret])
            .as_array()
            .expect("a list")
            .clone()
    }

    /// The events on `relay` matching `filter`, each `{event, valid}`.
    pub fn fetch(relay: &str, filter: Value) -> Vec<Value> {
        let f = filter.to_string();
        Peer::run(&["fetch", relay, &f])
            .as_array()
            .expect("a list")
            .clone()
    }
}
