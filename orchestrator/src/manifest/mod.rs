//! Operator manifests: one TOML file per operator in `operators.d/`.
//!
//! A manifest says what to run (`command`, `args`, `env`, `workdir`), how
//! to control it (`control`), how to supervise it (`restart`, `[backoff]`,
//! `[crash_loop]`, the health timings), what config to hand it (`[config]`)
//! and where its secrets live (`[secrets]`, by reference only).
//!
//! ```toml
//! id = "pingbot"
//! command = "switchboard-pingbot"
//! args = ["--verbose"]
//! restart = "always"
//!
//! [backoff]
//! initial = "250ms"
//!
//! [config]
//! nick = "pingbot"
//! sasl.user = "pingbot"
//!
//! [secrets]
//! "sasl.password" = { file = "/etc/switchboard/secrets/pingbot" }
//! ```
//!
//! [`load_dir`] reads a whole directory and reports every problem with its
//! file and line, like `nginx -t`; [`Manifest::diff`] tells the reloader
//! how much a changed manifest disturbs the running operator;
//! [`Manifest::resolve_secrets`] builds the config the operator actually
//! receives.
//!
//! Invariant: a [`Manifest`] never holds a secret value, only
//! [`SecretRef`]s, so it can be logged, shown in status output and sent
//! over the API as it is. Resolved secrets exist only in the JSON that
//! [`Manifest::resolve_secrets`] returns, which goes to the operator and
//! nowhere else.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_proto::OperatorId;

pub use crate::access::grants::{
    ApiGrant, StreamGrant, DEFAULT_DATA_GRANTS, DEFAULT_PUBLISH_GRANTS,
};
pub use crate::sandbox::SandboxKind;
use switchboard_proto::duration::serde_duration;

mod load;
mod secrets;
pub(crate) mod suggest;

pub use load::{load_dir, load_file, parse_manifest, LoadReport, Problem};
pub use secrets::{SecretError, SecretErrorKind};

/// Prefix of the environment variables the orchestrator sets itself when
/// it launches an operator (see `switchboard_proto::launch`); manifests may
/// not set them, so an operator can trust what it reads there.
pub const RESERVED_ENV_PREFIX: &str = "SWITCHBOARD_";

