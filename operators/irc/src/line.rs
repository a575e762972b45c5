//! The line codec: bytes from the server cut into lines (bounded), lines
//! parsed with `irc-proto`, and [`OutLine`], the only thing the writer
//! accepts, which cannot hold CR, LF or NUL.

use irc_proto::Message;

/// A line from the server, or the news that one was too long to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// One line, terminator removed, invalid UTF-8 replaced by U+FFFD.
    Line(String),
    /// A line longer than the limit was dropped (its length in bytes).
    TooLong(usize),
}

/// Cuts a byte stream into lines at CR or LF (so CR LF, LF and a lone CR
/// all end a line; empty lines are skipped). Lines longer than `max`
/// bytes are dropped whole and reported, without buffering them.
#[derive(Debug)]
pub struct LineFramer {
    buf: Vec<u8>,
    max: usize,
    /// Bytes of the current over-long line seen so far (0: not dropping).
    dropping: usize,
}

impl LineFramer {
    /// A framer keeping lines of at most `max` bytes.
    pub fn new(max: usize) -> LineFramer {
        LineFramer {
            buf: Vec::with_capacity(1024),
            max,
            dropping: 0,
        }
    }

    /// Feeds `data`; complete lines are appended to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Framed>) {
        for &b in data {
            if b == b'\n' || b == b'\r' {
                if self.dropping > 0 {
                    out.push(Framed::TooLong(self.dropping));
                    self.dropping = 0;
                } else if !self.buf.is_empty() {
                    out.push(Framed::Line(
                        String::from_utf8_lossy(&self.buf).into_owned(),
                    ));
                    self.buf.clear();
                }
            } else if self.dropping > 0 {
                self.dropping += 1;
            } else if self.buf.len() >= self.max {
                self.dropping = self.buf.len() + 1;
                self.buf.clear();
            } else {
                self.buf.push(b);
            }
        }
    }
}

/// Parses one line (without terminator) with `irc-proto`.
///
/// A panic inside the parser (a bug in a dependency, on input we do not
/// control) is caught and reported as an error, so a hostile server line
/// can never take the operator down.
///
/// The error is only logged (the line is skipped), so it stays a message.
pub fn parse(line: &str) -> Result<Message, String> {
    match std::panic::catch_unwind(|| line.parse::<Message>()) {
        Ok(Ok(msg)) => Ok(msg),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the IRC parser panicked on this line".to_string()),
    }
}

/// One line to send, without its CR LF. It can only be built from text
/// that holds no CR, LF or NUL, so no field can end the line early and
/// smuggle in a second command.
#[derive(Clone, PartialEq, Eq)]
pub struct OutLine {
    text: String,
    /// Holds a secret (PASS, AUTHENTICATE, IDENTIFY): never logged.
    sensitive: bool,
}

impl OutLine {
    /// A line from `text`; `None` when it contains CR, LF or NUL or is
    /// empty.
    pub fn new(text: impl Into<String>) -> Option<OutLine> {
        let text = text.into();
        if text.is_empty() || text.contains(['\r', '\n', '\0']) {
            return None;
        }
        Some(OutLine {
            text,
            sensitive: false,
        })
    }

    /// A line holding a secret: it is sent, never logged.
    pub fn secret(text: impl Into<String>) -> Option<OutLine> {
        OutLine::new(text).map(|mut l| {
            l.sensitive = true;
            l
        })
    }

    /// The line without CR LF.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Bytes on the wire, CR LF included.
    pub fn wire_len(&self) -> usize {
        self.text.len() + 2
    }

    /// The bytes to write, CR LF included.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.text.len() + 2);
        v.extend_from_slice(self.text.as_bytes());
        v.extend_from_slice(b"\r\n");
        v
    }

    /// What may be logged: the line, or its command only for secrets.
    pub fn loggable(&self) -> String {
        if self.sensitive {
            let cmd = self.text.split(' ').next().unwrap_or("");
            format!("{cmd} <redacted>")
        } else {
            self.text.clone()
        }
    }
}

impl std::fmt::Debug for OutLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OutLine({:?})", self.loggable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(chunks: &[&[u8]], max: usize) -> Vec<Framed> {
        let mut f = LineFramer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
        }
        out
    }

    #[test]
    fn splits_on_any_terminator_across_chunks() {
        let out = frame(
            &[b"PING :a\r", b"\nPING :b\n", b"PI", b"NG :c\r\r\n\n"],
            512,
        );
        let lines: Vec<_> = out
            .into_iter()
            .map(|f| match f {
                Framed::Line(l) => l,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lines, ["PING :a", "PING :b", "PING :c"]);
    }

    #[test]
    fn drops_long_lines_and_recovers() {
        let long = vec![b'x'; 100];
        let out = frame(&[&long, b"\r\nPING :ok\r\n"], 10);
        assert_eq!(
            out,
            vec![Framed::TooLong(100), Framed::Line("PING :ok".into())]
        );
        let exact = frame(&[b"0123456789\n"], 10);
        assert_eq!(exact, vec![Framed::Line("0123456789".into())]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let out = frame(&[b"PRIVMSG #a :caf\xe9\r\n"], 512);
        assert_eq!(out, vec![Framed::Line("PRIVMSG #a :caf\u{fffd}".into())]);
    }

    #[test]
    fn out_lines_refuse_line_breaks() {
        assert!(OutLine::new("PRIVMSG #a :hi").is_some());
        assert!(OutLine::new("PRIVMSG #a :hi\r\nQUIT").is_none());
        assert!(OutLine::new("PRIVMSG #a :hi\0").is_none());
        assert!(OutLine::new("").is_none());
        let s = OutLine::secret("PASS hunter2").unwrap();
        assert_eq!(s.loggable(), "PASS <redacted>");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.to_wire(), b"PASS hunter2\r\n");
    }

    #[test]
    fn parses_and_reports_errors() {
        let m = parse("@time=2024-01-01T00:00:00.000Z :n!u@h PRIVMSG #c :hi there").unwrap();
        assert!(
            matches!(m.command, irc_proto::Command::PRIVMSG(ref t, ref x) if t == "#c" && x == "hi there")
        );
        assert!(parse("").is_err());
    }
}
