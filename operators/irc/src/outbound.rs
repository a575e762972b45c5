//! Outbound text: sanitising and splitting into lines that fit.
//!
//! The server relays our `PRIVMSG target :text` to others as
//! `:nick!user@host PRIVMSG target :text\r\n`, and drops whatever goes past
//! its line limit (512 bytes, CR LF included). So the room for text is the
//! limit minus that prefix, the command, the target and the CR LF.
//! [`split_text`] cuts at UTF-8 boundaries, preferring the last space.

use crate::line::OutLine;

/// What kind of text line to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// `PRIVMSG`.
    Message,
    /// `PRIVMSG` with a CTCP `ACTION` (`/me`).
    Action,
    /// `NOTICE`.
    Notice,
}

impl TextKind {
    fn command(self) -> &'static str {
        match self {
            TextKind::Message | TextKind::Action => "PRIVMSG",
            TextKind::Notice => "NOTICE",
        }
    }
}

/// Bytes of the prefix the server adds when it relays our lines:
/// `:nick!user@host ` (colon, `!`, `@` and the trailing space).
pub fn relay_prefix_len(nick: &str, user: &str, host: &str) -> usize {
    nick.len() + user.len() + host.len() + 4
}

/// The smallest room for text we accept; below it the target or prefix is
/// absurdly long.
const MIN_TEXT_BYTES: usize = 16;

/// Cuts `text` (a single line) into pieces of at most `max` bytes (`max` >=
/// 4), at UTF-8 boundaries. A piece ends at the last space if there is one
/// in its second half (the space itself is dropped); otherwise the text is
/// cut mid-word.
pub fn split_text(text: &str, max: usize) -> Vec<&str> {
    let max = max.max(4);
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let bytes = rest.as_bytes();
        let space = if bytes[cut] == b' ' {
            Some(cut)
        } else {
            rest[..cut].rfind(' ')
        };
        match space {
            Some(sp) if sp > 0 && sp >= cut / 2 => {
                out.push(&rest[..sp]);
                rest = &rest[sp + 1..];
            }
            _ => {
                out.push(&rest[..cut]);
                rest = &rest[cut..];
            }
        }
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// The lines of a text: cut at CR and LF (each line becomes its own
/// message), NUL removed, empty lines dropped (IRC cannot send them).
pub fn text_lines(text: &str) -> Vec<String> {
    text.split(['\r', '\n'])
        .map(|l| l.replace('\0', ""))
        .filter(|l| !l.is_empty())
        .collect()
}

/// One-line text for a parameter such as a PART or QUIT reason: CR, LF and
/// NUL become spaces, and it is cut to `max` bytes at a UTF-8 boundary.
pub fn one_line(text: &str, max: usize) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if matches!(c, '\r' | '\n' | '\0') {
                ' '
            } else {
                c
            }
        })
        .collect();
    truncate(&cleaned, max).to_string()
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Why a request from the bus is not sent to the IRC server. The message
/// is the sentence its sender gets back (`{"ok": false, "error": …}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotSent {
    /// Not registered with the server (yet, or any more).
    #[error("not connected to {server} (reconnecting)")]
    NotConnected {
        /// `host:port`.
        server: String,
    },
    /// The channel is one the operator is not in.
    #[error("not joined to {channel}")]
    NotJoined {
        /// The channel (cut short if very long).
        channel: String,
    },
    /// The room, nick, channel or key is not one IRC accepts.
    #[error("{reason}")]
    BadName {
        /// What is wrong with it.
        reason: String,
    },
    /// The target is so long that no text fits in a line.
    #[error("the target {target:?} leaves no room for text in a {max_line_bytes}-byte line")]
    NoRoom {
        /// The channel or nick.
        target: String,
        /// `max_line_bytes` of the config.
        max_line_bytes: usize,
    },
    /// Nothing but line breaks.
    #[error("the text is empty (nothing to send)")]
    Empty,
    /// A raw line while `allow_raw` is off.
    #[error("raw lines are disabled (set allow_raw = true to allow them)")]
    RawDisabled,
    /// A raw line longer than a line may be.
    #[error("the line is {bytes} bytes; at most {max} fit")]
    TooLong {
        /// Its length.
        bytes: usize,
        /// The most that fits (without CR LF).
        max: usize,
    },
    /// A raw line that is empty or holds CR, LF or NUL.
    #[error("a raw line must be one non-empty line without CR, LF or NUL")]
    BadRawLine,
    /// The send queue is at `flood.max_queue`.
    #[error("send queue full ({waiting} lines waiting, at most {max}); try again later")]
    QueueFull {
        /// Lines waiting.
        waiting: usize,
        /// `flood.max_queue`.
        max: usize,
    },
}

switchboard_bus::proto::error_kinds! {
    /// Coarse classes of [`NotSent`].
    NotSent => NotSentKind {
        NotConnected, NotJoined, BadName, NoRoom, Empty, RawDisabled, TooLong, BadRawLine,
        QueueFull
    }
}

impl NotSent {
    /// A name check of [`crate::names`] failed.
    pub fn bad_name(reason: String) -> NotSent {
        NotSent::BadName { reason }
    }
}

