//! The IRC client state machine, without I/O.
//!
//! [`Client`] is fed lines from the server ([`Client::handle_line`]), bus
//! requests ([`Client::join`], [`Client::text_lines`], …) and the clock
//! ([`Client::tick`]), and answers with [`Output`]s: lines to send (now, or
//! through flood control), events to publish, acks. The session
//! ([`crate::session`]) does the I/O. Keeping this pure lets unit tests and
//! the property test drive it with any input and no sockets.
//!
//! What it does: registration (`CAP LS 302`, `PASS`, `NICK`, `USER`), SASL
//! PLAIN, alternate nicks on 433/432, NickServ `IDENTIFY` when SASL did not
//! log in, joining channels after the MOTD (or after NickServ answered),
//! channel membership (from `NAMES`, `JOIN`, `PART`, `KICK`, `QUIT`,
//! `NICK`) so that network-wide `QUIT` and `NICK` can be reported per room,
//! CTCP `VERSION`/`PING`/`CLIENTINFO`, rejoin after a kick, regaining the
//! wanted nick when it frees up, and confirmations (acks) for join, part
//! and nick requests.
//!
//! The files, by job: this one holds the state, the dispatch of server
//! messages ([`Client::handle_message`]) and the clock; `registration`
//! (CAP, SASL, numerics, NickServ, the first joins), `events` (messages
//! and membership, published per room) and `requests` (bus requests,
//! reload, and the acks that confirm them).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use irc_proto::{Command, Message, Prefix};
use switchboard_bus::proto::SendResult;

use crate::config::{IrcConfig, Secret};
use crate::flood::TokenBucket;
use crate::inbound::{self, InboundEvent, Source};
use crate::line::{self, OutLine};
use crate::names::{self, CaseMapping};
use crate::outbound;

/// How long a join, part or nick request waits for the server's answer.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Delay before joining again after a kick.
pub const REJOIN_DELAY: Duration = Duration::from_secs(2);
/// Joins wait at most this long for NickServ to confirm an IDENTIFY.
const IDENTIFY_WAIT: Duration = Duration::from_secs(3);
/// Joins wait at most this long after the welcome for the end of the MOTD.
const MOTD_WAIT: Duration = Duration::from_secs(5);

/// What the client wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this line through flood control.
    Send(OutLine),
    /// Send this line at once (registration, PONG).
    SendNow(OutLine),
    /// Publish this event.
    Event(InboundEvent),
    /// Answer a bus request.
    Ack {
        /// The request's reply subject.
        reply: String,
        /// The answer.
        result: SendResult,
    },
    /// The server answered a PING of ours with this token.
    Pong(String),
    /// Registration completed (welcome received).
    Registered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Registering,
    Registered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SaslState {
    Idle,
    Authenticating,
    Done,
}

#[derive(Debug, Clone)]
struct ISupport {
    casemapping: CaseMapping,
    chantypes: String,
    prefix_symbols: String,
    statusmsg: String,
    userlen: usize,
    hostlen: usize,
}

impl Default for ISupport {
    fn default() -> Self {
        ISupport {
            casemapping: CaseMapping::Rfc1459,
            chantypes: names::DEFAULT_CHANTYPES.to_string(),
            prefix_symbols: "~&@%+".to_string(),
            statusmsg: String::new(),
            userlen: 10,
            hostlen: 63,
        }
    }
}

#[derive(Debug, Clone)]
struct Channel {
    name: String,
    members: HashSet<String>,
}

