//! The actor's decisions, as pure functions: given what the actor knows
//! (its state, its manifest's policy and timings, the times involved) and
//! what happened, what comes next. No I/O, no clock (times are passed in),
//! no process: the actor carries the outcome out. Tested here on their own,
//! so a rule can be checked without starting anything.

use std::time::{Duration, Instant};

use switchboard_proto::api::SupervisedState;
use switchboard_proto::OperatorState;

use switchboard_proto::duration::format_duration;
use switchboard_proto::Counters;

use crate::backoff::Verdict;
use crate::manifest::{Control, Manifest, RestartPolicy};

/// The health timings of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timings {
    pub ready_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub missed_heartbeats: u32,
}

impl Timings {
    pub(super) fn of(m: &Manifest) -> Timings {
        Timings {
            ready_timeout: m.ready_timeout,
            heartbeat_interval: m.heartbeat_interval,
            missed_heartbeats: m.missed_heartbeats,
        }
    }

    /// How long a running operator may stay silent. Saturates instead of
    /// overflowing (the loader bounds each duration, not their product).
    fn silence_allowed(&self) -> Duration {
        self.heartbeat_interval
            .checked_mul(self.missed_heartbeats)
            .unwrap_or(Duration::MAX)
    }
}

/// When the current process must next show a sign of life, or `None`
/// when nothing is expected of it (a signals operator has no protocol;
/// other states have no deadline). Never before `grace_until` (after a bus
/// outage). `None` too when the deadline is too far to represent.
pub(super) fn health_deadline(
    state: SupervisedState,
    control: Control,
    started: Instant,
    last_seen: Option<Instant>,
    timings: Timings,
    grace_until: Option<Instant>,
) -> Option<Instant> {
    if control == Control::Signals {
        return None;
    }
    let due = match state {
        SupervisedState::Starting => started.checked_add(timings.ready_timeout),
        SupervisedState::Running | SupervisedState::Halted => last_seen
            .unwrap_or(started)
            .checked_add(timings.silence_allowed()),
        _ => None,
    }?;
    Some(grace_until.map_or(due, |g| due.max(g)))
}

/// A lifecycle message from the operator's own process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Heard {
    /// `ready`.
    Ready,
    /// A heartbeat, with the state the operator reports.
    Heartbeat(OperatorState),
}

/// The state a lifecycle message moves the actor to, if it changes.
pub(super) fn on_heard(state: SupervisedState, heard: Heard) -> Option<SupervisedState> {
    use SupervisedState as S;
    match (state, heard) {
        (S::Starting, Heard::Ready) => Some(S::Running),
        (S::Running, Heard::Heartbeat(OperatorState::Halted)) => Some(S::Halted),
        (S::Halted, Heard::Heartbeat(OperatorState::Running)) => Some(S::Running),
        // A heartbeat proves readiness if the ready was lost.
        (S::Starting, Heard::Heartbeat(OperatorState::Running)) => Some(S::Running),
        _ => None,
    }
}

/// What a passed health deadline means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HealthVerdict {
    /// The bus was down (or came back since the last look): nobody could
    /// be heard, so the operator gets a fresh window until then.
    Postpone(Instant),
    /// Its fault: kill it, for this reason.
    Kill(String),
}

/// Judge a passed health deadline. `bus_fine` is false when the daemon's
/// own connection is down or reconnected since the last verdict.
pub(super) fn health_verdict(
    state: SupervisedState,
    timings: Timings,
    bus_fine: bool,
    now: Instant,
    grace: Duration,
) -> HealthVerdict {
    if !bus_fine {
        return HealthVerdict::Postpone(now.checked_add(grace).unwrap_or(now));
    }
    HealthVerdict::Kill(if state == SupervisedState::Starting {
        format!(
            "not ready within {} (ready_timeout)",
            format_duration(timings.ready_timeout)
        )
    } else {
        format!(
            "missed {} heartbeats ({} interval)",
            timings.missed_heartbeats,
            format_duration(timings.heartbeat_interval)
        )
    })
}

/// How a process ended, as the actor saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ended {
    /// Exit code 0 and not killed for its health.
    pub clean: bool,
    /// "exited with code 1", "killed by SIGKILL".
    pub described: String,
    /// Set when the actor killed it for its health: why.
    pub health: Option<String>,
}

