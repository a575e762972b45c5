//! [`WireEnvelope`]: a received envelope that keeps its payload bytes and
//! decodes only what is asked for.
//!
//! Why: on the receive path, decoding every envelope into an owned
//! [`Envelope`] cost seven heap allocations (source, header names and
//! values, the map node, the body tree) and about half of the bus's client
//! CPU per message (docs/benchmarks.md). Most handlers read a few fields
//! and decode the body once into their own type. A `WireEnvelope` is
//! validated exactly as [`Envelope::from_slice`] validates (same rules,
//! same errors, same accepted inputs) in one pass that allocates only the
//! header list, and it remembers *where* each field is in the payload
//! (byte spans into a shared [`Bytes`]; strings with JSON escapes are kept
//! unescaped on the side). The owned [`Envelope`] is built on first
//! request and kept ([`WireEnvelope::envelope`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;
use smallvec::SmallVec;

use super::{
    check_header_name, check_source, diagnose, Envelope, EnvelopeError, Timestamp,
    MAX_ENVELOPE_BYTES,
};

/// Spans at least this long are checked for UTF-8 with simdutf8 (see
/// [`WireEnvelope::span`]).
const SIMD_UTF8_FROM: usize = 64;

/// A string field: a span of the payload (written without escapes, so the
/// bytes are the text), or its unescaped copy.
#[derive(Debug, Clone)]
pub(super) enum Text {
    Span(u32, u32),
    Owned(Box<str>),
}

/// The headers of a received envelope, in wire order: up to three (chat
/// events carry `id`, `room` and sometimes `in-reply-to`) in place, so
/// that reading an envelope allocates nothing (a `Vec` here was an
/// allocation and a free per message). Not more in place: every move of
/// a `WireEnvelope` copies them (four cost ~200 instructions per message
/// in copies).
pub(super) type Headers = SmallVec<[(Text, Text); 3]>;

/// A received envelope: the payload, where its fields are, and the owned
/// [`Envelope`] once someone asked for it. Cheap to clone (the payload is
/// shared).
///
/// ```
/// use switchboard_proto::{headers, Envelope, WireEnvelope};
///
/// let sent = Envelope::new("bot", serde_json::json!({"text": "hi"}))
///     .with_header(headers::ROOM, "#lobby");
/// let got = WireEnvelope::parse(sent.to_vec().into())?;
/// assert_eq!(got.source(), "bot");
/// assert_eq!(got.header(headers::ROOM), Some("#lobby"));
/// assert_eq!(got.body_json(), r#"{"text":"hi"}"#);
/// #[derive(serde::Deserialize)]
/// struct Said<'a> { text: &'a str }
/// assert_eq!(got.body_as::<Said>()?.text, "hi");
/// assert_eq!(got.envelope(), &sent); // built on first use, then kept
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct WireEnvelope {
    payload: Bytes,
    source: Text,
    timestamp: Timestamp,
    /// In wire order; a name given twice counts with its last value, as in
    /// the owned envelope's map.
    headers: Headers,
    /// The body's JSON text.
    body: (u32, u32),
    /// The body is a JSON string without escapes (found by the fast
    /// scanner): its text is the span without the quotes.
    plain_text_body: bool,
    /// Boxed: it is rarely built, and a `WireEnvelope` moves a few times
    /// on its way to a handler (each move copies it; inline, the owned
    /// envelope was a third of its size).
    owned: OnceLock<Box<Envelope>>,
}

impl fmt::Debug for WireEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireEnvelope")
            .field("source", &self.source())
            .field("timestamp", &self.timestamp)
            .field("headers", &self.headers().collect::<Vec<_>>())
            .field("body", &self.body_json())
            .finish()
    }
}

impl PartialEq for WireEnvelope {
    /// Equal when the envelopes are (the owned forms compare).
    fn eq(&self, other: &Self) -> bool {
        self.envelope() == other.envelope()
    }
}

