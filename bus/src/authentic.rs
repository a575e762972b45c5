//! Authentic `source`: whether an envelope's claimed author owns the
//! subject it came on (docs/PROTOCOL.md, "Authentic source").
//!
//! NATS does not tell a subscriber who published a message, so `source`
//! is only a claim. The claim is made checkable by tying subjects to
//! owners: a chat event `chat.<protocol>.<instance>.…` belongs to the
//! operator whose id is `<instance>`, nats-server lets only that operator
//! publish there (the default grant `chat.*.<id>.#`), and a receiver
//! refuses an envelope there whose `source` is anyone else. Together they
//! mean an accepted chat event came from its owner (or from a client the
//! administrator gave wider grants, such as the CLI).
//!
//! Other subjects have no owner in their name. On `send.…` the protocol
//! operator named by `<instance>` is the one acting, and `source` names
//! the requester as the requester says: a receiver may show it, never
//! trust it.
//!
//! Why a module of its own, with plain functions: the operator runtime
//! runs the check on every delivery before the handler, so it must stay a
//! few byte comparisons (no allocation, no parse of the envelope); and
//! operators reading with [`crate::Bus::subscribe`] directly can apply the
//! same rule.

use switchboard_proto::OperatorId;

/// The first token of every chat event subject.
const CHAT_ROOT: &str = "chat.";

/// What the subject says about an envelope's `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The subject has an owner and `source` is it.
    Owner,
    /// The subject has an owner (or must have one, being a chat event)
    /// and `source` is not it: the envelope is refused.
    Forged,
    /// The subject names no owner (`send.…`, other data subjects):
    /// `source` is the publisher's claim, unchecked.
    Unowned,
}

/// The operator that owns `subject`, as written in it: the `<instance>`
/// token of a chat event `chat.<protocol>.<instance>.…`; `None` for any
/// other subject. The token may not be an operator id, in which case no
/// operator owns the subject (see [`origin`]).
///
/// ```
/// use switchboard_bus::authentic::subject_owner;
///
/// assert_eq!(subject_owner("chat.irc.irc-libera.=23rust.message"), Some("irc-libera"));
/// assert_eq!(subject_owner("send.irc.irc-libera.=23rust.message"), None);
/// ```
pub fn subject_owner(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix(CHAT_ROOT)?;
    let (_protocol, rest) = rest.split_once('.')?;
    Some(rest.split_once('.').map_or(rest, |(instance, _)| instance))
}

/// Whether an envelope with this `source`, received on `subject`, comes
/// from the subject's owner. Chat events whose instance token is not an
/// operator id are [`Origin::Forged`]: no operator can own them.
///
/// ```
/// use switchboard_bus::authentic::{origin, Origin};
///
/// let subject = "chat.irc.irc-libera.=23rust.message";
/// assert_eq!(origin(subject, "irc-libera"), Origin::Owner);
/// assert_eq!(origin(subject, "pingbot"), Origin::Forged);
/// assert_eq!(origin("send.irc.irc-libera.=23rust.message", "pingbot"), Origin::Unowned);
/// ```
pub fn origin(subject: &str, source: &str) -> Origin {
    match subject_owner(subject) {
        None => Origin::Unowned,
        // An operator id escapes to itself, so comparing the raw token
        // with `source` is exact once `source` is known to be an id.
        Some(owner) if owner == source && OperatorId::is_valid(source) => Origin::Owner,
        Some(_) => Origin::Forged,
    }
}

/// Seconds between two warnings about refused envelopes; the ones in
/// between are only counted (a flood of forgeries must not flood the log).
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The operator runtime's gate: refuses [`Origin::Forged`] deliveries
/// before the handler sees them, counts them in the heartbeat counter
/// `forged`, and logs the first of each burst.
pub(crate) struct Gate {
    forged: crate::Counter,
    warnings: crate::ratelimit::Hush,
}

impl Gate {
    /// The heartbeat counter's name.
    pub(crate) const COUNTER: &'static str = "forged";

