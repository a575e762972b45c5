//! The orchestrator's side of the contract: supervision states, events,
//! and the request/reply API (`sb.api.<method>`) the CLI talks to.
//!
//! These are plain JSON objects like the lifecycle payloads, so a tool in
//! any language can ask the orchestrator for status or send it control
//! requests with a NATS client.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::control::{Counters, FailureCode, Verb};
use crate::envelope::Timestamp;

/// API method names: the last token of `sb.api.<method>`.
pub mod methods {
    /// [`super::StatusRequest`] -> [`super::StatusReply`].
    pub const STATUS: &str = "status";
    /// [`super::CtlRequest`] -> [`super::CtlReply`].
    pub const CTL: &str = "ctl";
    /// [`super::LogsRequest`] -> [`super::LogsReply`].
    pub const LOGS: &str = "logs";
    /// Cluster mode: [`super::ApplyRequest`] -> [`super::ApplyReply`].
    pub const APPLY: &str = "apply";
    /// Cluster mode: [`super::DrainRequest`] -> [`super::DrainReply`].
    pub const DRAIN: &str = "drain";
    /// Cluster mode: [`super::DrainRequest`] -> [`super::DrainReply`].
    pub const UNDRAIN: &str = "undrain";
    /// Cluster mode: [`super::RestartRequest`] -> [`super::RestartReply`].
    pub const RESTART: &str = "restart";
    /// Cluster mode: [`super::DrainRequest`] -> [`super::DrainReply`]:
    /// remove a host that is gone for good from the cluster's records.
    pub const FORGET: &str = "forget";
}

/// Where an operator is in its supervised life, as the orchestrator sees
/// it (the operator's own view is [`crate::OperatorState`]).
///
/// `starting -> running | halted -> stopping -> exited | backoff | failed`;
/// `disabled` operators are known but not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SupervisedState {
    /// Process spawned, `ready` not yet received.
    Starting,
    /// Ready and healthy.
    Running,
    /// Paused by `halt`.
    Halted,
    /// Being stopped (SIGTERM sent, waiting for exit).
    Stopping,
    /// Waiting out the backoff delay before the next start.
    Backoff,
    /// Not running and not going to be restarted (shutdown, or the restart
    /// policy says no) until someone asks.
    Exited,
    /// Crash loop: too many restarts in the window; waits for `restart`
    /// or a reload.
    Failed,
    /// `enabled = false` in its manifest.
    Disabled,
}

impl SupervisedState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SupervisedState::Starting => "starting",
            SupervisedState::Running => "running",
            SupervisedState::Halted => "halted",
            SupervisedState::Stopping => "stopping",
            SupervisedState::Backoff => "backoff",
            SupervisedState::Exited => "exited",
            SupervisedState::Failed => "failed",
            SupervisedState::Disabled => "disabled",
        }
    }
}

impl std::fmt::Display for SupervisedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Published on `sb.event.<id>` at every state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorEvent {
    /// The operator.
    pub id: String,
    /// The new state.
    pub state: SupervisedState,
    /// The state before.
    pub previous: SupervisedState,
    /// The current process, if one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Restarts so far (process starts after the first).
    pub restarts: u64,
    /// Why, in words ("exited with code 1", "missed 3 heartbeats", ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When.
    pub timestamp: Timestamp,
    /// In cluster mode, the host whose daemon runs it (absent on a
    /// single host): every host's events share one bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// One operator in a [`StatusReply`]. Never carries config or secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorStatus {
    /// The operator's ID.
    pub id: String,
    /// Supervision state.
    pub state: SupervisedState,
    /// Current process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Milliseconds since the current process started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// Process starts after the first.
    pub restarts: u64,
    /// Milliseconds since the last heartbeat (or ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_ms: Option<u64>,
    /// How the last process ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// Why it is in its state, when that needs saying (crash loop...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `nats` or `signals`.
    pub control: String,
    /// The sandbox it runs in: `bwrap`, `none` (its manifest says so), or
    /// `none (bwrap unavailable)` (the host cannot sandbox it). Empty from
    /// an older daemon.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// Counters from the last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
    /// Ready and heartbeat messages on this operator's subjects that were
    /// ignored because their `pid` is not the process the orchestrator
    /// started (nor in its process group) nor the one it replaced (whose
    /// last heartbeat may arrive late): a forgery, or a leftover of an
    /// older process. Non-zero is worth a look.
    #[serde(default)]
    pub ignored_lifecycle: u64,
    /// Messages on its `ready`/`heartbeat` subjects that were not a valid
    /// ready or heartbeat (not JSON, wrong fields): ignored and counted.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub malformed_lifecycle: u64,
    /// What it serves for people (from its ready message): name -> URL.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub links: std::collections::BTreeMap<String, String>,
    /// The health its last heartbeat reported (absent: ok).
    #[serde(default, skip_serializing_if = "crate::Health::is_ok")]
    pub health: crate::Health,
    /// Why, when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    /// What its manifest says about how it runs and what it may do (no
    /// config, no secrets): for `status --json` and the dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ManifestSummary>,
}

