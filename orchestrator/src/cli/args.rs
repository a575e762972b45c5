//! The command line's shape: what clap parses, apart from what each
//! command does (see the sibling modules).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use switchboard_proto::{OperatorId, Verb};

/// Switchboard: a pub/sub message bus for chat bots.
///
/// `switchboard run` starts the daemon: it runs nats-server (unless an
/// external URL is configured) and supervises the operators described in
/// its manifests directory. The other commands talk to a running daemon.
#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    propagate_version = true,
    after_long_help = ENVIRONMENT
)]
pub struct Cli {
    /// The daemon's config file. Default: ./switchboard.toml if present,
    /// else /etc/switchboard/switchboard.toml if present, else built-in
    /// defaults rooted in the current directory.
    #[arg(
        short,
        long,
        global = true,
        env = "SWITCHBOARD_TOML",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Talk to NATS at this URL instead of the daemon's runtime file
    /// (client commands only).
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (as systemd does).
    Run,
    /// Show every operator: state, pid, uptime, restarts, last heartbeat.
    Status(StatusArgs),
    /// Send a control verb to one operator, a glob of operators, or all.
    ///
    /// `restart` asks a running operator to restart in place (its `restart`
    /// verb: same process, ready again); `--replace` stops the process and
    /// starts a new one instead. A stopped or failed operator, or one
    /// controlled by signals, always gets a new process.
    Ctl(CtlArgs),
    /// Show what an operator printed (stdout and stderr) and its
    /// lifecycle events.
    ///
    /// Read from the durable stream, so lines from before a daemon restart
    /// and beyond the daemon's 1,000 in memory are there too; without the
    /// stream, the daemon's last lines in memory.
    Logs(LogsArgs),
    /// Print or republish what the durable stream kept: the envelopes on
    /// subjects matching a pattern, stored in a time window, oldest first.
    ///
    /// Republished envelopes keep their id, so receivers that saw them
    /// already drop them, and the stream stores them once.
    Replay(ReplayArgs),
    /// Print envelopes live as they cross the bus.
    ///
    /// Internal subjects (the control plane `sb.…`, NATS's own `$JS.…`,
    /// `$SYS.…` and `_INBOX.…` replies) carry no envelopes and are left
    /// out unless the pattern names them (`tail 'sb.event.#'`) or
    /// `--internal` is given.
    Tail(TailArgs),
    /// Publish one envelope with the given JSON body.
    Pub(PubArgs),
    /// Chat on the bus from this terminal (a `console` protocol room).
    Chat(ChatArgs),
    /// Cluster mode: make a manifests directory the whole cluster's
    /// desired state, from any host.
    ///
    /// Every manifest is checked first (as `validate` does); then the
    /// set is written by compare-and-set on a revision: `--based-on`, or
    /// the one this host's directory is based on (the last revision this
    /// host wrote, or the one it found at start equal to its directory;
    /// `status` shows it). If another host applied since, nothing is
    /// written and the command fails naming the revision that won: look
    /// at it (`switchboard status`), then apply again with `--based-on`
    /// that revision. An empty directory removes every operator. Prints
    /// the new revision.
    Apply(ApplyArgs),
    /// Cluster mode: move every operator off a host (each one stops there,
    /// then starts on another eligible host) and place nothing on it
    /// until `undrain`.
    Drain(DrainArgs),
    /// Cluster mode: let a drained host run operators again (placement
    /// gives it its share back, one hand-over at a time).
    Undrain(DrainArgs),
    /// Cluster mode: remove a host that is gone for good (a decommissioned
    /// machine) from the cluster's records: `status` stops listing it and
    /// `rolling-restart` stops waiting for it. Refused while the host is
    /// alive. A host started again after this registers anew.
    Forget(DrainArgs),
    /// Cluster mode: restart every host's daemon, one host at a time, this
    /// host last (e.g. after upgrading the package on every host).
    ///
    /// Each host's daemon leaves the cluster cleanly (its operators are
    /// handed over to the others at once, as on SIGTERM), stops its
    /// nats-server and executes its program again from the path it was
    /// started from, with the same arguments and pid (systemd sees a
    /// reload). The next host is restarted only once this one is back in
    /// the cluster and every operator of the desired state runs, ready,
    /// where placement wants it; one line per step, with the time. A host
    /// that is not back within `--timeout` stops the roll with what to do.
    /// Refused unless every host is alive and every operator runs.
    RollingRestart(RollingRestartArgs),
    /// Check manifests and print every problem as `file:line: what`.
    Validate(ValidateArgs),
    /// Check an operator against docs/PROTOCOL.md: run it under a
    /// temporary daemon and nats-server and print a pass/fail table
    /// (exit 1 if any rule fails), e.g.
    /// `switchboard conformance --manifest op.toml -- python3 op.py`.
    Conformance(ConformanceArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Write the man pages into a directory (for packagers).
    #[command(hide = true)]
    Man(ManArgs),
    /// The cluster fence warden, started by `switchboard run` itself:
    /// reads orders on stdin (see the `warden` module).
    #[command(hide = true)]
    FenceWarden,
}

/// The arguments of `switchboard status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `switchboard apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The manifests directory to apply (every `*.toml` in it; an
    /// operator missing from it is removed from the cluster).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Replace the desired state only if its revision is still this one
    /// (default: the revision this host's directory is based on).
    #[arg(long, value_name = "REVISION")]
    pub based_on: Option<u64>,
}

/// The arguments of `switchboard drain`, `undrain` and `forget`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The host's name (its `[cluster] host`; `switchboard status` lists
    /// them).
    #[arg(value_name = "HOST")]
    pub host: String,
}