/// What to do after a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AfterExit {
    /// Not restarted (its policy): state `exited`.
    Stay {
        /// Why, for status.
        reason: String,
    },
    /// Start it again at once.
    RestartNow {
        /// Why it ended.
        reason: String,
    },
    /// Start it again after `delay`: state `backoff`.
    RestartAfter {
        /// How long to wait.
        delay: Duration,
        /// Why, with the delay, for status.
        reason: String,
    },
    /// Give up: state `failed`, until someone restarts or reloads it.
    Fail {
        /// Why, with what to do.
        reason: String,
    },
}

/// Whether the restart policy restarts after this end.
pub(super) fn restarts(policy: RestartPolicy, ended: &Ended) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !ended.clean,
        RestartPolicy::Never => false,
    }
}

/// What comes after a process ended: its restart policy first, then the
/// backoff's verdict (asked only when a restart is due, since asking
/// counts a failure).
pub(super) fn after_exit(
    id: &str,
    policy: RestartPolicy,
    ended: &Ended,
    verdict: impl FnOnce() -> Verdict,
) -> AfterExit {
    let reason = ended
        .health
        .clone()
        .unwrap_or_else(|| ended.described.clone());
    if !restarts(policy, ended) {
        return AfterExit::Stay { reason };
    }
    after_failure(id, reason, verdict())
}

/// A start that failed or a process that ended and should come back: the
/// backoff's verdict, in words.
pub(super) fn after_failure(id: &str, reason: String, verdict: Verdict) -> AfterExit {
    match verdict {
        Verdict::RestartAfter(delay) if delay.is_zero() => AfterExit::RestartNow { reason },
        Verdict::RestartAfter(delay) => AfterExit::RestartAfter {
            delay,
            reason: format!(
                "{reason}; restarting in {}",
                crate::logging::human_duration(delay)
            ),
        },
        Verdict::CrashLoop { restarts, window } => AfterExit::Fail {
            reason: format!(
                "crash loop: {restarts} restarts within {} (last: {reason}); \
                 fix it, then `switchboard ctl restart {id}` or reload",
                format_duration(window)
            ),
        },
    }
}

/// Operator-specific counters kept from one heartbeat: every status reply
/// carries them for every operator, so one operator sending thousands
/// could make the reply too large for a NATS message.
pub(super) const MAX_OWN_COUNTERS: usize = 64;
/// Longest counter name kept.
pub(super) const MAX_COUNTER_NAME: usize = 64;

/// A heartbeat's counters as the status board keeps them: the standard
/// ones, and at most [`MAX_OWN_COUNTERS`] operator-specific ones with
/// names of at most [`MAX_COUNTER_NAME`] bytes (in name order).
pub(super) fn bounded_counters(mut counters: Counters) -> Counters {
    if counters.extra.len() > MAX_OWN_COUNTERS
        || counters.extra.keys().any(|k| k.len() > MAX_COUNTER_NAME)
    {
        counters.extra = std::mem::take(&mut counters.extra)
            .into_iter()
            .filter(|(k, _)| k.len() <= MAX_COUNTER_NAME)
            .take(MAX_OWN_COUNTERS)
            .collect();
    }
    counters
}

/// Longest health reason the board keeps (bytes): an operator's words,
/// shown in status, must not grow the reply without bound.
pub(super) const MAX_HEALTH_REASON: usize = 512;