/// The parts of an operator's manifest worth showing: where it is, the
/// program, and its bus grants. Never its `[config]` or `[secrets]`, nor
/// its `args`: a manifest may spell a secret there, and status is
/// readable by every holder of the `status` grant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSummary {
    /// The manifest file.
    pub path: String,
    /// The program (`command`), as written.
    pub command: String,
    /// How many `args` follow it (see the manifest for them).
    #[serde(default)]
    pub args: usize,
    /// Subjects it may publish on (`*`/`#` patterns).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Daemon API methods it may call.
    #[serde(default)]
    pub api: Vec<String>,
}

/// Body of `sb.api.status` (no fields yet; send `{}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusRequest {}

/// Answer to `sb.api.status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The orchestrator's version.
    pub version: String,
    /// Its process id.
    pub pid: u32,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// The NATS URL operators are given (never credentials).
    pub nats_url: String,
    /// Whether the orchestrator runs the nats-server itself.
    pub nats_embedded: bool,
    /// Every known operator, sorted by ID.
    pub operators: Vec<OperatorStatus>,
    /// Operators' output lines the daemon could not forward to
    /// `sb.log.*` (its queue was full while the bus was away); they are
    /// still in `logs` and the daemon's own log.
    #[serde(default)]
    pub log_lines_dropped: u64,
    /// `sb.event.*` messages dropped the same way.
    #[serde(default)]
    pub events_dropped: u64,
    /// The durable stream, when the daemon keeps one: how full it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamStatus>,
    /// The daemon's resident memory in bytes (`VmRSS`), when it can read
    /// its own `/proc`: an operator in its sandbox cannot see the daemon's
    /// process, so the daemon says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// The CPU time the daemon has used, every thread's, user and system,
    /// in seconds (`/proc/self/stat`), like
    /// `rss_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// In cluster mode: the hosts, and which host runs each operator of
    /// the cluster's desired state. [`StatusReply::operators`] stays this
    /// host's own operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

/// The cluster as one host sees it (a part of [`StatusReply`]): its
/// engine's view of the cluster's buckets, as of its last tick.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The host answering.
    pub host: String,
    /// The desired state's revision (absent before the first apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// The revision this host's manifests directory is based on (the
    /// last it wrote, or the one it found at start equal to its
    /// directory): what `apply` and SIGHUP here are based on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub based_on: Option<u64>,
    /// How long a host's heartbeat may stand still before a peer
    /// declares it gone and takes its operators over: the lease every
    /// host's `heartbeat_age_ms` is measured against.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub lease_ttl_ms: u64,
    /// Every host with a heartbeat record, by name.
    pub hosts: Vec<ClusterHost>,
    /// Every operator of the desired state, by id, and where it runs.
    pub operators: Vec<ClusterPlacement>,
    /// Why the figures are missing or partial (the buckets did not
    /// answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One host of [`ClusterStatus`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterHost {
    /// Its name (`[cluster] host`).
    pub name: String,
    /// Heartbeating (false: left, or declared gone by a peer).
    pub alive: bool,
    /// Drained: placement gives it nothing.
    pub drained: bool,
    /// Its labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Its incarnation: a fresh id each time its daemon joins (a restarted
    /// host comes back with another one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Its lease: milliseconds since the answering host first saw this
    /// host's latest heartbeat (a live host renews twice a second; at
    /// [`ClusterStatus::lease_ttl_ms`] a peer declares it gone). Absent
    /// when the answering host's view has no time for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_age_ms: Option<u64>,
    /// Its heartbeat counter (renewals of this incarnation).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub beat: u64,
    /// Who declared it gone (a peer's name, or its own when it left),
    /// when it is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_by: Option<String>,
}

