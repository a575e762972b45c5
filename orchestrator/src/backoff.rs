//! Restart timing: exponential backoff with jitter, reset after a stable
//! run, and crash-loop detection.
//!
//! The first restart after a stable run is immediate: a single crash of a
//! healthy operator should cost milliseconds, not a backoff period. Only
//! consecutive failures back off: `initial`, then `initial * multiplier`,
//! ... capped at `max`, each spread by ±`jitter`. Too many restarts within
//! `crash_loop.window` put the operator in `failed` until someone acts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::manifest::{Backoff, CrashLoop};

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Start again after this delay.
    RestartAfter(Duration),
    /// Give up: too many restarts within the crash-loop window.
    CrashLoop {
        /// Restarts counted within the window.
        restarts: usize,
        /// The window.
        window: Duration,
    },
}

/// Per-operator restart bookkeeping.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    backoff: Backoff,
    crash_loop: CrashLoop,
    /// Failures since the last stable period.
    consecutive: u32,
    /// When recent restarts happened, for the crash-loop window.
    recent: VecDeque<Instant>,
}

impl RestartTracker {
    /// A tracker with the manifest's settings.
    pub fn new(backoff: Backoff, crash_loop: CrashLoop) -> Self {
        RestartTracker {
            backoff,
            crash_loop,
            consecutive: 0,
            recent: VecDeque::new(),
        }
    }

    /// Take new settings (SIGHUP) without forgetting history.
    pub fn update(&mut self, backoff: Backoff, crash_loop: CrashLoop) {
        self.backoff = backoff;
        self.crash_loop = crash_loop;
    }

    /// Forget everything (an explicit restart by a person, or a reload).
    pub fn reset(&mut self) {
        self.consecutive = 0;
        self.recent.clear();
    }

    /// The process exited at `now` after running for `ran`: decide.
    pub fn on_exit(&mut self, now: Instant, ran: Duration) -> Verdict {
        if ran >= self.backoff.reset_after {
            self.consecutive = 0;
        }
        while let Some(t) = self.recent.front() {
            if now.duration_since(*t) > self.crash_loop.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.crash_loop.max_restarts as usize {
            return Verdict::CrashLoop {
                restarts: self.recent.len(),
                window: self.crash_loop.window,
            };
        }
        self.recent.push_back(now);
        let delay = self.delay_for(self.consecutive);
        self.consecutive = self.consecutive.saturating_add(1);
        Verdict::RestartAfter(delay)
    }

    /// Delay before restart number `n` (0-based) of a failure streak.
    fn delay_for(&self, n: u32) -> Duration {
        if n == 0 {
            return Duration::ZERO;
        }
        let b = &self.backoff;
        let factor = b.multiplier.powi(i32::try_from(n - 1).unwrap_or(i32::MAX));
        let base = b.initial.as_secs_f64() * factor;
        let capped = base.min(b.max.as_secs_f64());
        let spread = if b.jitter > 0.0 {
            1.0 + b.jitter * (fastrand::f64() * 2.0 - 1.0)
        } else {
            1.0
        };
        Duration::from_secs_f64((capped * spread).clamp(0.0, b.max.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(jitter: f64) -> RestartTracker {
        RestartTracker::new(
            Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
                multiplier: 2.0,
                jitter,
                reset_after: Duration::from_secs(30),
            },
            CrashLoop {
                max_restarts: 5,
                window: Duration::from_secs(60),
            },
        )
    }

    #[test]
    fn first_restart_is_immediate_then_exponential_and_capped() {
        let mut t = tracker(0.0);
        let now = Instant::now();
        let quick = Duration::from_millis(10);
        let mut delays = Vec::new();
        for i in 0..5 {
            match t.on_exit(now + Duration::from_secs(i), quick) {
                Verdict::RestartAfter(d) => delays.push(d.as_millis()),
                v => panic!("{v:?}"),
            }
        }
        assert_eq!(delays, vec![0, 100, 200, 400, 800]);
        let mut t = tracker(0.0);
        t.crash_loop.max_restarts = 100;
        let mut last = Duration::ZERO;
        for i in 0..10 {
            if let Verdict::RestartAfter(d) = t.on_exit(now + Duration::from_secs(i), quick) {
                last = d;
            }
        }
        assert_eq!(last, Duration::from_secs(1), "capped at max");
    }

    #[test]
    fn crash_loop_after_max_restarts_within_window() {
        let mut t = tracker(0.0);
        let now = Instant::now();
        for i in 0..5 {
            assert!(matches!(
                t.on_exit(now + Duration::from_millis(i), Duration::ZERO),
                Verdict::RestartAfter(_)
            ));
        }
        assert!(matches!(
            t.on_exit(now + Duration::from_millis(10), Duration::ZERO),
            Verdict::CrashLoop { restarts: 5, .. }
        ));
        // Outside the window the old restarts no longer count.
        let later = now + Duration::from_secs(120);
        assert!(matches!(
            t.on_exit(later, Duration::ZERO),
            Verdict::RestartAfter(_)
        ));
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let mut t = tracker(0.0);
        let now = Instant::now();
        t.on_exit(now, Duration::ZERO);
        t.on_exit(now, Duration::ZERO);
        assert_eq!(
            t.on_exit(now, Duration::from_secs(31)),
            Verdict::RestartAfter(Duration::ZERO)
        );
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut t = tracker(0.5);
        t.crash_loop.max_restarts = 1000;
        let now = Instant::now();
        t.on_exit(now, Duration::ZERO);
        for _ in 0..200 {
            t.consecutive = 1;
            if let Verdict::RestartAfter(d) = t.on_exit(now, Duration::ZERO) {
                assert!(
                    d >= Duration::from_millis(50) && d <= Duration::from_millis(150),
                    "{d:?}"
                );
            }
        }
    }
}
