//! [`Timestamp`]: an RFC 3339 instant, always UTC, microsecond precision.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use time::{Date, Month, OffsetDateTime, Time, UtcOffset};

use crate::json::excerpt;

/// Length of the canonical text form `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
const CANONICAL_LEN: usize = 27;

/// The shape every accepted timestamp has, quoted in error messages.
const EXPECTED_SHAPE: &str = "expected YYYY-MM-DDTHH:MM:SS[.fraction] followed by Z or an offset \
     like +02:00, e.g. 2024-05-01T12:00:00.000000Z";

/// When an envelope (or a heartbeat) was made: a UTC instant with
/// microsecond precision.
///
/// Why a wrapper and not a bare [`OffsetDateTime`]: the wire form must be one
/// exact, sortable text (`2024-05-01T12:00:00.123456Z`, always six fractional
/// digits, always `Z`) that every language can produce and parse, and that
/// round-trips exactly. Holding only UTC values truncated to whole
/// microseconds makes `parse(t.to_string()) == t` hold for every value, and
/// makes the derived [`Ord`] the chronological order.
///
/// Parsing accepts any RFC 3339 date-time (`t`/`z` in either case, any number
/// of fractional digits, any offset); the value is converted to UTC and
/// truncated to microseconds. Years must stay within `0000..=9999` after the
/// conversion, since that is all RFC 3339 can write.
///
/// ```
/// use switchboard_proto::Timestamp;
///
/// let t = Timestamp::parse("2024-05-01T14:30:00.5+02:00")?;
/// assert_eq!(t.to_string(), "2024-05-01T12:30:00.500000Z");
/// assert_eq!(Timestamp::parse(&t.to_string())?, t);
/// # Ok::<(), switchboard_proto::TimestampError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

/// Why a text (or a number) could not be turned into a [`Timestamp`].
///
/// Carries the offending value (shortened when long) and the reason, so the
/// sender can see what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid RFC 3339 timestamp: {reason}")]
pub struct TimestampError {
    /// The rejected input (shortened when long).
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl TimestampError {
    fn new(value: &str, reason: impl Into<String>) -> Self {
        TimestampError {
            value: excerpt(value),
            reason: reason.into(),
        }
    }
}

impl Timestamp {
    /// The current time, in UTC, truncated to microseconds.
    ///
    /// ```
    /// use switchboard_proto::Timestamp;
    /// let a = Timestamp::now();
    /// let b = Timestamp::now();
    /// assert!(a <= b);
    /// ```
    pub fn now() -> Timestamp {
        Timestamp(truncate_to_micros(OffsetDateTime::now_utc()))
    }

    /// Parses any RFC 3339 date-time and normalizes it to UTC.
    ///
    /// The canonical form this crate writes is recognized by a fast path;
    /// everything else goes through a general parser whose errors name the
    /// component that is wrong.
    ///
    /// # Errors
    ///
    /// [`TimestampError`] when the text is not RFC 3339, a component is out
    /// of range (month 13, February 30, hour 24, …) or the UTC year falls
    /// outside `0000..=9999`.
    pub fn parse(text: &str) -> Result<Timestamp, TimestampError> {
        if let Some(t) = parse_canonical(text.as_bytes()) {
            return Ok(t);
        }
        parse_general(text)
    }

    /// [`Timestamp::parse`] of bytes the receive scanner found (and
    /// checked to be UTF-8): the canonical form is read from the bytes,
    /// without a UTF-8 check to make a `str` of them first.
    pub(crate) fn parse_bytes(bytes: &[u8]) -> Result<Timestamp, TimestampError> {
        if let Some(t) = parse_canonical(bytes) {
            return Ok(t);
        }
        // Borrowed (no copy) for UTF-8, which the scanner made sure of.
        parse_general(&String::from_utf8_lossy(bytes))
    }

    /// Converts any [`OffsetDateTime`] (in any offset) into a timestamp.
    ///
    /// # Errors
    ///
    /// [`TimestampError`] when the UTC year falls outside `0000..=9999`.
    pub fn from_offset_date_time(value: OffsetDateTime) -> Result<Timestamp, TimestampError> {
        let utc = value
            .checked_to_offset(UtcOffset::UTC)
            .ok_or_else(|| TimestampError::new(&value.to_string(), "out of range in UTC"))?;
        Timestamp::checked(truncate_to_micros(utc), || value.to_string())
    }

