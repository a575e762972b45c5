//! Messages seen on the bus per subject branch: totals since start (the
//! Prometheus counters) and per-second counts over the rate window (the
//! page's chart).

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

/// The branch of a subject: its first two tokens (`chat.irc`, `send.irc`,
/// `sb.log`, `sb.event`, `sb.op`), so the chart has a line per protocol
/// and per kind of control-plane traffic, not per room.
pub fn branch(subject: &str) -> &str {
    match subject.match_indices('.').nth(1) {
        Some((i, _)) => &subject[..i],
        None => subject,
    }
}

/// Counts per branch.
#[derive(Debug)]
pub struct Rates {
    window_secs: u64,
    branches: BTreeMap<String, Branch>,
}

#[derive(Debug, Default)]
struct Branch {
    total: u64,
    /// (second, count), oldest first, only seconds with traffic.
    buckets: VecDeque<(u64, u64)>,
}

/// One branch for the page: per-second counts, oldest first, the last
/// `window` seconds ending at `now`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Series {
    /// The branch.
    pub branch: String,
    /// Messages since the dashboard started.
    pub total: u64,
    /// One count per second of the window.
    pub per_second: Vec<u64>,
}

impl Rates {
    /// Rates kept for `window_secs` seconds.
    pub fn new(window_secs: u64) -> Rates {
        Rates {
            window_secs: window_secs.max(1),
            branches: BTreeMap::new(),
        }
    }

    /// One message on `subject` in second `now`.
    pub fn record(&mut self, subject: &str, now: u64) {
        let b = self.branches.entry(branch(subject).to_owned()).or_default();
        b.total += 1;
        match b.buckets.back_mut() {
            Some((sec, n)) if *sec == now => *n += 1,
            _ => b.buckets.push_back((now, 1)),
        }
        while b
            .buckets
            .front()
            .is_some_and(|(s, _)| *s + self.window_secs <= now)
        {
            b.buckets.pop_front();
        }
    }

    /// Totals since start, per branch.
    pub fn totals(&self) -> impl Iterator<Item = (&str, u64)> {
        self.branches.iter().map(|(k, b)| (k.as_str(), b.total))
    }

    /// Mean messages per second over the `secs` seconds before `now`
    /// (the current, partial second left out).
    pub fn mean(&self, branch: &str, now: u64, secs: u64) -> f64 {
        let Some(b) = self.branches.get(branch) else {
            return 0.0;
        };
        let from = now.saturating_sub(secs);
        let n: u64 = b
            .buckets
            .iter()
            .filter(|(s, _)| *s >= from && *s < now)
            .map(|(_, n)| n)
            .sum();
        n as f64 / secs.max(1) as f64
    }

    /// Every branch's last `window` seconds up to `now`.
    pub fn series(&self, now: u64) -> Vec<Series> {
        let start = (now + 1).saturating_sub(self.window_secs);
        self.branches
            .iter()
            .map(|(k, b)| {
                let mut per_second = vec![0; (now + 1 - start) as usize];
                for (s, n) in &b.buckets {
                    if *s >= start && *s <= now {
                        per_second[(*s - start) as usize] = *n;
                    }
                }
                Series {
                    branch: k.clone(),
                    total: b.total,
                    per_second,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_are_the_first_two_tokens() {
        assert_eq!(branch("chat.irc.libera.=23rust.message"), "chat.irc");
        assert_eq!(branch("sb.log.pingbot.stderr"), "sb.log");
        assert_eq!(branch("sb.api"), "sb.api");
        assert_eq!(branch("x"), "x");
    }

    #[test]
    fn counts_per_second_within_the_window() {
        let mut r = Rates::new(10);
        for _ in 0..3 {
            r.record("chat.irc.a.b.message", 100);
        }
        r.record("chat.irc.a.b.message", 105);
        r.record("sb.log.x.stderr", 105);
        let s = r.series(105);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].branch, "chat.irc");
        assert_eq!(s[0].total, 4);
        assert_eq!(s[0].per_second.len(), 10);
        assert_eq!(s[0].per_second[4], 3, "second 100 of 96..=105");
        assert_eq!(s[0].per_second[9], 1);
        assert!((r.mean("chat.irc", 106, 10) - 0.4).abs() < 1e-9);
        // Second 100 leaves the window; the total stays.
        r.record("chat.irc.a.b.message", 111);
        let s = r.series(111);
        assert_eq!(s[0].per_second.iter().sum::<u64>(), 2);
        assert_eq!(s[0].total, 5);
    }
}