/// Everything the orchestrator knows about one operator, read from its
/// manifest file.
///
/// Holds secret *references* only ([`SecretRef`]), never secret values, so
/// its `Debug` and `Serialize` output is safe to log and to show in status
/// output. Build it with [`load_dir`]/[`load_file`] (which validate
/// everything and point at the offending line) or with [`Manifest::new`]
/// in tests. The derived `Deserialize` (e.g. a manifest sent as JSON)
/// applies the same defaults and rejects unknown keys, but does not run
/// the semantic checks of [`parse_manifest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Unique id across the manifest directory; names the operator's
    /// subjects (`sb.op.<id>.…`), state directory and log fields.
    pub id: OperatorId,
    /// The file this manifest was read from (empty when built in code), so
    /// that messages can point at it.
    #[serde(default)]
    pub path: PathBuf,
    /// Program to run: a bare name is looked up in `PATH` at launch, like
    /// `execvp`; a relative path with a `/` is taken relative to the
    /// manifest's directory (by the supervisor, at launch). Never empty.
    pub command: String,
    /// Arguments after the program name.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables, on top of the orchestrator's own
    /// environment and under the launch variables. Names are valid
    /// (`[A-Za-z_][A-Za-z0-9_]*`) and never start with
    /// [`RESERVED_ENV_PREFIX`]. Not for secrets: these values are shown in
    /// status output (use `[secrets]`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of the process; a relative path in the file is
    /// resolved against the manifest's directory at load time. Whether it
    /// exists is checked at launch (it may be created later). `None`: the
    /// orchestrator's own working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
    /// Whether the orchestrator starts this operator; a disabled manifest
    /// is still validated and listed, so it can be enabled from the CLI.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How control verbs reach the operator.
    #[serde(default)]
    pub control: Control,
    /// When an exited operator is started again.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Delays between restarts.
    #[serde(default)]
    pub backoff: Backoff,
    /// When to stop restarting an operator that keeps crashing.
    #[serde(default)]
    pub crash_loop: CrashLoop,
    /// How long after spawning the operator may take to announce `ready`
    /// before it is considered failed. Greater than zero.
    #[serde(default = "default_ready_timeout", with = "serde_duration")]
    pub ready_timeout: Duration,
    /// Interval the operator is told to send heartbeats at
    /// (`SWITCHBOARD_HEARTBEAT_MS`). At least 10 ms.
    #[serde(default = "default_heartbeat_interval", with = "serde_duration")]
    pub heartbeat_interval: Duration,
    /// How many intervals may pass without a heartbeat before the operator
    /// is considered unhealthy. At least 1.
    #[serde(default = "default_missed_heartbeats")]
    pub missed_heartbeats: u32,
    /// How long a stopping operator gets between SIGTERM (or the
    /// `shutdown` verb) and SIGKILL to its process group. Zero kills at
    /// once.
    #[serde(default = "default_stop_timeout", with = "serde_duration")]
    pub stop_timeout: Duration,
    /// The operator's own settings: the `[config]` table as JSON (always an
    /// object). Its keys belong to the operator, so they are not checked
    /// here; TOML datetimes become RFC 3339 strings. Holds no secrets.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Where each secret comes from, keyed by the dotted path in
    /// [`Manifest::config`] where [`Manifest::resolve_secrets`] puts its
    /// value (`"sasl.password"`).
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretRef>,
    /// Data subjects the operator may publish on, as `*`/`#` patterns
    /// (`{id}` stands for its id), enforced by nats-server (see
    /// [`crate::access::grants`] for what can be granted). Its own
    /// `sb.op.<id>.…` and replies to requests it received are always
    /// allowed. Default [`DEFAULT_PUBLISH_GRANTS`]: chat events on its own
    /// instance only, send requests anywhere.
    #[serde(default = "default_publish_grants")]
    pub publish: Vec<String>,
    /// Data subjects it may subscribe to, like [`Manifest::publish`]; its
    /// own `sb.ctl.<id>` and its inbox are always allowed. A `#` in the
    /// middle is widened to the part before it. Default: the chat data
    /// plane.
    #[serde(default = "default_data_grants")]
    pub subscribe: Vec<String>,
    /// Parts of the orchestrator's API (`sb.api.<method>`) it may call.
    /// Default: none.
    #[serde(default)]
    pub api: Vec<ApiGrant>,
    /// What it may do with the daemon's durable stream (`["consume"]`: a
    /// durable consumer of its own). Default: nothing.
    #[serde(default)]
    pub stream: Vec<StreamGrant>,
    /// Variables of the orchestrator's own environment passed through to
    /// the operator; nothing else is inherited (a secret the daemon holds
    /// in its environment reaches only the operator whose `[secrets]` name
    /// it, and then inside its config). Default
    /// [`Manifest::DEFAULT_INHERIT_ENV`].
    #[serde(default = "default_inherit_env")]
    pub inherit_env: Vec<String>,
    /// A NATS `.creds` file for this operator's own user on an external
    /// NATS (refused with the embedded server, which issues users itself).
    /// A relative path is resolved against the manifest's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding an nkey seed for this operator's own nkey user on an
    /// external NATS (like [`Manifest::nats_creds`], which it excludes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_nkey: Option<PathBuf>,
    /// Run the process as this Unix user (a name or a numeric uid) instead
    /// of the daemon's: the boundary that keeps an untrusted operator out
    /// of the daemon's files and other operators' processes. Needs the
    /// daemon to run as root. Resolved at launch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The group for [`Manifest::user`] (a name or a numeric gid); default
    /// the user's primary group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The sandbox it runs in (`crate::sandbox`): `bwrap` (the default)
    /// or `none`, which the daemon warns about at each start.
    #[serde(default)]
    pub sandbox: SandboxKind,
    /// More paths its sandbox shows it, read-only (a data directory, a
    /// library outside its program's prefix); a relative path is resolved
    /// against the manifest's directory. Never one holding the daemon's
    /// own files (refused at start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sandbox_binds: Vec<PathBuf>,
    /// Like [`Manifest::sandbox_binds`], read-write: where it writes
    /// outside its state dir (a logger's output directory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sandbox_binds_rw: Vec<PathBuf>,
    /// Cluster mode: where it may run (`[placement]`: `hosts`, `labels`,
    /// `spread`; docs/cluster.md). Refused on a single host, where it
    /// would mean nothing.
    #[serde(default, skip_serializing_if = "is_default_placement")]
    pub placement: switchboard_cluster::PlacementSpec,
}

