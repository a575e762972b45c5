//! Lifecycle and control payloads.
//!
//! These are plain JSON objects (not envelopes): they are small, sent by
//! every operator whatever its language, and read by the orchestrator.
//!
//! - an operator publishes [`Ready`] on `sb.op.<id>.ready` once it can
//!   work, then a [`Heartbeat`] on `sb.op.<id>.heartbeat` at the interval it
//!   was given;
//! - the orchestrator sends a [`Control`] request on `sb.ctl.<id>` and the
//!   operator answers with a [`ControlAck`].
//!
//! Unknown fields are ignored everywhere, so that either side can add
//! fields without breaking the other.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::Timestamp;
use crate::json;

/// Version of the lifecycle/control protocol an operator speaks, sent in
/// [`Ready::protocol`] so that the orchestrator can refuse (or adapt to) an
/// operator built against another version.
pub const PROTOCOL_VERSION: u32 = 1;

/// What an operator is doing, as it reports in heartbeats and acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperatorState {
    /// Started, not yet ready to work.
    Starting,
    /// Working normally.
    Running,
    /// Paused by `halt`: connected, but not handling messages.
    Halted,
    /// Shutting down (after `shutdown` or a terminating signal). During an
    /// in-place `restart` the state is [`OperatorState::Starting`].
    Stopping,
}

impl OperatorState {
    /// Every state, in lifecycle order.
    pub const ALL: [OperatorState; 4] = [
        OperatorState::Starting,
        OperatorState::Running,
        OperatorState::Halted,
        OperatorState::Stopping,
    ];

    /// The wire name (`starting`, `running`, `halted`, `stopping`).
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorState::Starting => "starting",
            OperatorState::Running => "running",
            OperatorState::Halted => "halted",
            OperatorState::Stopping => "stopping",
        }
    }
}

impl fmt::Display for OperatorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown operator state name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown operator state `{input}`; valid states are starting, running, halted, stopping")]
pub struct ParseStateError {
    /// The rejected name (shortened when long).
    pub input: String,
}

impl FromStr for OperatorState {
    type Err = ParseStateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OperatorState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| ParseStateError {
                input: json::excerpt(s),
            })
    }
}

/// Published once on `sb.op.<id>.ready` when the operator can work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// The operator's id (as given in `SWITCHBOARD_ID`), so the orchestrator
    /// can check it against the subject.
    pub id: String,
    /// Its process id, so the orchestrator can tell a ready from a stale
    /// process (one it already replaced) from the current one.
    pub pid: u32,
    /// The [`PROTOCOL_VERSION`] the operator speaks.
    pub protocol: u32,
    /// The operator's own version, for status output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What it serves for people, by name: `{"dashboard":
    /// "http://127.0.0.1:8477/"}`; `switchboard status` shows them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub links: std::collections::BTreeMap<String, String>,
    /// When it became ready.
    pub timestamp: Timestamp,
}

/// Running totals an operator reports in each heartbeat.
///
/// All fields default to 0, so an operator in another language may send
/// only the counters it keeps. Counters with other names go to
/// [`Counters::extra`] (their values must be non-negative integers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Envelopes handed to the operator (after pattern filter, validation
    /// and de-duplication).
    pub received: u64,
    /// Messages published to NATS, lifecycle messages (ready, heartbeats,
    /// acks) included.
    pub published: u64,
    /// Received messages dropped because they were not valid envelopes.
    pub malformed: u64,
    /// Received messages dropped because their id was just seen.
    pub duplicates: u64,
    /// Messages lost (slow consumer, full queue).
    pub dropped: u64,
    /// Messages whose handler returned an error.
    pub handler_errors: u64,
    /// Times the NATS connection was re-established.
    pub reconnects: u64,
    /// Operator-specific counters.
    #[serde(flatten)]
    pub extra: BTreeMap<String, u64>,
}

/// How an operator says its work is going, beyond being alive: a logger
/// that cannot write, a chat operator whose login was refused. Shown in
/// `switchboard status`; the orchestrator does not restart for it (a
/// restart would not fix a full disk or a wrong password).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Doing its job.
    #[default]
    Ok,
    /// Working, but not fully (retrying, falling behind); says why.
    Degraded,
    /// Cannot do its job until someone acts (bad credentials); says why.
    Failed,
}

impl Health {
    /// Whether it is [`Health::Ok`] (left out of heartbeats then).
    pub fn is_ok(&self) -> bool {
        *self == Health::Ok
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Degraded => "degraded",
            Health::Failed => "failed",
        }
    }
}

