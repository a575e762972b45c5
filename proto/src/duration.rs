//! Durations as people write them in config files: `"250ms"`, `"5s"`,
//! `"1.5s"`, `"2m"`, `"1h"`. The one parser for every duration in
//! Switchboard: manifests and `switchboard.toml` (orchestrator) and
//! operators' own configs (the IRC operator), so they all read alike.
//!
//! Why not `humantime`: it refuses fractions (`"1.5s"`), which manifests
//! have always accepted and documented, and it accepts spellings
//! (`"1h 30m"`, `"2days"`) our canonical form would not write back. The
//! grammar here is small and exact to the nanosecond.
//!
//! Every duration is bounded by [`MAX_DURATION`] (a year): a larger one
//! is a typo, and would overflow `Instant + Duration` later.
//!
//! TOML has no duration type, and a bare number (`ready_timeout = 10`)
//! leaves the reader guessing the unit, so every duration in a manifest or
//! in `switchboard.toml` is a string with a unit. [`format_duration`] writes
//! the canonical form back (what status output and serialized manifests
//! show), and [`parse_duration`] reads it again exactly.
//!
//! ```
//! use std::time::Duration;
//! use switchboard_proto::duration::{format_duration, parse_duration};
//!
//! assert_eq!(parse_duration("1.5s")?, Duration::from_millis(1500));
//! assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
//! assert_eq!(format_duration(Duration::from_secs(120)), "2m");
//! assert!(parse_duration("5 parsecs").is_err());
//! # Ok::<(), switchboard_proto::duration::DurationError>(())
//! ```

use std::time::Duration;

const NANOS_PER_MS: u128 = 1_000_000;
const NANOS_PER_S: u128 = 1_000_000_000;
const NANOS_PER_M: u128 = 60 * NANOS_PER_S;
const NANOS_PER_H: u128 = 60 * NANOS_PER_M;
const NANOS_PER_D: u128 = 24 * NANOS_PER_H;

/// The longest duration accepted: 365 days.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Longest input quoted back in an error message, so a pasted blob does
/// not flood the log.
const MAX_QUOTED: usize = 40;

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Not a number followed by one of the known units.
    #[error(
        "`{input}` is not a duration: use a number with ms, s, m or h, e.g. \"500ms\" or \"5s\""
    )]
    Invalid {
        /// The rejected text (trimmed, shortened when long).
        input: String,
    },
    /// A well-formed duration longer than [`MAX_DURATION`].
    #[error("`{input}` is longer than a year (8760h), the longest duration accepted; use a smaller number")]
    TooLarge {
        /// The rejected text (trimmed, shortened when long).
        input: String,
    },
}

fn quoted(s: &str) -> String {
    if s.len() <= MAX_QUOTED {
        return s.to_owned();
    }
    let mut end = MAX_QUOTED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Parses a duration: a non-negative decimal number (`5`, `1.5`) followed
/// by a unit, `ms`, `s`, `m`, `h` or `d` (24 hours), with optional spaces around and
/// between. `"0s"` is accepted (whether zero makes sense is the caller's
/// call); a number without a unit is not, because the unit would be a
/// guess.
///
/// Fractions are exact to the nanosecond (`"0.1s"` is exactly 100 ms);
/// digits beyond that are dropped.
///
/// # Errors
///
/// [`DurationError::Invalid`] for anything else (negative numbers, unknown
/// units, `"1m30s"`), [`DurationError::TooLarge`] when the value is over
/// [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let text = s.trim();
    let invalid = || DurationError::Invalid {
        input: quoted(text),
    };
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let unit_nanos = match unit.trim_start() {
        "ms" => NANOS_PER_MS,
        "s" => NANOS_PER_S,
        "m" => NANOS_PER_M,
        "h" => NANOS_PER_H,
        "d" => NANOS_PER_D,
        _ => return Err(invalid()),
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !all_digits(whole)
        || !all_digits(fraction)
        || (number.contains('.') && fraction.is_empty())
    {
        return Err(invalid());
    }
    let too_large = || DurationError::TooLarge {
        input: quoted(text),
    };
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(too_large)?;
    // 18 fraction digits are more than nanosecond precision for any unit
    // here (an hour is 3.6e12 ns), and keep 10^digits inside a u128.
    let fraction = &fraction[..fraction.len().min(18)];
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().map_err(|_| invalid())?;
        let scale = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| invalid())?);
        nanos = nanos
            .checked_add(digits * unit_nanos / scale)
            .ok_or_else(too_large)?;
    }
    let secs = u64::try_from(nanos / NANOS_PER_S).map_err(|_| too_large())?;
    let subsec = u32::try_from(nanos % NANOS_PER_S).map_err(|_| too_large())?;
    let d = Duration::new(secs, subsec);
    if d > MAX_DURATION {
        return Err(too_large());
    }
    Ok(d)
}

