//! What an operator may do on the bus: its manifest's `publish`,
//! `subscribe` and `api` grants, turned into nats-server permissions.
//!
//! The server enforces these, deny by default. Every operator always may:
//! publish on `sb.op.<id>.>` (ready, heartbeats) and answer requests it
//! received (`allow_responses`); subscribe to `sb.ctl.<id>` (its control
//! requests) and `<inbox prefix>.>` (replies to its own requests). The
//! rest comes from its manifest.
//!
//! Without a `publish` key an operator may publish chat events only on
//! its own instance, `chat.*.<id>.#`, and send requests anywhere,
//! `send.#` ([`DEFAULT_PUBLISH_GRANTS`]): the server half of the
//! authentic-source rule (docs/PROTOCOL.md), whose other half is the
//! receiving SDK refusing a chat envelope whose `source` is not the
//! instance. A token `{id}` in a grant stands for the operator's id.
//!
//! A grant is a `*`/`#` pattern (the same syntax operators subscribe
//! with). NATS permissions have `*` and a trailing `>` only, so:
//! - `a.#` becomes `a` and `a.>`, `*` stays `*`: exact;
//! - a `#` in the middle (`chat.#.message`) cannot be written in NATS: in
//!   `subscribe` it is widened to the part before it (`chat.#`, which is
//!   also what the SDK subscribes to for such a pattern) with a warning;
//!   in `publish` it is refused, because a publish grant must never be
//!   wider than what its manifest says;
//! - the first token must be a literal: `#.message` or `*.x` would reach
//!   the control plane (`sb.…`), other operators' inboxes and the server's
//!   own subjects (`$…`), so they are refused;
//! - `sb.…` is the control plane: never grantable for publish; for
//!   subscribe only the read-only branches `sb.event.…`, `sb.log.…` and
//!   `sb.op.…` (lifecycle), for monitors. API access is the `api` key.
//!
//! Invariant (checked by the tests): no grant this module accepts lets an
//! operator publish on `sb.ctl.*`, `sb.event.*`, `sb.api.*` (beyond its
//! `api` grants), `sb.log.*` or another operator's `sb.op.<id>.…`, or
//! subscribe to `sb.ctl.*`, `sb.api.*` or another operator's inbox.

use std::fmt;

use serde::{Deserialize, Serialize};
use switchboard_proto::api::methods;
use switchboard_proto::{OperatorId, Pattern, PatternError, PatternToken};

/// Which way a grant goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `publish = [...]`.
    Publish,
    /// `subscribe = [...]`.
    Subscribe,
}

impl Direction {
    /// The manifest key.
    pub fn key(self) -> &'static str {
        match self {
            Direction::Publish => "publish",
            Direction::Subscribe => "subscribe",
        }
    }
}

/// The data subjects an operator may read when its manifest has no
/// `subscribe` key: the chat data plane, both branches, so that a chat
/// operator works without configuration and never reaches the control
/// plane. Name narrower grants in the manifest to restrict it.
pub const DEFAULT_DATA_GRANTS: &[&str] = &["chat.#", "send.#"];

/// What an operator may publish when its manifest has no `publish` key:
/// chat events only on its own instance (`chat.<protocol>.<its id>.…`,
/// so that it cannot pass for another protocol operator: see
/// docs/PROTOCOL.md, "Authentic source") and send requests anywhere (a
/// bot answers in any room; the protocol operator is the one acting).
pub const DEFAULT_PUBLISH_GRANTS: &[&str] = &["chat.*.{id}.#", "send.#"];

/// A grant token replaced by the operator's id (`chat.irc.{id}.#`), so one
/// manifest text, and the default, can name the operator's own subjects.
pub const ID_PLACEHOLDER: &str = "{id}";