/// What one pass of serde sees: strings borrowed from the payload when
/// they have no escapes, the body as its raw JSON text.
#[derive(Deserialize)]
struct View<'a> {
    #[serde(borrow)]
    source: Str<'a>,
    #[serde(borrow)]
    timestamp: Str<'a>,
    #[serde(default, borrow)]
    headers: HeaderList<'a>,
    #[serde(borrow)]
    body: Body<'a>,
}

/// A string borrowed from the input when possible (serde's `Cow<str>`
/// alone always copies).
#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Default)]
struct HeaderList<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de: 'a, 'a> Deserialize<'de> for HeaderList<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Headers<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Headers<'a> {
            type Value = HeaderList<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut list = Vec::with_capacity(map.size_hint().unwrap_or(4).min(16));
                while let Some((Str(name), Str(value))) = map.next_entry::<Str, Str>()? {
                    list.push((name, value));
                }
                Ok(HeaderList(list))
            }
        }
        deserializer.deserialize_map(Headers(std::marker::PhantomData))
    }
}

/// The body's raw JSON text, checked to be a value that [`Value`] can hold
/// (see [`Checked`]).
struct Body<'a>(&'a str);

impl<'de: 'a, 'a> Deserialize<'de> for Body<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?.get();
        // RawValue only checks the syntax; `Value` also refuses numbers
        // beyond f64 and lone surrogates in \u escapes. The owned body
        // must always be buildable from an accepted one, so a body that
        // could hold either is walked the way `Value` parses it, without
        // building it. Neither can occur without a backslash and without
        // a number: a string with no backslash (the usual text body) or
        // an object with no digit at all skips the second walk.
        let bytes = raw.as_bytes();
        let plain = !bytes.contains(&b'\\')
            && (bytes.first() == Some(&b'"') || !bytes.iter().any(u8::is_ascii_digit));
        if !plain {
            let mut inner = serde_json::Deserializer::from_str(raw);
            Checked
                .deserialize(&mut inner)
                .and_then(|()| inner.end())
                .map_err(de::Error::custom)?;
        }
        Ok(Body(raw))
    }
}

/// Walks a JSON value as `Value`'s deserializer does (numbers parsed,
/// escapes decoded) and keeps nothing.
#[derive(Clone, Copy)]
struct Checked;

impl<'de> DeserializeSeed<'de> for Checked {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredKey>()?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

/// An object key, decoded (escapes checked) and dropped.
struct IgnoredKey;

impl<'de> Deserialize<'de> for IgnoredKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(Checked).map(|()| IgnoredKey)
    }
}

/// Where `part` (a slice of `whole`) starts and ends in `whole`, or `None`
/// when it is not a slice of it (an unescaped copy).
fn span_in(whole: &[u8], part: &str) -> Option<(u32, u32)> {
    let base = whole.as_ptr() as usize;
    let start = (part.as_ptr() as usize).checked_sub(base)?;
    let end = start.checked_add(part.len())?;
    if end > whole.len() {
        return None;
    }
    Some((u32::try_from(start).ok()?, u32::try_from(end).ok()?))
}

fn text(whole: &[u8], value: Cow<'_, str>) -> Text {
    match value {
        Cow::Borrowed(s) => match span_in(whole, s) {
            Some((start, end)) => Text::Span(start, end),
            None => Text::Owned(s.into()),
        },
        Cow::Owned(s) => Text::Owned(s.into_boxed_str()),
    }
}

