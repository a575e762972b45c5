//! The fast path of [`WireEnvelope::parse`](super::WireEnvelope::parse):
//! a scanner for the envelopes senders actually write, which finds where
//! each field is in one pass, a word (8 bytes) at a time through short
//! strings and 32 bytes at a time (vector compares) through long ones.
//!
//! It is conservative: it answers only for input that serde_json (the
//! slow path, which defines what is accepted) would accept with the same
//! field values, and says `None` for anything else (an escape in a
//! string, an unknown top-level key, a repeated one, an exponent or a long
//! number in the body, deep nesting, a syntax error), which then goes
//! through serde_json. So it can only change speed, never the outcome;
//! it also checks that the payload is UTF-8 (the slow path checks that
//! itself);
//! the tests in `wire.rs` hold both paths to the same answers.

use super::wire::{Headers, Text};
use crate::json::{block_is_plain_ascii, escape_mask, word_at, BLOCK, SHORT};

/// The high bit of every byte of a word: set for non-ASCII bytes.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Byte range `start..end` in the payload.
pub(super) type Span = (u32, u32);

/// Where the fields are (string spans exclude the quotes).
pub(super) struct Fields {
    pub source: Span,
    pub timestamp: Span,
    pub headers: Headers,
    pub body: Span,
}

/// Deepest nesting of the body the scanner follows (serde_json allows
/// 128 levels in all; deeper bodies take the slow path).
const MAX_DEPTH: u32 = 64;

/// Most digits in a body number the scanner takes: fewer than 16 always
/// fit an f64 without overflow; longer ones take the slow path.
const MAX_DIGITS: usize = 15;

struct Scanner<'p> {
    p: &'p [u8],
    i: usize,
}

