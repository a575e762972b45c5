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

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use irc_proto::{CapSubCommand, Command, Message, Prefix};
use serde_json::{Map, Value};
use switchboard_bus::proto::{kinds, SendResult};

use crate::config::{IrcConfig, Secret};
use crate::flood::TokenBucket;
use crate::inbound::{self, InboundEvent, Source};
use crate::line::{self, OutLine};
use crate::names::{self, CaseMapping};
use crate::outbound::{self, NotSent, TextKind};

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

/// Where a PRIVMSG or NOTICE was said, as the bus names it.
#[derive(Debug)]
struct SaidIn {
    /// The channel, or `@<nick>` of the sender for a private message.
    room: String,
    /// Said to the operator alone.
    private: bool,
    /// The STATUSMSG prefix of the target (`@#chan`: said to the
    /// channel's operators only); empty when said to everyone.
    status: String,
}

impl SaidIn {
    /// The chat event, with `status` in its body when there is one.
    fn event(
        self,
        kind: &'static str,
        text: String,
        src: &Source,
        target: &str,
        tags: &Map<String, Value>,
    ) -> InboundEvent {
        let mut ev =
            inbound::message_event(kind, &self.room, self.private, text, src, target, tags);
        if !self.status.is_empty() {
            if let Value::Object(map) = &mut ev.body {
                map.insert("status".into(), Value::String(self.status));
            }
        }
        ev
    }
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

    // ----- registration -------------------------------------------------

    fn on_cap(
        &mut self,
        sub: CapSubCommand,
        a: Option<&str>,
        b: Option<&str>,
        out: &mut Vec<Output>,
    ) {
        if !self.cap_negotiating {
            return; // CAP NEW/DEL later on: nothing we act on
        }
        // `CAP * LS * :caps` is a continuation; `CAP * LS :caps` the last.
        let (list, more) = match (a, b) {
            (Some("*"), Some(list)) => (list, true),
            (Some(list), None) => (list, false),
            (Some(_), Some(list)) => (list, false),
            (None, _) => ("", false),
        };
        match sub {
            CapSubCommand::LS => {
                self.cap_ls
                    .extend(list.split_whitespace().map(str::to_string));
                if !more {
                    self.request_caps(out);
                }
            }
            CapSubCommand::ACK => {
                let acked: Vec<String> = list
                    .split_whitespace()
                    .map(|c| c.trim_start_matches(['-', '~', '=']).to_string())
                    .collect();
                self.caps.extend(acked.iter().cloned());
                if self.config.sasl.is_some()
                    && self.caps.contains("sasl")
                    && self.sasl == SaslState::Idle
                {
                    self.sasl = SaslState::Authenticating;
                    out.extend(now_line("AUTHENTICATE PLAIN".into()));
                } else {
                    self.end_cap(out);
                }
            }
            CapSubCommand::NAK => {
                tracing::warn!(caps = %list, "the server refused capabilities");
                self.end_cap(out);
            }
            _ => {}
        }
    }

    fn request_caps(&mut self, out: &mut Vec<Output>) {
        let offered = |name: &str| {
            self.cap_ls
                .iter()
                .find(|c| c.split('=').next() == Some(name))
                .cloned()
        };
        let mut wanted = Vec::new();
        if offered("server-time").is_some() {
            wanted.push("server-time");
        }
        if self.config.sasl.is_some() {
            match offered("sasl") {
                Some(cap) => {
                    let mechs = cap.split_once('=').map(|(_, m)| m.to_ascii_uppercase());
                    if mechs
                        .as_deref()
                        .is_none_or(|m| m.split(',').any(|x| x == "PLAIN"))
                    {
                        wanted.push("sasl");
                    } else {
                        tracing::warn!(
                            mechanisms = %mechs.unwrap_or_default(),
                            "the server offers SASL but not PLAIN; continuing without SASL"
                        );
                    }
                }
                None => tracing::warn!(
                    "the server does not offer SASL; continuing without it{}",
                    if self.config.nickserv_password.is_some() {
                        " (NickServ IDENTIFY will be used)"
                    } else {
                        ""
                    }
                ),
            }
        }
        if wanted.is_empty() {
            self.end_cap(out);
        } else {
            out.extend(now_line(format!("CAP REQ :{}", wanted.join(" "))));
        }
    }

    fn end_cap(&mut self, out: &mut Vec<Output>) {
        if self.cap_negotiating {
            self.cap_negotiating = false;
            out.extend(now_line("CAP END".into()));
        }
    }

    fn on_authenticate(&mut self, data: &str, out: &mut Vec<Output>) {
        if self.sasl != SaslState::Authenticating || data != "+" {
            return;
        }
        let Some(sasl) = &self.config.sasl else {
            return;
        };
        let payload = format!("{0}\0{0}\0{1}", sasl.account, sasl.password.expose());
        let encoded = base64::engine::general_purpose::STANDARD.encode(payload.as_bytes());
        for chunk in encoded.as_bytes().chunks(400) {
            let chunk = String::from_utf8_lossy(chunk);
            out.extend(OutLine::secret(format!("AUTHENTICATE {chunk}")).map(Output::SendNow));
        }
        if encoded.len() % 400 == 0 {
            out.extend(now_line("AUTHENTICATE +".into()));
        }
    }