/// Published on `sb.op.<id>.heartbeat` at the interval the operator was
/// given (`SWITCHBOARD_HEARTBEAT_MS`); missing heartbeats mark it unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The operator's id.
    pub id: String,
    /// Its process id, as in [`Ready::pid`]: the orchestrator ignores (and
    /// counts) a heartbeat from any process but the one it started (or a
    /// process in that one's process group), so a leftover or forged
    /// heartbeat cannot keep a hung operator "healthy".
    pub pid: u32,
    /// 1 for the first heartbeat after start, then +1 each, so gaps show
    /// lost beats.
    pub seq: u64,
    /// What the operator is doing.
    pub state: OperatorState,
    /// Milliseconds since the operator started.
    pub uptime_ms: u64,
    /// Running totals.
    #[serde(default)]
    pub counters: Counters,
    /// How its work is going; absent means [`Health::Ok`].
    #[serde(default, skip_serializing_if = "Health::is_ok")]
    pub health: Health,
    /// Why it is not ok, in words a person can act on (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    /// When the heartbeat was sent.
    pub timestamp: Timestamp,
}

/// The name of a control request, without its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// Stop handling messages, stay connected.
    Halt,
    /// Undo `halt`.
    Resume,
    /// Apply a new config without restarting.
    Reload,
    /// Stop and start again in place with the current config, then
    /// announce `ready` again (the process stays; the orchestrator
    /// replaces the process when it restarts an operator itself).
    Restart,
    /// Exit cleanly and stay stopped.
    Shutdown,
}

impl Verb {
    /// Every verb.
    pub const ALL: [Verb; 5] = [
        Verb::Halt,
        Verb::Resume,
        Verb::Reload,
        Verb::Restart,
        Verb::Shutdown,
    ];

    /// The wire name (`halt`, `resume`, `reload`, `restart`, `shutdown`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Halt => "halt",
            Verb::Resume => "resume",
            Verb::Reload => "reload",
            Verb::Restart => "restart",
            Verb::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown control verb.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown control verb `{input}`; valid verbs are halt, resume, reload, restart, shutdown")]
pub struct ParseVerbError {
    /// The rejected name (shortened when long).
    pub input: String,
}

impl FromStr for Verb {
    type Err = ParseVerbError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Verb::ALL
            .into_iter()
            .find(|verb| verb.as_str() == s)
            .ok_or_else(|| ParseVerbError {
                input: json::excerpt(s),
            })
    }
}

/// A control request, sent on `sb.ctl.<id>`.
///
/// On the wire: `{"verb":"halt"}`, or `{"verb":"reload","config":{…}}` where
/// `config` is the operator's complete new config (any JSON).
///
/// ```
/// use switchboard_proto::{Control, Verb};
/// use serde_json::json;
///
/// let reload = Control::Reload { config: json!({"nick": "sb"}) };
/// let bytes = reload.to_vec();
/// assert_eq!(bytes, br#"{"verb":"reload","config":{"nick":"sb"}}"#);
/// let back = Control::from_slice(&bytes)?;
/// assert_eq!(back.verb(), Verb::Reload);
///
/// let err = Control::from_slice(br#"{"verb":"pause"}"#).unwrap_err();
/// assert!(err.to_string().contains("`pause`"));
/// # Ok::<(), switchboard_proto::ControlParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "lowercase")]
pub enum Control {
    /// Stop handling messages, stay connected; ack with state `halted`.
    Halt,
    /// Handle messages again; ack with state `running`.
    Resume,
    /// Validate and apply `config`. A config that does not fit is refused
    /// with [`FailureCode::InvalidConfig`] and changes nothing; a reload
    /// handler that fails is acked with [`FailureCode::HandlerFailed`]
    /// after the operator was restarted in place with its old config.
    Reload {
        /// The complete new operator config (replaces the old one).
        config: Value,
    },
    /// Stop, start again with the current config and announce `ready`,
    /// then ack (the process stays). If the operator cannot start again
    /// it acks with [`FailureCode::HandlerFailed`] and exits non-zero so
    /// its supervisor starts a fresh process.
    Restart,
    /// Ack, then exit cleanly; the orchestrator does not restart it.
    Shutdown,
}

/// Why bytes are not a control request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlParseError {
    /// The bytes are not JSON.
    #[error("control request is not valid JSON (line {line}, column {column}): {reason}")]
    NotJson {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the JSON parser tripped over.
        reason: String,
    },
    /// Valid JSON, but not an object.
    #[error("control request must be a JSON object like {{\"verb\":\"halt\"}}, but it is a JSON {found}")]
    NotAnObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// No `verb` field.
    #[error(
        "control request has no `verb` field; send e.g. {{\"verb\":\"halt\"}} \
         (verbs: halt, resume, reload, restart, shutdown)"
    )]
    MissingVerb,
    /// `verb` is not a string.
    #[error("control request field `verb` must be a JSON string, but it is a JSON {found}")]
    VerbNotString {
        /// The JSON type found.
        found: &'static str,
    },
    /// `verb` names no known verb.
    #[error("control request has {0}")]
    UnknownVerb(#[from] ParseVerbError),
    /// `reload` without its `config`.
    #[error(
        "control request `reload` has no `config` field; send the complete new config, \
         e.g. {{\"verb\":\"reload\",\"config\":{{}}}}"
    )]
    MissingConfig,
}