fn is_default_placement(p: &switchboard_cluster::PlacementSpec) -> bool {
    *p == switchboard_cluster::PlacementSpec::default()
}

fn default_publish_grants() -> Vec<String> {
    DEFAULT_PUBLISH_GRANTS
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}
fn default_data_grants() -> Vec<String> {
    DEFAULT_DATA_GRANTS
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}
fn default_inherit_env() -> Vec<String> {
    Manifest::DEFAULT_INHERIT_ENV
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

fn default_true() -> bool {
    true
}
fn default_ready_timeout() -> Duration {
    Manifest::DEFAULT_READY_TIMEOUT
}
fn default_heartbeat_interval() -> Duration {
    Manifest::DEFAULT_HEARTBEAT_INTERVAL
}
fn default_missed_heartbeats() -> u32 {
    Manifest::DEFAULT_MISSED_HEARTBEATS
}
fn default_stop_timeout() -> Duration {
    Manifest::DEFAULT_STOP_TIMEOUT
}
fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// How control verbs (`halt`, `resume`, `reload`, `restart`, `shutdown`)
/// reach an operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Control {
    /// Requests on `sb.ctl.<id>`, acknowledged by the operator: for
    /// operators built on the Switchboard SDK.
    #[default]
    Nats,
    /// Unix signals (SIGHUP reload, SIGTERM shutdown, SIGSTOP/SIGCONT
    /// halt/resume): for programs that do not speak the control protocol.
    Signals,
}

impl Control {
    /// The value passed in `SWITCHBOARD_CONTROL` and written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Nats => switchboard_proto::launch::CONTROL_NATS,
            Control::Signals => switchboard_proto::launch::CONTROL_SIGNALS,
        }
    }
}

/// When an operator that exited is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// After any exit, even a clean one (long-running services).
    Always,
    /// After a non-zero exit or a death by signal, not after exit code 0.
    #[default]
    OnFailure,
    /// Never: the operator runs once.
    Never,
}

impl RestartPolicy {
    /// The value as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

/// Exponential backoff between restarts: `initial`, then times
/// `multiplier` after each quick failure, capped at `max`, each delay
/// randomized by ±`jitter` (a fraction), back to `initial` once a run has
/// lasted `reset_after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// First delay. Greater than zero, at most `max`.
    #[serde(with = "serde_duration")]
    pub initial: Duration,
    /// Longest delay.
    #[serde(with = "serde_duration")]
    pub max: Duration,
    /// Growth factor per consecutive failure; at least 1.0 (1.0 = constant).
    pub multiplier: f64,
    /// Random spread, as a fraction of the delay, in `[0, 1]`; keeps many
    /// operators that failed together from restarting in lockstep.
    pub jitter: f64,
    /// A run at least this long resets the delay to `initial`. Greater
    /// than zero.
    #[serde(with = "serde_duration")]
    pub reset_after: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling up to 30 s, 10 % jitter, reset after 30 s of uptime.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.1,
            reset_after: Duration::from_secs(30),
        }
    }
}

/// Gives up on an operator that crashed `max_restarts` times within
/// `window`, instead of restarting it forever; it stays failed until
/// someone restarts it from the CLI or reloads a changed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrashLoop {
    /// Restarts allowed within `window`. At least 1.
    pub max_restarts: u32,
    /// The sliding window. Greater than zero.
    #[serde(with = "serde_duration")]
    pub window: Duration,
}