    fn next_nick(&mut self) -> String {
        self.nick_attempt += 1;
        let alts = &self.config.alt_nicks;
        let i = self.nick_attempt;
        if i <= alts.len() {
            return alts[i - 1].clone();
        }
        let k = i - alts.len();
        if k <= 3 {
            format!("{}{}", self.wanted_nick, "_".repeat(k))
        } else {
            let base: String = self.wanted_nick.chars().take(5).collect();
            format!("{base}{:04}", fastrand::u16(0..10000))
        }
    }

    fn on_numeric(&mut self, code: u16, args: &[String], now: Instant, out: &mut Vec<Output>) {
        let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
        let last = args.last().map(String::as_str).unwrap_or("");
        match code {
            1 => {
                if !arg(0).is_empty() {
                    self.nick = arg(0).to_string();
                }
                if let Some(mask) = last.split_whitespace().last() {
                    if let Some((_, uh)) = mask.split_once('!') {
                        if let Some((u, h)) = uh.split_once('@') {
                            self.user = Some(u.to_string());
                            self.host = Some(h.to_string());
                        }
                    }
                }
                self.phase = Phase::Registered;
                self.cap_negotiating = false;
                self.welcomed_at = Some(now);
                tracing::info!(nick = %self.nick, "registered with the server");
                out.push(Output::Registered);
            }
            5 => {
                for token in args.iter().skip(1).take(args.len().saturating_sub(2)) {
                    self.on_isupport(token);
                }
            }
            // RPL_NAMREPLY: <me> [<symbol>] <channel> :<names>
            353 if args.len() >= 3 => {
                let chan = &args[args.len() - 2];
                let key = self.fold(chan);
                let names: Vec<String> = last
                    .split_whitespace()
                    .map(|n| {
                        let n = n.trim_start_matches(|c| self.isupport.prefix_symbols.contains(c));
                        let n = n.split('!').next().unwrap_or(n);
                        self.fold(n)
                    })
                    .filter(|n| !n.is_empty())
                    .collect();
                if let Some(ch) = self.channels.get_mut(&key) {
                    ch.members.extend(names);
                }
            }
            376 | 422 => self.post_registration(now, out),
            900 => {
                self.logged_in = true;
                tracing::info!(account = %args.get(2).map(String::as_str).unwrap_or(""), "logged in");
                if self.join_at.is_some() {
                    self.join_at = Some(now);
                }
            }
            903 => {
                self.sasl = SaslState::Done;
                self.end_cap(out);
            }
            902 | 904 | 905 | 906 | 907 => {
                if self.sasl == SaslState::Authenticating {
                    tracing::warn!(code, reason = %last, "SASL authentication failed; continuing without it");
                    self.sasl = SaslState::Done;
                }
                self.end_cap(out);
            }
            // A server without CAP: registration goes on without it.
            421 if arg(1).eq_ignore_ascii_case("CAP") => self.cap_negotiating = false,
            431 | 432 | 433 | 436 | 437 if self.phase == Phase::Registering => {
                let next = self.next_nick();
                tracing::info!(code, taken = %arg(1), trying = %next, "nick unavailable");
                self.nick = next.clone();
                out.extend(now_line(format!("NICK {next}")));
            }
            431 | 432 | 433 | 436 | 437 | 438 | 447 if !self.is_channel(arg(1)) => {
                let what = Awaiting::Nick(self.fold(arg(1)));
                let error = Some(format!("{last} ({code})"));
                if self.pending.iter().any(|p| p.what == what) {
                    self.settle(&what, error, out);
                } else {
                    self.settle_first_nick(error, out);
                }
            }
            403 | 405 | 437 | 471 | 473 | 474 | 475 | 476 | 477 | 489 => {
                let chan = arg(1).to_string();
                let key = self.fold(&chan);
                tracing::warn!(channel = %chan, code, reason = %last, "cannot join");
                if self.desired.get(&key).is_some_and(|d| !d.from_config) {
                    self.desired.remove(&key);
                }
                self.settle(
                    &Awaiting::Join(key.clone()),
                    Some(format!("cannot join {chan}: {last} ({code})")),
                    out,
                );
                self.settle(
                    &Awaiting::Part(key),
                    Some(format!("cannot part {chan}: {last} ({code})")),
                    out,
                );
            }
            442 => {
                let chan = arg(1).to_string();
                let key = self.fold(&chan);
                self.settle(
                    &Awaiting::Part(key),
                    Some(format!("not on {chan}: {last} ({code})")),
                    out,
                );
            }
            401 | 404 | 406 | 412 => {
                tracing::warn!(code, target = %arg(1), reason = %last, "the server did not deliver a message");
            }
            _ => {}
        }
    }

    fn on_isupport(&mut self, token: &str) {
        let (key, value) = token.split_once('=').unwrap_or((token, ""));
        match key {
            "CASEMAPPING" => self.isupport.casemapping = CaseMapping::from_isupport(value),
            "CHANTYPES" => self.isupport.chantypes = value.to_string(),
            "STATUSMSG" => self.isupport.statusmsg = value.to_string(),
            "PREFIX" => {
                if let Some((_, symbols)) = value.split_once(')') {
                    self.isupport.prefix_symbols = symbols.to_string();
                }
            }
            "USERLEN" => {
                if let Ok(n) = value.parse() {
                    self.isupport.userlen = n;
                }
            }
            "HOSTLEN" => {
                if let Ok(n) = value.parse() {
                    self.isupport.hostlen = n;
                }
            }
            _ => {}
        }
    }

