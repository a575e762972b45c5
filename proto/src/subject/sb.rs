//! The control plane: `sb.…` subjects. [`SbSubject`] is the one writer
//! (its [`Display`](fmt::Display), which the builder functions share) and
//! the one reader ([`SbSubject::parse`]) of every shape.

use std::fmt;
use std::str::FromStr;

use super::{escape_token, is_valid_token, unescape_at, OperatorId, SubjectError};

/// Wildcard subject matching every operator's `ready` announcement.
pub const ALL_READY: &str = "sb.op.*.ready";
/// Wildcard subject matching every operator's heartbeats.
pub const ALL_HEARTBEATS: &str = "sb.op.*.heartbeat";
/// Wildcard subject matching the orchestrator's events about any operator.
pub const ALL_EVENTS: &str = "sb.event.*";
/// Wildcard subject matching every operator's log lines.
pub const ALL_LOGS: &str = "sb.log.>";
/// Every orchestrator API method (what the orchestrator serves).
pub const ALL_API: &str = "sb.api.*";

const ROOT: &str = "sb";
const OP: &str = "op";
const CTL: &str = "ctl";
const EVENT: &str = "event";
const LOG: &str = "log";
const API: &str = "api";
const READY: &str = "ready";
const HEARTBEAT: &str = "heartbeat";

/// A control-plane subject, taken apart.
///
/// | subject | variant |
/// | --- | --- |
/// | `sb.op.<id>.ready` | [`SbSubject::Ready`] |
/// | `sb.op.<id>.heartbeat` | [`SbSubject::Heartbeat`] |
/// | `sb.op.<id>.<rest>` (one or more literal tokens) | [`SbSubject::Op`] |
/// | `sb.ctl.<id>` | [`SbSubject::Ctl`] |
/// | `sb.event.<id>` | [`SbSubject::Event`] |
/// | `sb.log.<id>.<stream>` (stream escaped) | [`SbSubject::Log`] |
/// | `sb.api.<method>` (method escaped) | [`SbSubject::Api`] |
///
/// [`Display`](fmt::Display) writes the subject, [`SbSubject::parse`]
/// reads it back; the builder functions ([`ready_subject`],
/// [`log_subject`], …) write through the same code.
///
/// ```
/// use switchboard_proto::{OperatorId, SbSubject};
///
/// let id = OperatorId::new("irc-libera")?;
/// let subject = SbSubject::Log { id: id.clone(), stream: "stderr".into() };
/// assert_eq!(subject.to_string(), "sb.log.irc-libera.stderr");
///
/// match SbSubject::parse("sb.op.irc-libera.heartbeat")? {
///     SbSubject::Heartbeat { id: from } => assert_eq!(from, id),
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SbSubject {
    /// `sb.op.<id>.ready`: operator `id` can work.
    Ready {
        /// The operator.
        id: OperatorId,
    },
    /// `sb.op.<id>.heartbeat`: operator `id` is alive.
    Heartbeat {
        /// The operator.
        id: OperatorId,
    },
    /// `sb.op.<id>.<rest>`: another subject of operator `id`'s own
    /// (operators may publish on `sb.op.<id>.>`).
    Op {
        /// The operator.
        id: OperatorId,
        /// What follows the id: one or more literal tokens, as they are
        /// (not escaped), never exactly `ready` or `heartbeat`.
        rest: String,
    },
    /// `sb.ctl.<id>`: control requests for operator `id`.
    Ctl {
        /// The operator.
        id: OperatorId,
    },
    /// `sb.event.<id>`: the orchestrator's events about operator `id`.
    Event {
        /// The operator.
        id: OperatorId,
    },
    /// `sb.log.<id>.<stream>`: lines operator `id` wrote on `stream`.
    Log {
        /// The operator.
        id: OperatorId,
        /// `stdout`, `stderr`, … (raw; escaped in the subject).
        stream: String,
    },
    /// `sb.api.<method>`: a request to the orchestrator's API.
    Api {
        /// `status`, `ctl`, `logs`, … (raw; escaped in the subject).
        method: String,
    },
}