/// Why an operator of [`ClusterStatus`] is owned by no host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unowned {
    /// Some live, undrained host may run it: it is being placed or moved
    /// (its old owner's stop, then the new owner's claim).
    Moving,
    /// No live, undrained host may run it (its `[placement]` names hosts
    /// or labels none of them has): it waits for one.
    NoEligibleHost,
}

impl Unowned {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Unowned::Moving => "moving",
            Unowned::NoEligibleHost => "no_eligible_host",
        }
    }
}

/// One operator of [`ClusterStatus`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterPlacement {
    /// The operator.
    pub id: String,
    /// The host that owns it now (a live host's ownership record); absent
    /// while nobody does (being moved, or no eligible host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The host placement gives it now, from the same view: differs from
    /// `host` while it is being moved (a drain, a host back from a
    /// restart getting its share); absent when no live, undrained host
    /// may run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed: Option<String>,
    /// Its status as that host reports it (absent when it is this host's,
    /// in [`StatusReply::operators`], or that host did not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<OperatorStatus>,
    /// Why no host owns it (absent while one does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unowned: Option<Unowned>,
}

/// Body of `sb.api.apply` (cluster mode): replace the cluster's desired
/// state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// The new desired state: `{"operators": {"<id>": {"manifest":
    /// "<TOML text>", "placement": {...}}}}` (switchboard-cluster's
    /// `DesiredSet`). The daemon validates every manifest before writing.
    pub set: Value,
    /// The revision this edit is based on; absent: the revision the
    /// answering host's directory is based on. Refused as stale when the
    /// desired state has moved on since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub based_on: Option<u64>,
}

/// Answer to `sb.api.apply`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReply {
    /// The new revision, when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// When refused as stale: the revision that is there now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    /// Why it was not written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Body of `sb.api.drain` and `sb.api.undrain` (cluster mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRequest {
    /// The host (`[cluster] host` of any host of the cluster).
    pub host: String,
}

/// Answer to `sb.api.drain` and `sb.api.undrain`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReply {
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Body of `sb.api.restart` (cluster mode): have one host's daemon
/// restart itself. The daemon asked passes it on to that host's daemon
/// (`sb.host.<host>.peer.restart`) unless it is that host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRequest {
    /// The host (`[cluster] host` of a live host of the cluster).
    pub host: String,
}

/// Answer to `sb.api.restart`, sent before the restart begins: the
/// host's daemon then leaves the cluster cleanly (its operators are
/// handed over), stops its nats-server and executes its program again
/// with its original arguments (same pid). It is back when `status`
/// shows the host alive with another `epoch`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartReply {
    /// The pid of the daemon that restarts (the same after the restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The program it executes again (the path it was started from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Why it does not restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How full the durable stream is (a part of [`StatusReply`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStatus {
    /// Its name.
    pub name: String,
    /// Messages kept.
    pub messages: u64,
    /// Bytes kept.
    pub bytes: u64,
    /// Its size limit (older messages go past it).
    pub max_bytes: u64,
    /// When the oldest kept message was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest: Option<Timestamp>,
    /// Consumers reading it (the logger's durable one among them).
    pub consumers: u64,
    /// Why the figures are missing (JetStream did not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Body of `sb.api.ctl`: a verb for one ID, a glob of IDs, or all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CtlRequest {
    /// The verb.
    pub verb: Verb,
    /// An operator ID or a glob (`irc-*`, `*`); `*` means all.
    pub target: String,
    /// For `reload`: the new config. Without it, the config from the
    /// operator's manifest (re-read from disk, secrets resolved) is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// For `restart`: ask a running operator to restart in place (the
    /// `restart` control verb: same process, `ready` again) instead of
    /// replacing its process. Operators controlled by signals, and ones
    /// with no process, get a new process either way. Default false (a
    /// process restart), so older clients keep their meaning.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_place: bool,
}