/// `grant` with every `{id}` token replaced by `id`.
///
/// ```
/// use switchboard_orchestrator::access::grants::expand;
///
/// assert_eq!(expand("chat.*.{id}.#", "irc-libera"), "chat.*.irc-libera.#");
/// assert_eq!(expand("send.#", "irc-libera"), "send.#");
/// ```
pub fn expand<'a>(grant: &'a str, id: &str) -> std::borrow::Cow<'a, str> {
    if !grant.contains(ID_PLACEHOLDER) {
        return std::borrow::Cow::Borrowed(grant);
    }
    let tokens: Vec<&str> = grant
        .split('.')
        .map(|t| if t == ID_PLACEHOLDER { id } else { t })
        .collect();
    std::borrow::Cow::Owned(tokens.join("."))
}

/// A note when a `publish` grant lets operator `id` publish chat events
/// on an instance other than its own: either any instance (it could pass
/// for any protocol operator, since a chat event is authentic when its
/// `source` is the subject's instance), or a named other one (its own
/// envelopes there carry its id as `source`, so receivers drop them as
/// forged). `None` for grants that are not about `chat.…` or that keep to
/// `chat.<protocol>.<id>.…`.
pub fn chat_instance_note(grant: &str, id: &str) -> Option<String> {
    let expanded = expand(grant, id);
    let pattern = Pattern::parse(&expanded).ok()?;
    let tokens = pattern.tokens();
    if !matches!(tokens.first(), Some(PatternToken::Literal(root)) if root == "chat") {
        return None;
    }
    // The instance is the third token, unless a `#` before it covers it.
    let instance = match tokens.get(1) {
        Some(PatternToken::Hash) | None => None,
        Some(_) => tokens.get(2),
    };
    match instance {
        Some(PatternToken::Literal(instance)) if instance == id => None,
        Some(PatternToken::Literal(instance)) => Some(format!(
            "`publish` grant `{grant}` names chat instance `{instance}`, not the operator's own \
             id `{id}`: its envelopes there carry source `{id}`, so receivers drop them as forged \
             (docs/PROTOCOL.md, Authentic source); name the operator `{instance}`, or grant \
             `chat.<protocol>.{{id}}.#`"
        )),
        _ => Some(format!(
            "`publish` grant `{grant}` lets operator `{id}` publish chat events on every \
             instance, so it can pass for any protocol operator (a chat event is authentic when \
             its source is its instance); grant `chat.<protocol>.{{id}}.#` unless you trust it \
             like the daemon"
        )),
    }
}

/// Subject roots nobody may be granted: the server's own (`$SYS`,
/// `$JS`, ...) start with `$`; inboxes start with `_INBOX`.
fn reserved_root(root: &str) -> bool {
    root.starts_with('$') || root.starts_with("_INBOX")
}

/// Branches of `sb.…` a monitor may subscribe to (read-only).
const READABLE_SB_BRANCHES: &[&str] = &["event", "log", "op"];

/// Why a grant is refused. Messages say what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// Not a `*`/`#` pattern at all.
    #[error("`{pattern}` is not a pattern: {source}")]
    Pattern {
        /// The text.
        pattern: String,
        /// Why.
        source: PatternError,
    },
    /// Starts with `*` or `#`.
    #[error(
        "`{pattern}` starts with a wildcard, which would reach the control plane (sb.…) and \
         other operators' inboxes; start with a subject root, e.g. `chat.#`"
    )]
    WildcardRoot {
        /// The text.
        pattern: String,
    },
    /// `$…` or `_INBOX…`.
    #[error(
        "`{pattern}` is under `{root}`, which is reserved (server subjects and inboxes); \
         replies to your requests are always allowed"
    )]
    Reserved {
        /// The text.
        pattern: String,
        /// The root.
        root: String,
    },
    /// `sb.…` in a way that is not allowed.
    #[error("`{pattern}`: {why}")]
    ControlPlane {
        /// The text.
        pattern: String,
        /// What is allowed instead.
        why: &'static str,
    },
    /// A middle `#` in a publish grant.
    #[error(
        "`{pattern}` has a `#` before its last token, which NATS permissions cannot express; \
         a publish grant is never widened: list the subjects with `*` (e.g. `{suggestion}`)"
    )]
    MiddleHashPublish {
        /// The text.
        pattern: String,
        /// A pattern with `*` instead.
        suggestion: String,
    },
}