/// The shapes, borrowed: what the writer works from, so the builder
/// functions need not clone an id to write a subject.
enum Shape<'a> {
    Op(&'a str, &'a str),
    Ctl(&'a str),
    Event(&'a str),
    Log(&'a str, &'a str),
    /// `sb.log.<id>.>`.
    AllLogs(&'a str),
    Api(&'a str),
}

impl Shape<'_> {
    /// The one writer of `sb.…` subjects.
    fn write(&self) -> String {
        let (kind, id, last) = match *self {
            Shape::Op(id, rest) => (OP, Some(id), Some(rest.to_owned())),
            Shape::Ctl(id) => (CTL, Some(id), None),
            Shape::Event(id) => (EVENT, Some(id), None),
            Shape::Log(id, stream) => (LOG, Some(id), Some(escape_token(stream))),
            Shape::AllLogs(id) => (LOG, Some(id), Some(">".to_owned())),
            Shape::Api(method) => (API, None, Some(escape_token(method))),
        };
        let mut out = String::with_capacity(
            ROOT.len()
                + kind.len()
                + 3
                + id.map_or(0, str::len)
                + last.as_ref().map_or(0, String::len),
        );
        out.push_str(ROOT);
        out.push('.');
        out.push_str(kind);
        for part in id.into_iter().chain(last.as_deref()) {
            out.push('.');
            out.push_str(part);
        }
        out
    }
}

impl SbSubject {
    fn shape(&self) -> Shape<'_> {
        match self {
            SbSubject::Ready { id } => Shape::Op(id.as_str(), READY),
            SbSubject::Heartbeat { id } => Shape::Op(id.as_str(), HEARTBEAT),
            SbSubject::Op { id, rest } => Shape::Op(id.as_str(), rest),
            SbSubject::Ctl { id } => Shape::Ctl(id.as_str()),
            SbSubject::Event { id } => Shape::Event(id.as_str()),
            SbSubject::Log { id, stream } => Shape::Log(id.as_str(), stream),
            SbSubject::Api { method } => Shape::Api(method),
        }
    }

    /// The operator the subject is about, if any (all but
    /// [`SbSubject::Api`]).
    pub fn id(&self) -> Option<&OperatorId> {
        match self {
            SbSubject::Ready { id }
            | SbSubject::Heartbeat { id }
            | SbSubject::Op { id, .. }
            | SbSubject::Ctl { id }
            | SbSubject::Event { id }
            | SbSubject::Log { id, .. } => Some(id),
            SbSubject::Api { .. } => None,
        }
    }

    /// Takes a control-plane subject apart (see the table above).
    ///
    /// # Errors
    ///
    /// [`SubjectError`]: not `sb.op|ctl|event|log|api`
    /// ([`UnknownControl`](SubjectError::UnknownControl)), the wrong
    /// number of tokens for the shape, an id that is not an
    /// [`OperatorId`], a stream or method that is not a canonical escaped
    /// token, or an `Op` token that is not literal.
    pub fn parse(subject: &str) -> Result<SbSubject, SubjectError> {
        let tokens: Vec<&str> = subject.split('.').collect();
        let count = |shape: &'static str, expected: &'static str| SubjectError::WrongTokenCount {
            subject: crate::json::excerpt(subject),
            found: tokens.len(),
            shape,
            expected,
        };
        let id_at = |position: usize| {
            OperatorId::new(tokens[position - 1])
                .map_err(|source| SubjectError::BadId { position, source })
        };
        let (root, kind) = match tokens.as_slice() {
            [root, kind, ..] => (*root, *kind),
            _ => (tokens[0], ""),
        };
        if root != ROOT {
            return Err(SubjectError::UnknownControl {
                subject: crate::json::excerpt(subject),
            });
        }
        match kind {
            OP => {
                if tokens.len() < 4 {
                    return Err(count("sb.op.<id>.<…>", "at least 4"));
                }
                let id = id_at(3)?;
                for (i, token) in tokens.iter().enumerate().skip(3) {
                    if !is_valid_token(token) {
                        return Err(SubjectError::NotLiteral {
                            position: i + 1,
                            token: crate::json::excerpt(token),
                        });
                    }
                }
                // Four or more tokens, each non-empty: `rest` starts after
                // the third dot.
                let start = ROOT.len() + OP.len() + id.as_str().len() + 3;
                Ok(match &subject[start..] {
                    READY => SbSubject::Ready { id },
                    HEARTBEAT => SbSubject::Heartbeat { id },
                    rest => SbSubject::Op {
                        id,
                        rest: rest.to_owned(),
                    },
                })
            }
            CTL if tokens.len() == 3 => Ok(SbSubject::Ctl { id: id_at(3)? }),
            CTL => Err(count("sb.ctl.<id>", "exactly 3")),
            EVENT if tokens.len() == 3 => Ok(SbSubject::Event { id: id_at(3)? }),
            EVENT => Err(count("sb.event.<id>", "exactly 3")),
            LOG if tokens.len() == 4 => Ok(SbSubject::Log {
                id: id_at(3)?,
                stream: unescape_at(4, tokens[3])?.into_owned(),
            }),
            LOG => Err(count("sb.log.<id>.<stream>", "exactly 4")),
            API if tokens.len() == 3 => Ok(SbSubject::Api {
                method: unescape_at(3, tokens[2])?.into_owned(),
            }),
            API => Err(count("sb.api.<method>", "exactly 3")),
            _ => Err(SubjectError::UnknownControl {
                subject: crate::json::excerpt(subject),
            }),
        }
    }
}

impl fmt::Display for SbSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shape().write())
    }
}