    pub(crate) fn new(stats: &crate::Stats) -> Gate {
        Gate {
            forged: stats.counter(Self::COUNTER),
            warnings: crate::ratelimit::Hush::new(WARN_EVERY),
        }
    }

    /// Whether a delivery of an envelope from `source` on `subject` may
    /// reach the handler.
    pub(crate) fn admit(&mut self, subject: &str, source: &str) -> bool {
        if origin(subject, source) != Origin::Forged {
            return true;
        }
        self.forged.inc();
        if let Some(suppressed) = self.warnings.due(std::time::Instant::now()) {
            tracing::warn!(
                subject,
                // At most 256 bytes (envelope rule); Debug escapes control characters.
                source = ?source,
                owner = subject_owner(subject).unwrap_or_default(),
                suppressed_since_last = suppressed,
                "dropped an envelope whose source is not the owner of its subject (forged; counted in `forged`)"
            );
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_of_subjects() {
        let cases: &[(&str, Option<&str>)] = &[
            ("chat.irc.libera.=23rust.message", Some("libera")),
            ("chat.irc.libera", Some("libera")),
            ("chat.irc.libera.x", Some("libera")),
            ("chat.irc", None),
            ("chat", None),
            ("chatter.irc.libera.x.message", None),
            ("send.irc.libera.x.message", None),
            ("sb.log.libera.stdout", None),
            ("alerts", None),
        ];
        for (subject, owner) in cases {
            assert_eq!(subject_owner(subject), *owner, "{subject}");
        }
    }

    #[test]
    fn only_the_owner_is_authentic() {
        let s = "chat.irc.irc-libera.=23rust.message";
        assert_eq!(origin(s, "irc-libera"), Origin::Owner);
        for forged in ["pingbot", "irc-libera ", "IRC-LIBERA", "", "irc"] {
            assert_eq!(origin(s, forged), Origin::Forged, "{forged:?}");
        }
        // An instance no operator can have: escaped characters.
        let odd = "chat.irc.lib=2Era.x.message";
        assert_eq!(origin(odd, "lib=2Era"), Origin::Forged);
        assert_eq!(origin(odd, "lib.ra"), Origin::Forged);
        // No owner in the name: the claim is not checked.
        assert_eq!(
            origin("send.irc.irc-libera.x.message", "anyone"),
            Origin::Unowned
        );
        assert_eq!(origin("alerts.x", "anyone"), Origin::Unowned);
    }
}

/// A protocol operator was configured to publish chat events under an
/// instance token other than its own id: every receiver would refuse them
/// as forged (their `source`, the operator's id, would not own the
/// subject), so the operator refuses the setting instead of running mute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`instance = \"{instance}\"` differs from the operator id `{id}`: chat events are \
     accepted only from the operator their instance token names (docs/PROTOCOL.md, \
     \"Authentic source\"), so they would all be dropped as forged; remove `instance` \
     or give the operator the id `{instance}`"
)]
pub struct ForeignInstance {
    /// The operator's id.
    pub id: String,
    /// The configured instance token.
    pub instance: String,
}

/// The instance token a protocol operator publishes its chat events
/// under: its own id, which is also what a `configured` instance (a
/// protocol operator's `instance` config key, kept for readability) must
/// say.
///
/// ```
/// use switchboard_bus::authentic::own_instance;
///
/// assert_eq!(own_instance("irc-libera", None).unwrap(), "irc-libera");
/// assert_eq!(own_instance("irc-libera", Some("irc-libera")).unwrap(), "irc-libera");
/// assert!(own_instance("irc-libera", Some("libera")).is_err());
/// ```
pub fn own_instance(id: &str, configured: Option<&str>) -> Result<String, ForeignInstance> {
    match configured {
        Some(instance) if instance != id => Err(ForeignInstance {
            id: id.to_owned(),
            instance: instance.to_owned(),
        }),
        _ => Ok(id.to_owned()),
    }
}