/// The arguments of `switchboard rolling-restart`.
#[derive(Debug, Args)]
pub struct RollingRestartArgs {
    /// How long one host may take to be back and every operator to run
    /// again, in seconds (a host that left needs its server to rejoin the
    /// cluster and its engine to register).
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub timeout: u64,
}

/// The arguments of `switchboard ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// halt, resume, reload, restart or shutdown.
    pub verb: Verb,
    /// An operator ID or a glob like `irc-*`.
    #[arg(required_unless_present = "all")]
    pub target: Option<String>,
    /// Every operator.
    #[arg(long, conflicts_with = "target")]
    pub all: bool,
    /// For `reload`: the new config as JSON (default: the manifest's,
    /// re-read from disk).
    #[arg(long = "with-config", value_name = "JSON")]
    pub with_config: Option<String>,
    /// For `restart`: replace the process (SIGTERM, then a new one)
    /// instead of restarting in place.
    #[arg(long)]
    pub replace: bool,
}

/// The arguments of `switchboard logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The operator ID.
    pub id: OperatorId,
    /// How many recent lines (0: all in the window).
    #[arg(short = 'n', long, default_value_t = 100)]
    pub lines: usize,
    /// Only lines since then: a duration ago (`10m`, `2h`, `1d`) or an
    /// RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Keep following new lines.
    #[arg(short, long)]
    pub follow: bool,
}

/// The arguments of `switchboard replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A pattern: `*` one token, `#` zero or more (e.g. `chat.irc.#`).
    pub pattern: String,
    /// Start: a duration ago (`10m`, `2h`, `1d`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: String,
    /// End (default: now), same forms as --since.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Republish each envelope on this subject instead of printing it.
    #[arg(long, value_name = "SUBJECT")]
    pub to: Option<String>,
    /// Print each envelope as one line of JSON.
    #[arg(long, conflicts_with = "to")]
    pub json: bool,
}

/// The arguments of `switchboard tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// A pattern: `*` one token, `#` zero or more (e.g. `chat.#`).
    #[arg(default_value = "#")]
    pub pattern: String,
    /// Print each envelope as one line of JSON.
    #[arg(long, conflicts_with = "raw")]
    pub json: bool,
    /// Print every message as it is (any payload, not only envelopes).
    #[arg(long)]
    pub raw: bool,
    /// Also show internal subjects (`sb.…`, `$JS.…`, `$SYS.…`,
    /// `_INBOX.…`) that the pattern matches.
    #[arg(long)]
    pub internal: bool,
}

/// The arguments of `switchboard pub`.
#[derive(Debug, Args)]
pub struct PubArgs {
    /// The subject, e.g. `chat.console.local.lobby.message`.
    pub subject: String,
    /// The body: any JSON (`'{"text":"hi"}'`, `'"hi"'`, `42`).
    pub body: String,
    /// The envelope's source (default: on `chat.<protocol>.<instance>.…`
    /// the instance, the subject's owner, so that receivers accept it
    /// as authentic; elsewhere `cli`).
    #[arg(long)]
    pub source: Option<String>,
}

/// The arguments of `switchboard chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The room.
    #[arg(long, default_value = "lobby")]
    pub room: String,
    /// The console instance (third subject token, and the messages'
    /// source: 1 to 64 of A-Z, a-z, 0-9, `_` and `-`).
    #[arg(long, default_value = "local")]
    pub instance: String,
    /// Your name.
    #[arg(long, env = "USER", default_value = "you")]
    pub nick: String,
}

/// The arguments of `switchboard validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A manifests directory or one manifest file (default: the
    /// config's manifests directory).
    #[arg(value_name = "DIR|FILE")]
    pub dir: Option<PathBuf>,
}

/// The arguments of `switchboard conformance`.
#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// The operator's manifest (id, control, config, grants); without
    /// it: id `conformance`, `control = "nats"`, config `{}`.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// A chat text the operator answers (e.g. `!ping`): with it, the
    /// kit also checks that halt holds chat (a probe sent while halted
    /// is answered after resume, not dropped, not answered early).
    #[arg(long, value_name = "TEXT")]
    pub probe: Option<String>,
    /// The command and its arguments (replace the manifest's; the kit
    /// then also checks that the manifest's own command starts).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The arguments of `switchboard completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// The arguments of `switchboard man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Where the `.1` pages go (created if missing).
    pub dir: PathBuf,
}

const ENVIRONMENT: &str = "\
Environment:
  SWITCHBOARD_LOG            log filter, e.g. `debug` or `warn,switchboard=info` (RUST_LOG works too)
  SWITCHBOARD_LOG_FORMAT     `json` for one JSON object per log line
  SWITCHBOARD__<KEY>         override a switchboard.toml key, e.g. SWITCHBOARD__NATS__URL, SWITCHBOARD__STATE_DIR
  SWITCHBOARD_TOML           the config file (same as --config); client commands find the
                             running daemon through it
  SWITCHBOARD_NATS_SERVER    the nats-server binary for the embedded server
  SWITCHBOARD_NATS_URL, SWITCHBOARD_NATS_USER, SWITCHBOARD_NATS_PASSWORD_FILE (or _PASSWORD)
                             client commands: reach NATS directly instead of through the runtime file

Examples:
  switchboard run --config /etc/switchboard/switchboard.toml
  switchboard status
  switchboard ctl reload 'irc-*'
  switchboard logs irc-libera -f
  switchboard tail 'chat.irc.#'
  switchboard validate /etc/switchboard/operators.d
  switchboard validate ./pingbot.toml
";