/// A health reason cut to [`MAX_HEALTH_REASON`] bytes (on a character
/// boundary).
pub(super) fn bounded_reason(mut reason: String) -> String {
    if reason.len() > MAX_HEALTH_REASON {
        let mut end = MAX_HEALTH_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use SupervisedState as S;

    fn timings() -> Timings {
        Timings {
            ready_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            missed_heartbeats: 3,
        }
    }

    #[test]
    fn deadlines_follow_the_state() {
        let t0 = Instant::now();
        let t = timings();
        let d = |state, seen, grace| health_deadline(state, Control::Nats, t0, seen, t, grace);
        assert_eq!(
            d(S::Starting, None, None),
            Some(t0 + Duration::from_secs(10))
        );
        assert_eq!(d(S::Running, None, None), Some(t0 + Duration::from_secs(3)));
        let seen = t0 + Duration::from_secs(5);
        assert_eq!(
            d(S::Halted, Some(seen), None),
            Some(seen + Duration::from_secs(3))
        );
        let grace = t0 + Duration::from_secs(60);
        assert_eq!(d(S::Running, Some(seen), Some(grace)), Some(grace));
        for idle in [S::Exited, S::Backoff, S::Failed, S::Stopping, S::Disabled] {
            assert_eq!(d(idle, None, None), None, "{idle}");
        }
        assert_eq!(
            health_deadline(S::Running, Control::Signals, t0, None, t, None),
            None
        );
    }

    #[test]
    fn huge_timings_never_overflow() {
        let t = Timings {
            ready_timeout: Duration::MAX,
            heartbeat_interval: Duration::from_secs(365 * 86_400),
            missed_heartbeats: u32::MAX,
        };
        let t0 = Instant::now();
        // Far in the future or unrepresentable: either way no panic, and
        // never earlier than now.
        for state in [S::Starting, S::Running] {
            let d = health_deadline(state, Control::Nats, t0, None, t, None);
            assert!(d.is_none_or(|d| d > t0), "{state}: {d:?}");
        }
    }

    #[test]
    fn counters_are_bounded() {
        let mut c = Counters {
            received: 7,
            ..Counters::default()
        };
        for i in 0..1000 {
            c.extra.insert(format!("c{i:04}"), i);
        }
        c.extra.insert("x".repeat(65), 1);
        let kept = bounded_counters(c);
        assert_eq!(kept.received, 7);
        assert_eq!(kept.extra.len(), MAX_OWN_COUNTERS);
        assert!(kept.extra.keys().all(|k| k.len() <= MAX_COUNTER_NAME));
    }

    #[test]
    fn lifecycle_moves() {
        use OperatorState as O;
        assert_eq!(on_heard(S::Starting, Heard::Ready), Some(S::Running));
        assert_eq!(on_heard(S::Running, Heard::Ready), None);
        assert_eq!(
            on_heard(S::Starting, Heard::Heartbeat(O::Running)),
            Some(S::Running)
        );
        assert_eq!(
            on_heard(S::Running, Heard::Heartbeat(O::Halted)),
            Some(S::Halted)
        );
        assert_eq!(
            on_heard(S::Halted, Heard::Heartbeat(O::Running)),
            Some(S::Running)
        );
        assert_eq!(on_heard(S::Running, Heard::Heartbeat(O::Running)), None);
        assert_eq!(on_heard(S::Stopping, Heard::Heartbeat(O::Running)), None);
    }

    #[test]
    fn health_waits_for_the_bus() {
        let now = Instant::now();
        let grace = Duration::from_secs(5);
        assert_eq!(
            health_verdict(S::Running, timings(), false, now, grace),
            HealthVerdict::Postpone(now + grace)
        );
        let HealthVerdict::Kill(why) = health_verdict(S::Starting, timings(), true, now, grace)
        else {
            panic!("kill expected");
        };
        assert!(why.contains("ready_timeout"), "{why}");
        let HealthVerdict::Kill(why) = health_verdict(S::Running, timings(), true, now, grace)
        else {
            panic!("kill expected");
        };
        assert!(why.contains("missed 3 heartbeats"), "{why}");
    }

    #[test]
    fn exits_follow_the_policy_then_the_backoff() {
        let crash = Ended {
            clean: false,
            described: "exited with code 1".into(),
            health: None,
        };
        let clean = Ended {
            clean: true,
            described: "exited with code 0".into(),
            health: None,
        };
        let now = || Verdict::RestartAfter(Duration::ZERO);
        let never = || -> Verdict { panic!("the backoff must not count a policy stop") };
        assert_eq!(
            after_exit("x", RestartPolicy::OnFailure, &clean, never),
            AfterExit::Stay {
                reason: "exited with code 0".into()
            }
        );
        assert_eq!(
            after_exit("x", RestartPolicy::Never, &crash, never),
            AfterExit::Stay {
                reason: "exited with code 1".into()
            }
        );
        assert_eq!(
            after_exit("x", RestartPolicy::Always, &clean, now),
            AfterExit::RestartNow {
                reason: "exited with code 0".into()
            }
        );
        let killed = Ended {
            clean: false,
            described: "killed by SIGKILL".into(),
            health: Some("missed 3 heartbeats".into()),
        };
        let AfterExit::RestartAfter { delay, reason } =
            after_exit("x", RestartPolicy::OnFailure, &killed, || {
                Verdict::RestartAfter(Duration::from_millis(200))
            })
        else {
            panic!("backoff expected");
        };
        assert_eq!(delay, Duration::from_millis(200));
        assert!(
            reason.starts_with("missed 3 heartbeats; restarting in"),
            "{reason}"
        );
        let AfterExit::Fail { reason } = after_exit("bot", RestartPolicy::Always, &crash, || {
            Verdict::CrashLoop {
                restarts: 5,
                window: Duration::from_secs(60),
            }
        }) else {
            panic!("failed expected");
        };
        assert!(
            reason.contains("crash loop: 5 restarts") && reason.contains("ctl restart bot"),
            "{reason}"
        );
    }
}