impl WireEnvelope {
    /// Validates `payload` as an envelope (the rules and errors of
    /// [`Envelope::from_slice`]) and keeps it.
    ///
    /// # Errors
    ///
    /// An [`EnvelopeError`] naming the first broken rule.
    pub fn parse(payload: Bytes) -> Result<WireEnvelope, EnvelopeError> {
        if payload.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge {
                size: payload.len(),
                max: MAX_ENVELOPE_BYTES,
            });
        }
        // The fast scanner checks UTF-8 as it goes (strings are the only
        // place for non-ASCII bytes in JSON).
        if let Some(fields) = super::fast::scan(&payload) {
            return WireEnvelope::from_fields(payload, fields);
        }
        // One UTF-8 check of the whole payload instead of one per string,
        // and none again for the body. A payload that is not UTF-8 as a
        // whole is read per string instead, as `from_slice` reads it: it
        // checks the strings it keeps and not those of fields it ignores
        // (an unknown field's bytes are skipped), and so must this.
        let parsed = match std::str::from_utf8(&payload) {
            Ok(json) => serde_json::from_str::<View<'_>>(json),
            Err(_) => serde_json::from_slice::<View<'_>>(&payload),
        };
        let view: View<'_> = match parsed {
            Ok(view) => view,
            Err(e) => return Err(diagnose(&payload, &e)),
        };
        // The rules in their documented order: source, timestamp, headers.
        check_source(view.source.0.as_bytes())?;
        let timestamp = Timestamp::parse(&view.timestamp.0)?;
        for (name, _) in &view.headers.0 {
            check_header_name(name.as_bytes())?;
        }
        let whole: &[u8] = &payload;
        let source = text(whole, view.source.0);
        let headers = view
            .headers
            .0
            .into_iter()
            .map(|(name, value)| (text(whole, name), text(whole, value)))
            .collect();
        // A RawValue is always borrowed from the input.
        let body = span_in(whole, view.body.0).ok_or_else(|| EnvelopeError::NotJson {
            line: 1,
            column: 1,
            reason: "the body could not be located in the payload".to_owned(),
        })?;
        Ok(WireEnvelope {
            source,
            timestamp,
            headers,
            body,
            plain_text_body: false,
            owned: OnceLock::new(),
            payload,
        })
    }

    /// Checks the rules on what the fast scanner found (in the order
    /// [`Envelope::from_slice`] checks them) and keeps the spans.
    fn from_fields(payload: Bytes, fields: super::fast::Fields) -> Result<Self, EnvelopeError> {
        let text = |(start, end): super::fast::Span| {
            payload
                .get(start as usize..end as usize)
                .unwrap_or_default()
        };
        check_source(text(fields.source))?;
        let timestamp = Timestamp::parse_bytes(text(fields.timestamp))?;
        for (name, _) in &fields.headers {
            if let Text::Span(start, end) = name {
                check_header_name(text((*start, *end)))?;
            }
        }
        Ok(WireEnvelope {
            source: Text::Span(fields.source.0, fields.source.1),
            timestamp,
            headers: fields.headers,
            body: fields.body,
            plain_text_body: payload.get(fields.body.0 as usize) == Some(&b'"'),
            owned: OnceLock::new(),
            payload,
        })
    }

    /// The envelope `envelope` as it would arrive: encoded, then parsed.
    /// Its [`WireEnvelope::envelope`] is `envelope` itself.
    pub fn from_envelope(envelope: Envelope) -> WireEnvelope {
        let bytes = Bytes::from(envelope.to_vec());
        match WireEnvelope::parse(bytes) {
            Ok(wire) => {
                // Fresh: nothing was cached yet, so this cannot be refused.
                let _ = wire.owned.set(Box::new(envelope));
                wire
            }
            // Only an envelope built in code that breaks the rules (an
            // empty source, say) gets here: keep it as it is, with the
            // fields read from the owned form.
            Err(_) => WireEnvelope::unchecked(envelope),
        }
    }

    /// A `WireEnvelope` for an owned envelope that does not pass the
    /// rules: fields are copies, the payload is its encoding.
    fn unchecked(envelope: Envelope) -> WireEnvelope {
        let payload = Bytes::from(envelope.to_vec());
        let body = serde_json::to_string(&envelope.body).unwrap_or_else(|_| "null".to_owned());
        let body_text = Bytes::from(body);
        // The body is appended after the payload so that it has a span.
        let mut joined = Vec::with_capacity(payload.len() + body_text.len());
        joined.extend_from_slice(&payload);
        let start = u32::try_from(joined.len()).unwrap_or(u32::MAX);
        joined.extend_from_slice(&body_text);
        let end = u32::try_from(joined.len()).unwrap_or(u32::MAX);
        let owned_text = |s: &str| Text::Owned(s.into());
        let wire = WireEnvelope {
            source: owned_text(&envelope.source),
            timestamp: envelope.timestamp,
            headers: envelope
                .headers
                .iter()
                .map(|(k, v)| (owned_text(k), owned_text(v)))
                .collect(),
            body: (start, end),
            plain_text_body: false,
            owned: OnceLock::new(),
            payload: Bytes::from(joined),
        };
        let _ = wire.owned.set(Box::new(envelope));
        wire
    }

    fn bytes_of<'s>(&'s self, text: &'s Text) -> &'s [u8] {
        match text {
            Text::Owned(s) => s.as_bytes(),
            Text::Span(start, end) => self
                .payload
                .get(*start as usize..*end as usize)
                .unwrap_or_default(),
        }
    }

    fn str_of<'s>(&'s self, text: &'s Text) -> &'s str {
        match text {
            Text::Owned(s) => s,
            Text::Span(start, end) => self.span(*start, *end),
        }
    }

    /// The text of a span. Spans are made by [`WireEnvelope::parse`] from
    /// strings serde validated, so they are in range and UTF-8; the
    /// fallback keeps this panic-free regardless.
    ///
    /// Long spans (a body) are checked with simdutf8 (SIMD, chosen at run
    /// time, behind a safe API): a 1 KiB body's check cost ~1,200
    /// instructions with `std::str::from_utf8`. Short ones keep std's,
    /// which costs less than simdutf8's dispatch there.
    fn span(&self, start: u32, end: u32) -> &str {
        let Some(bytes) = self.payload.get(start as usize..end as usize) else {
            return "";
        };
        if bytes.len() >= SIMD_UTF8_FROM {
            simdutf8::basic::from_utf8(bytes).unwrap_or("")
        } else {
            std::str::from_utf8(bytes).unwrap_or("")
        }
    }

    /// Who made it.
    pub fn source(&self) -> &str {
        self.str_of(&self.source)
    }

    /// When it was made.
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// The value of header `name` (the last one, if given twice).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| self.bytes_of(n) == name.as_bytes())
            .map(|(_, v)| self.str_of(v))
    }

    /// The envelope's unique id ([`super::headers::ID`]), if it has one.
    pub fn id(&self) -> Option<&str> {
        self.header(super::headers::ID)
    }

    /// [`WireEnvelope::id`] as bytes, for who only compares or hashes it
    /// (de-duplication): a span of the payload is made a `str` by checking
    /// it for UTF-8 again (no `unsafe` here), which this skips.
    pub fn id_bytes(&self) -> Option<&[u8]> {
        let name = super::headers::ID.as_bytes();
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| self.bytes_of(n) == name)
            .map(|(_, v)| self.bytes_of(v))
    }

    /// Every header as (name, value), in wire order (a repeated name
    /// appears each time).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .map(|(n, v)| (self.str_of(n), self.str_of(v)))
    }

    /// The body as text, when it is a JSON string: borrowed from the
    /// payload when it has no escapes (then without a second scan: the
    /// receive check already found its end), unescaped otherwise; `None`
    /// for any other body.
    pub fn body_text(&self) -> Option<Cow<'_, str>> {
        if self.plain_text_body {
            let (start, end) = self.body;
            return Some(Cow::Borrowed(self.span(start + 1, end.saturating_sub(1))));
        }
        #[derive(Deserialize)]
        struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
        serde_json::from_str::<Text>(self.body_json())
            .ok()
            .map(|Text(text)| text)
    }

    /// The body's JSON text, exactly as received.
    pub fn body_json(&self) -> &str {
        self.span(self.body.0, self.body.1)
    }

    /// The body decoded straight into `T`, e.g. a struct of borrowed
    /// `&str` fields (no copy when the text has no escapes) or the
    /// handler's own type; no `Value` tree is built.
    ///
    /// # Errors
    ///
    /// serde's error when the body does not fit `T`.
    pub fn body_as<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.body_json())
    }

    /// The body as a JSON [`Value`]: the owned envelope's (built once).
    pub fn body(&self) -> &Value {
        &self.envelope().body
    }

    /// The payload, as received.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The owned [`Envelope`]: built on the first call (the body as a
    /// [`Value`] tree, strings copied), then kept.
    pub fn envelope(&self) -> &Envelope {
        self.owned.get_or_init(|| Box::new(self.build()))
    }

    /// The owned [`Envelope`], built unless it was already.
    pub fn into_envelope(mut self) -> Envelope {
        match self.owned.take() {
            Some(envelope) => *envelope,
            None => self.build(),
        }
    }

    fn build(&self) -> Envelope {
        let mut headers = BTreeMap::new();
        for (name, value) in self.headers() {
            headers.insert(name.to_owned(), value.to_owned());
        }
        // `parse` checked the body the way `Value` parses it (`Checked`),
        // so this does not fail; `Null` only keeps it panic-free.
        let body = serde_json::from_str(self.body_json()).unwrap_or(Value::Null);
        Envelope {
            source: self.source().to_owned(),
            timestamp: self.timestamp,
            headers,
            body,
        }
    }
}

