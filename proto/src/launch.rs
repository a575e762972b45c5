//! Environment variables the orchestrator starts an operator with: one
//! list for both the orchestrator (which sets them) and the operator SDK
//! (which reads them).
//!
//! Only [`NATS_PASSWORD`] and [`NATS_TOKEN`] hold secrets themselves
//! ([`is_secret`]), and the orchestrator never sets them: a process's
//! environment is readable in `/proc` by its uid and is inherited by
//! everything it starts. It sets [`NATS_PASSWORD_FILE`] (or
//! [`NATS_TOKEN_FILE`]) and [`CONFIG_FILE`] instead: paths of files that
//! only the operator can read (0400, in its own sandbox). The plain
//! variables stay for operators started by hand; a reader takes the
//! `_FILE` variant first. [`CONFIG`] may contain values the manifest
//! resolved from secret references, so it should not be printed either.
//!
//! ```
//! use switchboard_proto::launch;
//!
//! assert!(launch::ALL.iter().all(|name| name.starts_with("SWITCHBOARD_")));
//! assert!(launch::is_secret(launch::NATS_TOKEN));
//! assert!(!launch::is_secret(launch::NATS_URL));
//! ```

/// The operator's id ([`OperatorId`](crate::OperatorId)); it uses it in
/// every `sb.…` subject and as `source` of its envelopes. Not secret.
pub const ID: &str = "SWITCHBOARD_ID";
/// NATS server URL(s), comma-separated (e.g. `nats://127.0.0.1:4222`).
/// Not secret.
pub const NATS_URL: &str = "SWITCHBOARD_NATS_URL";
/// NATS user name, for user/password auth. Not secret.
pub const NATS_USER: &str = "SWITCHBOARD_NATS_USER";
/// NATS password, for user/password auth. **Secret.**
pub const NATS_PASSWORD: &str = "SWITCHBOARD_NATS_PASSWORD";
/// NATS auth token. **Secret.**
pub const NATS_TOKEN: &str = "SWITCHBOARD_NATS_TOKEN";
/// Path of a file holding the NATS password (a trailing newline is not
/// part of it); wins over [`NATS_PASSWORD`]. The orchestrator writes it
/// 0400, owned by the operator's uid, visible only in its sandbox. Not
/// secret (the file is).
pub const NATS_PASSWORD_FILE: &str = "SWITCHBOARD_NATS_PASSWORD_FILE";
/// Path of a file holding the NATS auth token, like
/// [`NATS_PASSWORD_FILE`]; wins over [`NATS_TOKEN`]. Not secret (the file
/// is).
pub const NATS_TOKEN_FILE: &str = "SWITCHBOARD_NATS_TOKEN_FILE";
/// Path to a NATS `.creds` file (JWT + nkey seed). Not secret (the file is).
pub const NATS_CREDS: &str = "SWITCHBOARD_NATS_CREDS";
/// Path to a file holding an nkey seed. Not secret (the file is).
pub const NATS_NKEY: &str = "SWITCHBOARD_NATS_NKEY";
/// The subject prefix the operator must use for its request/reply
/// inboxes instead of NATS's default `_INBOX`, e.g. `_INBOX_irc-libera`.
///
/// It exists for least privilege: the server only lets each operator
/// subscribe to `<prefix>.>`, so one operator cannot read the replies
/// meant for another (with the shared `_INBOX.>` every client could).
/// Optional (unset: `_INBOX`). Not secret.
pub const NATS_INBOX_PREFIX: &str = "SWITCHBOARD_NATS_INBOX_PREFIX";
/// Path to the CA certificate(s) to trust for NATS TLS. Not secret.
pub const NATS_TLS_CA: &str = "SWITCHBOARD_NATS_TLS_CA";
/// Path to the client certificate for NATS mutual TLS. Not secret.
pub const NATS_TLS_CERT: &str = "SWITCHBOARD_NATS_TLS_CERT";
/// Path to the client key for NATS mutual TLS. Not secret (the file is).
pub const NATS_TLS_KEY: &str = "SWITCHBOARD_NATS_TLS_KEY";
/// The operator's config as JSON, for operators started by hand; the
/// orchestrator sets [`CONFIG_FILE`] instead. Read only when
/// [`CONFIG_FILE`] is unset. Not flagged secret, but may contain resolved
/// secrets: do not print it.
pub const CONFIG: &str = "SWITCHBOARD_CONFIG";
/// Path of a file holding the operator's current config as JSON (its
/// manifest's `[config]` with `[secrets]` resolved): read at start, and
/// re-read on SIGHUP by an operator controlled by signals (the
/// orchestrator rewrites it before signalling). Always set by the
/// orchestrator (0400, the operator's own); wins over [`CONFIG`]. Not
/// secret, but the file may hold resolved secrets.
pub const CONFIG_FILE: &str = "SWITCHBOARD_CONFIG_FILE";
/// Directory kept across restarts, for the operator's persistent state.
/// Not secret.
pub const STATE_DIR: &str = "SWITCHBOARD_STATE_DIR";
/// Directory for temporary files, wiped when the operator stops. Not
/// secret.
pub const SCRATCH_DIR: &str = "SWITCHBOARD_SCRATCH_DIR";
/// Name of the durable stream (JetStream) the daemon keeps, when it keeps
/// one; an operator granted `stream = ["consume"]` reads it from here.
/// Not secret.
pub const STREAM: &str = "SWITCHBOARD_STREAM";
/// Heartbeat interval in milliseconds (decimal). Not secret.
pub const HEARTBEAT_MS: &str = "SWITCHBOARD_HEARTBEAT_MS";
/// How the operator is controlled: `nats` (requests on `sb.ctl.<id>`) or
/// `signals` (SIGHUP reload, SIGTERM shutdown, SIGSTOP/SIGCONT halt/resume).
/// Not secret.
pub const CONTROL: &str = "SWITCHBOARD_CONTROL";

/// `json` or `text`: the format of the operator's own log lines (the Rust
/// SDK's `tracing` output). The orchestrator sets `json` unless the
/// manifest's `[env]` says otherwise, and turns each JSON line back into
/// fields and a readable line ([`crate::api::LogLine`]). Not secret.
pub const LOG_FORMAT: &str = "SWITCHBOARD_LOG_FORMAT";

/// [`CONTROL`] value: control requests over NATS.
pub const CONTROL_NATS: &str = "nats";
/// [`CONTROL`] value: control by Unix signals.
pub const CONTROL_SIGNALS: &str = "signals";

/// Every variable above, so that the orchestrator can clear inherited ones
/// and tests can check coverage.
pub const ALL: &[&str] = &[
    ID,
    NATS_URL,
    NATS_USER,
    NATS_PASSWORD,
    NATS_TOKEN,
    NATS_PASSWORD_FILE,
    NATS_TOKEN_FILE,
    NATS_CREDS,
    NATS_NKEY,
    NATS_INBOX_PREFIX,
    NATS_TLS_CA,
    NATS_TLS_CERT,
    NATS_TLS_KEY,
    CONFIG,
    CONFIG_FILE,
    STATE_DIR,
    SCRATCH_DIR,
    STREAM,
    HEARTBEAT_MS,
    CONTROL,
];

/// Whether the variable's value is itself a secret that must never be
/// logged or shown in status output.
pub fn is_secret(name: &str) -> bool {
    name == NATS_PASSWORD || name == NATS_TOKEN
}
