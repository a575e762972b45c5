//! The lines the bridge recently asked each room to say, so that a
//! protocol that shows a bot its own posts (a relay echoing a published
//! event, an IRC server with `echo-message`) cannot make the bridge relay
//! its own copy back: the protocol operator publishes such an echo as an
//! ordinary event, without the `bridge-origin` header, under the bot's
//! account.

use std::collections::{HashMap, VecDeque};

use switchboard_proto::ChatAddress;

/// How many recent lines are remembered per room. Enough for a
/// gateway's queue to drain into a slow protocol; older ones are
/// forgotten (an echo that late would be relayed once, never looped
/// forever, since the copy of a copy is recognised the same way).
pub const PER_ROOM: usize = 1024;

/// Recently sent lines per room.
#[derive(Debug, Default)]
pub struct Echoes {
    rooms: HashMap<ChatAddress, VecDeque<String>>,
}

impl Echoes {
    /// Remember that `text` (each of its lines) was sent to `room`.
    pub fn sent(&mut self, room: &ChatAddress, text: &str) {
        let lines = self.rooms.entry(room.clone()).or_default();
        for line in text.lines() {
            if lines.len() == PER_ROOM {
                lines.pop_front();
            }
            lines.push_back(line.to_owned());
        }
    }

    /// Whether `text` said in `room` is an echo of a line the bridge sent
    /// there; the line is forgotten, so a person who later says the same
    /// words is relayed.
    pub fn is_echo(&mut self, room: &ChatAddress, text: &str) -> bool {
        let Some(lines) = self.rooms.get_mut(room) else {
            return false;
        };
        match lines.iter().position(|l| l == text) {
            Some(i) => {
                lines.remove(i);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_is_recognised_once_per_line_sent() {
        let a = ChatAddress::new("nostr", "n", "#a");
        let b = ChatAddress::new("irc", "b", "#b");
        let mut e = Echoes::default();
        e.sent(&a, "<ann@irc> one\n<ann@irc> two");
        assert!(!e.is_echo(&b, "<ann@irc> one"), "another room");
        assert!(e.is_echo(&a, "<ann@irc> two"));
        assert!(e.is_echo(&a, "<ann@irc> one"));
        assert!(!e.is_echo(&a, "<ann@irc> one"), "once only");
        for i in 0..=PER_ROOM {
            e.sent(&a, &i.to_string());
        }
        assert!(!e.is_echo(&a, "0"), "the oldest was forgotten");
        assert!(e.is_echo(&a, &PER_ROOM.to_string()));
    }
}