impl GrantError {
    /// What kind of problem, for callers that branch on it.
    pub fn kind(&self) -> GrantErrorKind {
        match self {
            GrantError::Pattern { .. } => GrantErrorKind::Pattern,
            GrantError::WildcardRoot { .. }
            | GrantError::Reserved { .. }
            | GrantError::ControlPlane { .. } => GrantErrorKind::Reserved,
            GrantError::MiddleHashPublish { .. } => GrantErrorKind::Inexpressible,
        }
    }
}

/// The kinds of [`GrantError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantErrorKind {
    /// Bad pattern syntax.
    Pattern,
    /// It would reach subjects no operator may be granted.
    Reserved,
    /// NATS cannot express it exactly and widening is not allowed.
    Inexpressible,
}

/// A grant turned into NATS permission subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    /// The NATS subjects (with `*` and `>`).
    pub subjects: Vec<String>,
    /// Set when the grant had to be widened: what it became.
    pub widened_to: Option<String>,
}

/// Translate one manifest grant into NATS permission subjects, or refuse
/// it (see the module docs for the rules).
///
/// ```
/// use switchboard_orchestrator::access::grants::{translate, Direction};
///
/// let t = translate("chat.irc.#", Direction::Publish)?;
/// assert_eq!(t.subjects, ["chat.irc", "chat.irc.>"]);
/// let t = translate("chat.#.message", Direction::Subscribe)?;
/// assert_eq!(t.widened_to.as_deref(), Some("chat.#"));
/// assert!(translate("chat.#.message", Direction::Publish).is_err());
/// assert!(translate("#", Direction::Subscribe).is_err());
/// assert!(translate("sb.ctl.other", Direction::Subscribe).is_err());
/// # Ok::<(), switchboard_orchestrator::access::grants::GrantError>(())
/// ```
///
/// # Errors
///
/// [`GrantError`] when the text is not a pattern or reaches reserved
/// subjects, or for a middle `#` in a publish grant.
pub fn translate(text: &str, direction: Direction) -> Result<Translated, GrantError> {
    let pattern = Pattern::parse(text).map_err(|source| GrantError::Pattern {
        pattern: text.to_owned(),
        source,
    })?;
    let tokens = pattern.tokens();
    let root = match tokens.first() {
        Some(PatternToken::Literal(root)) => root.as_str(),
        _ => {
            return Err(GrantError::WildcardRoot {
                pattern: text.to_owned(),
            })
        }
    };
    if reserved_root(root) {
        return Err(GrantError::Reserved {
            pattern: text.to_owned(),
            root: root.to_owned(),
        });
    }
    if root == "sb" {
        let why = match direction {
            Direction::Publish => {
                "sb.… is the control plane: an operator publishes only its own \
                 sb.op.<id>.… (always allowed); use `api = [\"status\"]` for the API"
            }
            Direction::Subscribe => match tokens.get(1) {
                Some(PatternToken::Literal(branch))
                    if READABLE_SB_BRANCHES.contains(&branch.as_str()) =>
                {
                    ""
                }
                _ => {
                    "only sb.event.…, sb.log.… and sb.op.… can be granted for subscribe \
                     (control requests are private; use `api = [...]` for the API)"
                }
            },
        };
        if !why.is_empty() {
            return Err(GrantError::ControlPlane {
                pattern: text.to_owned(),
                why,
            });
        }
    }
    let mut out: Vec<String> = Vec::new();
    let mut widened_to = None;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            PatternToken::Literal(l) => out.push(l.clone()),
            PatternToken::Star => out.push("*".to_owned()),
            PatternToken::Hash => {
                if i + 1 != tokens.len() {
                    match direction {
                        Direction::Publish => {
                            let suggestion: Vec<&str> = tokens
                                .iter()
                                .map(|t| match t {
                                    PatternToken::Literal(l) => l.as_str(),
                                    _ => "*",
                                })
                                .collect();
                            return Err(GrantError::MiddleHashPublish {
                                pattern: text.to_owned(),
                                suggestion: suggestion.join("."),
                            });
                        }
                        Direction::Subscribe => {
                            widened_to = Some(format!("{}.#", out.join(".")));
                        }
                    }
                }
                let prefix = out.join(".");
                return Ok(Translated {
                    subjects: vec![prefix.clone(), format!("{prefix}.>")],
                    widened_to,
                });
            }
        }
    }
    Ok(Translated {
        subjects: vec![out.join(".")],
        widened_to,
    })
}