pub(super) fn scan(payload: &[u8]) -> Option<Fields> {
    if u32::try_from(payload.len()).is_err() {
        return None;
    }
    let mut s = Scanner { p: payload, i: 0 };
    s.ws();
    s.expect(b'{')?;
    let (mut source, mut timestamp, mut body) = (None, None, None);
    let mut headers: Option<Headers> = None;
    s.ws();
    if s.peek()? == b'}' {
        return None; // missing fields: the slow path names them
    }
    loop {
        s.ws();
        let key = s.key()?;
        s.ws();
        s.expect(b':')?;
        s.ws();
        match key {
            Key::Source if source.is_none() => source = Some(s.string()?),
            Key::Timestamp if timestamp.is_none() => timestamp = Some(s.string()?),
            Key::Headers if headers.is_none() => headers = Some(s.headers()?),
            Key::Body if body.is_none() => {
                let start = s.i;
                s.value(0)?;
                body = Some(span(start, s.i)?);
            }
            _ => return None,
        }
        s.ws();
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    s.ws();
    if s.i != payload.len() {
        return None;
    }
    Some(Fields {
        source: source?,
        timestamp: timestamp?,
        headers: headers.unwrap_or_default(),
        body: body?,
    })
}

/// The top-level keys of an envelope.
enum Key {
    Source,
    Timestamp,
    Headers,
    Body,
}

fn span(start: usize, end: usize) -> Option<Span> {
    Some((u32::try_from(start).ok()?, u32::try_from(end).ok()?))
}

impl Scanner<'_> {
    /// A top-level key, matched as one of the four literals with their
    /// quotes (a short compare each) instead of scanned as a string
    /// (~100 instructions each). Anything else, an escaped spelling of
    /// the same names included, is not for the fast path.
    fn key(&mut self) -> Option<Key> {
        let rest = self.p.get(self.i..)?;
        let (key, len) = match rest.get(1)? {
            b's' if rest.starts_with(b"\"source\"") => (Key::Source, 8),
            b't' if rest.starts_with(b"\"timestamp\"") => (Key::Timestamp, 11),
            b'h' if rest.starts_with(b"\"headers\"") => (Key::Headers, 9),
            b'b' if rest.starts_with(b"\"body\"") => (Key::Body, 6),
            _ => return None,
        };
        self.i += len;
        Some(key)
    }

    fn peek(&self) -> Option<u8> {
        self.p.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// A string without escapes or control characters: its contents' span.
    /// Up to [`SHORT`] bytes a word (8 bytes) at a time, which is where
    /// keys, ids and the timestamp end; a longer string goes on in
    /// [`Scanner::long_string`]. A string with non-ASCII bytes is checked
    /// to be UTF-8 on its own, so the payload needs no separate UTF-8 pass
    /// (outside strings, JSON is ASCII).
    ///
    /// Inlined into its callers: as a call it cost ~20 instructions per
    /// string (saved registers, the span returned through memory).
    #[inline(always)]
    fn string(&mut self) -> Option<Span> {
        self.expect(b'"')?;
        let start = self.i;
        let rest = self.p.get(start..)?;
        let mut at = 0;
        // High bits of the bytes seen so far: non-zero when not ASCII.
        let mut high = 0;
        // Whole words, as long as the payload has 8 more bytes (a string
        // is always followed by at least `}` in an envelope, so this
        // covers all but the last few bytes).
        while let Some(word) = word_at(rest, at) {
            if let Some(found) = self.word_end(start, at, word, high) {
                return found;
            }
            high |= word & HIGH;
            at += 8;
            if at == SHORT {
                return self.long_string(start, at, high);
            }
        }
        self.string_tail(start, at, high)
    }

    /// The closing quote, if `word` (the string's bytes from `at`) holds
    /// a byte to escape: `Some(span)` when it is the quote, `Some(None)`
    /// when it is not (an escape or a control character: the slow path).
    #[inline(always)]
    fn word_end(&mut self, start: usize, at: usize, word: u64, high: u64) -> Option<Option<Span>> {
        let mask = escape_mask(word);
        if mask == 0 {
            return None;
        }
        let k = (mask.trailing_zeros() / 8) as usize;
        if self.p.get(start + at + k) != Some(&b'"') {
            return Some(None);
        }
        let before = if k == 0 { 0 } else { u64::MAX >> (64 - 8 * k) };
        Some(self.string_end(start, at + k, high | (word & HIGH & before)))
    }

    /// The rest of a string longer than [`SHORT`] (its first `at` bytes
    /// are plain): whole blocks of plain ASCII (vector compares, see
    /// [`block_is_plain_ascii`]), then words, then bytes.
    #[inline(never)]
    fn long_string(&mut self, start: usize, mut at: usize, mut high: u64) -> Option<Span> {
        let rest = self.p.get(start..)?;
        while let Some(block) = rest.get(at..at + BLOCK) {
            let block = <&[u8; BLOCK]>::try_from(block).ok()?;
            if !block_is_plain_ascii(block) {
                break;
            }
            at += BLOCK;
        }
        while let Some(word) = word_at(rest, at) {
            if let Some(found) = self.word_end(start, at, word, high) {
                return found;
            }
            high |= word & HIGH;
            at += 8;
        }
        self.string_tail(start, at, high)
    }

    /// The last few bytes of the payload, one at a time.
    fn string_tail(&mut self, start: usize, mut at: usize, mut high: u64) -> Option<Span> {
        for &b in self.p.get(start + at..)? {
            match b {
                b'"' => return self.string_end(start, at, high),
                b'\\' => return None,
                b if b < 0x20 => return None,
                b => high |= u64::from(b & 0x80),
            }
            at += 1;
        }
        None
    }

    /// The string that started at `start` ends (closing quote) `len`
    /// bytes later; `high` says whether it had non-ASCII bytes, which
    /// must then be UTF-8.
    fn string_end(&mut self, start: usize, len: usize, high: u64) -> Option<Span> {
        if high != 0 {
            std::str::from_utf8(self.p.get(start..start + len)?).ok()?;
        }
        self.i = start + len + 1;
        span(start, start + len)
    }

    /// `{"name": "value", ...}` with plain strings.
    fn headers(&mut self) -> Option<Headers> {
        self.expect(b'{')?;
        let mut list = Headers::new();
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(list);
        }
        loop {
            self.ws();
            let name = self.string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            let value = self.string()?;
            list.push((Text::Span(name.0, name.1), Text::Span(value.0, value.1)));
            self.ws();
            match self.next()? {
                b',' => continue,
                b'}' => return Some(list),
                _ => return None,
            }
        }
    }

    /// Any JSON value the slow path would accept with the same meaning.
    fn value(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    self.expect(b':')?;
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i.checked_add(word.len())?;
        (self.p.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?` with at most [`MAX_DIGITS`] digits;
    /// exponents take the slow path.
    fn number(&mut self) -> Option<()> {
        if self.peek()? == b'-' {
            self.i += 1;
        }
        let mut digits = 0;
        match self.next()? {
            b'0' => digits += 1,
            b'1'..=b'9' => {
                digits += 1;
                while let Some(b'0'..=b'9') = self.peek() {
                    self.i += 1;
                    digits += 1;
                }
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let before = digits;
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
                digits += 1;
            }
            if digits == before {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) || digits > MAX_DIGITS {
            return None;
        }
        Some(())
    }
}
