//! Events from the server: messages (PRIVMSG, NOTICE, CTCP) and channel
//! membership (JOIN, PART, QUIT, NICK, KICK), published per room.

use std::collections::HashSet;
use std::time::Instant;

use serde_json::{Map, Value};
use switchboard_bus::proto::kinds;

use super::{out_line, Awaiting, Channel, Client, Output, Phase, REJOIN_DELAY};
use crate::inbound::{self, InboundEvent, Source};
use crate::{names, outbound};

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

impl Client {
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

    pub(super) fn on_privmsg(
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

    pub(super) fn answer_ctcp(
        &mut self,
        src: &Source,
        cmd: &str,
        params: &str,
        out: &mut Vec<Output>,
    ) {
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

    pub(super) fn on_notice(
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

    pub(super) fn on_join(
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

    pub(super) fn on_part(
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

    pub(super) fn on_quit(
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

    pub(super) fn on_nick(
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
    pub(super) fn maybe_regain(&mut self, freed: &str, out: &mut Vec<Output>) {
        if self.phase == Phase::Registered
            && freed == self.fold(&self.wanted_nick)
            && !self.is_me(&self.wanted_nick.clone())
        {
            out.extend(out_line(format!("NICK {}", self.wanted_nick)));
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_kick(
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
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{events, feed, registered, sent};
    use super::*;
    use serde_json::json;

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
}