/// A part of the orchestrator's request/reply API an operator may call
/// (`api = ["status"]` in its manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiGrant {
    /// `sb.api.status`: read-only (a dashboard).
    Status,
    /// `sb.api.logs`: read-only, but operators' output may be sensitive.
    Logs,
    /// `sb.api.ctl`: halt, resume, reload, restart and shut down any
    /// operator. Only for operators you trust like the CLI.
    Ctl,
}

impl ApiGrant {
    /// Every grant with its manifest spelling.
    pub const ALL: &'static [(&'static str, ApiGrant)] = &[
        (methods::STATUS, ApiGrant::Status),
        (methods::LOGS, ApiGrant::Logs),
        (methods::CTL, ApiGrant::Ctl),
    ];

    /// The API method (`sb.api.<method>`).
    pub fn method(self) -> &'static str {
        match self {
            ApiGrant::Status => methods::STATUS,
            ApiGrant::Logs => methods::LOGS,
            ApiGrant::Ctl => methods::CTL,
        }
    }
}

impl fmt::Display for ApiGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method())
    }
}

/// What an operator may do with the daemon's durable stream
/// (`stream = ["consume"]` or `stream = ["read"]` in its manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamGrant {
    /// Read the whole stream through one durable consumer named after the
    /// operator (a logger, an archiver): chat, send requests, every
    /// operator's output and lifecycle events. Only its own consumer: it
    /// cannot create others, delete anything but its own consumer (re-made at
    /// each start) or read others' positions.
    Consume,
    /// Look stored messages up one at a time (the dashboard's replay view):
    /// the stream's info and `$JS.API.STREAM.MSG.GET`, nothing else. No
    /// consumer, so nothing is left on the server and no other reader's
    /// position can be touched (a grant to create consumers cannot be
    /// narrowed to one name per read: ordered consumers have random names);
    /// only the main stream, never the per-operator copies; no write, purge
    /// or delete.
    Read,
}

impl StreamGrant {
    /// Every grant with its manifest spelling.
    pub const ALL: &'static [(&'static str, StreamGrant)] = &[
        ("consume", StreamGrant::Consume),
        ("read", StreamGrant::Read),
    ];

    /// The JetStream API subjects it allows operator `id` to publish on
    /// for stream `stream` (a consumer named `id`; acks of its messages).
    pub fn subjects(self, id: &OperatorId, stream: &str) -> Vec<String> {
        match self {
            StreamGrant::Consume => vec![
                format!("$JS.API.STREAM.INFO.{stream}"),
                format!("$JS.API.CONSUMER.INFO.{stream}.{id}"),
                format!("$JS.API.CONSUMER.CREATE.{stream}.{id}"),
                format!("$JS.API.CONSUMER.CREATE.{stream}.{id}.>"),
                format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{id}"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{id}"),
                format!("$JS.API.CONSUMER.DELETE.{stream}.{id}"),
                format!("$JS.ACK.{stream}.{id}.>"),
            ],
            StreamGrant::Read => vec![
                format!("$JS.API.STREAM.INFO.{stream}"),
                format!("$JS.API.STREAM.MSG.GET.{stream}"),
            ],
        }
    }
}

/// The inbox prefix an operator must use for its requests
/// (`SWITCHBOARD_NATS_INBOX_PREFIX`); it may subscribe only under it, so
/// no operator reads another's replies. A root of its own (not `_INBOX.`),
/// so that no grant and no other client's inbox can overlap it.
pub fn inbox_prefix(id: &OperatorId) -> String {
    format!("_INBOX_{id}")
}

/// One side (publish or subscribe) of a nats-server permission block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SubjectRules {
    /// Subjects allowed (deny by default when non-empty).
    pub allow: Vec<String>,
    /// Subjects denied even if allowed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// A nats-server `permissions` block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Permissions {
    /// What the user may publish.
    pub publish: SubjectRules,
    /// What the user may subscribe to.
    pub subscribe: SubjectRules,
    /// May answer the requests it receives (one reply each).
    pub allow_responses: bool,
}