crate::error_kinds::error_kinds! {
    /// What kind of [`ControlParseError`] it is.
    ControlParseError => ControlParseErrorKind {
        NotJson, NotAnObject, MissingVerb, VerbNotString, UnknownVerb, MissingConfig,
    }
}

impl Control {
    /// The verb of this request.
    pub fn verb(&self) -> Verb {
        match self {
            Control::Halt => Verb::Halt,
            Control::Resume => Verb::Resume,
            Control::Reload { .. } => Verb::Reload,
            Control::Restart => Verb::Restart,
            Control::Shutdown => Verb::Shutdown,
        }
    }

    /// Encodes the request as JSON.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.extend_from_slice(b"{\"verb\":\"");
        out.extend_from_slice(self.verb().as_str().as_bytes());
        out.push(b'"');
        if let Control::Reload { config } = self {
            out.extend_from_slice(b",\"config\":");
            // A `Value` written into memory has no failure path.
            if let Err(e) = serde_json::to_writer(&mut out, config) {
                unreachable!("serializing a JSON value into memory failed: {e}");
            }
        }
        out.push(b'}');
        out
    }

    /// Decodes a request, explaining precisely what is wrong otherwise.
    /// Fields other than `verb` and `config` are ignored.
    ///
    /// # Errors
    ///
    /// [`ControlParseError`]: not JSON, not an object, no `verb`, an unknown
    /// verb (named, with the valid ones listed), or `reload` without
    /// `config`.
    pub fn from_slice(bytes: &[u8]) -> Result<Control, ControlParseError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            ControlParseError::NotJson {
                line: e.line(),
                column: e.column(),
                reason: full.strip_suffix(&suffix).unwrap_or(&full).to_owned(),
            }
        })?;
        let Value::Object(mut map) = value else {
            return Err(ControlParseError::NotAnObject {
                found: json::type_name(&value),
            });
        };
        let verb = match map.get("verb") {
            None => return Err(ControlParseError::MissingVerb),
            Some(Value::String(name)) => name.parse::<Verb>()?,
            Some(other) => {
                return Err(ControlParseError::VerbNotString {
                    found: json::type_name(other),
                })
            }
        };
        Ok(match verb {
            Verb::Halt => Control::Halt,
            Verb::Resume => Control::Resume,
            Verb::Reload => Control::Reload {
                config: map
                    .remove("config")
                    .ok_or(ControlParseError::MissingConfig)?,
            },
            Verb::Restart => Control::Restart,
            Verb::Shutdown => Control::Shutdown,
        })
    }
}

/// Why a control request failed, in a form programs can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// The request could not be parsed (see the message).
    BadRequest,
    /// `reload` carried a config the operator rejected; the old config
    /// stays in force.
    InvalidConfig,
    /// The operator's own handler for the verb failed.
    HandlerFailed,
    /// The operator does not support this verb.
    Unsupported,
}

/// The failure part of a [`ControlAck`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlFailure {
    /// Machine-readable reason.
    pub code: FailureCode,
    /// Human-readable reason, for logs and the CLI.
    pub message: String,
}

/// The reply to a [`Control`] request.
///
/// `verb` is optional because a request that cannot be parsed still gets an
/// answer (with [`FailureCode::BadRequest`]) and then has no verb to echo;
/// it is omitted from the JSON in that case.
///
/// ```
/// use switchboard_proto::{ControlAck, FailureCode, OperatorState, Verb};
///
/// let ok = ControlAck::success("irc-1", Verb::Halt, OperatorState::Halted);
/// assert_eq!(
///     serde_json::to_string(&ok)?,
///     r#"{"ok":true,"id":"irc-1","verb":"halt","state":"halted"}"#
/// );
///
/// let bad = ControlAck::failure("irc-1", None, OperatorState::Running,
///     FailureCode::BadRequest, "no `verb` field");
/// assert!(!bad.ok);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlAck {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Id of the answering operator.
    pub id: String,
    /// The verb answered, when the request could be parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<Verb>,
    /// The operator's state after handling the request.
    pub state: OperatorState,
    /// Why it failed, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ControlFailure>,
}

impl ControlAck {
    /// A successful ack.
    pub fn success(id: impl Into<String>, verb: Verb, state: OperatorState) -> ControlAck {
        ControlAck {
            ok: true,
            id: id.into(),
            verb: Some(verb),
            state,
            error: None,
        }
    }

    /// A failed ack; `verb` may be a [`Verb`] or `None` when the request
    /// could not be parsed.
    pub fn failure(
        id: impl Into<String>,
        verb: impl Into<Option<Verb>>,
        state: OperatorState,
        code: FailureCode,
        message: impl Into<String>,
    ) -> ControlAck {
        ControlAck {
            ok: false,
            id: id.into(),
            verb: verb.into(),
            state,
            error: Some(ControlFailure {
                code,
                message: message.into(),
            }),
        }
    }
}
