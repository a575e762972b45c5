//! Shared pieces of the IRC operator's end-to-end tests: the operator as a
//! separate process (launch environment as the orchestrator sets it), a
//! bus client on a real nats-server, and a plain raw-socket IRC client.

#![allow(dead_code)] // each test uses a different part

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use switchboard_bus::proto::{
    control_subject, launch, ready_subject, ChatAddress, ChatPattern, ControlAck, Envelope,
    OperatorId, SendResult,
};
use switchboard_bus::{Bus, BusOptions, Delivery, RawSubscription, Subscription};
use switchboard_testkit::NatsServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub const WAIT: Duration = Duration::from_secs(15);

/// A nats-server, a bus client, and the bot's events and lifecycle.
pub struct Harness {
    pub nats: NatsServer,
    pub bus: Bus,
    pub id: String,
    pub events: Subscription,
    pub ready: RawSubscription,
    pub bot: Option<Bot>,
}

impl Harness {
    /// A bus for operator `id` (its instance is its id), subscribed to
    /// everything the bot publishes.
    pub async fn new(id: &str) -> Harness {
        let nats = NatsServer::start().expect("nats-server (make tools)");
        let bus = Bus::connect(&BusOptions::new(&nats.url()), "test")
            .await
            .expect("bus");
        let events = bus
            .subscribe(&ChatPattern::chat().protocol("irc").instance(id))
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
        }
    }

    /// Starts the operator with `config` and waits for its `ready`.
    pub async fn start_bot(&mut self, config: Value) {
        self.bot = Some(Bot::spawn(
            std::path::Path::new(env!("CARGO_BIN_EXE_switchboard-irc")),
            &self.id,
            &self.nats.url(),
            &config,
            &[
                (launch::HEARTBEAT_MS, "500"),
                ("SWITCHBOARD_LOG", "info,switchboard_irc=debug"),
            ],
        ));
        tokio::time::timeout(WAIT, self.ready.next())
            .await
            .unwrap_or_else(|_| panic!("no ready within {WAIT:?}; log:\n{}", self.log()))
            .expect("ready subscription open");
    }

    /// The bot's log so far.
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

/// The IRC operator as a child process.
pub type Bot = switchboard_testkit::OperatorProcess;

/// A plain IRC client on a raw socket (no library), answering PINGs.
pub struct RawClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    pub nick: String,
    /// Every line received, in order.
    pub seen: Vec<String>,
}

impl RawClient {
    /// Connects and registers as `nick`.
    pub async fn connect(port: u16, nick: &str) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the IRC server");
        let (r, w) = stream.into_split();
        let mut c = RawClient {
            reader: BufReader::new(r),
            writer: w,
            nick: nick.to_string(),
            seen: Vec::new(),
        };
        c.send(&format!("NICK {nick}")).await;
        c.send(&format!("USER {nick} 0 * :raw test client")).await;
        c.expect(WAIT, |l| l.contains(" 376 ") || l.contains(" 422 "))
            .await;
        c
    }

    pub async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write to the IRC server");
    }

    /// Joins `channel` and waits for the end of its NAMES.
    pub async fn join(&mut self, channel: &str) {
        self.send(&format!("JOIN {channel}")).await;
        let end = format!(" 366 {} {channel} ", self.nick);
        self.expect(WAIT, |l| l.contains(&end)).await;
    }

    /// Lifts ngIRCd's throttling for this client.
    pub async fn unthrottle_ngircd(&mut self) {
        self.send(&format!(
            "OPER {} {}",
            switchboard_testkit::NgIrcd::OPER_NAME,
            switchboard_testkit::NgIrcd::OPER_PASSWORD
        ))
        .await;
        self.expect(WAIT, |l| l.contains(" 381 ")).await;
        self.send(&format!("MODE {} +F", self.nick)).await;
    }

    /// The next line (PINGs are answered and skipped), or None.
    pub async fn next(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let mut buf = Vec::new();
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.reader.read_until(b'\n', &mut buf)).await {
                Ok(Ok(n)) if n > 0 => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    if let Some(rest) = line.strip_prefix("PING ") {
                        self.send(&format!("PONG {rest}")).await;
                        continue;
                    }
                    self.seen.push(line.clone());
                    return Some(line);
                }
                _ => return None,
            }
        }
    }

    /// The next line matching `pred`; panics with the recent lines after
    /// `within`.
    pub async fn expect(&mut self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(l) if pred(&l) => return l,
                Some(_) => continue,
                None => {
                    let tail: Vec<_> = self.seen.iter().rev().take(30).rev().collect();
                    panic!(
                        "{}: no matching line within {within:?}; last lines: {tail:#?}",
                        self.nick
                    )
                }
            }
        }
    }

    /// Every line that arrives within `within`.
    pub async fn drain(&mut self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            match self.next(left).await {
                Some(l) => out.push(l),
                None => return out,
            }
        }
    }
}

/// The text of a `PRIVMSG` line from `nick` to `target`, if it is one.
pub fn privmsg_text<'a>(line: &'a str, nick: &str, target: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(&format!(":{nick}!"))?;
    let (_, rest) = rest.split_once(' ')?;
    rest.strip_prefix(&format!("PRIVMSG {target} :"))
}
