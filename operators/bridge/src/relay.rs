//! What one chat event becomes in a gateway: the envelopes to send, or
//! why nothing is sent. Pure, so the loop rules are unit-tested here.

use base64::Engine as _;
use serde_json::{Map, Value};
use switchboard_proto::chat::kinds;
use switchboard_proto::{headers, ChatAddress, ChatEvent, Envelope};

use crate::config::Gateway;

/// Header on every envelope the bridge sends: the original envelope's id
/// and the room it was said in (`<id> <protocol>/<instance>/<room>`). An
/// event carrying it is a relayed copy and is never relayed again, so two
/// bridges (or a protocol that shows the bot its own posts) cannot
/// ping-pong.
pub const ORIGIN_HEADER: &str = "bridge-origin";

/// One envelope to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// `send.<protocol>.<instance>.<room>.message`.
    pub subject: String,
    /// From the bridge, with a deterministic id.
    pub envelope: Envelope,
    /// The room it goes to.
    pub to: ChatAddress,
}

impl Outgoing {
    /// The text it asks the room to say.
    pub fn text(&self) -> &str {
        self.envelope.body["text"].as_str().unwrap_or_default()
    }
}

/// Why an event is not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The bridge's own envelope.
    Own,
    /// It carries [`ORIGIN_HEADER`]: already a relayed copy.
    Relayed,
    /// A kind this gateway does not relay (or about the bot itself).
    Kind,
    /// Not from a member this gateway reads.
    NotMember,
    /// Nothing to say (empty text).
    Empty,
}

/// The envelopes `event` becomes in `gateway`, for the bridge `source`.
///
/// # Errors
///
/// [`Skip`] when nothing is sent, and why.
pub fn relay(
    gateway: &Gateway,
    event: &ChatEvent<'_>,
    source: &str,
) -> Result<Vec<Outgoing>, Skip> {
    let envelope = event.envelope();
    if envelope.source == source {
        return Err(Skip::Own);
    }
    if envelope.header(ORIGIN_HEADER).is_some() {
        return Err(Skip::Relayed);
    }
    let from = event.address();
    if !gateway
        .members
        .iter()
        .any(|m| m.direction.reads() && m.address() == from)
    {
        return Err(Skip::NotMember);
    }
    let text = text(gateway, event)?;
    let original_id = envelope.id();
    let origin = format!(
        "{} {}/{}/{}",
        original_id.unwrap_or("-"),
        from.protocol,
        from.instance,
        from.room
    );
    Ok(gateway
        .members
        .iter()
        .filter(|m| m.direction.writes())
        .map(|m| m.address())
        // Never back into the room it came from.
        .filter(|to| *to != from)
        .map(|to| {
            let subject = to.send_subject(kinds::MESSAGE);
            let mut body = Map::with_capacity(1);
            body.insert("text".to_owned(), Value::String(text.clone()));
            let envelope = Envelope::new(source, Value::Object(body));
            // Without an original id there is nothing two bridges share:
            // the copy keeps its fresh id rather than one that every
            // id-less message to this room would get.
            let envelope = match original_id {
                Some(id) => envelope.with_header(headers::ID, relayed_id(id, &subject)),
                None => envelope,
            }
            .with_header(headers::ROOM, to.room.as_str())
            .with_header(ORIGIN_HEADER, origin.as_str());
            Outgoing {
                subject,
                envelope,
                to,
            }
        })
        .collect())
}