    /// After the MOTD (or a while after the welcome): IDENTIFY if needed,
    /// then join (right away, or once NickServ answered).
    fn post_registration(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.post_registration_done || self.phase != Phase::Registered {
            return;
        }
        self.post_registration_done = true;
        if !self.logged_in {
            if let Some(pass) = &self.config.nickserv_password {
                out.extend(
                    OutLine::secret(format!("PRIVMSG NickServ :IDENTIFY {}", pass.expose()))
                        .map(Output::Send),
                );
                self.join_at = Some(now + IDENTIFY_WAIT);
                return;
            }
        }
        self.join_desired(out);
    }

    fn join_desired(&mut self, out: &mut Vec<Output>) {
        self.join_at = None;
        let to_join: Vec<Desired> = self
            .desired
            .iter()
            .filter(|(k, _)| !self.channels.contains_key(*k))
            .map(|(_, d)| d.clone())
            .collect();
        for d in to_join {
            out.extend(join_line(&d.name, d.key.as_ref()));
        }
    }

    // ----- events ---------------------------------------------------------

    /// Where a PRIVMSG/NOTICE to `target` was said.
    fn room_for(&self, src: &Source, target: &str) -> SaidIn {
        let status: String = target
            .chars()
            .take_while(|c| self.isupport.statusmsg.contains(*c))
            .collect();
        let rest = &target[status.len()..];
        if self.is_channel(rest) {
            SaidIn {
                room: rest.to_string(),
                private: false,
                status,
            }
        } else {
            SaidIn {
                room: format!("@{}", src.nick),
                private: true,
                status: String::new(),
            }
        }
    }

    fn on_privmsg(
        &mut self,
        src: &Source,
        target: &str,
        text: &str,
        tags: &Map<String, Value>,
        out: &mut Vec<Output>,
    ) {
        let said_in = self.room_for(src, target);
        let (kind, body_text) = match inbound::parse_ctcp(text) {
            Some((cmd, params)) if cmd == "ACTION" => (kinds::ACTION, params.to_string()),
            Some((cmd, params)) => {
                self.answer_ctcp(src, &cmd, params, out);
                return;
            }
            None => (kinds::MESSAGE, text.to_string()),
        };
        let body_text = inbound::maybe_strip(&body_text, self.config.strip_formatting);
        out.push(Output::Event(
            said_in.event(kind, body_text, src, target, tags),
        ));
    }

    fn answer_ctcp(&mut self, src: &Source, cmd: &str, params: &str, out: &mut Vec<Output>) {
        let reply = match cmd {
            "VERSION" => format!("VERSION switchboard-irc {}", env!("CARGO_PKG_VERSION")),
            "PING" => format!(
                "PING {}",
                outbound::truncate(&params.replace('\x01', ""), 300)
            ),
            "CLIENTINFO" => "CLIENTINFO ACTION CLIENTINFO PING VERSION".to_string(),
            _ => {
                tracing::debug!(from = %src.nick, ctcp = %cmd, "ignoring CTCP request");
                return;
            }
        };
        if names::check_nick(&src.nick).is_err() || !self.ctcp_bucket.try_take(Instant::now()) {
            tracing::debug!(from = %src.nick, ctcp = %cmd, "not answering CTCP (rate limit)");
            return;
        }
        out.extend(out_line(format!("NOTICE {} :\x01{reply}\x01", src.nick)));
    }

    fn on_notice(
        &mut self,
        src: &Source,
        target: &str,
        text: &str,
        tags: &Map<String, Value>,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        if self.phase != Phase::Registered || inbound::parse_ctcp(text).is_some() {
            return; // connection notices and CTCP replies are not chat
        }
        if src.nick.eq_ignore_ascii_case("NickServ") && self.join_at.is_some() {
            let t = text.to_ascii_lowercase();
            if t.contains("identified") || t.contains("recognized") || t.contains("logged in") {
                self.join_at = Some(now);
            }
        }
        let body_text = inbound::maybe_strip(text, self.config.strip_formatting);
        let said_in = self.room_for(src, target);
        out.push(Output::Event(said_in.event(
            kinds::NOTICE,
            body_text,
            src,
            target,
            tags,
        )));
    }

    fn on_join(
        &mut self,
        src: &Source,
        chan: &str,
        tags: &Map<String, Value>,
        out: &mut Vec<Output>,
    ) {
        let key = self.fold(chan);
        let me = self.is_me(&src.nick);
        if me {
            self.user = Some(src.user.clone())
                .filter(|u| !u.is_empty())
                .or(self.user.take());
            self.host = Some(src.host.clone())
                .filter(|h| !h.is_empty())
                .or(self.host.take());
            let mut members = HashSet::new();
            members.insert(self.fold(&src.nick));
            self.channels.insert(
                key.clone(),
                Channel {
                    name: chan.to_string(),
                    members,
                },
            );
            tracing::info!(channel = %chan, "joined");
            self.settle(&Awaiting::Join(key), None, out);
        } else {
            let nick = self.fold(&src.nick);
            if let Some(ch) = self.channels.get_mut(&key) {
                ch.members.insert(nick);
            }
        }
        out.push(Output::Event(inbound::presence_event(
            kinds::JOIN,
            chan,
            src,
            None,
            me,
            tags,
        )));
    }