#[derive(Debug, Clone)]
struct Desired {
    name: String,
    key: Option<Secret>,
    from_config: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Awaiting {
    Join(String),
    Part(String),
    Nick(String),
}

#[derive(Debug, Clone)]
struct PendingAck {
    what: Awaiting,
    label: String,
    reply: Option<String>,
    deadline: Instant,
}

/// The client state machine.
#[derive(Debug)]
pub struct Client {
    config: IrcConfig,
    phase: Phase,
    nick: String,
    wanted_nick: String,
    nick_attempt: usize,
    user: Option<String>,
    host: Option<String>,
    isupport: ISupport,
    cap_ls: Vec<String>,
    cap_negotiating: bool,
    caps: HashSet<String>,
    sasl: SaslState,
    logged_in: bool,
    welcomed_at: Option<Instant>,
    post_registration_done: bool,
    join_at: Option<Instant>,
    channels: BTreeMap<String, Channel>,
    desired: BTreeMap<String, Desired>,
    pending: Vec<PendingAck>,
    rejoins: Vec<(Instant, String)>,
    ctcp_bucket: TokenBucket,
}

fn out_line(text: String) -> Option<Output> {
    OutLine::new(text).map(Output::Send)
}

fn now_line(text: String) -> Option<Output> {
    OutLine::new(text).map(Output::SendNow)
}

impl Client {
    /// A client for `config` (not connected yet).
    pub fn new(config: IrcConfig, now: Instant) -> Client {
        let mut client = Client {
            nick: config.nick.clone(),
            wanted_nick: config.nick.clone(),
            config,
            phase: Phase::Registering,
            nick_attempt: 0,
            user: None,
            host: None,
            isupport: ISupport::default(),
            cap_ls: Vec::new(),
            cap_negotiating: false,
            caps: HashSet::new(),
            sasl: SaslState::Idle,
            logged_in: false,
            welcomed_at: None,
            post_registration_done: false,
            join_at: None,
            channels: BTreeMap::new(),
            desired: BTreeMap::new(),
            pending: Vec::new(),
            rejoins: Vec::new(),
            ctcp_bucket: TokenBucket::new(3, 0.5, now),
        };
        for ch in client.config.channels.clone() {
            let key = client.fold(&ch.name);
            client.desired.insert(
                key,
                Desired {
                    name: ch.name,
                    key: ch.key,
                    from_config: true,
                },
            );
        }
        client
    }

    /// The configuration in force.
    pub fn config(&self) -> &IrcConfig {
        &self.config
    }

    /// The nick we have (or are trying to get while registering).
    pub fn nick(&self) -> &str {
        &self.nick
    }

    /// Whether registration is complete.
    pub fn is_registered(&self) -> bool {
        self.phase == Phase::Registered
    }

    /// Channels we are in (names as the server spelled them).
    pub fn joined_channels(&self) -> Vec<String> {
        self.channels.values().map(|c| c.name.clone()).collect()
    }

    /// Whether IRCv3 capability `cap` was enabled.
    pub fn has_cap(&self, cap: &str) -> bool {
        self.caps.contains(cap)
    }

    /// Whether SASL (or NickServ via 900) logged us in.
    pub fn logged_in(&self) -> bool {
        self.logged_in
    }

    fn fold(&self, name: &str) -> String {
        names::fold(name, self.isupport.casemapping)
    }

    fn is_me(&self, nick: &str) -> bool {
        self.fold(nick) == self.fold(&self.nick)
    }

    fn is_channel(&self, name: &str) -> bool {
        names::is_channel(name, &self.isupport.chantypes)
    }

    /// The lines that open a connection: capability negotiation, then
    /// `PASS`, `NICK` and `USER`.
    pub fn on_connect(&mut self, now: Instant) -> Vec<Output> {
        self.reset_connection_state(now);
        let mut out = Vec::new();
        out.extend(now_line("CAP LS 302".into()));
        self.cap_negotiating = true;
        if let Some(pass) = &self.config.password {
            let p = pass.expose();
            let text = if p.contains(' ') || p.starts_with(':') {
                format!("PASS :{p}")
            } else {
                format!("PASS {p}")
            };
            out.extend(OutLine::secret(text).map(Output::SendNow));
        }
        out.extend(now_line(format!("NICK {}", self.nick)));
        out.extend(now_line(format!(
            "USER {} 0 * :{}",
            self.config.username(),
            self.config.realname
        )));
        out
    }