/// The text for the target rooms, or [`Skip`].
fn text(gateway: &Gateway, event: &ChatEvent<'_>) -> Result<String, Skip> {
    let from = event.address();
    let fill = |template: &str, text: &str| {
        template
            .replace("{nick}", event.sender())
            .replace("{protocol}", &from.protocol)
            .replace("{instance}", &from.instance)
            .replace("{room}", &from.room)
            .replace("{text}", text)
    };
    match event.kind() {
        kinds::MESSAGE => {
            // Each line gets the format, so a multi-line message split by
            // the receiving operator still says who wrote every line.
            let lines: Vec<String> = event
                .text()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| fill(&gateway.format, l))
                .collect();
            if lines.is_empty() {
                return Err(Skip::Empty);
            }
            Ok(lines.join("\n"))
        }
        kinds::JOIN | kinds::PART | kinds::QUIT if gateway.relay_joins => {
            if event.field("self") == Some(&Value::Bool(true)) {
                return Err(Skip::Kind);
            }
            let verb = if event.kind() == kinds::JOIN {
                "joined"
            } else {
                "left"
            };
            Ok(fill(
                &format!("*** {{nick}}@{{protocol}} {verb} {{room}}"),
                "",
            ))
        }
        _ => Err(Skip::Kind),
    }
}

/// The id of the copy of envelope `original_id` sent on `subject`: the
/// same for every bridge that relays it there, so the receiving
/// operator's dedupe (and the durable stream's) keeps one.
pub fn relayed_id(original_id: &str, subject: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"switchboard-bridge\0");
    ctx.update(original_id.as_bytes());
    ctx.update(b"\0");
    ctx.update(subject.as_bytes());
    let digest = ctx.finish();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
}

/// The kinds a gateway subscribes to in its `in`/`inout` members.
pub fn kinds_for(gateway: &Gateway) -> &'static [&'static str] {
    if gateway.relay_joins {
        &[kinds::MESSAGE, kinds::JOIN, kinds::PART, kinds::QUIT]
    } else {
        &[kinds::MESSAGE]
    }
}