/// The canonical text of a duration, which [`parse_duration`] reads back
/// exactly: the largest unit that expresses it as a whole number (`"2m"`,
/// `"90s"`, `"1500ms"`), `"0s"` for zero, and a decimal number of
/// milliseconds for sub-millisecond precision (`"0.25ms"`).
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (unit, name) in [
        (NANOS_PER_D, "d"),
        (NANOS_PER_H, "h"),
        (NANOS_PER_M, "m"),
        (NANOS_PER_S, "s"),
        (NANOS_PER_MS, "ms"),
    ] {
        if nanos % unit == 0 {
            return format!("{}{name}", nanos / unit);
        }
    }
    let fraction = format!("{:06}", nanos % NANOS_PER_MS);
    format!(
        "{}.{}ms",
        nanos / NANOS_PER_MS,
        fraction.trim_end_matches('0')
    )
}

/// Serde glue for `#[serde(with = "switchboard_proto::duration::serde_duration")]`
/// on a [`Duration`] field: reads the strings [`parse_duration`] accepts,
/// writes [`format_duration`]'s canonical form, so that serialized
/// manifests and configs look like the files people write.
///
/// ```
/// use std::time::Duration;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Knobs {
///     #[serde(with = "switchboard_proto::duration::serde_duration")]
///     timeout: Duration,
/// }
///
/// let knobs: Knobs = serde_json::from_str(r#"{"timeout": "1.5s"}"#)?;
/// assert_eq!(knobs.timeout, Duration::from_millis(1500));
/// assert_eq!(serde_json::to_string(&knobs)?, r#"{"timeout":"1500ms"}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
pub mod serde_duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    use super::{format_duration, parse_duration};

    /// Writes the canonical string ([`format_duration`]).
    ///
    /// # Errors
    ///
    /// Whatever the serializer reports for a string.
    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*d))
    }

    /// Reads a duration string ([`parse_duration`]).
    ///
    /// # Errors
    ///
    /// A custom error with [`parse_duration`]'s message, or an invalid-type
    /// error for anything that is not a string.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_str(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration string such as \"500ms\" or \"5s\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_examples() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("5s", Duration::from_secs(5)),
            ("1.5s", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("0s", Duration::ZERO),
            ("  10 s \n", Duration::from_secs(10)),
            ("0.1s", Duration::from_millis(100)),
            ("0.25ms", Duration::from_micros(250)),
            ("1.000000001s", Duration::new(1, 1)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "5",
            "5 parsecs",
            "-5s",
            "s",
            ".5s",
            "5.s",
            "1m30s",
            "5S",
            "1.2.3s",
            "5 ms s",
            "1e3s",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(matches!(err, DurationError::Invalid { .. }), "{bad}: {err}");
        }
        let err = parse_duration("5 parsecs").expect_err("unit");
        assert_eq!(
            err.to_string(),
            "`5 parsecs` is not a duration: use a number with ms, s, m or h, e.g. \"500ms\" or \"5s\""
        );
        for huge in [
            "9".repeat(30) + "h",
            "3000000000000000h".into(),
            "8761h".into(),
        ] {
            assert!(
                matches!(parse_duration(&huge), Err(DurationError::TooLarge { .. })),
                "{huge}"
            );
        }
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        let long = "x".repeat(500);
        assert!(parse_duration(&long).expect_err("long").to_string().len() < 200);
    }

    #[test]
    fn formats_canonically_and_round_trips() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_micros(250), "0.25ms"),
            (Duration::new(1, 1), "1000.000001ms"),
        ];
        for (d, text) in cases {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d), "{text}");
        }
    }
}