/// The permissions of operator `id` with these grants. Grants that do
/// not translate (only possible for a manifest that skipped the loader's
/// checks) are returned as errors and left out.
pub fn operator_permissions(
    id: &OperatorId,
    publish: &[String],
    subscribe: &[String],
    api: &[ApiGrant],
    stream: Option<(&str, &[StreamGrant])>,
) -> (Permissions, Vec<GrantError>) {
    let mut errors = Vec::new();
    let mut p = Permissions {
        allow_responses: true,
        ..Permissions::default()
    };
    p.publish.allow.push(switchboard_proto::op_wildcard(id));
    // Its own inbox too: the SDK's `sync` is a message to itself.
    p.publish.allow.push(format!("{}.>", inbox_prefix(id)));
    p.subscribe
        .allow
        .push(switchboard_proto::control_subject(id));
    p.subscribe.allow.push(format!("{}.>", inbox_prefix(id)));
    for (grants, direction, rules) in [
        (publish, Direction::Publish, &mut p.publish),
        (subscribe, Direction::Subscribe, &mut p.subscribe),
    ] {
        for g in grants {
            match translate(&expand(g, id.as_str()), direction) {
                Ok(t) => {
                    for s in t.subjects {
                        if !rules.allow.contains(&s) {
                            rules.allow.push(s);
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    for a in api {
        p.publish
            .allow
            .push(switchboard_proto::api_subject(a.method()));
    }
    if let Some((name, grants)) = stream {
        for g in grants {
            p.publish.allow.extend(g.subjects(id, name));
        }
    }
    (p, errors)
}

/// Whether every subject that the NATS subscription subject `subject`
/// (with `*` and a final `>`) can match is allowed by the permission
/// subject `permission`: what a subscription needs for nats-server to
/// accept it. Used to warn about an operator that listens where its
/// grants do not reach (the server refuses the subscription and the
/// operator runs deaf).
///
/// ```
/// use switchboard_orchestrator::access::grants::covers;
/// assert!(covers("chat.>", "chat.*.*.*.message"));
/// assert!(covers("chat.*.*.*.message", "chat.irc.libera.*.message"));
/// assert!(!covers("chat.irc.>", "chat.*.*.*.message"));
/// assert!(!covers("chat.*", "chat.>"));
/// ```
pub fn covers(permission: &str, subject: &str) -> bool {
    let p: Vec<&str> = permission.split('.').collect();
    let s: Vec<&str> = subject.split('.').collect();
    for (i, t) in p.iter().enumerate() {
        let Some(&want) = s.get(i) else {
            return false;
        };
        match *t {
            ">" => return true,
            "*" if want != ">" => {}
            lit if lit == want => {}
            _ => return false,
        }
    }
    p.len() == s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> OperatorId {
        OperatorId::new(s).expect("valid id")
    }

    #[test]
    fn exact_translations() {
        let cases: &[(&str, &[&str])] = &[
            ("chat.#", &["chat", "chat.>"]),
            ("chat.irc.*.*.message", &["chat.irc.*.*.message"]),
            (
                "send.irc.libera.#",
                &["send.irc.libera", "send.irc.libera.>"],
            ),
            ("alerts", &["alerts"]),
        ];
        for (text, want) in cases {
            for dir in [Direction::Publish, Direction::Subscribe] {
                let t = translate(text, dir).expect(text);
                assert_eq!(t.subjects, *want, "{text}");
                assert_eq!(t.widened_to, None);
            }
        }
    }

    #[test]
    fn middle_hash_widens_subscribe_and_refuses_publish() {
        let t = translate("chat.#.message", Direction::Subscribe).unwrap();
        assert_eq!(t.subjects, ["chat", "chat.>"]);
        assert_eq!(t.widened_to.as_deref(), Some("chat.#"));
        let e = translate("chat.#.message", Direction::Publish).unwrap_err();
        assert_eq!(e.kind(), GrantErrorKind::Inexpressible);
        assert!(e.to_string().contains("chat.*.message"), "{e}");
    }

    #[test]
    fn id_placeholder_and_chat_instance_notes() {
        assert_eq!(expand("chat.irc.{id}.#", "bot"), "chat.irc.bot.#");
        assert_eq!(expand("chat.irc.x{id}.#", "bot"), "chat.irc.x{id}.#");
        for own in [
            "chat.*.{id}.#",
            "chat.irc.bot.#",
            "chat.irc.bot.*.message",
            "send.#",
            "alerts",
        ] {
            assert_eq!(chat_instance_note(own, "bot"), None, "{own}");
        }
        for any in ["chat.#", "chat.irc.#", "chat.*.*.#", "chat.irc.*.x.message"] {
            let note = chat_instance_note(any, "bot").expect(any);
            assert!(note.contains("every instance"), "{note}");
        }
        let note = chat_instance_note("chat.irc.libera.#", "irc-libera").expect("other");
        assert!(
            note.contains("`libera`") && note.contains("forged"),
            "{note}"
        );
    }

    #[test]
    fn control_plane_and_reserved_roots_are_refused() {
        for dir in [Direction::Publish, Direction::Subscribe] {
            for bad in [
                "#",
                "#.message",
                "*.irc.#",
                "sb.ctl.other",
                "sb.ctl.*",
                "sb.api.#",
                "sb.*.x",
                "sb.#",
                "_INBOX.#",
                "_INBOX_other.#",
                "$SYS.#",
                "$JS.API.#",
            ] {
                let e = translate(bad, dir).expect_err(bad);
                assert_eq!(e.kind(), GrantErrorKind::Reserved, "{bad}: {e}");
            }
        }
        for bad in ["sb.event.#", "sb.log.#", "sb.op.other.heartbeat"] {
            assert!(translate(bad, Direction::Publish).is_err(), "{bad}");
            assert!(translate(bad, Direction::Subscribe).is_ok(), "{bad}");
        }
        assert_eq!(
            translate("chat..x", Direction::Publish).unwrap_err().kind(),
            GrantErrorKind::Pattern
        );
    }

    /// A NATS subject (no wildcards) matched by a permission subject
    /// (with `*` and `>`).
    fn nats_matches(permission: &str, subject: &str) -> bool {
        let p: Vec<&str> = permission.split('.').collect();
        let s: Vec<&str> = subject.split('.').collect();
        for (i, t) in p.iter().enumerate() {
            match *t {
                ">" => return s.len() > i,
                "*" => {
                    if i >= s.len() {
                        return false;
                    }
                }
                lit => {
                    if s.get(i) != Some(&lit) {
                        return false;
                    }
                }
            }
        }
        p.len() == s.len()
    }

    #[test]
    fn defaults_and_grants_never_reach_the_control_plane() {
        let me = id("bot");
        let grants: Vec<String> = DEFAULT_DATA_GRANTS
            .iter()
            .map(|s| s.to_string())
            .chain(["sb.event.#".to_string(), "sb.log.#".to_string()])
            .collect();
        let publish: Vec<String> = DEFAULT_PUBLISH_GRANTS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (p, errors) = operator_permissions(&me, &publish, &grants, &[ApiGrant::Status], None);
        assert!(errors.is_empty(), "{errors:?}");
        let forbidden_publish = [
            "sb.ctl.other",
            "sb.ctl.bot",
            "sb.event.bot",
            "sb.api.ctl",
            "sb.log.bot.stdout",
            "sb.op.other.heartbeat",
            "_INBOX.abc.1",
            "$SYS.REQ.SERVER.PING",
            // Another operator's chat events: only its own instance.
            "chat.irc.other.y.message",
            "chat.irc.bot2.y.message",
        ];
        for s in forbidden_publish {
            assert!(
                !p.publish.allow.iter().any(|a| nats_matches(a, s)),
                "may publish {s}: {:?}",
                p.publish.allow
            );
        }
        for s in [
            "sb.op.bot.heartbeat",
            "sb.api.status",
            "chat.irc.bot.y.message",
            "send.irc.other.y.message",
        ] {
            assert!(p.publish.allow.iter().any(|a| nats_matches(a, s)), "{s}");
        }
        let forbidden_subscribe = [
            "sb.ctl.other",
            "sb.api.ctl",
            "sb.api.status",
            "_INBOX.abc.1",
            "_INBOX_other.x.1",
        ];
        for s in forbidden_subscribe {
            assert!(
                !p.subscribe.allow.iter().any(|a| nats_matches(a, s)),
                "may subscribe {s}: {:?}",
                p.subscribe.allow
            );
        }
        for s in ["sb.ctl.bot", "_INBOX_bot.x.1", "send.irc.a.b.message"] {
            assert!(p.subscribe.allow.iter().any(|a| nats_matches(a, s)), "{s}");
        }
        assert!(p.allow_responses);
    }

    #[test]
    fn the_read_grant_only_reads_the_main_stream() {
        let me = id("dashboard");
        let (p, errors) = operator_permissions(
            &me,
            &[],
            &[],
            &[],
            Some(("SWITCHBOARD", &[StreamGrant::Read])),
        );
        assert!(errors.is_empty(), "{errors:?}");
        for s in [
            "$JS.API.STREAM.INFO.SWITCHBOARD",
            "$JS.API.STREAM.MSG.GET.SWITCHBOARD",
        ] {
            assert!(p.publish.allow.iter().any(|a| nats_matches(a, s)), "{s}");
        }
        for s in [
            // No consumer of any name, so no other reader's position.
            "$JS.API.CONSUMER.CREATE.SWITCHBOARD.x",
            "$JS.API.CONSUMER.CREATE.SWITCHBOARD.logger.chat.>",
            "$JS.API.CONSUMER.DURABLE.CREATE.SWITCHBOARD.dashboard",
            "$JS.API.CONSUMER.MSG.NEXT.SWITCHBOARD.logger",
            "$JS.API.CONSUMER.DELETE.SWITCHBOARD.logger",
            "$JS.API.CONSUMER.LIST.SWITCHBOARD",
            // No write, purge or delete.
            "$JS.API.STREAM.MSG.DELETE.SWITCHBOARD",
            "$JS.API.STREAM.PURGE.SWITCHBOARD",
            "$JS.API.STREAM.DELETE.SWITCHBOARD",
            "$JS.API.STREAM.UPDATE.SWITCHBOARD",
            "$JS.API.STREAM.CREATE.SWITCHBOARD",
            // Only the main stream: not the per-operator copies, no list.
            "$JS.API.STREAM.MSG.GET.SWITCHBOARD_pingbot",
            "$JS.API.STREAM.INFO.SWITCHBOARD_pingbot",
            "$JS.API.STREAM.LIST",
            "$JS.API.STREAM.NAMES",
            "$JS.API.DIRECT.GET.SWITCHBOARD",
            "$JS.ACK.SWITCHBOARD.logger.1.1.1.1.1",
        ] {
            assert!(
                !p.publish.allow.iter().any(|a| nats_matches(a, s)),
                "may publish {s}: {:?}",
                p.publish.allow
            );
        }
        assert_eq!(
            StreamGrant::ALL
                .iter()
                .find(|(_, g)| *g == StreamGrant::Read)
                .map(|(n, _)| *n),
            Some("read")
        );
    }

    #[test]
    fn coverage_of_a_subscription_by_a_permission() {
        for (permission, subject, covered) in [
            ("chat.>", "chat.x", true),
            ("chat.>", "chat", false),
            ("chat", "chat", true),
            ("chat.*.*.*.message", "chat.*.*.*.message", true),
            ("chat.*.*.*.message", "chat.*.*.*.notice", false),
            ("chat.*.*.*.message", "chat.*.*.>", false),
            ("chat.irc.>", "chat.irc.*.*.message", true),
            ("chat.irc.>", "chat.*.*.*.message", false),
            ("*", ">", false),
            (">", ">", true),
        ] {
            assert_eq!(
                covers(permission, subject),
                covered,
                "{permission} / {subject}"
            );
        }
    }
}