/// One operator's outcome in a [`CtlReply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CtlOutcome {
    /// The operator.
    pub id: String,
    /// Whether the verb was carried out.
    pub ok: bool,
    /// Its supervision state afterwards.
    pub state: SupervisedState,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failure class, when the operator itself refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<FailureCode>,
}

/// Answer to `sb.api.ctl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CtlReply {
    /// One outcome per matched operator, sorted by ID. Empty when the
    /// target matched nothing (then `error` says so).
    pub results: Vec<CtlOutcome>,
    /// A problem with the request as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Body of `sb.api.logs`: the last lines an operator printed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsRequest {
    /// The operator.
    pub id: String,
    /// At most this many lines (the orchestrator keeps the last 1,000).
    #[serde(default = "default_log_lines")]
    pub lines: usize,
}

fn default_log_lines() -> usize {
    100
}

/// One line an operator printed; also the payload on
/// `sb.log.<id>.<stream>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The operator.
    pub id: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line, without its newline (lossily decoded as UTF-8); for a
    /// structured line (below), a readable rendering of it.
    pub line: String,
    /// The line as the operator's structured log wrote it, when it is a
    /// JSON object (the Rust SDK's `tracing` JSON: `level`, `fields` with
    /// `message`, `target`, `spans`, ...), so tools need not parse text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
    /// When the orchestrator read it.
    pub timestamp: Timestamp,
}

/// Answer to `sb.api.logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsReply {
    /// Oldest first.
    pub lines: Vec<LogLine>,
    /// Older lines left out so the reply fits in one NATS message (the
    /// daemon keeps replies under [`LOGS_REPLY_BUDGET`] bytes): ask for
    /// fewer, or follow `sb.log.<id>.>` instead.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: usize,
    /// Set when the ID is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Most bytes of log lines in one [`LogsReply`]: half of nats-server's
/// default 1 MiB payload limit, leaving room for the JSON around them.
pub const LOGS_REPLY_BUDGET: usize = 512 * 1024;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Match an operator ID against a glob with `*` (any run) and `?` (one
/// character); a pattern without wildcards must equal the ID.
///
/// ```
/// use switchboard_proto::api::glob_matches;
/// assert!(glob_matches("irc-*", "irc-libera"));
/// assert!(glob_matches("*", "anything"));
/// assert!(!glob_matches("irc-?", "irc-ab"));
/// ```
pub fn glob_matches(pattern: &str, id: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = id.chars().collect();
    // Classic two-pointer wildcard match with backtracking to the last `*`.
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, s, want) in [
            ("*", "", true),
            ("*", "a", true),
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbb", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("irc-*-x", "irc-a-b-x", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob_matches(p, s), want, "{p} vs {s}");
        }
    }

    #[test]
    fn ctl_request_json() {
        let r: CtlRequest =
            serde_json::from_str(r#"{"verb":"reload","target":"irc-*","config":{"a":1}}"#).unwrap();
        assert_eq!(r.verb, Verb::Reload);
        assert_eq!(r.config, Some(serde_json::json!({"a":1})));
        let s = serde_json::to_string(&CtlOutcome {
            id: "x".into(),
            ok: true,
            state: SupervisedState::Halted,
            error: None,
            code: None,
        })
        .unwrap();
        assert_eq!(s, r#"{"id":"x","ok":true,"state":"halted"}"#);
    }
}