impl FromStr for SbSubject {
    type Err = SubjectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SbSubject::parse(s)
    }
}

/// `sb.op.<id>.ready`: where operator `id` announces it can work.
pub fn ready_subject(id: &OperatorId) -> String {
    Shape::Op(id.as_str(), READY).write()
}

/// `sb.op.<id>.heartbeat`: where operator `id` sends its heartbeats.
pub fn heartbeat_subject(id: &OperatorId) -> String {
    Shape::Op(id.as_str(), HEARTBEAT).write()
}

/// `sb.ctl.<id>`: where operator `id` listens for control requests.
pub fn control_subject(id: &OperatorId) -> String {
    Shape::Ctl(id.as_str()).write()
}

/// Where an operator's answer to one control request goes:
/// `sb.op.<id>.ack.<token>`. Under the operator's own `sb.op.<id>.>`, which
/// it may always publish on and no other operator may, so an ack never
/// depends on nats-server's reply tracking (reset by every config reload)
/// and cannot be forged by another operator. `token` is a fresh,
/// subject-safe token per request (it is not escaped).
pub fn control_reply_subject(id: &OperatorId, token: &str) -> String {
    Shape::Op(id.as_str(), &format!("ack.{token}")).write()
}

/// `sb.event.<id>`: where the orchestrator reports lifecycle events (spawned,
/// exited, restarted, …) about operator `id`.
pub fn event_subject(id: &OperatorId) -> String {
    Shape::Event(id.as_str()).write()
}

/// `sb.log.<id>.<stream>`: where the orchestrator republishes the lines
/// operator `id` wrote on `stream` (`stdout`, `stderr`, …; escaped).
pub fn log_subject(id: &OperatorId, stream: &str) -> String {
    Shape::Log(id.as_str(), stream).write()
}

/// `sb.api.<method>`: the orchestrator's request/reply API (`method` is
/// escaped, so it is always one token).
///
/// ```
/// assert_eq!(switchboard_proto::api_subject("status"), "sb.api.status");
/// ```
pub fn api_subject(method: &str) -> String {
    Shape::Api(method).write()
}

/// `sb.log.<id>.>` (a NATS wildcard): every log line of operator `id`.
///
/// ```
/// use switchboard_proto::{log_wildcard, OperatorId};
/// assert_eq!(log_wildcard(&OperatorId::new("bot")?), "sb.log.bot.>");
/// # Ok::<(), switchboard_proto::IdError>(())
/// ```
pub fn log_wildcard(id: &OperatorId) -> String {
    Shape::AllLogs(id.as_str()).write()
}