impl Default for CrashLoop {
    /// 5 restarts per 60 s.
    fn default() -> Self {
        CrashLoop {
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// Where a secret's value comes from. Written `{ file = "path" }` or
/// `{ env = "VAR" }`; the value itself never appears in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretRef {
    /// A file whose content (trailing newlines trimmed) is the secret;
    /// relative paths in a manifest are resolved against its directory at
    /// load time.
    File(PathBuf),
    /// An environment variable of the orchestrator.
    Env(String),
}

/// How much a changed manifest disturbs the running operator, from least
/// to most; when several kinds of field changed, the strongest applies
/// (`Change` is ordered, so `max` works).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// Nothing the orchestrator uses changed (the file may have moved).
    None,
    /// Only supervision knobs changed (`enabled`, `restart`, `[backoff]`,
    /// `[crash_loop]`, `ready_timeout`, `missed_heartbeats`,
    /// `stop_timeout`) or bus grants (`publish`, `subscribe`, `api`, which
    /// the server applies to the live connection): apply them without
    /// touching the process. Starting
    /// or stopping because `enabled` flipped is the reloader's call.
    Supervision,
    /// `[config]` or `[secrets]` changed (and maybe supervision knobs):
    /// send the operator a `reload` with the new config.
    Config,
    /// Something the process was launched with changed (`id`, `command`,
    /// `args`, `env`, `workdir`, `control`, `heartbeat_interval`,
    /// `inherit_env`, `nats_creds`, `nats_nkey`, `user`, `group`,
    /// `sandbox`, `sandbox_binds`, `sandbox_binds_rw`): restart it.
    Launch,
}

impl Manifest {
    /// Default [`Manifest::ready_timeout`]: 10 s.
    pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default [`Manifest::heartbeat_interval`]: 5 s.
    pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
    /// Smallest [`Manifest::heartbeat_interval`] accepted: 10 ms.
    pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(10);
    /// Default [`Manifest::missed_heartbeats`]: 3.
    pub const DEFAULT_MISSED_HEARTBEATS: u32 = 3;
    /// Default [`Manifest::stop_timeout`]: 5 s.
    pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default [`Manifest::inherit_env`]: what programs need to run
    /// (`PATH`, `HOME`, the user, locale and time zone, `TMPDIR`) and the
    /// log settings (`RUST_LOG`, `RUST_BACKTRACE`, `SWITCHBOARD_LOG`,
    /// `SWITCHBOARD_LOG_FORMAT`).
    pub const DEFAULT_INHERIT_ENV: &'static [&'static str] = &[
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "TZ",
        "TMPDIR",
        "RUST_LOG",
        "RUST_BACKTRACE",
        "SWITCHBOARD_LOG",
        "SWITCHBOARD_LOG_FORMAT",
    ];

    /// A manifest with every optional field at its default, for tests and
    /// for code that builds operators programmatically. Does not validate
    /// `command` (an empty one fails at launch).
    ///
    /// ```
    /// use switchboard_orchestrator::manifest::{Manifest, RestartPolicy};
    ///
    /// let m = Manifest::new("demo".parse()?, "switchboard-pingbot");
    /// assert_eq!(m.restart, RestartPolicy::OnFailure);
    /// assert!(m.enabled && m.args.is_empty());
    /// # Ok::<(), switchboard_proto::IdError>(())
    /// ```
    pub fn new(id: OperatorId, command: impl Into<String>) -> Manifest {
        Manifest {
            id,
            path: PathBuf::new(),
            command: command.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            workdir: None,
            enabled: true,
            control: Control::default(),
            restart: RestartPolicy::default(),
            backoff: Backoff::default(),
            crash_loop: CrashLoop::default(),
            ready_timeout: Self::DEFAULT_READY_TIMEOUT,
            heartbeat_interval: Self::DEFAULT_HEARTBEAT_INTERVAL,
            missed_heartbeats: Self::DEFAULT_MISSED_HEARTBEATS,
            stop_timeout: Self::DEFAULT_STOP_TIMEOUT,
            config: empty_object(),
            secrets: BTreeMap::new(),
            publish: default_publish_grants(),
            subscribe: default_data_grants(),
            api: Vec::new(),
            stream: Vec::new(),
            inherit_env: default_inherit_env(),
            nats_creds: None,
            nats_nkey: None,
            user: None,
            group: None,
            sandbox: SandboxKind::default(),
            sandbox_binds: Vec::new(),
            sandbox_binds_rw: Vec::new(),
            placement: switchboard_cluster::PlacementSpec::default(),
        }
    }

