//! The operator's own heartbeat counters (next to the bus's), and a log
//! line that is said once per burst.

use std::time::{Duration, Instant};

use switchboard_bus::{Counter, Stats};

/// Counters, by what happened to an event or frame.
#[derive(Debug, Clone)]
pub struct NostrStats {
    /// Events received from relays (every copy, before any check).
    pub events_in: Counter,
    /// Events dropped: id or signature did not verify.
    pub bad_signature: Counter,
    /// Events dropped: for no open subscription, or not matching its
    /// filter.
    pub unmatched: Counter,
    /// Copies dropped: the event was already published (another relay, an
    /// overlap after a reconnect or restart).
    pub duplicates: Counter,
    /// Frames skipped: not JSON, unknown type, malformed.
    pub bad_frames: Counter,
    /// Frames skipped: larger than `max_event_bytes`.
    pub oversize: Counter,
    /// Events not published because the bot signed them (`own_events`
    /// off).
    pub own: Counter,
    /// Events published on the bus.
    pub published: Counter,
    /// `OK true` from a relay.
    pub oks: Counter,
    /// `OK false` from a relay (or no answer in time).
    pub refusals: Counter,
    /// NIP-42 challenges answered.
    pub auths: Counter,
    /// `NOTICE`s received.
    pub notices: Counter,
    /// `CLOSED`s received.
    pub closed: Counter,
    /// Websocket connects.
    pub connects: Counter,
    /// Direct messages published (also counted in `published`).
    pub dms: Counter,
    /// Direct messages dropped: they did not decrypt or verify.
    pub undecryptable: Counter,
    /// Direct messages not published: written before the first start of
    /// the direct-message subscription.
    pub dms_before_start: Counter,
    /// Relay events not published: the queue to the bus was full.
    pub relay_events_dropped: Counter,
}

impl NostrStats {
    /// The counters, registered in `stats` (heartbeat names in PROTOCOL.md).
    pub fn new(stats: &Stats) -> NostrStats {
        NostrStats {
            events_in: stats.counter("nostr_events_in"),
            bad_signature: stats.counter("nostr_dropped_bad_signature"),
            unmatched: stats.counter("nostr_dropped_unmatched"),
            duplicates: stats.counter("nostr_dropped_duplicate"),
            bad_frames: stats.counter("nostr_frames_skipped"),
            oversize: stats.counter("nostr_dropped_oversize"),
            own: stats.counter("nostr_skipped_own"),
            published: stats.counter("nostr_events_published"),
            oks: stats.counter("nostr_ok_accepted"),
            refusals: stats.counter("nostr_ok_refused"),
            auths: stats.counter("nostr_auth_sent"),
            notices: stats.counter("nostr_notices"),
            closed: stats.counter("nostr_closed"),
            dms: stats.counter("nostr_dms_published"),
            undecryptable: stats.counter("nostr_dropped_undecryptable"),
            dms_before_start: stats.counter("nostr_dms_skipped_before_start"),
            relay_events_dropped: stats.counter("nostr_relay_events_dropped"),
            connects: stats.counter("nostr_relay_connects"),
        }
    }
}

/// A warning said once per burst: the first occurrence is logged, the
/// rest within `QUIET` only counted, and the count is said with the next.
#[derive(Debug, Default)]
pub struct BurstLog {
    last: Option<Instant>,
    suppressed: u64,
}

const QUIET: Duration = Duration::from_secs(10);

impl BurstLog {
    /// Whether to log now, and how many were not logged before this one.
    pub fn should_log(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < QUIET => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_logged_once() {
        let mut b = BurstLog::default();
        assert_eq!(b.should_log(), Some(0));
        assert_eq!(b.should_log(), None);
        assert_eq!(b.should_log(), None);
        b.last = Some(Instant::now() - QUIET);
        assert_eq!(b.should_log(), Some(2));
    }
}