/// `sb.op.<id>.>` (a NATS wildcard): every subject of operator `id`'s own,
/// ready and heartbeats included; what its NATS user may publish on.
pub fn op_wildcard(id: &OperatorId) -> String {
    Shape::Op(id.as_str(), ">").write()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SubjectErrorKind;

    fn id(s: &str) -> OperatorId {
        OperatorId::new(s).expect("valid id")
    }

    #[test]
    fn builders() {
        let id = id("irc-1");
        assert_eq!(ready_subject(&id), "sb.op.irc-1.ready");
        assert_eq!(heartbeat_subject(&id), "sb.op.irc-1.heartbeat");
        assert_eq!(control_subject(&id), "sb.ctl.irc-1");
        assert_eq!(event_subject(&id), "sb.event.irc-1");
        assert_eq!(log_subject(&id, "stderr"), "sb.log.irc-1.stderr");
        assert_eq!(log_subject(&id, "a.b"), "sb.log.irc-1.a=2Eb");
        assert_eq!(api_subject("list.all"), "sb.api.list=2Eall");
        assert_eq!(log_wildcard(&id), "sb.log.irc-1.>");
        assert_eq!(op_wildcard(&id), "sb.op.irc-1.>");
    }

    #[test]
    fn builders_and_parser_agree() {
        let i = id("bot");
        let cases = [
            (ready_subject(&i), SbSubject::Ready { id: i.clone() }),
            (
                heartbeat_subject(&i),
                SbSubject::Heartbeat { id: i.clone() },
            ),
            (control_subject(&i), SbSubject::Ctl { id: i.clone() }),
            (event_subject(&i), SbSubject::Event { id: i.clone() }),
            (
                log_subject(&i, "std err"),
                SbSubject::Log {
                    id: i.clone(),
                    stream: "std err".into(),
                },
            ),
            (
                api_subject("status"),
                SbSubject::Api {
                    method: "status".into(),
                },
            ),
            (
                "sb.op.bot.probe.x".to_string(),
                SbSubject::Op {
                    id: i.clone(),
                    rest: "probe.x".into(),
                },
            ),
        ];
        for (subject, parsed) in cases {
            assert_eq!(
                SbSubject::parse(&subject).as_ref(),
                Ok(&parsed),
                "{subject}"
            );
            assert_eq!(parsed.to_string(), subject);
        }
    }

    #[test]
    fn wildcards_have_the_shapes_they_match() {
        for (wildcard, want) in [
            (ALL_READY, SbSubject::Ready { id: id("x") }),
            (ALL_HEARTBEATS, SbSubject::Heartbeat { id: id("x") }),
            (ALL_EVENTS, SbSubject::Event { id: id("x") }),
            (ALL_API, SbSubject::Api { method: "x".into() }),
        ] {
            let subject = wildcard.replace('*', "x");
            assert_eq!(SbSubject::parse(&subject), Ok(want), "{wildcard}");
        }
        let log = ALL_LOGS.replace('>', "x.y");
        assert!(matches!(SbSubject::parse(&log), Ok(SbSubject::Log { .. })));
    }

    #[test]
    fn errors() {
        let kind = |s: &str| SbSubject::parse(s).expect_err(s).kind();
        assert_eq!(kind("chat.x"), SubjectErrorKind::UnknownControl);
        assert_eq!(kind("sb"), SubjectErrorKind::UnknownControl);
        assert_eq!(kind("sb.nope.x"), SubjectErrorKind::UnknownControl);
        assert_eq!(kind("sb.op.x"), SubjectErrorKind::WrongTokenCount);
        assert_eq!(kind("sb.ctl"), SubjectErrorKind::WrongTokenCount);
        assert_eq!(kind("sb.ctl.a.b"), SubjectErrorKind::WrongTokenCount);
        assert_eq!(kind("sb.event.a.b"), SubjectErrorKind::WrongTokenCount);
        assert_eq!(kind("sb.log.a"), SubjectErrorKind::WrongTokenCount);
        assert_eq!(kind("sb.api"), SubjectErrorKind::WrongTokenCount);
        assert_eq!(kind("sb.ctl.a=b"), SubjectErrorKind::BadId);
        assert_eq!(kind("sb.ctl."), SubjectErrorKind::BadId);
        assert_eq!(kind("sb.op.a.*"), SubjectErrorKind::NotLiteral);
        assert_eq!(kind("sb.op.a.b..c"), SubjectErrorKind::NotLiteral);
        assert_eq!(kind("sb.log.a.=2e"), SubjectErrorKind::BadToken);
        assert_eq!(kind("sb.api.*"), SubjectErrorKind::BadToken);
        let err = SbSubject::parse("sb.ctl.a.b").expect_err("4 tokens");
        assert_eq!(
            err.to_string(),
            "subject `sb.ctl.a.b` has 4 tokens; sb.ctl.<id> has exactly 3"
        );
        let err = SbSubject::parse("sb.event.no.pe").expect_err("4 tokens");
        assert!(err.to_string().contains("sb.event.<id>"), "{err}");
        let err = SbSubject::parse("sb.ctl.a b").expect_err("bad id");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn id_is_shared() {
        assert_eq!(
            SbSubject::parse("sb.log.x.stdout").expect("parses").id(),
            Some(&id("x"))
        );
        assert_eq!(
            SbSubject::parse("sb.api.status").expect("parses").id(),
            None
        );
    }
}