impl From<Envelope> for WireEnvelope {
    fn from(envelope: Envelope) -> Self {
        WireEnvelope::from_envelope(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::headers;
    use serde_json::json;

    fn parse(text: &str) -> Result<WireEnvelope, EnvelopeError> {
        WireEnvelope::parse(Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn agrees_with_from_slice() {
        let cases = [
            r#"{"source":"a","timestamp":"2024-01-01T00:00:00Z","body":1}"#,
            r#"{"source":"a\"b","timestamp":"2024-01-01T00:00:00+02:00","headers":{"id":"x","r\u00e9":"\n"},"body":{"k":[1,2.5,"\u00e9"]}}"#,
            r#"{"body":null,"headers":{},"timestamp":"2024-01-01T00:00:00Z","source":"s","extra":[1]}"#,
            r#"{"source":"a","timestamp":"2024-01-01T00:00:00Z","headers":{"id":"1","id":"2"},"body":1}"#,
            r#"{"source":"a","source":"b","timestamp":"2024-01-01T00:00:00Z","body":1}"#,
            r#"{"source":"","timestamp":"2024-01-01T00:00:00Z","body":1}"#,
            r#"{"source":"a","timestamp":"yesterday","body":1}"#,
            r#"{"source":"a","timestamp":"2024-01-01T00:00:00Z","headers":{"":"x"},"body":1}"#,
            r#"{"source":"a","timestamp":"2024-01-01T00:00:00Z","headers":{"a":1},"body":1}"#,
            r#"{"source":"a","timestamp":"2024-01-01T00:00:00Z"}"#,
            r#"{"source":"a","timestamp":"2024-01-01T00:00:00Z","body":1e400}"#,
            r#"{"source":"a","timestamp":"2024-01-01T00:00:00Z","body":"\ud800"}"#,
            r#"{"source":"a","timestamp":"2024-01-01T00:00:00Z","body":{"\ud800":1}}"#,
            r#"{"source":"a","timestamp":"2024-01-01T00:00:00Z","body":[1,}"#,
            r#"{"source":"a","timestamp":"2024-01-01T00:00:00Z","body":{"a":"b","n":1E999}}"#,
            r#"{"source":"a","timestamp":"2024-01-01T00:00:00Z","body":{"a":"\ud83e\udd80"}}"#,
            r#"{"source":"a","timestamp":"2024-01-01T00:00:00Z","body":"plain text, no digits"}"#,
            // Keys the scanner does not take as literals: escaped, spaced,
            // a prefix of a real one, one that a real one is a prefix of.
            r#"{"sou\u0072ce":"a","timestamp":"2024-01-01T00:00:00Z","body":1}"#,
            r#"{ "source" : "a" , "timestamp" : "2024-01-01T00:00:00Z" , "body" : 1 }"#,
            r#"{"sourc":"a","source":"a","timestamp":"2024-01-01T00:00:00Z","body":1}"#,
            r#"{"bodyx":1,"source":"a","timestamp":"2024-01-01T00:00:00Z","body":1}"#,
            r#"{"source":"a","timestamp":"2024-01-01T00:00:00Z","body":"ünïcödé text longer than sixty-four bytes, read through the SIMD check"}"#,
            r#"{"source":"a","timestamp":"2024-01-01T00:00:00Z","body":{"sender":"x","text":"hi"}}"#,
            r#"[1]"#,
            r#"not json"#,
            "",
        ];
        for text in cases {
            let owned = Envelope::from_slice(text.as_bytes());
            let wire = parse(text);
            match (&owned, &wire) {
                (Ok(o), Ok(w)) => {
                    assert_eq!(w.envelope(), o, "{text}");
                    assert_eq!(w.source(), o.source);
                    assert_eq!(w.timestamp(), o.timestamp);
                    assert_eq!(w.id(), o.id());
                    let from_body: Value = w.body_as().expect("the body is JSON");
                    assert_eq!(from_body, o.body);
                    assert_eq!(&w.clone().into_envelope(), o);
                }
                (Err(o), Err(w)) => assert_eq!(o, w, "{text}"),
                _ => panic!("{text}: from_slice {owned:?}, wire {wire:?}"),
            }
        }
    }

    #[test]
    fn fast_path_takes_the_usual_shapes_only() {
        let usual = Envelope::new(
            "bot",
            json!({"text": "hi ✓ héllo, a longer text 0123456789", "n": [1, 2.5, true, null]}),
        )
        .with_header(headers::ROOM, "#r")
        .to_vec();
        assert!(crate::envelope::fast::scan(&usual).is_some());
        for odd in [
            r#"{"source":"a\"b","timestamp":"t","body":1}"#,
            r#"{"source":"a","timestamp":"t","body":1e5}"#,
            r#"{"source":"a","timestamp":"t","body":1234567890123456}"#,
            r#"{"source":"a","timestamp":"t","extra":1,"body":1}"#,
            r#"{"source":"a","source":"b","timestamp":"t","body":1}"#,
            r#"{"source":"a","timestamp":"t","body":01}"#,
            r#"{"source":"a","timestamp":"t","body":[1,]}"#,
            r#"{"source":"a","timestamp":"t"}"#,
            r#"{"source":"a","timestamp":"t","body":1} x"#,
        ] {
            assert!(
                crate::envelope::fast::scan(odd.as_bytes()).is_none(),
                "{odd}"
            );
        }
    }

    /// Random envelopes, valid and broken: both paths must agree (the
    /// fast one answers only when it is sure).
    #[test]
    fn agrees_with_from_slice_on_variations() {
        let short = r##"{"source":"irc-x","timestamp":"2024-05-01T12:00:00.000000Z","headers":{"id":"abc","room":"#r"},"body":{"sender":"a","text":"hé ✓","n":[1,-2.5,0,true,false,null,{"k":"v"}]}}"##;
        // Strings past the scanner's word-at-a-time start (32 bytes),
        // through its 32-byte blocks and the words after them.
        let long = r##"{"source":"a source that is longer than thirty-two bytes","timestamp":"2024-05-01T12:00:00.000000Z","headers":{"id":"an id longer than thirty-two bytes, too","room":"#r"},"body":"a text body of more than one hundred bytes: the quick brown fox jumps over the lazy dog, twice"}"##;
        assert!(crate::envelope::fast::scan(long.as_bytes()).is_some());
        for base in [short, long] {
            variations_agree(base);
        }
    }

    fn variations_agree(base: &str) {
        let bytes = base.as_bytes();
        // Every truncation and every single-byte change to a few bytes.
        let mut variants: Vec<Vec<u8>> = (0..bytes.len()).map(|n| bytes[..n].to_vec()).collect();
        for i in 0..bytes.len() {
            for b in [
                b' ', b'"', b'\\', b'0', b'e', b'}', b']', b',', b'x', 0x01, 0xff, 0xc3,
            ] {
                let mut v = bytes.to_vec();
                v[i] = b;
                variants.push(v);
            }
        }
        for v in variants {
            let owned = Envelope::from_slice(&v);
            let wire = WireEnvelope::parse(Bytes::from(v.clone()));
            match (&owned, &wire) {
                (Ok(o), Ok(w)) => assert_eq!(w.envelope(), o, "{}", String::from_utf8_lossy(&v)),
                (Err(o), Err(w)) => assert_eq!(o, w, "{}", String::from_utf8_lossy(&v)),
                _ => panic!("{}: {owned:?} vs {wire:?}", String::from_utf8_lossy(&v)),
            }
        }
    }

    #[test]
    fn invalid_utf8_is_refused_alike() {
        for bytes in [
            &b"{\"source\":\"\xff\",\"timestamp\":\"2024-01-01T00:00:00Z\",\"body\":1}"[..],
            &b"{\"source\":\"a\",\"timestamp\":\"2024-01-01T00:00:00Z\",\"body\":\"\xc3\"}"[..],
            &b"\xef\xbb\xbf{}"[..],
        ] {
            let owned = Envelope::from_slice(bytes).expect_err("invalid UTF-8");
            let wire = WireEnvelope::parse(Bytes::copy_from_slice(bytes)).expect_err("invalid");
            assert_eq!(owned, wire);
        }
    }

    #[test]
    fn strings_without_escapes_are_spans() {
        let env = Envelope::new("bot", json!({"text": "hi"})).with_header(headers::ROOM, "#r");
        let wire = WireEnvelope::parse(env.to_vec().into()).expect("valid");
        assert!(matches!(wire.source, Text::Span(..)));
        assert!(wire
            .headers
            .iter()
            .all(|(n, v)| matches!((n, v), (Text::Span(..), Text::Span(..)))));
        assert_eq!(wire.body_json(), r#"{"text":"hi"}"#);
        assert!(wire.owned.get().is_none(), "nothing built until asked");
        assert_eq!(wire.body()["text"], "hi");
        assert!(wire.owned.get().is_some());
    }

    #[test]
    fn body_text_of_string_bodies() {
        for body in [
            json!("plain"),
            json!("with \"escapes\"\n"),
            json!(""),
            json!(1),
            json!({"a": "b"}),
        ] {
            let env = Envelope::new("s", body.clone());
            let wire = WireEnvelope::parse(env.to_vec().into()).expect("valid");
            assert_eq!(wire.body_text().as_deref(), body.as_str(), "{body}");
            let spaced =
                format!(r#"{{"source":"s","timestamp":"2024-01-01T00:00:00Z","body": {body} }}"#);
            let wire = WireEnvelope::parse(spaced.into()).expect("valid");
            assert_eq!(wire.body_text().as_deref(), body.as_str(), "{body}");
        }
    }

    #[test]
    fn from_envelope_keeps_it() {
        let env = Envelope::new("bot", json!([1, 2])).with_header("x", "y");
        let wire = WireEnvelope::from(env.clone());
        assert_eq!(wire.envelope(), &env);
        assert_eq!(wire.header("x"), Some("y"));
        // An envelope that breaks the rules is kept as it is.
        let mut odd = Envelope::new("bot", json!({"a": 1}));
        odd.source.clear();
        let wire = WireEnvelope::from(odd.clone());
        assert_eq!(wire.source(), "");
        assert_eq!(wire.body_json(), r#"{"a":1}"#);
        assert_eq!(wire.into_envelope(), odd);
    }
}