/// Builds the lines that send `text` to `target` (already validated as a
/// channel or nick): one line per input line, each split to fit
/// `max_line_bytes` (CR LF included) after the server adds a relay prefix
/// of `prefix_len` bytes.
///
/// # Errors
///
/// [`NotSent::Empty`] when there is nothing to send, [`NotSent::NoRoom`]
/// when the target leaves no room for text.
pub fn build_text_lines(
    kind: TextKind,
    target: &str,
    text: &str,
    max_line_bytes: usize,
    prefix_len: usize,
) -> Result<Vec<OutLine>, NotSent> {
    let command = kind.command();
    // ":prefix " + "PRIVMSG " + target + " :" + text + "\r\n"
    let overhead = prefix_len + command.len() + 1 + target.len() + 2 + 2;
    let ctcp = if kind == TextKind::Action { 9 } else { 0 }; // "\x01ACTION " + "\x01"
    let room = max_line_bytes.saturating_sub(overhead + ctcp);
    if room < MIN_TEXT_BYTES {
        return Err(NotSent::NoRoom {
            target: target.to_string(),
            max_line_bytes,
        });
    }
    let mut out = Vec::new();
    for line in text_lines(text) {
        let line = if kind == TextKind::Action {
            line.replace('\x01', "")
        } else {
            line
        };
        for piece in split_text(&line, room) {
            let full = match kind {
                TextKind::Action => format!("{command} {target} :\x01ACTION {piece}\x01"),
                _ => format!("{command} {target} :{piece}"),
            };
            // text_lines removed CR/LF/NUL and the target was validated,
            // so this cannot fail; skip rather than panic if it ever did.
            if let Some(l) = OutLine::new(full) {
                out.push(l);
            }
        }
    }
    if out.is_empty() {
        return Err(NotSent::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_is_one_piece() {
        assert_eq!(split_text("hello world", 100), vec!["hello world"]);
        assert_eq!(split_text("", 100), Vec::<&str>::new());
    }

    #[test]
    fn splits_at_last_space() {
        assert_eq!(split_text("aaaa bbbb cccc", 10), vec!["aaaa bbbb", "cccc"]);
        assert_eq!(
            split_text("aaaa bbbbb cccc", 10),
            vec!["aaaa bbbbb", "cccc"]
        );
        assert_eq!(split_text("aaaaaa bbbbbbb", 10), vec!["aaaaaa", "bbbbbbb"]);
        // A space only in the first half: cut mid-word rather than send a stub.
        assert_eq!(
            split_text("aa bbbbbbbbbbbb", 10),
            vec!["aa bbbbbbb", "bbbbb"]
        );
        // A space exactly at the cut.
        assert_eq!(split_text("aaaaaaaaaa bb", 10), vec!["aaaaaaaaaa", "bb"]);
    }

    #[test]
    fn cuts_long_words_at_char_boundaries() {
        let s = "é".repeat(10); // 20 bytes
        let parts = split_text(&s, 7);
        assert_eq!(parts, vec!["ééé", "ééé", "ééé", "é"]);
        let parts = split_text("日本語のテキスト", 8); // 3-byte chars
        assert!(parts.iter().all(|p| p.len() <= 8));
        assert_eq!(parts.concat(), "日本語のテキスト");
    }

    #[test]
    fn newlines_become_separate_lines_and_nul_goes() {
        assert_eq!(text_lines("a\r\nb\nc\rd\0e\n\n"), vec!["a", "b", "c", "de"]);
        assert!(text_lines("\r\n\n").is_empty());
    }

    #[test]
    fn injection_becomes_text() {
        let lines = build_text_lines(TextKind::Message, "#c", "hi\r\nQUIT :bye", 512, 40).unwrap();
        let lines: Vec<_> = lines.iter().map(|l| l.as_str().to_string()).collect();
        assert_eq!(lines, vec!["PRIVMSG #c :hi", "PRIVMSG #c :QUIT :bye"]);
    }

    #[test]
    fn lines_fit_with_the_relay_prefix() {
        let text = "word ".repeat(300);
        let prefix = relay_prefix_len("bot", "~bot", "host.example");
        let lines = build_text_lines(TextKind::Action, "#chan", &text, 512, prefix).unwrap();
        assert!(lines.len() > 2);
        for l in &lines {
            assert!(
                l.wire_len() + prefix <= 512,
                "{} bytes",
                l.wire_len() + prefix
            );
            assert!(l.as_str().starts_with("PRIVMSG #chan :\x01ACTION "));
            assert!(l.as_str().ends_with('\x01'));
        }
    }

    #[test]
    fn no_room_or_no_text_is_an_error() {
        assert!(build_text_lines(TextKind::Message, "#c", "\n\n", 512, 40).is_err());
        let long_target = format!("#{}", "x".repeat(490));
        assert!(build_text_lines(TextKind::Message, &long_target, "hi", 512, 40).is_err());
    }

    #[test]
    fn one_line_reasons() {
        assert_eq!(one_line("bye\r\nQUIT", 100), "bye  QUIT");
        assert_eq!(one_line("ééé", 3), "é");
    }

    proptest! {
        #[test]
        fn split_preserves_text_and_bounds(s in "\\PC{0,400}", max in 4usize..64) {
            let parts = split_text(&s, max);
            for p in &parts {
                prop_assert!(p.len() <= max);
                prop_assert!(!p.is_empty());
            }
            // Only single spaces at cuts are dropped.
            let joined: String = parts.concat();
            let no_space = |t: &str| t.chars().filter(|c| *c != ' ').collect::<String>();
            prop_assert_eq!(no_space(&joined), no_space(&s));
        }

        #[test]
        fn built_lines_never_hold_line_breaks(s in any::<String>(), prefix in 0usize..100) {
            if let Ok(lines) = build_text_lines(TextKind::Notice, "#c", &s, 512, prefix) {
                for l in lines {
                    prop_assert!(!l.as_str().contains(['\r', '\n', '\0']));
                    prop_assert!(l.wire_len() + prefix <= 512);
                }
            }
        }
    }
}