/// The rooms a gateway reads.
pub fn read_rooms(gateway: &Gateway) -> impl Iterator<Item = ChatAddress> + '_ {
    gateway
        .members
        .iter()
        .filter(|m| m.direction.reads())
        .map(|m| m.address())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BridgeConfig;
    use serde_json::json;

    fn gateway(extra: Value) -> Gateway {
        let mut g = json!({
            "name": "g",
            "members": [
                {"protocol": "irc", "instance": "a", "room": "#a"},
                {"protocol": "irc", "instance": "b", "room": "#b"},
                {"protocol": "irc", "instance": "c", "room": "#c", "direction": "in"},
                {"protocol": "irc", "instance": "d", "room": "#d", "direction": "out"},
            ]
        });
        if let (Value::Object(g), Value::Object(e)) = (&mut g, extra) {
            g.extend(e);
        }
        let c: BridgeConfig = serde_json::from_value(json!({"gateways": [g]})).unwrap();
        c.check().unwrap();
        c.gateways[0].clone()
    }

    fn said(instance: &str, room: &str, kind: &str, body: Value) -> (String, Envelope) {
        let a = ChatAddress::new("irc", instance, room);
        (
            a.event_subject(kind),
            Envelope::new(format!("irc-{instance}"), body).with_header(headers::ROOM, room),
        )
    }

    #[test]
    fn a_message_goes_to_every_other_writable_member_once() {
        let g = gateway(json!({}));
        let (s, e) = said("a", "#a", "message", json!({"sender": "ann", "text": "hi"}));
        let out = relay(&g, &ChatEvent::parse(&s, &e).unwrap(), "bridge").unwrap();
        let subjects: Vec<_> = out.iter().map(|o| o.subject.as_str()).collect();
        // Not #a (where it was said), not #c (in only).
        assert_eq!(
            subjects,
            ["send.irc.b.=23b.message", "send.irc.d.=23d.message"]
        );
        for o in &out {
            assert_eq!(o.envelope.body["text"], "<ann@irc> hi");
            assert_eq!(o.envelope.source, "bridge");
            assert_eq!(
                o.envelope.header(ORIGIN_HEADER).unwrap(),
                format!("{} irc/a/#a", e.id().unwrap())
            );
            assert_eq!(
                o.envelope.id().unwrap(),
                relayed_id(e.id().unwrap(), &o.subject)
            );
        }
        assert_ne!(out[0].envelope.id(), out[1].envelope.id());
        // An out-only member is not read.
        let (s, e) = said("d", "#d", "message", json!({"sender": "x", "text": "hi"}));
        let err = relay(&g, &ChatEvent::parse(&s, &e).unwrap(), "bridge").unwrap_err();
        assert_eq!(err, Skip::NotMember);
    }

    #[test]
    fn the_same_event_gives_the_same_ids_in_two_bridges() {
        let g = gateway(json!({}));
        let (s, e) = said("a", "#a", "message", json!({"sender": "ann", "text": "hi"}));
        let chat = ChatEvent::parse(&s, &e).unwrap();
        let one = relay(&g, &chat, "bridge-1").unwrap();
        let two = relay(&g, &chat, "bridge-2").unwrap();
        assert_eq!(one[0].envelope.id(), two[0].envelope.id());
        assert_eq!(one[0].envelope.body, two[0].envelope.body);
        // Envelopes without an id: copies get fresh, different ids.
        let mut bare = e.clone();
        bare.headers.remove(headers::ID);
        let chat = ChatEvent::parse(&s, &bare).unwrap();
        let one = relay(&g, &chat, "bridge").unwrap();
        let two = relay(&g, &chat, "bridge").unwrap();
        assert!(one[0].envelope.id().is_some());
        assert_ne!(one[0].envelope.id(), two[0].envelope.id());
        assert!(one[0]
            .envelope
            .header(ORIGIN_HEADER)
            .unwrap()
            .starts_with("- "));
    }

    #[test]
    fn loops_and_echoes_are_refused() {
        let g = gateway(json!({}));
        let (s, e) = said("a", "#a", "message", json!({"sender": "ann", "text": "hi"}));
        let own = Envelope::new("bridge", e.body.clone());
        assert_eq!(
            relay(&g, &ChatEvent::parse(&s, &own).unwrap(), "bridge").unwrap_err(),
            Skip::Own
        );
        let copy = e.clone().with_header(ORIGIN_HEADER, "x irc/b/#b");
        assert_eq!(
            relay(&g, &ChatEvent::parse(&s, &copy).unwrap(), "bridge").unwrap_err(),
            Skip::Relayed
        );
        let (s, e) = said(
            "a",
            "#a",
            "message",
            json!({"sender": "ann", "text": " \n "}),
        );
        assert_eq!(
            relay(&g, &ChatEvent::parse(&s, &e).unwrap(), "bridge").unwrap_err(),
            Skip::Empty
        );
    }

    #[test]
    fn format_and_joins() {
        let g =
            gateway(json!({"format": "[{instance}{room}] {nick}: {text}", "relay_joins": true}));
        let (s, e) = said(
            "a",
            "#a",
            "message",
            json!({"sender": "ann", "text": "one\ntwo"}),
        );
        let out = relay(&g, &ChatEvent::parse(&s, &e).unwrap(), "bridge").unwrap();
        assert_eq!(
            out[0].envelope.body["text"],
            "[a#a] ann: one\n[a#a] ann: two"
        );
        let (s, e) = said("a", "#a", "join", json!({"sender": "ann"}));
        let out = relay(&g, &ChatEvent::parse(&s, &e).unwrap(), "bridge").unwrap();
        assert_eq!(out[0].envelope.body["text"], "*** ann@irc joined #a");
        let (s, e) = said("a", "#a", "join", json!({"sender": "bot", "self": true}));
        assert_eq!(
            relay(&g, &ChatEvent::parse(&s, &e).unwrap(), "bridge").unwrap_err(),
            Skip::Kind
        );
        let g = gateway(json!({}));
        let (s, e) = said("a", "#a", "join", json!({"sender": "ann"}));
        assert_eq!(
            relay(&g, &ChatEvent::parse(&s, &e).unwrap(), "bridge").unwrap_err(),
            Skip::Kind
        );
    }
}
