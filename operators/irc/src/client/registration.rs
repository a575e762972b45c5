//! Registration: capability negotiation, SASL PLAIN, nick collisions,
//! the numerics (welcome, ISUPPORT, NAMES, MOTD, errors) and NickServ,
//! then joining the wanted channels.

use std::time::Instant;

use base64::Engine as _;
use irc_proto::CapSubCommand;

use super::{
    join_line, now_line, Awaiting, Client, Desired, Output, Phase, SaslState, IDENTIFY_WAIT,
};
use crate::line::OutLine;
use crate::names::CaseMapping;

impl Client {
    pub(super) fn on_cap(
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

    pub(super) fn request_caps(&mut self, out: &mut Vec<Output>) {
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

    pub(super) fn end_cap(&mut self, out: &mut Vec<Output>) {
        if self.cap_negotiating {
            self.cap_negotiating = false;
            out.extend(now_line("CAP END".into()));
        }
    }

    pub(super) fn on_authenticate(&mut self, data: &str, out: &mut Vec<Output>) {
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

    pub(super) fn next_nick(&mut self) -> String {
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

    pub(super) fn on_numeric(
        &mut self,
        code: u16,
        args: &[String],
        now: Instant,
        out: &mut Vec<Output>,
    ) {
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

    pub(super) fn on_isupport(&mut self, token: &str) {
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
    pub(super) fn post_registration(&mut self, now: Instant, out: &mut Vec<Output>) {
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

    pub(super) fn join_desired(&mut self, out: &mut Vec<Output>) {
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
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{config, feed, sent};
    use super::*;
    use serde_json::json;

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
}