    /// The instant as a [`time::OffsetDateTime`] (always in UTC), for
    /// arithmetic and formatting beyond what this type offers.
    pub fn as_offset_date_time(&self) -> OffsetDateTime {
        self.0
    }

    /// Nanoseconds since the Unix epoch (always a multiple of 1000).
    ///
    /// Handy for latency measurements and for languages that keep time as
    /// an integer.
    pub fn unix_nanos(&self) -> i128 {
        self.0.unix_timestamp_nanos()
    }

    /// The instant `nanos` nanoseconds after the Unix epoch (negative is
    /// before), truncated down to whole microseconds.
    ///
    /// # Errors
    ///
    /// [`TimestampError`] when the instant falls outside years
    /// `0000..=9999`.
    ///
    /// ```
    /// use switchboard_proto::Timestamp;
    /// let t = Timestamp::from_unix_nanos(1_700_000_000_123_456_789)?;
    /// assert_eq!(t.to_string(), "2023-11-14T22:13:20.123456Z");
    /// assert_eq!(t.unix_nanos(), 1_700_000_000_123_456_000);
    /// # Ok::<(), switchboard_proto::TimestampError>(())
    /// ```
    pub fn from_unix_nanos(nanos: i128) -> Result<Timestamp, TimestampError> {
        let micros_floor = nanos.div_euclid(1000) * 1000;
        let dt = OffsetDateTime::from_unix_timestamp_nanos(micros_floor).map_err(|e| {
            TimestampError::new(&format!("{nanos} ns since the Unix epoch"), e.to_string())
        })?;
        Timestamp::checked(dt, || format!("{nanos} ns since the Unix epoch"))
    }

    /// Rejects UTC years RFC 3339 cannot write.
    fn checked(
        dt: OffsetDateTime,
        describe: impl FnOnce() -> String,
    ) -> Result<Timestamp, TimestampError> {
        if (0..=9999).contains(&dt.year()) {
            Ok(Timestamp(dt))
        } else {
            Err(TimestampError::new(
                &describe(),
                format!(
                    "year {} in UTC is outside 0000..=9999, which RFC 3339 cannot represent",
                    dt.year()
                ),
            ))
        }
    }

    /// The canonical text `YYYY-MM-DDTHH:MM:SS.ffffffZ` as bytes, built by
    /// hand because this runs once per envelope on the hot path.
    pub(crate) fn canonical_bytes(&self) -> [u8; CANONICAL_LEN] {
        let (year, month, day) = self.0.to_calendar_date();
        let (hour, minute, second, micro) = self.0.to_hms_micro();
        let mut buf = *b"0000-00-00T00:00:00.000000Z";
        // The invariant keeps the year in 0..=9999; clamp rather than trust.
        write_digits(&mut buf[0..4], year.clamp(0, 9999).unsigned_abs());
        write_digits(&mut buf[5..7], u32::from(u8::from(month)));
        write_digits(&mut buf[8..10], u32::from(day));
        write_digits(&mut buf[11..13], u32::from(hour));
        write_digits(&mut buf[14..16], u32::from(minute));
        write_digits(&mut buf[17..19], u32::from(second));
        write_digits(&mut buf[20..26], micro);
        buf
    }
}

/// Writes `value` as zero-padded decimal filling `out` exactly.
fn write_digits(out: &mut [u8], mut value: u32) {
    for slot in out.iter_mut().rev() {
        // `value % 10` is < 10, so the narrowing cannot lose anything.
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn truncate_to_micros(dt: OffsetDateTime) -> OffsetDateTime {
    let nanos = dt.nanosecond();
    dt.replace_nanosecond(nanos - nanos % 1000).unwrap_or(dt)
}

/// Reads exactly `digits.len()` ASCII digits.
fn read_digits(digits: &[u8]) -> Option<u32> {
    let mut value = 0u32;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(b - b'0');
    }
    Some(value)
}

/// Fast path for the exact form this crate writes; `None` sends the input to
/// the general parser (which also produces the error message).
fn parse_canonical(b: &[u8]) -> Option<Timestamp> {
    if b.len() != CANONICAL_LEN
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[26] != b'Z'
    {
        return None;
    }
    let year = i32::try_from(read_digits(&b[0..4])?).ok()?;
    let month = Month::try_from(u8::try_from(read_digits(&b[5..7])?).ok()?).ok()?;
    let day = u8::try_from(read_digits(&b[8..10])?).ok()?;
    let hour = u8::try_from(read_digits(&b[11..13])?).ok()?;
    let minute = u8::try_from(read_digits(&b[14..16])?).ok()?;
    let second = u8::try_from(read_digits(&b[17..19])?).ok()?;
    let micro = read_digits(&b[20..26])?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let time = Time::from_hms_micro(hour, minute, second, micro).ok()?;
    Some(Timestamp(date.with_time(time).assume_utc()))
}

/// A cursor over the general RFC 3339 grammar, producing errors that say
/// which component is wrong.
struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, reason: impl Into<String>) -> TimestampError {
        TimestampError::new(self.text, reason)
    }