    fn on_part(
        &mut self,
        src: &Source,
        chan: &str,
        reason: Option<&str>,
        tags: &Map<String, Value>,
        out: &mut Vec<Output>,
    ) {
        let key = self.fold(chan);
        let me = self.is_me(&src.nick);
        if me {
            self.channels.remove(&key);
            tracing::info!(channel = %chan, "left");
            self.settle(&Awaiting::Part(key), None, out);
        } else {
            let nick = self.fold(&src.nick);
            if let Some(ch) = self.channels.get_mut(&key) {
                ch.members.remove(&nick);
            }
        }
        let text = reason.map(|r| inbound::maybe_strip(r, self.config.strip_formatting));
        out.push(Output::Event(inbound::presence_event(
            kinds::PART,
            chan,
            src,
            text,
            me,
            tags,
        )));
    }

    fn on_quit(
        &mut self,
        src: &Source,
        reason: Option<&str>,
        tags: &Map<String, Value>,
        out: &mut Vec<Output>,
    ) {
        if self.is_me(&src.nick) {
            return;
        }
        let nick = self.fold(&src.nick);
        let text = reason.map(|r| inbound::maybe_strip(r, self.config.strip_formatting));
        for ch in self.channels.values_mut() {
            if ch.members.remove(&nick) {
                out.push(Output::Event(inbound::presence_event(
                    kinds::QUIT,
                    &ch.name,
                    src,
                    text.clone(),
                    false,
                    tags,
                )));
            }
        }
        self.maybe_regain(&nick, out);
    }

    fn on_nick(
        &mut self,
        src: &Source,
        new: &str,
        tags: &Map<String, Value>,
        out: &mut Vec<Output>,
    ) {
        let old = self.fold(&src.nick);
        let folded_new = self.fold(new);
        let me = self.is_me(&src.nick);
        if me {
            self.nick = new.to_string();
            tracing::info!(nick = %new, "nick changed");
            self.settle(&Awaiting::Nick(folded_new.clone()), None, out);
        }
        for ch in self.channels.values_mut() {
            if ch.members.remove(&old) {
                ch.members.insert(folded_new.clone());
                out.push(Output::Event(inbound::rename_event(
                    &ch.name, src, new, me, tags,
                )));
            }
        }
        if !me {
            self.maybe_regain(&old, out);
        }
    }

