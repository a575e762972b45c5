//! Outbound flood control: a token bucket plus a window of unprocessed
//! bytes.
//!
//! IRC servers protect themselves from fast clients in two ways: some read
//! slowly ("fake lag", ngIRCd's penalties) and disconnect a client whose
//! unread input grows past a limit ("RecvQ exceeded", "Excess Flood"),
//! others count commands per second. Two mechanisms keep the bot under
//! both:
//!
//! - [`TokenBucket`]: at most `burst` lines at once, then `per_second`
//!   lines per second (`flood.burst`, `flood.per_second`).
//! - [`Window`]: at most `window_bytes` bytes that the server has not
//!   processed yet. After every half window the session sends
//!   `PING :sbflow<n>`; the server answers in order, so its `PONG` proves
//!   that everything before it was read. A server that reads slowly thus
//!   slows the bot down instead of queueing (and then killing) it.
//!   `window_bytes = 0` turns this off.
//!
//! The defaults (burst 5, 4 lines/s, a 1024-byte window) were chosen so
//! that 60 lines sent at once reach a channel on a default ngIRCd (which
//! throttles) in about 16 s without a flood kick, and so that servers that
//! hold a flooder's input (InspIRCd's fakelag, UnrealIRCd, ircu) never see
//! more than 1 KiB queued, under their receive-queue limits. Solanum
//! (Libera) reads 5 lines/s from a client, more than 4. On a server that
//! kills on the command rate instead (InspIRCd with `fakelag="no"` and its
//! default `commandrate`), lower `per_second` to 1.
//!
//! Both are pure (time is passed in) so they are tested without sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Lines per second with a burst allowance.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `per_second`.
    pub fn new(burst: u32, per_second: f64, now: Instant) -> TokenBucket {
        let capacity = f64::from(burst.max(1));
        TokenBucket {
            capacity,
            rate: per_second.max(0.001),
            tokens: capacity,
            last: now,
        }
    }

    /// New limits; the tokens saved so far are kept (capped).
    pub fn reconfigure(&mut self, burst: u32, per_second: f64, now: Instant) {
        self.refill(now);
        self.capacity = f64::from(burst.max(1));
        self.rate = per_second.max(0.001);
        self.tokens = self.tokens.min(self.capacity);
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token will be there (now if there is one).
    pub fn next_ready(&self, now: Instant) -> Instant {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        let tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - tokens) / self.rate)
        }
    }
}

/// The PING token of flow marker `id`.
pub fn marker_token(id: u64) -> String {
    format!("sbflow{id}")
}

/// The marker id in a PONG token, if it is one of ours.
pub fn parse_marker(token: &str) -> Option<u64> {
    token.strip_prefix("sbflow")?.parse().ok()
}

#[derive(Debug, Clone)]
struct Segment {
    marker: u64,
    bytes: usize,
    sent_at: Instant,
}

/// Bytes sent but not yet known to be processed by the server.
#[derive(Debug, Clone)]
pub struct Window {
    limit: usize,
    segments: VecDeque<Segment>,
    open: usize,
    next_marker: u64,
}

impl Window {
    /// A window of `limit` bytes (0: unlimited).
    pub fn new(limit: usize) -> Window {
        Window {
            limit,
            segments: VecDeque::new(),
            open: 0,
            next_marker: 1,
        }
    }

    /// A new limit; what is in flight stays in flight.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Bytes in flight.
    pub fn in_flight(&self) -> usize {
        self.open + self.segments.iter().map(|s| s.bytes).sum::<usize>()
    }

    /// Whether a line of `bytes` may go now. A line longer than the whole
    /// window may go when nothing is in flight.
    pub fn allows(&self, bytes: usize) -> bool {
        let in_flight = self.in_flight();
        self.limit == 0 || in_flight == 0 || in_flight + bytes <= self.limit
    }

    /// Records a line of `bytes` handed to the socket. Returns the id of a
    /// marker to send right after it when half a window has gone out since
    /// the last marker.
    pub fn sent(&mut self, bytes: usize, now: Instant) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        self.open += bytes;
        if self.open >= self.limit / 2 {
            Some(self.close_segment(now))
        } else {
            None
        }
    }

    /// When blocked (a line does not fit) with unmarked bytes in flight,
    /// the marker to send so that an answer can unblock us.
    pub fn marker_if_blocked(&mut self, next_line: usize, now: Instant) -> Option<u64> {
        if !self.allows(next_line) && self.open > 0 {
            Some(self.close_segment(now))
        } else {
            None
        }
    }

    fn close_segment(&mut self, now: Instant) -> u64 {
        let marker = self.next_marker;
        self.next_marker += 1;
        self.segments.push_back(Segment {
            marker,
            bytes: self.open,
            sent_at: now,
        });
        self.open = 0;
        marker
    }

    /// The server answered marker `id`: everything up to it was processed.
    pub fn acked(&mut self, id: u64) {
        while self.segments.front().is_some_and(|s| s.marker <= id) {
            self.segments.pop_front();
        }
    }

    /// When the oldest unanswered marker was sent.
    pub fn oldest_unanswered(&self) -> Option<Instant> {
        self.segments.front().map(|s| s.sent_at)
    }

    /// Forget everything in flight (new connection).
    pub fn reset(&mut self) {
        self.segments.clear();
        self.open = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 2.0, t0);
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0));
        assert_eq!(b.next_ready(t0), t0 + Duration::from_millis(500));
        assert!(!b.try_take(t0 + Duration::from_millis(400)));
        assert!(b.try_take(t0 + Duration::from_millis(500)));
        // Long idle refills only up to the burst.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            assert!(b.try_take(later));
        }
        assert!(!b.try_take(later));
    }

    #[test]
    fn bucket_reconfigure_caps_tokens() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 1.0, t0);
        b.reconfigure(2, 1.0, t0);
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0));
    }

    #[test]
    fn window_blocks_until_acked() {
        let t0 = Instant::now();
        let mut w = Window::new(1000);
        assert_eq!(w.sent(300, t0), None);
        assert_eq!(w.sent(300, t0), Some(1)); // half window: marker 1
        assert!(w.allows(400));
        assert_eq!(w.sent(400, t0), None);
        assert!(!w.allows(400));
        assert_eq!(w.marker_if_blocked(400, t0), Some(2));
        assert_eq!(w.in_flight(), 1000);
        w.acked(1);
        assert_eq!(w.in_flight(), 400);
        assert!(w.allows(400));
        w.acked(2);
        assert_eq!(w.in_flight(), 0);
        assert!(w.oldest_unanswered().is_none());
    }

    #[test]
    fn oversized_line_goes_when_idle_and_zero_disables() {
        let t0 = Instant::now();
        let w = Window::new(100);
        assert!(w.allows(5000));
        let mut off = Window::new(0);
        assert_eq!(off.sent(1_000_000, t0), None);
        assert!(off.allows(1_000_000));
    }

    #[test]
    fn marker_tokens_round_trip() {
        assert_eq!(parse_marker(&marker_token(42)), Some(42));
        assert_eq!(parse_marker("irc.test"), None);
    }
}