    fn reset_connection_state(&mut self, now: Instant) {
        self.phase = Phase::Registering;
        self.nick = self.wanted_nick.clone();
        self.nick_attempt = 0;
        self.user = None;
        self.host = None;
        self.isupport = ISupport::default();
        self.cap_ls.clear();
        self.cap_negotiating = false;
        self.caps.clear();
        self.sasl = SaslState::Idle;
        self.logged_in = false;
        self.welcomed_at = None;
        self.post_registration_done = false;
        self.join_at = None;
        self.channels.clear();
        self.rejoins.clear();
        self.ctcp_bucket = TokenBucket::new(3, 0.5, now);
    }

    /// The connection is gone: every request still waiting for the server
    /// fails, membership is forgotten (it is rebuilt after reconnecting).
    pub fn on_disconnect(&mut self, reason: &str) -> Vec<Output> {
        let mut out = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            if let Some(reply) = p.reply {
                out.push(Output::Ack {
                    reply,
                    result: SendResult::failed(format!(
                        "{}: connection lost before the server answered ({reason})",
                        p.label
                    )),
                });
            }
        }
        self.phase = Phase::Registering;
        self.channels.clear();
        self.rejoins.clear();
        self.join_at = None;
        out
    }

    /// One line from the server. Malformed lines are logged and skipped.
    pub fn handle_line(&mut self, text: &str, now: Instant) -> Vec<Output> {
        match line::parse(text) {
            Ok(msg) => self.handle_message(&msg, now),
            Err(e) => {
                tracing::warn!(
                    line = %outbound::truncate(text, 200),
                    error = %e,
                    "skipping a malformed line from the server"
                );
                Vec::new()
            }
        }
    }

    /// One parsed message from the server.
    pub fn handle_message(&mut self, msg: &Message, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let tags = inbound::tags_to_json(msg.tags.as_ref());
        let source = match &msg.prefix {
            Some(Prefix::Nickname(n, u, h)) if !n.is_empty() => Some(Source {
                nick: n.clone(),
                user: u.clone(),
                host: h.clone(),
            }),
            _ => None,
        };
        match &msg.command {
            Command::PING(token, _) => {
                out.extend(now_line(format!("PONG :{token}")));
            }
            Command::PONG(a, b) => out.push(Output::Pong(b.clone().unwrap_or_else(|| a.clone()))),
            Command::ERROR(text) => {
                tracing::warn!(error = %outbound::truncate(text, 300), "the server closes the connection");
            }
            Command::CAP(_, sub, a, b) => self.on_cap(*sub, a.as_deref(), b.as_deref(), &mut out),
            Command::AUTHENTICATE(data) => self.on_authenticate(data, &mut out),
            Command::Response(resp, args) => self.on_numeric(*resp as u16, args, now, &mut out),
            Command::Raw(cmd, args) => {
                if let Ok(code) = cmd.parse::<u16>() {
                    if cmd.len() == 3 {
                        self.on_numeric(code, args, now, &mut out);
                    }
                }
            }
            Command::PRIVMSG(target, text) => {
                if let Some(src) = &source {
                    self.on_privmsg(src, target, text, &tags, &mut out);
                }
            }
            Command::NOTICE(target, text) => {
                if let Some(src) = &source {
                    self.on_notice(src, target, text, &tags, now, &mut out);
                }
            }
            Command::JOIN(chans, _, _) => {
                if let Some(src) = &source {
                    for chan in chans.split(',').filter(|c| !c.is_empty()) {
                        self.on_join(src, chan, &tags, &mut out);
                    }
                }
            }
            Command::PART(chans, reason) => {
                if let Some(src) = &source {
                    for chan in chans.split(',').filter(|c| !c.is_empty()) {
                        self.on_part(src, chan, reason.as_deref(), &tags, &mut out);
                    }
                }
            }
            Command::QUIT(reason) => {
                if let Some(src) = &source {
                    self.on_quit(src, reason.as_deref(), &tags, &mut out);
                }
            }
            Command::NICK(new) => {
                if let Some(src) = &source {
                    self.on_nick(src, new, &tags, &mut out);
                }
            }
            Command::KICK(chans, target, reason) => {
                if let Some(src) = &source {
                    for chan in chans.split(',').filter(|c| !c.is_empty()) {
                        self.on_kick(src, chan, target, reason.as_deref(), &tags, now, &mut out);
                    }
                }
            }
            Command::TOPIC(chan, Some(topic)) => {
                if let Some(src) = &source {
                    let text = inbound::maybe_strip(topic, self.config.strip_formatting);
                    out.push(Output::Event(inbound::topic_event(chan, src, text, &tags)));
                }
            }
            Command::CHGHOST(user, host)
                if source.as_ref().is_some_and(|s| self.is_me(&s.nick)) =>
            {
                self.user = Some(user.clone());
                self.host = Some(host.clone());
            }
            _ => {}
        }
        out
    }