    /// Someone holding our wanted nick let go of it: take it.
    fn maybe_regain(&mut self, freed: &str, out: &mut Vec<Output>) {
        if self.phase == Phase::Registered
            && freed == self.fold(&self.wanted_nick)
            && !self.is_me(&self.wanted_nick.clone())
        {
            out.extend(out_line(format!("NICK {}", self.wanted_nick)));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_kick(
        &mut self,
        src: &Source,
        chan: &str,
        target: &str,
        reason: Option<&str>,
        tags: &Map<String, Value>,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let key = self.fold(chan);
        let me = self.is_me(target);
        if me {
            self.channels.remove(&key);
            tracing::warn!(channel = %chan, by = %src.nick, "kicked");
            if self.config.rejoin_on_kick && self.desired.contains_key(&key) {
                self.rejoins.push((now + REJOIN_DELAY, key));
            }
        } else {
            let nick = self.fold(target);
            if let Some(ch) = self.channels.get_mut(&key) {
                ch.members.remove(&nick);
            }
        }
        let text = reason.map(|r| inbound::maybe_strip(r, self.config.strip_formatting));
        out.push(Output::Event(inbound::kick_event(
            chan, src, target, text, me, tags,
        )));
    }

    // ----- confirmations ----------------------------------------------------

    fn expect(&mut self, what: Awaiting, label: String, reply: Option<String>, now: Instant) {
        self.pending.push(PendingAck {
            what,
            label,
            reply,
            deadline: now + CONFIRM_TIMEOUT,
        });
    }

    /// Answers every request waiting for `what` (`error` None = success).
    fn settle(&mut self, what: &Awaiting, error: Option<String>, out: &mut Vec<Output>) {
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| &p.what == what);
        self.pending = keep;
        for p in done {
            if let Some(reply) = p.reply {
                out.push(Output::Ack {
                    reply,
                    result: match &error {
                        None => SendResult::sent(),
                        Some(e) => SendResult::failed(e.clone()),
                    },
                });
            }
        }
    }

    /// A nick error names the nick we asked for; some servers name the
    /// current one instead, so fail the oldest nick request too.
    fn settle_first_nick(&mut self, error: Option<String>, out: &mut Vec<Output>) {
        if let Some(i) = self
            .pending
            .iter()
            .position(|p| matches!(p.what, Awaiting::Nick(_)))
        {
            let what = self.pending[i].what.clone();
            self.settle(&what, error, out);
        }
    }

    // ----- requests from the bus -------------------------------------------

    fn not_connected(&self) -> NotSent {
        NotSent::NotConnected {
            server: self.config.address(),
        }
    }

    /// The lines that send `text` to `room` (`#chan` we are in, or `@nick`).
    ///
    /// # Errors
    ///
    /// Why it cannot be sent: not registered, not in the channel, a bad
    /// room, nothing to send.
    pub fn text_lines(
        &self,
        kind: TextKind,
        room: &str,
        text: &str,
    ) -> Result<Vec<OutLine>, NotSent> {
        if self.phase != Phase::Registered {
            return Err(self.not_connected());
        }
        let target = self.target_for(room)?;
        let user = self.user.clone().unwrap_or_else(|| {
            format!(
                "~{}",
                outbound::truncate(self.config.username(), self.isupport.userlen)
            )
        });
        let host_len = self
            .host
            .as_ref()
            .map_or(self.isupport.hostlen, String::len);
        let prefix = outbound::relay_prefix_len(&self.nick, &user, &"x".repeat(host_len));
        outbound::build_text_lines(kind, &target, text, self.config.max_line_bytes, prefix)
    }

    fn target_for(&self, room: &str) -> Result<String, NotSent> {
        if let Some(nick) = room.strip_prefix('@') {
            names::check_nick(nick).map_err(NotSent::bad_name)?;
            return Ok(nick.to_string());
        }
        if self.is_channel(room) {
            names::check_channel(room, &self.isupport.chantypes).map_err(NotSent::bad_name)?;
            if !self.channels.contains_key(&self.fold(room)) {
                return Err(NotSent::NotJoined {
                    channel: names::excerpt(room).to_string(),
                });
            }
            return Ok(room.to_string());
        }
        Err(NotSent::bad_name(format!(
            "room {:?} is neither a channel (starting with one of {}) nor @nick",
            names::excerpt(room),
            self.isupport.chantypes
        )))
    }

    /// A bus request to join `room` (with `key`). The answer comes when
    /// the server confirms or refuses.
    pub fn join(
        &mut self,
        room: &str,
        key: Option<String>,
        reply: Option<String>,
        now: Instant,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let check = names::check_channel(room, &self.isupport.chantypes)
            .and_then(|()| key.as_deref().map_or(Ok(()), names::check_key));
        if let Err(e) = check {
            ack(&mut out, reply, Err(NotSent::bad_name(e)));
            return out;
        }
        if self.phase != Phase::Registered {
            ack(&mut out, reply, Err(self.not_connected()));
            return out;
        }
        let folded = self.fold(room);
        let key = key.map(Secret::new);
        let entry = self
            .desired
            .entry(folded.clone())
            .or_insert_with(|| Desired {
                name: room.to_string(),
                key: None,
                from_config: false,
            });
        if key.is_some() {
            entry.key = key.clone();
        }
        if self.channels.contains_key(&folded) {
            ack(&mut out, reply, Ok(()));
            return out;
        }
        out.extend(join_line(room, key.as_ref()));
        self.expect(Awaiting::Join(folded), format!("join {room}"), reply, now);
        out
    }

    /// A bus request to leave `room`.
    pub fn part(
        &mut self,
        room: &str,
        reason: Option<String>,
        reply: Option<String>,
        now: Instant,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        if let Err(e) = names::check_channel(room, &self.isupport.chantypes) {
            ack(&mut out, reply, Err(NotSent::bad_name(e)));
            return out;
        }
        let folded = self.fold(room);
        self.desired.remove(&folded);
        if self.phase != Phase::Registered {
            ack(&mut out, reply, Err(self.not_connected()));
            return out;
        }
        if !self.channels.contains_key(&folded) {
            let channel = names::excerpt(room).to_string();
            ack(&mut out, reply, Err(NotSent::NotJoined { channel }));
            return out;
        }
        out.extend(part_line(room, reason.as_deref()));
        self.expect(Awaiting::Part(folded), format!("part {room}"), reply, now);
        out
    }

    /// A bus request to change nick.
    pub fn change_nick(&mut self, nick: &str, reply: Option<String>, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if let Err(e) = names::check_nick(nick) {
            ack(&mut out, reply, Err(NotSent::bad_name(e)));
            return out;
        }
        if self.phase != Phase::Registered {
            ack(&mut out, reply, Err(self.not_connected()));
            return out;
        }
        self.wanted_nick = nick.to_string();
        if self.nick == nick {
            ack(&mut out, reply, Ok(()));
            return out;
        }
        out.extend(out_line(format!("NICK {nick}")));
        let folded = self.fold(nick);
        self.expect(Awaiting::Nick(folded), format!("nick {nick}"), reply, now);
        out
    }

    /// A raw line from the bus (only when `allow_raw`).
    ///
    /// # Errors
    ///
    /// When raw lines are off, or the line is empty, too long or holds CR,
    /// LF or NUL.
    pub fn raw_line(&self, text: &str) -> Result<OutLine, NotSent> {
        if !self.config.allow_raw {
            return Err(NotSent::RawDisabled);
        }
        if self.phase != Phase::Registered {
            return Err(self.not_connected());
        }
        if text.len() + 2 > self.config.max_line_bytes {
            return Err(NotSent::TooLong {
                bytes: text.len(),
                max: self.config.max_line_bytes - 2,
            });
        }
        OutLine::new(text).ok_or(NotSent::BadRawLine)
    }

    /// A new configuration that keeps the connection: joins and parts for
    /// the channel list, a live nick change, the rest applies at once.
    pub fn apply_config(&mut self, new: IrcConfig) -> Vec<Output> {
        let mut out = Vec::new();
        let old_keys: BTreeMap<String, String> = self
            .config
            .channels
            .iter()
            .map(|c| (self.fold(&c.name), c.name.clone()))
            .collect();
        let new_keys: BTreeMap<String, (String, Option<Secret>)> = new
            .channels
            .iter()
            .map(|c| (self.fold(&c.name), (c.name.clone(), c.key.clone())))
            .collect();
        let registered = self.phase == Phase::Registered;
        for (key, name) in &old_keys {
            if !new_keys.contains_key(key) {
                self.desired.remove(key);
                if registered && self.channels.contains_key(key) {
                    out.extend(part_line(name, None));
                }
            }
        }
        for (key, (name, chan_key)) in &new_keys {
            let existed = self.desired.insert(
                key.clone(),
                Desired {
                    name: name.clone(),
                    key: chan_key.clone(),
                    from_config: true,
                },
            );
            if existed.is_none()
                && registered
                && self.post_registration_done
                && !self.channels.contains_key(key)
            {
                out.extend(join_line(name, chan_key.as_ref()));
            }
        }
        if new.nick != self.config.nick {
            self.wanted_nick = new.nick.clone();
            if registered && self.nick != new.nick {
                out.extend(out_line(format!("NICK {}", new.nick)));
            }
        }
        self.config = new;
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

fn ack(out: &mut Vec<Output>, reply: Option<String>, result: Result<(), NotSent>) {
    if let Some(reply) = reply {
        out.push(Output::Ack {
            reply,
            result: match result {
                Ok(()) => SendResult::sent(),
                Err(e) => SendResult::failed(e.to_string()),
            },
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(extra: Value) -> IrcConfig {
        let mut base = json!({"server": "irc.test", "nick": "bot", "channels": ["#a"]});
        if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
            b.extend(e);
        }
        serde_json::from_value(base).unwrap()
    }

    fn sent(out: &[Output]) -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send(l) | Output::SendNow(l) => Some(l.as_str().to_string()),
                _ => None,
            })
            .collect()
    }

    fn events(out: &[Output]) -> Vec<&InboundEvent> {
        out.iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn feed(c: &mut Client, lines: &[&str]) -> Vec<Output> {
        let now = Instant::now();
        lines.iter().flat_map(|l| c.handle_line(l, now)).collect()
    }

    /// A client through registration and in #a.
    fn registered(extra: Value) -> Client {
        let mut c = Client::new(config(extra), Instant::now());
        c.on_connect(Instant::now());
        feed(
            &mut c,
            &[
                ":irc.test CAP * LS :multi-prefix",
                ":irc.test 001 bot :Welcome bot!~bot@host.test",
                ":irc.test 005 bot CHANTYPES=# PREFIX=(ov)@+ STATUSMSG=@+ CASEMAPPING=rfc1459 :are supported",
                ":irc.test 376 bot :End of MOTD",
                ":bot!~bot@host.test JOIN #a",
                ":irc.test 353 bot = #a :bot @alice +bob",
            ],
        );
        c
    }

    #[test]
    fn registration_lines() {
        let mut c = Client::new(config(json!({"password": "pw"})), Instant::now());
        let out = c.on_connect(Instant::now());
        assert_eq!(
            sent(&out),
            [
                "CAP LS 302",
                "PASS pw",
                "NICK bot",
                "USER bot 0 * :Switchboard IRC operator"
            ]
        );
        let out = feed(&mut c, &[":irc.test CAP * LS :multi-prefix server-time"]);
        assert_eq!(sent(&out), ["CAP REQ :server-time"]);
        let out = feed(&mut c, &[":irc.test CAP * ACK :server-time"]);
        assert_eq!(sent(&out), ["CAP END"]);
        let out = feed(
            &mut c,
            &[":irc.test 001 bot :Welcome", ":irc.test 376 bot :End"],
        );
        assert!(out.contains(&Output::Registered));
        assert_eq!(sent(&out), ["JOIN #a"]);
    }

    #[test]
    fn sasl_plain_flow() {
        let mut c = Client::new(
            config(json!({"sasl": {"account": "acc", "password": "pw"}})),
            Instant::now(),
        );
        c.on_connect(Instant::now());
        let out = feed(
            &mut c,
            &[
                ":s CAP * LS * :multi-prefix",
                ":s CAP * LS :sasl=PLAIN,EXTERNAL",
            ],
        );
        assert_eq!(sent(&out), ["CAP REQ :sasl"]);
        let out = feed(&mut c, &[":s CAP bot ACK :sasl"]);
        assert_eq!(sent(&out), ["AUTHENTICATE PLAIN"]);
        let out = feed(&mut c, &["AUTHENTICATE +"]);
        // base64("acc\0acc\0pw")
        assert_eq!(sent(&out), ["AUTHENTICATE YWNjAGFjYwBwdw=="]);
        let out = feed(
            &mut c,
            &[":s 900 bot bot!u@h acc :logged in", ":s 903 bot :ok"],
        );
        assert_eq!(sent(&out), ["CAP END"]);
        assert!(c.logged_in());
    }

    #[test]
    fn sasl_not_offered_ends_negotiation_and_falls_back_to_nickserv() {
        let mut c = Client::new(
            config(
                json!({"sasl": {"account": "acc", "password": "pw"}, "nickserv_password": "nspw"}),
            ),
            Instant::now(),
        );
        c.on_connect(Instant::now());
        let out = feed(&mut c, &[":s CAP * LS :multi-prefix"]);
        assert_eq!(sent(&out), ["CAP END"]);
        let out = feed(&mut c, &[":s 001 bot :hi", ":s 422 bot :no motd"]);
        assert_eq!(sent(&out), ["PRIVMSG NickServ :IDENTIFY nspw"]);
        // Joins wait for NickServ.
        let out = feed(
            &mut c,
            &[":NickServ!s@services NOTICE bot :You are now identified for bot."],
        );
        let later = c.tick(Instant::now());
        assert!(sent(&out).is_empty());
        assert_eq!(sent(&later), ["JOIN #a"]);
    }

    #[test]
    fn sasl_failure_continues() {
        let mut c = Client::new(
            config(json!({"sasl": {"account": "acc", "password": "bad"}})),
            Instant::now(),
        );
        c.on_connect(Instant::now());
        feed(
            &mut c,
            &[
                ":s CAP * LS :sasl",
                ":s CAP bot ACK :sasl",
                "AUTHENTICATE +",
            ],
        );
        let out = feed(&mut c, &[":s 904 bot :SASL authentication failed"]);
        assert_eq!(sent(&out), ["CAP END"]);
        assert!(!c.logged_in());
    }

    #[test]
    fn nick_collision_uses_alternates() {
        let mut c = Client::new(config(json!({"alt_nicks": ["bot2"]})), Instant::now());
        c.on_connect(Instant::now());
        let out = feed(&mut c, &[":s 433 * bot :Nickname is already in use"]);
        assert_eq!(sent(&out), ["NICK bot2"]);
        let out = feed(&mut c, &[":s 433 * bot2 :Nickname is already in use"]);
        assert_eq!(sent(&out), ["NICK bot_"]);
        let out = feed(&mut c, &[":s 432 * bot_ :Erroneous"]);
        assert_eq!(sent(&out), ["NICK bot__"]);
        feed(&mut c, &[":s 001 bot__ :Welcome"]);
        assert_eq!(c.nick(), "bot__");
        // The holder of our nick leaves: take it back.
        feed(
            &mut c,
            &[
                ":s 376 bot__ :End",
                ":bot__!u@h JOIN #a",
                ":s 353 bot__ = #a :bot__ bot",
            ],
        );
        let out = feed(&mut c, &[":bot!u@h QUIT :bye"]);
        assert_eq!(sent(&out), ["NICK bot"]);
    }

    #[test]
    fn channel_message_event() {
        let mut c = registered(json!({}));
        let out = feed(
            &mut c,
            &["@time=2024-05-01T12:00:00.000Z :alice!~a@a.host PRIVMSG #a :hello \x02world\x02"],
        );
        let ev = events(&out);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].room, "#a");
        assert_eq!(ev[0].kind, "message");
        assert_eq!(ev[0].body["text"], "hello \x02world\x02");
        assert_eq!(ev[0].body["sender"], "alice");
        assert_eq!(ev[0].body["private"], false);
        assert_eq!(ev[0].body["host"], "a.host");
        assert_eq!(ev[0].body["tags"]["time"], "2024-05-01T12:00:00.000Z");
        assert_eq!(
            ev[0].timestamp.as_ref().unwrap().to_string(),
            "2024-05-01T12:00:00.000000Z"
        );
    }

    #[test]
    fn private_action_notice_and_strip() {
        let mut c = registered(json!({"strip_formatting": true}));
        let out = feed(
            &mut c,
            &[
                ":alice!a@h PRIVMSG bot :\x0304hi\x03 there",
                ":alice!a@h PRIVMSG #a :\x01ACTION waves\x01",
                ":alice!a@h NOTICE @#a :ops only",
                ":irc.test NOTICE bot :*** server notice",
            ],
        );
        let ev = events(&out);
        assert_eq!(ev.len(), 3);
        assert_eq!((ev[0].room.as_str(), ev[0].kind), ("@alice", "message"));
        assert_eq!(ev[0].body["text"], "hi there");
        assert_eq!(ev[0].body["private"], true);
        assert_eq!((ev[1].room.as_str(), ev[1].kind), ("#a", "action"));
        assert_eq!(ev[1].body["text"], "waves");
        assert_eq!((ev[2].room.as_str(), ev[2].kind), ("#a", "notice"));
        assert_eq!(ev[2].body["status"], "@");
    }

    #[test]
    fn ctcp_version_and_ping_are_answered() {
        let mut c = registered(json!({}));
        let out = feed(
            &mut c,
            &[
                ":alice!a@h PRIVMSG bot :\x01VERSION\x01",
                ":alice!a@h PRIVMSG bot :\x01PING 12345\x01",
            ],
        );
        assert!(events(&out).is_empty());
        let lines = sent(&out);
        assert!(lines[0].starts_with("NOTICE alice :\x01VERSION switchboard-irc "));
        assert_eq!(lines[1], "NOTICE alice :\x01PING 12345\x01");
    }

    #[test]
    fn quit_and_nick_fan_out_to_shared_channels() {
        let mut c = registered(json!({}));
        feed(
            &mut c,
            &[":bot!~bot@host.test JOIN #b", ":s 353 bot = #b :bot alice"],
        );
        let out = feed(&mut c, &[":alice!a@h NICK alicia"]);
        let rooms: Vec<_> = events(&out)
            .iter()
            .map(|e| (e.room.clone(), e.kind))
            .collect();
        assert_eq!(
            rooms,
            [("#a".to_string(), "nick"), ("#b".to_string(), "nick")]
        );
        assert_eq!(events(&out)[0].body["new_name"], "alicia");
        let out = feed(&mut c, &[":bob!b@h QUIT :gone"]);
        let ev = events(&out);
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].room.as_str(), ev[0].kind), ("#a", "quit"));
        assert_eq!(ev[0].body["text"], "gone");
        // Someone we share no channel with: nothing.
        assert!(events(&feed(&mut c, &[":zed!z@h QUIT :x"])).is_empty());
    }

    #[test]
    fn join_part_kick_topic_events() {
        let mut c = registered(json!({"rejoin_on_kick": true}));
        let out = feed(
            &mut c,
            &[
                ":carol!c@h JOIN #a",
                ":carol!c@h PART #a :later",
                ":alice!a@h TOPIC #a :new topic",
                ":alice!a@h KICK #a bot :out",
            ],
        );
        let ev = events(&out);
        let kinds: Vec<_> = ev.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["join", "part", "topic", "kick"]);
        assert_eq!(ev[1].body["text"], "later");
        assert_eq!(ev[2].body["text"], "new topic");
        assert_eq!(ev[3].body["target"], "bot");
        assert_eq!(ev[3].body["self"], true);
        assert!(c.joined_channels().is_empty());
        let later = c.tick(Instant::now() + REJOIN_DELAY);
        assert_eq!(sent(&later), ["JOIN #a"]);
    }

    #[test]
    fn join_request_is_confirmed_or_refused() {
        let mut c = registered(json!({}));
        let now = Instant::now();
        let out = c.join("#b", None, Some("r1".into()), now);
        assert_eq!(sent(&out), ["JOIN #b"]);
        let out = feed(&mut c, &[":bot!~bot@host.test JOIN #b"]);
        assert!(out.contains(&Output::Ack {
            reply: "r1".into(),
            result: SendResult::sent()
        }));
        let out = c.join("#c", Some("k".into()), Some("r2".into()), now);
        assert_eq!(sent(&out), ["JOIN #c k"]);
        let out = feed(&mut c, &[":s 475 bot #c :Cannot join channel (+k)"]);
        assert!(matches!(&out[..], [Output::Ack { result, .. }] if !result.ok));
        // Already in: ok at once.
        let out = c.join("#a", None, Some("r3".into()), now);
        assert_eq!(
            out,
            vec![Output::Ack {
                reply: "r3".into(),
                result: SendResult::sent()
            }]
        );
        // Bad names never reach the wire.
        let out = c.join("#a,#b", None, Some("r4".into()), now);
        assert!(sent(&out).is_empty());
        let out = c.join("#x", Some("a b".into()), Some("r5".into()), now);
        assert!(sent(&out).is_empty());
        // No answer: timeout.
        c.join("#slow", None, Some("r6".into()), now);
        let out = c.tick(now + CONFIRM_TIMEOUT);
        assert!(matches!(&out[..], [Output::Ack { reply, result }] if reply == "r6" && !result.ok));
    }

    #[test]
    fn part_and_nick_requests() {
        let mut c = registered(json!({}));
        let now = Instant::now();
        let out = c.part("#zzz", None, Some("p0".into()), now);
        assert!(matches!(&out[..], [Output::Ack { result, .. }] if !result.ok));
        let out = c.part("#a", Some("bye\r\nQUIT".into()), Some("p1".into()), now);
        assert_eq!(sent(&out), ["PART #a :bye  QUIT"]);
        let out = feed(&mut c, &[":bot!~bot@host.test PART #a :bye  QUIT"]);
        assert!(out.contains(&Output::Ack {
            reply: "p1".into(),
            result: SendResult::sent()
        }));
        let out = c.change_nick("newbot", Some("n1".into()), now);
        assert_eq!(sent(&out), ["NICK newbot"]);
        let out = feed(&mut c, &[":s 433 bot newbot :Nickname is already in use"]);
        assert!(matches!(&out[..], [Output::Ack { result, .. }] if !result.ok));
        c.change_nick("newbot2", Some("n2".into()), now);
        let out = feed(&mut c, &[":bot!~bot@host.test NICK newbot2"]);
        assert!(out.contains(&Output::Ack {
            reply: "n2".into(),
            result: SendResult::sent()
        }));
        assert_eq!(c.nick(), "newbot2");
    }

    #[test]
    fn text_requests_check_the_room() {
        let c = registered(json!({}));
        assert!(c.text_lines(TextKind::Message, "#a", "hi").is_ok());
        assert_eq!(
            c.text_lines(TextKind::Message, "#nope", "hi")
                .unwrap_err()
                .to_string(),
            "not joined to #nope"
        );
        assert!(c.text_lines(TextKind::Message, "@alice", "hi").is_ok());
        assert!(c.text_lines(TextKind::Message, "@a b", "hi").is_err());
        assert!(c.text_lines(TextKind::Message, "@a,b", "hi").is_err());
        assert!(c.text_lines(TextKind::Message, "plain", "hi").is_err());
        let lines = c
            .text_lines(TextKind::Message, "#a", "x\r\nQUIT :y")
            .unwrap();
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.as_str().starts_with("PRIVMSG #a :")));
    }

    #[test]
    fn raw_lines_need_permission() {
        let c = registered(json!({}));
        assert!(c.raw_line("MODE bot +i").is_err());
        let c = registered(json!({"allow_raw": true}));
        assert!(c.raw_line("MODE bot +i").is_ok());
        assert!(c.raw_line("MODE bot +i\r\nQUIT").is_err());
    }

    #[test]
    fn reload_diffs_channels_and_nick() {
        let mut c = registered(json!({}));
        let out = c.apply_config(config(json!({"nick": "bot2", "channels": ["#b"]})));
        assert_eq!(sent(&out), ["PART #a", "JOIN #b", "NICK bot2"]);
    }

    #[test]
    fn disconnect_fails_pending_requests() {
        let mut c = registered(json!({}));
        c.join("#b", None, Some("r".into()), Instant::now());
        let out = c.on_disconnect("reset");
        assert!(matches!(&out[..], [Output::Ack { result, .. }] if !result.ok));
        assert!(!c.is_registered());
        // Reconnect rejoins what we wanted (config and bus joins).
        c.on_connect(Instant::now());
        let out = feed(&mut c, &[":s 001 bot :hi", ":s 376 bot :end"]);
        assert_eq!(sent(&out), ["JOIN #a", "JOIN #b"]);
    }

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