    fn number(&mut self, width: usize, what: &str) -> Result<u32, TimestampError> {
        let end = self.pos + width;
        let value = self
            .bytes
            .get(self.pos..end)
            .and_then(read_digits)
            .ok_or_else(|| {
                self.error(format!(
                    "the {what} must be {width} digits at byte {}; {EXPECTED_SHAPE}",
                    self.pos
                ))
            })?;
        self.pos = end;
        Ok(value)
    }

    fn literal(&mut self, accepted: &[u8], what: &str) -> Result<u8, TimestampError> {
        match self.bytes.get(self.pos) {
            Some(b) if accepted.contains(b) => {
                self.pos += 1;
                Ok(*b)
            }
            _ => Err(self.error(format!(
                "expected {what} at byte {}; {EXPECTED_SHAPE}",
                self.pos
            ))),
        }
    }
}

/// Narrows a value that `Reader::number` produced from at most 4 digits.
fn small(value: u32) -> u8 {
    u8::try_from(value).unwrap_or(u8::MAX)
}

fn parse_general(text: &str) -> Result<Timestamp, TimestampError> {
    let mut r = Reader {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    if r.bytes.is_empty() {
        return Err(r.error(format!("it is empty; {EXPECTED_SHAPE}")));
    }
    let year = r.number(4, "year")?;
    r.literal(b"-", "`-` after the year")?;
    let month = r.number(2, "month")?;
    r.literal(b"-", "`-` after the month")?;
    let day = r.number(2, "day")?;
    r.literal(b"Tt", "`T` between date and time")?;
    let hour = r.number(2, "hour")?;
    r.literal(b":", "`:` after the hour")?;
    let minute = r.number(2, "minute")?;
    r.literal(b":", "`:` after the minute")?;
    let mut second = r.number(2, "second")?;

    let mut nanos = 0u32;
    if r.bytes.get(r.pos) == Some(&b'.') {
        r.pos += 1;
        let start = r.pos;
        let mut scale = 100_000_000u32;
        while let Some(&b) = r.bytes.get(r.pos) {
            if !b.is_ascii_digit() {
                break;
            }
            nanos += u32::from(b - b'0') * scale;
            scale /= 10;
            r.pos += 1;
        }
        if r.pos == start {
            return Err(r.error("a `.` must be followed by at least one fractional digit"));
        }
    }

    let offset_seconds: i32 = match r.literal(b"Zz+-", "`Z` or an offset like +02:00")? {
        b'Z' | b'z' => 0,
        sign => {
            let oh = r.number(2, "offset hour")?;
            r.literal(b":", "`:` inside the offset")?;
            let om = r.number(2, "offset minute")?;
            if oh > 23 || om > 59 {
                return Err(r.error(format!(
                    "offset {oh:02}:{om:02} is out of range (at most 23:59)"
                )));
            }
            // Both are small, so the conversion and product cannot overflow.
            let magnitude = i32::try_from(oh * 3600 + om * 60).unwrap_or(0);
            if sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
    };
    if r.pos != r.bytes.len() {
        return Err(r.error(format!(
            "unexpected text after the offset at byte {}; {EXPECTED_SHAPE}",
            r.pos
        )));
    }

    // RFC 3339 allows a leap second (`:60`); like most systems we read it as
    // the last representable instant of the preceding second.
    let leap = second == 60;
    if leap {
        second = 59;
        nanos = 999_999_999;
    }

    let range = |e: time::error::ComponentRange| TimestampError::new(text, e.to_string());
    let month = Month::try_from(small(month)).map_err(range)?;
    let year = i32::try_from(year).unwrap_or(i32::MAX);
    let date = Date::from_calendar_date(year, month, small(day)).map_err(range)?;
    let clock =
        Time::from_hms_nano(small(hour), small(minute), small(second), nanos).map_err(range)?;
    let offset = UtcOffset::from_whole_seconds(offset_seconds).map_err(range)?;
    let utc = date
        .with_time(clock)
        .assume_offset(offset)
        .checked_to_offset(UtcOffset::UTC)
        .ok_or_else(|| TimestampError::new(text, "out of range once converted to UTC"))?;
    if leap && (utc.hour(), utc.minute()) != (23, 59) {
        return Err(TimestampError::new(
            text,
            "a leap second (:60) can only occur at 23:59:60 UTC",
        ));
    }
    Timestamp::checked(truncate_to_micros(utc), || text.to_owned())
}

impl fmt::Display for Timestamp {
    /// Writes the canonical form `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buf = self.canonical_bytes();
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse(s)
    }
}

impl TryFrom<OffsetDateTime> for Timestamp {
    type Error = TimestampError;

    fn try_from(value: OffsetDateTime) -> Result<Self, Self::Error> {
        Timestamp::from_offset_date_time(value)
    }
}

impl From<Timestamp> for OffsetDateTime {
    fn from(value: Timestamp) -> Self {
        value.0
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let buf = self.canonical_bytes();
        match std::str::from_utf8(&buf) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => Err(serde::ser::Error::custom("timestamp text is not ASCII")),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimestampVisitor;

        impl Visitor<'_> for TimestampVisitor {
            type Value = Timestamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp string")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(TimestampVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn canonical_round_trip() {
        let t = ts("2024-02-29T23:59:59.999999Z");
        assert_eq!(t.to_string(), "2024-02-29T23:59:59.999999Z");
        assert_eq!(ts(&t.to_string()), t);
    }

    #[test]
    fn offsets_are_converted_to_utc() {
        assert_eq!(
            ts("2024-05-01T00:30:00+02:00").to_string(),
            "2024-04-30T22:30:00.000000Z"
        );
        assert_eq!(
            ts("2024-05-01t00:30:00.1234567-01:30").to_string(),
            "2024-05-01T02:00:00.123456Z"
        );
        assert_eq!(
            ts("1999-12-31T23:59:59z").to_string(),
            "1999-12-31T23:59:59.000000Z"
        );
    }

    #[test]
    fn leap_second_reads_as_end_of_second() {
        assert_eq!(
            ts("2016-12-31T23:59:60Z").to_string(),
            "2016-12-31T23:59:59.999999Z"
        );
        assert!(Timestamp::parse("2016-12-31T12:00:60Z").is_err());
    }

    #[test]
    fn bad_inputs_say_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("yesterday", "year"),
            ("2024-13-01T00:00:00Z", "month"),
            ("2024-02-30T00:00:00Z", "day"),
            ("2024-01-01 00:00:00Z", "`T`"),
            ("2024-01-01T24:00:00Z", "hour"),
            ("2024-01-01T00:00:00", "offset"),
            ("2024-01-01T00:00:00.Z", "fractional"),
            ("2024-01-01T00:00:00+24:00", "offset"),
            ("2024-01-01T00:00:00Zjunk", "after the offset"),
            ("0000-01-01T00:00:00+01:00", "year"),
            ("9999-12-31T23:59:59-01:00", "range"),
        ];
        for (input, needle) in cases {
            let err = Timestamp::parse(input).expect_err(input);
            let msg = err.to_string();
            assert!(msg.contains(needle), "{input}: {msg}");
        }
    }

    #[test]
    fn unix_nanos_truncate_down() {
        let t = Timestamp::from_unix_nanos(-1).expect("in range");
        assert_eq!(t.to_string(), "1969-12-31T23:59:59.999999Z");
        assert_eq!(t.unix_nanos(), -1000);
        assert!(Timestamp::from_unix_nanos(i128::MAX).is_err());
        assert!(Timestamp::from_unix_nanos(-62_167_219_200_000_000_001).is_err());
    }

    #[test]
    fn now_is_micro_precision() {
        let t = Timestamp::now();
        assert_eq!(t.unix_nanos() % 1000, 0);
        assert_eq!(ts(&t.to_string()), t);
    }

    #[test]
    fn ordering_is_chronological() {
        assert!(ts("2024-01-01T00:00:00Z") < ts("2024-01-01T00:00:00.000001Z"));
        assert!(ts("2024-01-01T01:00:00+02:00") < ts("2024-01-01T00:00:00Z"));
    }
}
