//! Requests from the bus (text, join, part, nick, raw lines, reload) and
//! their confirmations: a request waits for the server's answer, then acks.

use std::collections::BTreeMap;
use std::time::Instant;

use switchboard_bus::proto::SendResult;

use super::{
    join_line, out_line, part_line, Awaiting, Client, Desired, Output, PendingAck, Phase,
    CONFIRM_TIMEOUT,
};
use crate::config::{IrcConfig, Secret};
use crate::line::OutLine;
use crate::names;
use crate::outbound::{self, NotSent, TextKind};

impl Client {
    pub(super) fn expect(
        &mut self,
        what: Awaiting,
        label: String,
        reply: Option<String>,
        now: Instant,
    ) {
        self.pending.push(PendingAck {
            what,
            label,
            reply,
            deadline: now + CONFIRM_TIMEOUT,
        });
    }

    /// Answers every request waiting for `what` (`error` None = success).
    pub(super) fn settle(&mut self, what: &Awaiting, error: Option<String>, out: &mut Vec<Output>) {
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
    pub(super) fn settle_first_nick(&mut self, error: Option<String>, out: &mut Vec<Output>) {
        if let Some(i) = self
            .pending
            .iter()
            .position(|p| matches!(p.what, Awaiting::Nick(_)))
        {
            let what = self.pending[i].what.clone();
            self.settle(&what, error, out);
        }
    }

    pub(super) fn not_connected(&self) -> NotSent {
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

    pub(super) fn target_for(&self, room: &str) -> Result<String, NotSent> {
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
}

pub(super) fn ack(out: &mut Vec<Output>, reply: Option<String>, result: Result<(), NotSent>) {
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

#[cfg(test)]
mod tests {
    use super::super::test_util::{config, feed, registered, sent};
    use super::*;
    use serde_json::json;

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
}
