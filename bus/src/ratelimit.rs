//! Token buckets by key: how often a bot may answer one room, one sender
//! or one network ([`crate::Triggers`]).
//!
//! Why: a bot answers whatever reaches it, so whoever can make it hear
//! 20,000 `!ping`s in a few seconds makes it say 20,000 `pong`s into the
//! room (and through the protocol operator, onto the network, which may
//! ban it). Sopel limits commands per user, per channel and globally; the
//! same three keys here, with token buckets (a burst, then a steady rate)
//! rather than a fixed gap, so a normal conversation is never slowed.
//! Written here rather than taken from a crate (`governor`): three maps of
//! two numbers, with the eviction a flood of fresh keys needs, is smaller
//! than the dependency and its compile time on the project's 2 cores.

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Deserializer};

/// A token bucket's shape: `burst` answers at once, then `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RateLimit {
    /// Answers allowed at once (at least 1).
    pub burst: u32,
    /// Answers allowed per second after the burst (greater than 0).
    pub per_second: f64,
}

impl RateLimit {
    /// A limit, or why it is not one.
    ///
    /// # Errors
    ///
    /// A sentence naming the bad field, for config errors.
    pub fn new(burst: u32, per_second: f64) -> Result<RateLimit, String> {
        if burst == 0 {
            return Err("`burst` must be at least 1 (use \"off\" for no limit)".into());
        }
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(format!(
                "`per_second` must be a number greater than 0, not {per_second} (use \"off\" for no limit)"
            ));
        }
        Ok(RateLimit { burst, per_second })
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            burst: u32,
            per_second: f64,
        }
        let raw = Raw::deserialize(d)?;
        RateLimit::new(raw.burst, raw.per_second).map_err(serde::de::Error::custom)
    }
}

/// A limit that may be turned off: a `{burst, per_second}` table, or the
/// string `"off"` (`None`).
pub(crate) fn limit_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RateLimit>, D::Error> {
    // Through a JSON value (configs are JSON) so that a bad table keeps
    // its own message ("`burst` must be at least 1") instead of serde's
    // "did not match any variant".
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(w) if w == "off" => Ok(None),
        serde_json::Value::String(w) => Err(serde::de::Error::custom(format!(
            "expected {{ burst = <n>, per_second = <x> }} or \"off\", not \"{w}\""
        ))),
        table => RateLimit::deserialize(table)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// Keys remembered per map; a flood of new keys (a new sender name per
/// message) beyond it first forgets the buckets that are full again, then
/// refuses new keys until some are.
pub const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets of one [`RateLimit`], one per key.
#[derive(Debug)]
pub(crate) struct Buckets {
    limit: RateLimit,
    buckets: HashMap<String, Bucket>,
}

impl Buckets {
    pub(crate) fn new(limit: RateLimit) -> Buckets {
        Buckets {
            limit,
            buckets: HashMap::new(),
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst))
    }

    /// Whether `key` has a token now (without taking it). A key never
    /// seen has a full bucket, if there is room to remember it.
    pub(crate) fn has(&mut self, key: &str, now: Instant) -> bool {
        match self.buckets.get(key) {
            Some(b) => self.refilled(*b, now) >= 1.0,
            None => self.room_for_one(now),
        }
    }

    /// Take a token from `key` (call after [`Buckets::has`] said yes).
    pub(crate) fn take(&mut self, key: &str, now: Instant) {
        let tokens = match self.buckets.get(key) {
            Some(b) => self.refilled(*b, now),
            None => f64::from(self.limit.burst),
        };
        self.buckets.insert(
            key.to_owned(),
            Bucket {
                tokens: (tokens - 1.0).max(0.0),
                at: now,
            },
        );
    }

    fn room_for_one(&mut self, now: Instant) -> bool {
        if self.buckets.len() < MAX_KEYS {
            return true;
        }
        let burst = f64::from(self.limit.burst);
        let per_second = self.limit.per_second;
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + elapsed * per_second < burst
        });
        self.buckets.len() < MAX_KEYS
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// Warnings about a flood, at most one every `every`: the first of a
/// burst is logged, the rest only counted and said with the next one
/// (`suppressed_since_last`). A flood of forgeries or of over-limit
/// answers must not flood the log; [`crate::authentic`] and
/// [`crate::Triggers`] both need it.
#[derive(Debug)]
pub(crate) struct Hush {
    every: std::time::Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Hush {
    /// At most one warning every `every`.
    pub(crate) fn new(every: std::time::Duration) -> Hush {
        Hush {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a warning is due at `now` (`n` were kept quiet
    /// since the last one), `None` when this one is only counted.
    pub(crate) fn due(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn take(b: &mut Buckets, key: &str, now: Instant) -> bool {
        let ok = b.has(key, now);
        if ok {
            b.take(key, now);
        }
        ok
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = Buckets::new(RateLimit::new(3, 2.0).unwrap());
        let t0 = Instant::now();
        let got = (0..10).filter(|_| take(&mut b, "room", t0)).count();
        assert_eq!(got, 3, "the burst");
        assert!(!take(&mut b, "room", t0 + Duration::from_millis(400)));
        assert!(
            take(&mut b, "room", t0 + Duration::from_millis(500)),
            "2 per second"
        );
        assert!(take(&mut b, "other", t0), "keys are separate");
        // 10 s later the bucket is full again, not fuller.
        let later = t0 + Duration::from_secs(10);
        assert_eq!((0..10).filter(|_| take(&mut b, "room", later)).count(), 3);
    }

    #[test]
    fn a_flood_of_keys_is_bounded() {
        let mut b = Buckets::new(RateLimit::new(1, 1.0).unwrap());
        let t0 = Instant::now();
        for i in 0..MAX_KEYS {
            assert!(take(&mut b, &i.to_string(), t0));
        }
        assert!(
            !take(&mut b, "one more", t0),
            "no room while all are in use"
        );
        assert_eq!(b.len(), MAX_KEYS);
        // Once they are full again they are forgotten.
        assert!(take(&mut b, "one more", t0 + Duration::from_secs(2)));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn limits_are_checked() {
        assert!(RateLimit::new(0, 1.0).is_err());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(RateLimit::new(1, bad).is_err(), "{bad}");
        }
        #[derive(Debug, Deserialize)]
        struct C {
            #[serde(deserialize_with = "limit_or_off")]
            l: Option<RateLimit>,
        }
        let c: C = serde_json::from_value(serde_json::json!({"l": "off"})).unwrap();
        assert_eq!(c.l, None);
        let c: C =
            serde_json::from_value(serde_json::json!({"l": {"burst": 2, "per_second": 0.5}}))
                .unwrap();
        assert_eq!(c.l, Some(RateLimit::new(2, 0.5).unwrap()));
        for bad in [
            serde_json::json!({"l": "of"}),
            serde_json::json!({"l": {"burst": 0, "per_second": 1.0}}),
            serde_json::json!({"l": {"burst": 1}}),
        ] {
            assert!(serde_json::from_value::<C>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn hush_says_the_first_of_a_burst_and_counts_the_rest() {
        let every = std::time::Duration::from_secs(10);
        let mut hush = Hush::new(every);
        let t0 = Instant::now();
        assert_eq!(hush.due(t0), Some(0));
        assert_eq!(hush.due(t0 + every / 2), None);
        assert_eq!(hush.due(t0 + every / 2), None);
        assert_eq!(hush.due(t0 + every), Some(2));
        assert_eq!(hush.due(t0 + every * 3), Some(0));
    }
}