    /// Timers: request timeouts, rejoins after kicks, delayed joins.
    pub fn tick(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let (expired, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.deadline <= now);
        self.pending = keep;
        for p in expired {
            if let Some(reply) = p.reply {
                out.push(Output::Ack {
                    reply,
                    result: SendResult::failed(format!(
                        "{}: no answer from the server within {} s",
                        p.label,
                        CONFIRM_TIMEOUT.as_secs()
                    )),
                });
            }
        }
        if self.phase == Phase::Registered {
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.rejoins)
                .into_iter()
                .partition(|(t, _)| *t <= now);
            self.rejoins = later;
            for (_, key) in due {
                if let Some(d) = self.desired.get(&key).cloned() {
                    if !self.channels.contains_key(&key) {
                        out.extend(join_line(&d.name, d.key.as_ref()));
                    }
                }
            }
            if self.join_at.is_some_and(|t| t <= now) {
                self.join_desired(&mut out);
            }
            if !self.post_registration_done
                && self.welcomed_at.is_some_and(|t| t + MOTD_WAIT <= now)
            {
                self.post_registration(now, &mut out);
            }
        }
        out
    }

    /// The next time [`Client::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut times: Vec<Instant> = self.pending.iter().map(|p| p.deadline).collect();
        times.extend(self.rejoins.iter().map(|(t, _)| *t));
        times.extend(self.join_at);
        if !self.post_registration_done {
            times.extend(self.welcomed_at.map(|t| t + MOTD_WAIT));
        }
        times.into_iter().min()
    }
}

fn join_line(channel: &str, key: Option<&Secret>) -> Option<Output> {
    match key {
        Some(k) => OutLine::secret(format!("JOIN {channel} {}", k.expose())).map(Output::Send),
        None => out_line(format!("JOIN {channel}")),
    }
}

fn part_line(channel: &str, reason: Option<&str>) -> Option<Output> {
    match reason {
        Some(r) if !r.is_empty() => {
            out_line(format!("PART {channel} :{}", outbound::one_line(r, 300)))
        }
        _ => out_line(format!("PART {channel}")),
    }
}

mod events;
mod registration;
mod requests;
#[cfg(test)]
mod test_util;

#[cfg(test)]
mod tests {
    use super::test_util::{feed, registered, sent};
    use super::*;
    use serde_json::json;

    #[test]
    fn ping_is_answered_and_pong_reported() {
        let mut c = registered(json!({}));
        let out = feed(&mut c, &["PING :abc def", ":s PONG s :sbflow3"]);
        assert_eq!(sent(&out), ["PONG :abc def"]);
        assert!(out.contains(&Output::Pong("sbflow3".into())));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let mut c = registered(json!({}));
        for l in [
            ":",
            "@",
            ":x",
            "@a=b",
            "  ",
            ":n!u@h PRIVMSG",
            ":n!u@h KICK",
            "001",
            ":s 353",
        ] {
            let _ = c.handle_line(l, Instant::now());
        }
    }
}