    /// How much replacing `self` (running) by `new` disturbs the operator;
    /// startup and SIGHUP share this one code path.
    ///
    /// Secrets are compared by reference: a secret file whose content
    /// changed under the same path is not seen here (resolve both and
    /// compare to catch that). [`Manifest::path`] is ignored, so renaming a
    /// file changes nothing.
    ///
    /// ```
    /// use switchboard_orchestrator::manifest::{Change, Manifest};
    ///
    /// let old = Manifest::new("demo".parse()?, "demo");
    /// let mut new = old.clone();
    /// new.backoff.multiplier = 3.0;
    /// assert_eq!(old.diff(&new), Change::Supervision);
    /// new.config = serde_json::json!({"nick": "sb"});
    /// assert_eq!(old.diff(&new), Change::Config);
    /// new.args.push("-v".into());
    /// assert_eq!(old.diff(&new), Change::Launch);
    /// # Ok::<(), switchboard_proto::IdError>(())
    /// ```
    pub fn diff(&self, new: &Manifest) -> Change {
        // Every field is named here, so a field added to `Manifest` does
        // not compile until it is given its level.
        let Manifest {
            id,
            path: _,
            command,
            args,
            env,
            workdir,
            enabled,
            control,
            restart,
            backoff,
            crash_loop,
            ready_timeout,
            heartbeat_interval,
            missed_heartbeats,
            stop_timeout,
            config,
            secrets,
            publish,
            subscribe,
            api,
            stream,
            inherit_env,
            nats_creds,
            nats_nkey,
            user,
            group,
            sandbox,
            sandbox_binds,
            sandbox_binds_rw,
            // Where it runs is the cluster engine's business, not the
            // process's.
            placement: _,
        } = self;
        // What the process was launched with: only a restart applies it.
        // `heartbeat_interval` is here because the operator learns it from
        // `SWITCHBOARD_HEARTBEAT_MS` at launch.
        let launch = *id != new.id
            || *command != new.command
            || *args != new.args
            || *env != new.env
            || *workdir != new.workdir
            || *control != new.control
            || *heartbeat_interval != new.heartbeat_interval
            || *inherit_env != new.inherit_env
            || *nats_creds != new.nats_creds
            || *nats_nkey != new.nats_nkey
            || *user != new.user
            || *group != new.group
            || *sandbox != new.sandbox
            || *sandbox_binds != new.sandbox_binds
            || *sandbox_binds_rw != new.sandbox_binds_rw;
        // What the operator is told with `reload`.
        let config_changed = *config != new.config || *secrets != new.secrets;
        // What the daemon or the server applies without the process:
        // supervision knobs, and bus grants (the server updates the live
        // connection's permissions).
        let supervision = *enabled != new.enabled
            || *restart != new.restart
            || *backoff != new.backoff
            || *crash_loop != new.crash_loop
            || *ready_timeout != new.ready_timeout
            || *missed_heartbeats != new.missed_heartbeats
            || *stop_timeout != new.stop_timeout
            || *publish != new.publish
            || *subscribe != new.subscribe
            || *api != new.api
            || *stream != new.stream;
        if launch {
            Change::Launch
        } else if config_changed {
            Change::Config
        } else if supervision {
            Change::Supervision
        } else {
            Change::None
        }
    }
}

impl Manifest {
    /// Notes about grants that nats-server cannot enforce as written and
    /// that were widened (`subscribe = ["chat.#.message"]` reads all of
    /// `chat.#`), one line each, for `validate` and the daemon's log.
    pub fn widened_grants(&self) -> Vec<String> {
        use crate::access::grants::{translate, Direction};
        self.subscribe
            .iter()
            .filter_map(|g| {
                let wide = translate(g, Direction::Subscribe).ok()?.widened_to?;
                Some(format!(
                    "{}: operator `{}` subscribe grant `{g}` is enforced as `{wide}` \
                     (NATS permissions cannot express a `#` before the last token)",
                    self.path.display(),
                    self.id
                ))
            })
            .collect()
    }

