//! What the runtime itself says about an operator's health, besides what
//! the operator sets: a slow consumer (messages dropped because the
//! handler cannot keep up) and a refused subscription (the operator is
//! deaf there). Each is a decision on the current health and what
//! happened, kept apart from the loop so it can be tested alone.

use switchboard_proto::Health;

use crate::HealthReport;

/// How a `degraded` health caused by dropped messages begins.
const SLOW_CONSUMER_REASON: &str = "slow consumer";

/// How a `failed` health caused by a refused subscription begins.
const REFUSED_REASON: &str = "not allowed to subscribe to ";

/// A slow consumer is never silent: messages dropped since the last
/// heartbeat (`dropped` now, `seen` at the last one) make the operator
/// `degraded` with the reason, unless it already reports something else;
/// a heartbeat interval without drops makes it `ok` again.
pub(super) fn slow_consumer(health: &HealthReport, seen: u64, dropped: u64) {
    let new = dropped.saturating_sub(seen);
    let (now, reason) = health.get();
    let ours = reason
        .as_deref()
        .is_some_and(|r| r.starts_with(SLOW_CONSUMER_REASON));
    if new > 0 && (now.is_ok() || ours) {
        health.set(
            Health::Degraded,
            format!(
                "{SLOW_CONSUMER_REASON}: {new} messages dropped since the last heartbeat \
                 ({dropped} in all); the handler cannot keep up with what it subscribed to"
            ),
        );
    } else if new == 0 && ours {
        health.ok();
    }
}

/// A subscription the server refused leaves the operator deaf there (its
/// manifest's `subscribe` grants do not cover it): health `failed`,
/// saying what to change, so `switchboard status` shows it instead of a
/// healthy `running`. Back to ok when none is refused any more (a reload
/// that listens elsewhere), unless the operator set another reason of its
/// own meanwhile.
pub(super) fn refused_subscriptions(health: &HealthReport, subjects: &[String]) {
    if subjects.is_empty() {
        let (now, reason) = health.get();
        if now == Health::Failed && reason.is_some_and(|r| r.starts_with(REFUSED_REASON)) {
            health.ok();
        }
        return;
    }
    health.set(
        Health::Failed,
        format!(
            "{REFUSED_REASON}{}: the manifest's `subscribe` grants do not cover it; \
             widen the grant or listen elsewhere",
            subjects.join(", ")
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_degrade_until_an_interval_without() {
        let h = HealthReport::default();
        slow_consumer(&h, 0, 0);
        assert_eq!(h.get(), (Health::Ok, None));
        slow_consumer(&h, 0, 7);
        let (now, reason) = h.get();
        assert_eq!(now, Health::Degraded);
        let reason = reason.unwrap_or_default();
        assert!(
            reason.starts_with("slow consumer: 7 messages dropped"),
            "{reason}"
        );
        // More drops: still degraded, the count updated.
        slow_consumer(&h, 7, 10);
        assert!(h
            .get()
            .1
            .is_some_and(|r| r.contains("3 messages") && r.contains("(10 in all)")));
        slow_consumer(&h, 10, 10);
        assert_eq!(h.get(), (Health::Ok, None));
    }

    #[test]
    fn drops_never_hide_the_operators_own_reason() {
        let h = HealthReport::default();
        h.set(Health::Failed, "login refused");
        slow_consumer(&h, 0, 5);
        assert_eq!(h.get(), (Health::Failed, Some("login refused".into())));
        slow_consumer(&h, 5, 5);
        assert_eq!(h.get(), (Health::Failed, Some("login refused".into())));
    }

    #[test]
    fn a_refused_subscription_fails_until_none_is() {
        let h = HealthReport::default();
        refused_subscriptions(&h, &["chat.irc.>".into(), "send.x.>".into()]);
        let (now, reason) = h.get();
        assert_eq!(now, Health::Failed);
        let reason = reason.unwrap_or_default();
        assert!(
            reason.starts_with("not allowed to subscribe to chat.irc.>, send.x.>: "),
            "{reason}"
        );
        refused_subscriptions(&h, &[]);
        assert_eq!(h.get(), (Health::Ok, None));
    }

    #[test]
    fn clearing_refusals_keeps_another_reason() {
        let h = HealthReport::default();
        h.set(Health::Failed, "relay gone");
        refused_subscriptions(&h, &[]);
        assert_eq!(h.get(), (Health::Failed, Some("relay gone".into())));
        h.set(Health::Degraded, "slow consumer: 1 messages dropped");
        refused_subscriptions(&h, &[]);
        assert_eq!(h.get().0, Health::Degraded);
    }
}