    /// Warnings for what its `[config] listen` asks to hear that its
    /// `subscribe` grants do not cover: nats-server would refuse those
    /// subscriptions and the operator would run deaf. `listen` is the key
    /// the SDKs read (NATS subjects in Python and TypeScript, `*`/`#`
    /// patterns in Rust's `Triggers`); other keys are the operator's own
    /// business and are not guessed at.
    pub fn unheard_listen(&self) -> Vec<String> {
        use crate::access::grants::{covers, translate, Direction};
        let Some(listen) = self.config.get("listen").and_then(|l| l.as_array()) else {
            return Vec::new();
        };
        let allowed: Vec<String> = self
            .subscribe
            .iter()
            .filter_map(|g| translate(g, Direction::Subscribe).ok())
            .flat_map(|t| t.subjects)
            .collect();
        let mut out = Vec::new();
        for entry in listen.iter().filter_map(|e| e.as_str()) {
            // A `#` pattern subscribes as its NATS translation; anything
            // else is taken as a NATS subject already.
            let subjects = if entry.contains('#') {
                match translate(entry, Direction::Subscribe) {
                    Ok(t) => t.subjects,
                    Err(_) => continue,
                }
            } else {
                vec![entry.to_owned()]
            };
            for subject in subjects {
                if !allowed.iter().any(|a| covers(a, &subject)) {
                    out.push(format!(
                        "{}: operator `{}` listens on `{entry}` ([config] listen), which its \
                         `subscribe` grants ({}) do not cover: nats-server will refuse the \
                         subscription and it will hear nothing there; widen `subscribe` or \
                         narrow `listen`",
                        self.path.display(),
                        self.id,
                        self.subscribe.join(", ")
                    ));
                    break;
                }
            }
        }
        out
    }

    /// Everything `validate` and the daemon's log say about this
    /// operator's grants: widened subscribe grants, and publish grants on
    /// chat instances other than its own (see
    /// [`crate::access::grants::chat_instance_note`]); one line each.
    pub fn grant_notes(&self) -> Vec<String> {
        let mut notes = self.widened_grants();
        for g in &self.publish {
            if let Some(note) = crate::access::grants::chat_instance_note(g, self.id.as_str()) {
                notes.push(format!("{}: {note}", self.path.display()));
            }
        }
        notes
    }

    /// Whether the bus permissions are the same (a change is applied to
    /// the server live, without touching the process).
    pub fn same_grants(&self, other: &Manifest) -> bool {
        self.publish == other.publish
            && self.subscribe == other.subscribe
            && self.api == other.api
            && self.stream == other.stream
    }
}

/// Whether `name` can be an environment variable name that every shell and
/// exec'd program agrees on: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Manifest {
        Manifest::new(OperatorId::new("demo").expect("valid"), "demo")
    }

    #[test]
    fn diff_levels() {
        let old = demo();
        assert_eq!(old.diff(&old.clone()), Change::None);
        let mut moved = old.clone();
        moved.path = PathBuf::from("elsewhere.toml");
        assert_eq!(old.diff(&moved), Change::None);
        let mut hb = old.clone();
        hb.heartbeat_interval = Duration::from_secs(1);
        assert_eq!(old.diff(&hb), Change::Launch);
        let mut disabled = old.clone();
        disabled.enabled = false;
        assert_eq!(old.diff(&disabled), Change::Supervision);
        let mut secret = disabled.clone();
        secret
            .secrets
            .insert("a".into(), SecretRef::Env("A".into()));
        assert_eq!(old.diff(&secret), Change::Config);
        assert!(Change::Launch > Change::Config && Change::Config > Change::Supervision);
    }

    #[test]
    fn grant_notes_name_chat_grants_beyond_the_own_instance() {
        let mut m = demo();
        assert!(
            m.grant_notes().is_empty(),
            "the defaults keep to its own instance"
        );
        assert_eq!(m.publish, ["chat.*.{id}.#", "send.#"]);
        m.publish = vec!["chat.#".into(), "chat.irc.demo.#".into()];
        m.subscribe = vec!["chat.#.message".into()];
        let notes = m.grant_notes();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("enforced as `chat.#`"), "{notes:?}");
        assert!(
            notes[1].contains("`chat.#`") && notes[1].contains("every"),
            "{notes:?}"
        );
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_", "PATH", "a_1", "_X9"] {
            assert!(is_valid_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "É", "A=B"] {
            assert!(!is_valid_env_name(bad), "{bad}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let mut m = demo();
        m.secrets
            .insert("sasl.password".into(), SecretRef::File("/s".into()));
        let json = serde_json::to_value(&m).expect("serializes");
        assert_eq!(json["ready_timeout"], "10s");
        assert_eq!(json["restart"], "on-failure");
        assert_eq!(json["secrets"]["sasl.password"]["file"], "/s");
        let back: Manifest = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, m);
        let minimal: Manifest =
            serde_json::from_str(r#"{"id": "demo", "command": "demo"}"#).expect("minimal");
        assert_eq!(minimal, demo());
        assert!(serde_json::from_str::<Manifest>(
            r#"{"id": "demo", "command": "demo", "comand": "x"}"#
        )
        .is_err());
    }
}
