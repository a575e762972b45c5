//! The `switchboard` command line: one binary for the daemon and the
//! tools that talk to it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{CommandFactory, Parser, Subcommand};
use futures::StreamExt;
use serde::Deserialize as _;
use switchboard_bus::{Bus, BusOptions, Envelope, Pattern};
use switchboard_proto::api::{
    methods, CtlReply, CtlRequest, LogLine, LogsReply, LogsRequest, OperatorStatus, StatusReply,
    StatusRequest,
};
use switchboard_proto::{
    headers, kinds, log_wildcard, ChatAddress, ChatMessage, ChatPattern, OperatorId, SbSubject,
    SendRequest, Verb,
};

use crate::config::Config;
use crate::daemon::{runtime_file, RuntimeInfo};

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
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send a control verb to one operator, a glob of operators, or all.
    ///
    /// `restart` asks a running operator to restart in place (its `restart`
    /// verb: same process, ready again); `--replace` stops the process and
    /// starts a new one instead. A stopped or failed operator, or one
    /// controlled by signals, always gets a new process.
    Ctl {
        /// halt, resume, reload, restart or shutdown.
        verb: Verb,
        /// An operator ID or a glob like `irc-*`.
        #[arg(required_unless_present = "all")]
        target: Option<String>,
        /// Every operator.
        #[arg(long, conflicts_with = "target")]
        all: bool,
        /// For `reload`: the new config as JSON (default: the manifest's,
        /// re-read from disk).
        #[arg(long = "with-config", value_name = "JSON")]
        with_config: Option<String>,
        /// For `restart`: replace the process (SIGTERM, then a new one)
        /// instead of restarting in place.
        #[arg(long)]
        replace: bool,
    },
    /// Show what an operator printed (stdout and stderr) and its
    /// lifecycle events.
    ///
    /// Read from the durable stream, so lines from before a daemon restart
    /// and beyond the daemon's 1,000 in memory are there too; without the
    /// stream, the daemon's last lines in memory.
    Logs {
        /// The operator ID.
        id: OperatorId,
        /// How many recent lines (0: all in the window).
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// Only lines since then: a duration ago (`10m`, `2h`, `1d`) or an
        /// RFC 3339 time.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Keep following new lines.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print or republish what the durable stream kept: the envelopes on
    /// subjects matching a pattern, stored in a time window, oldest first.
    ///
    /// Republished envelopes keep their id, so receivers that saw them
    /// already drop them, and the stream stores them once.
    Replay {
        /// A pattern: `*` one token, `#` zero or more (e.g. `chat.irc.#`).
        pattern: String,
        /// Start: a duration ago (`10m`, `2h`, `1d`) or an RFC 3339 time.
        #[arg(long, value_name = "WHEN")]
        since: String,
        /// End (default: now), same forms as --since.
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
        /// Republish each envelope on this subject instead of printing it.
        #[arg(long, value_name = "SUBJECT")]
        to: Option<String>,
        /// Print each envelope as one line of JSON.
        #[arg(long, conflicts_with = "to")]
        json: bool,
    },
    /// Print envelopes live as they cross the bus.
    ///
    /// Internal subjects (the control plane `sb.…`, NATS's own `$JS.…`,
    /// `$SYS.…` and `_INBOX.…` replies) carry no envelopes and are left
    /// out unless the pattern names them (`tail 'sb.event.#'`) or
    /// `--internal` is given.
    Tail {
        /// A pattern: `*` one token, `#` zero or more (e.g. `chat.#`).
        #[arg(default_value = "#")]
        pattern: String,
        /// Print each envelope as one line of JSON.
        #[arg(long, conflicts_with = "raw")]
        json: bool,
        /// Print every message as it is (any payload, not only envelopes).
        #[arg(long)]
        raw: bool,
        /// Also show internal subjects (`sb.…`, `$JS.…`, `$SYS.…`,
        /// `_INBOX.…`) that the pattern matches.
        #[arg(long)]
        internal: bool,
    },
    /// Publish one envelope with the given JSON body.
    Pub {
        /// The subject, e.g. `chat.console.local.lobby.message`.
        subject: String,
        /// The body: any JSON (`'{"text":"hi"}'`, `'"hi"'`, `42`).
        body: String,
        /// The envelope's source (default: on `chat.<protocol>.<instance>.…`
        /// the instance, the subject's owner, so that receivers accept it
        /// as authentic; elsewhere `cli`).
        #[arg(long)]
        source: Option<String>,
    },
    /// Chat on the bus from this terminal (a `console` protocol room).
    Chat {
        /// The room.
        #[arg(long, default_value = "lobby")]
        room: String,
        /// The console instance (third subject token, and the messages'
        /// source: 1 to 64 of A-Z, a-z, 0-9, `_` and `-`).
        #[arg(long, default_value = "local")]
        instance: String,
        /// Your name.
        #[arg(long, env = "USER", default_value = "you")]
        nick: String,
    },
    /// Check manifests and print every problem as `file:line: what`.
    Validate {
        /// A manifests directory or one manifest file (default: the
        /// config's manifests directory).
        #[arg(value_name = "DIR|FILE")]
        dir: Option<PathBuf>,
    },
    /// Check an operator against docs/PROTOCOL.md: run it under a
    /// temporary daemon and nats-server and print a pass/fail table
    /// (exit 1 if any rule fails), e.g.
    /// `switchboard conformance --manifest op.toml -- python3 op.py`.
    Conformance {
        /// The operator's manifest (id, control, config, grants); without
        /// it: id `conformance`, `control = "nats"`, config `{}`.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// A chat text the operator answers (e.g. `!ping`): with it, the
        /// kit also checks that halt holds chat (a probe sent while halted
        /// is answered after resume, not dropped, not answered early).
        #[arg(long, value_name = "TEXT")]
        probe: Option<String>,
        /// The command and its arguments (replace the manifest's; the kit
        /// then also checks that the manifest's own command starts).
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages into a directory (for packagers).
    #[command(hide = true)]
    Man {
        /// Where the `.1` pages go (created if missing).
        dir: PathBuf,
    },
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

/// Find the config file when none was given.
pub fn default_config_path() -> Option<PathBuf> {
    ["switchboard.toml", "/etc/switchboard/switchboard.toml"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let config_path = cli.config.clone().or_else(default_config_path);
    match cli.command {
        Command::Run => {
            crate::daemon::run(config_path.as_deref()).await?;
        }
        Command::Validate { dir } => return validate(config_path.as_deref(), dir),
        Command::Conformance {
            manifest,
            json,
            probe,
            command,
        } => {
            let report = crate::conformance::run(&crate::conformance::Options {
                manifest,
                command,
                probe,
            })
            .await?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&report)?),
                false => print!("{}", report.table()),
            }
            return Ok(std::process::ExitCode::from(u8::from(!report.passed)));
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "switchboard",
                &mut std::io::stdout(),
            );
        }
        Command::Man { dir } => crate::manpages::write(&dir)?,
        Command::Status { json } => {
            let bus = connect(&cli.url, config_path.as_deref()).await?;
            let status: StatusReply = crate::api::call(&bus, methods::STATUS, &StatusRequest {})
                .await
                .map_err(unreachable_hint)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status_table(&status));
            }
        }
        Command::Ctl {
            verb,
            target,
            all,
            with_config,
            replace,
        } => {
            let config = match with_config {
                Some(s) => Some(
                    serde_json::from_str(&s)
                        .context("--with-config must be JSON, e.g. '{\"key\":1}'")?,
                ),
                None => None,
            };
            if config.is_some() && verb != Verb::Reload {
                bail!("--with-config goes with `reload` only");
            }
            if replace && verb != Verb::Restart {
                bail!("--replace goes with `restart` only");
            }
            let target = if all {
                "*".to_string()
            } else {
                target.unwrap_or_default()
            };
            let bus = connect(&cli.url, config_path.as_deref()).await?;
            let reply: CtlReply = crate::api::call(
                &bus,
                methods::CTL,
                &CtlRequest {
                    verb,
                    target,
                    config,
                    in_place: verb == Verb::Restart && !replace,
                },
            )
            .await
            .map_err(unreachable_hint)?;
            if let Some(e) = reply.error {
                bail!(e);
            }
            let mut failed = false;
            for r in &reply.results {
                if r.ok {
                    println!("{:<24} {} ok ({})", r.id, verb, r.state);
                } else {
                    failed = true;
                    println!(
                        "{:<24} {} FAILED ({}): {}",
                        r.id,
                        verb,
                        r.state,
                        r.error.as_deref().unwrap_or("no reason given")
                    );
                }
            }
            if failed {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        Command::Replay {
            pattern,
            since,
            until,
            to,
            json,
        } => {
            let pattern = Pattern::parse(&pattern)?;
            let now = switchboard_proto::Timestamp::now();
            let since = crate::history::parse_when(&since, now)?;
            let until = until
                .map(|u| crate::history::parse_when(&u, now))
                .transpose()?;
            let to = match to {
                Some(s) => crate::history::ReplayTo::Subject(s),
                None => crate::history::ReplayTo::Print { json },
            };
            let (bus, stream) = connect_with_stream(&cli.url, config_path.as_deref()).await?;
            let Some(stream) = stream else {
                bail!("the daemon keeps no durable stream ([stream] in switchboard.toml, JetStream on): nothing to replay");
            };
            let n = crate::history::replay(&bus, &stream, &pattern, since, until, &to).await?;
            if let crate::history::ReplayTo::Subject(s) = &to {
                eprintln!("republished {n} envelope(s) on {s}");
            }
        }
        Command::Logs {
            id,
            lines,
            since,
            follow,
        } => {
            let since = since
                .map(|s| crate::history::parse_when(&s, switchboard_proto::Timestamp::now()))
                .transpose()?;
            let (bus, stream) = connect_with_stream(&cli.url, config_path.as_deref()).await?;
            if let Some(stream) = stream {
                if crate::history::logs(&bus, &stream, &id, lines, since, follow).await? {
                    return Ok(std::process::ExitCode::SUCCESS);
                }
                eprintln!("(the durable stream is not readable: showing the daemon's last lines in memory)");
            }
            // Subscribe before asking for history so no line falls between.
            let mut live = if follow {
                Some(bus.subscribe_raw(&log_wildcard(&id)).await?)
            } else {
                None
            };
            let reply: LogsReply = crate::api::call(
                &bus,
                methods::LOGS,
                &LogsRequest {
                    id: id.into_string(),
                    lines,
                },
            )
            .await
            .map_err(unreachable_hint)?;
            if let Some(e) = reply.error {
                bail!(e);
            }
            let last = reply.lines.last().map(|l| l.timestamp);
            if reply.omitted > 0 {
                eprintln!(
                    "({} older line(s) left out to fit one reply; ask for fewer with -n)",
                    reply.omitted
                );
            }
            for l in reply
                .lines
                .iter()
                .filter(|l| since.is_none_or(|t| l.timestamp >= t))
            {
                print_log_line(l);
            }
            if let Some(live) = live.as_mut() {
                while let Some(msg) = live.next().await {
                    if let Ok(l) = serde_json::from_slice::<LogLine>(&msg.payload) {
                        if last.is_some_and(|t| l.timestamp <= t) {
                            continue;
                        }
                        print_log_line(&l);
                    }
                }
            }
        }
        Command::Tail {
            pattern: text,
            json,
            raw,
            internal,
        } => {
            let pattern = Pattern::parse(&text)?;
            let internal = internal || names_internal(&text);
            let bus = connect(&cli.url, config_path.as_deref()).await?;
            // Raw subscriptions and our own decoding: lifecycle and control
            // payloads (`sb.…`) are plain JSON, not envelopes, and are shown
            // as what they are rather than reported as malformed.
            let plan = pattern.nats_plan();
            let mut subs = Vec::new();
            for subject in &plan.subjects {
                subs.push(bus.subscribe_raw(subject).await?);
            }
            let mut all = futures::stream::select_all(subs);
            eprintln!(
                "tailing {pattern}{}{} (Ctrl-C to stop)",
                if raw { " (raw)" } else { "" },
                if internal {
                    ""
                } else {
                    "; internal subjects hidden, --internal shows them"
                }
            );
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
            while let Some(m) = all.next().await {
                if plan.needs_filter && !pattern.matches(&m.subject) {
                    continue;
                }
                if !internal && is_internal(&m.subject) {
                    continue;
                }
                let line = tail_line(&m.subject, &m.payload, raw, json);
                let mut out = std::io::stdout().lock();
                // A reader that went away (`| head`) ends the tail.
                if writeln!(out, "{}", shown(&line, terminal)).is_err() {
                    break;
                }
            }
        }
        Command::Pub {
            subject,
            body,
            source,
        } => {
            let body: serde_json::Value = serde_json::from_str(&body).context(
                "the body must be JSON; quote text as '\"hi\"' or send '{\"text\":\"hi\"}'",
            )?;
            let bus = connect(&cli.url, config_path.as_deref()).await?;
            // The CLI may publish anything (the administrator's client):
            // on a chat subject it speaks as the subject's owner.
            let source = source.unwrap_or_else(|| {
                switchboard_bus::authentic::subject_owner(&subject)
                    .unwrap_or("cli")
                    .to_owned()
            });
            let env = Envelope::new(source, body);
            bus.publish(&subject, &env).await?;
            bus.flush().await?;
            println!("published {} on {subject}", env.id().unwrap_or(""));
        }
        Command::Chat {
            room,
            instance,
            nick,
        } => {
            // The instance is the source of what is said: it must be an id
            // for receivers to take the messages as authentic.
            switchboard_proto::OperatorId::new(instance.as_str())
                .context("--instance is the messages' source")?;
            let bus = connect(&cli.url, config_path.as_deref()).await?;
            chat(&bus, &instance, &room, &nick).await?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn unreachable_hint(e: switchboard_bus::RequestError) -> anyhow::Error {
    match e.kind() {
        switchboard_bus::RequestErrorKind::NoResponders
        | switchboard_bus::RequestErrorKind::TimedOut => {
            anyhow::anyhow!("{e}\nis `switchboard run` running with this config?")
        }
        _ => e.into(),
    }
}

/// Subjects that carry no envelopes: the control plane (`sb.…`), NATS's
/// own (`$JS.…`, `$SYS.…`, any `$…`) and request replies (`_INBOX.…`).
/// `tail` leaves them out unless asked.
pub fn is_internal(subject: &str) -> bool {
    let first = subject.split('.').next().unwrap_or("");
    first == "sb" || first.starts_with('$') || first.starts_with("_INBOX")
}

/// Whether a pattern's first token names internal subjects literally
/// (`sb.event.#`, `$JS.#`): then the person asked for them.
pub fn names_internal(pattern: &str) -> bool {
    let first = pattern.split('.').next().unwrap_or("");
    first != "*" && first != "#" && is_internal(first)
}

fn print_log_line(l: &LogLine) {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut out = std::io::stdout().lock();
    let line = format!("{} {} {}: {}", l.timestamp, l.id, l.stream, l.line);
    let _ = writeln!(out, "{}", shown(&line, terminal));
}

/// One line of `tail` (and `replay`) for a message on `subject`: with
/// `raw` the payload as it came; with `json` one JSON object
/// `{"subject", "envelope"}`; else `time subject [source] body`. Payloads on `sb.…` (lifecycle, control, API, logs) are
/// plain JSON and shown as `subject payload`; anything else that is not an
/// envelope says so, in the line, instead of a warning in the log.
pub fn tail_line(subject: &str, payload: &[u8], raw: bool, json: bool) -> String {
    let text = String::from_utf8_lossy(payload);
    if raw || SbSubject::parse(subject).is_ok() {
        return format!("{subject} {text}");
    }
    match Envelope::from_slice(payload) {
        Ok(env) if json => {
            let envelope: serde_json::Value =
                serde_json::from_slice(&env.to_vec()).unwrap_or(serde_json::Value::Null);
            serde_json::json!({"subject": subject, "envelope": envelope}).to_string()
        }
        Ok(env) => format!("{} {subject} [{}] {}", env.timestamp, env.source, env.body),
        Err(e) => format!("{subject} (not an envelope: {e}) {text}"),
    }
}

/// What may be printed to a terminal: control characters (which could
/// move the cursor, retitle the window or worse) are shown escaped, as
/// `\u{1b}`; to a pipe or file the text goes as it is.
pub fn shown(text: &str, terminal: bool) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && c != '\t';
    if !terminal || !text.chars().any(bad) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if bad(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`connect`], and the durable stream's name: the runtime file's, else
/// (with `--url`) the config's `[stream]` when enabled.
async fn connect_with_stream(
    url: &Option<String>,
    config_path: Option<&Path>,
) -> anyhow::Result<(Bus, Option<String>)> {
    let bus = connect(url, config_path).await?;
    let direct = url.is_some() || std::env::var(switchboard_proto::launch::NATS_URL).is_ok();
    let stream = if direct {
        Config::load(config_path)
            .ok()
            .filter(|c| c.stream.enabled)
            .map(|c| c.stream.name)
    } else {
        Config::load(config_path)
            .ok()
            .and_then(|c| std::fs::read(runtime_file(&c.runtime_dir)).ok())
            .and_then(|bytes| serde_json::from_slice::<RuntimeInfo>(&bytes).ok())
            .and_then(|info| info.stream)
    };
    Ok((bus, stream))
}

/// Connect a client: `--url` (or `$SWITCHBOARD_NATS_URL`), else the
/// runtime file the daemon wrote.
async fn connect(url: &Option<String>, config_path: Option<&Path>) -> anyhow::Result<Bus> {
    let opts = match url
        .clone()
        .or_else(|| std::env::var(switchboard_proto::launch::NATS_URL).ok())
    {
        Some(url) => {
            use switchboard_proto::launch;
            let mut o = BusOptions::new(&url);
            // An operator's own login (a shell operator's `tail`, `pub`):
            // the password file its launch environment names.
            let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
            let password =
                switchboard_bus::secret(get, launch::NATS_PASSWORD, launch::NATS_PASSWORD_FILE)?;
            if let (Some(u), Some(p)) = (get(launch::NATS_USER), password) {
                o = o.user_password(u, p);
            }
            if let Some(prefix) = get(launch::NATS_INBOX_PREFIX) {
                o = o.inbox_prefix(prefix);
            }
            o
        }
        None => {
            let config = Config::load(config_path)?;
            let path = runtime_file(&config.runtime_dir);
            let text = std::fs::read(&path).with_context(|| match config_path {
                Some(p) => format!(
                    "cannot reach the orchestrator: {} is missing or unreadable; \
                     is `switchboard run` running with this config ({})?",
                    path.display(),
                    p.display()
                ),
                // The built-in defaults put the runtime file under the
                // current directory: most likely the wrong place.
                None => format!(
                    "cannot reach the orchestrator: {} is missing or unreadable, and no config \
                     file was given or found (./switchboard.toml, /etc/switchboard/switchboard.toml); \
                     name the daemon's with --config FILE or SWITCHBOARD_TOML=FILE, or reach NATS \
                     directly with --url",
                    path.display()
                ),
            })?;
            let info: RuntimeInfo = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a switchboard runtime file", path.display()))?;
            info.bus_options()
        }
    };
    let opts = opts
        .connect_timeout(std::time::Duration::from_secs(3))
        .name("switchboard-cli");
    let urls = opts.urls().join(",");
    Bus::connect(&opts, "cli")
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the orchestrator's bus at {urls}: {e}"))
}

fn validate(
    config_path: Option<&Path>,
    dir: Option<PathBuf>,
) -> anyhow::Result<std::process::ExitCode> {
    let dir = match dir {
        Some(d) => d,
        None => Config::load(config_path)?.manifests_dir,
    };
    // One file is checked alone (no duplicate-id check across a
    // directory); anything else is read as the manifests directory.
    let report = if dir.is_file() {
        match crate::manifest::load_file(&dir) {
            Ok(m) => crate::manifest::LoadReport {
                manifests: vec![m],
                problems: Vec::new(),
            },
            Err(problems) => crate::manifest::LoadReport {
                manifests: Vec::new(),
                problems,
            },
        }
    } else {
        crate::manifest::load_dir(&dir)
    };
    for p in &report.problems {
        println!("{p}");
    }
    for m in &report.manifests {
        for note in m.grant_notes() {
            println!("note: {note}");
        }
        for warning in m.unheard_listen() {
            println!("warning: {warning}");
        }
    }
    // Which sandbox each operator gets on this host.
    let config = Config::load(config_path).ok();
    let sandboxing = config.as_ref().map(|c| {
        crate::sandbox::Sandboxing::probe(
            &crate::sandbox::SandboxConfig {
                required: false,
                ..c.sandbox.clone()
            },
            crate::sandbox::private_paths(c, config_path),
        )
    });
    let mut bad_binds = 0;
    if let Some(Ok(s)) = &sandboxing {
        if let Some(why) = s.unavailable() {
            println!("note: operators would run WITHOUT a sandbox on this host: {why}");
        }
        for m in &report.manifests {
            println!("{}: sandbox {}", m.id, s.describe(m.sandbox));
            for bind in m.sandbox_binds.iter().chain(&m.sandbox_binds_rw) {
                if let Err(e) = s.check_bind(bind) {
                    println!("{}: {e}", m.path.display());
                    bad_binds += 1;
                }
            }
        }
    }
    if report.problems.is_empty() && bad_binds == 0 {
        println!(
            "{}: {} operator manifest(s) OK",
            dir.display(),
            report.manifests.len()
        );
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        eprintln!("{} problem(s) found", report.problems.len() + bad_binds);
        Ok(std::process::ExitCode::FAILURE)
    }
}

/// The `status` table.
pub fn status_table(status: &StatusReply) -> String {
    let mut out = format!(
        "switchboard {} (pid {}, up {}), nats {}{}\n",
        status.version,
        status.pid,
        human_ms(status.uptime_ms),
        status.nats_url,
        if status.nats_embedded {
            " (embedded)"
        } else {
            ""
        }
    );
    out.push_str(&format!(
        "{:<24} {:<9} {:>8} {:>9} {:>8} {:>9} {:<7}  {}\n",
        "ID", "STATE", "PID", "UPTIME", "RESTARTS", "HEARTBEAT", "SANDBOX", "NOTE"
    ));
    for o in &status.operators {
        let dash = || "-".to_string();
        let sandbox = match o.sandbox.as_str() {
            "" => "-",
            "bwrap" | "none" => o.sandbox.as_str(),
            _ => "none(!)", // the host cannot sandbox it: the daemon's log says why
        };
        out.push_str(&format!(
            "{:<24} {:<9} {:>8} {:>9} {:>8} {:>9} {:<7}  {}\n",
            o.id,
            o.state.as_str(),
            o.pid.map(|p| p.to_string()).unwrap_or_else(dash),
            o.uptime_ms.map(human_ms).unwrap_or_else(dash),
            o.restarts,
            o.last_heartbeat_ms
                .map(|ms| format!("{} ago", human_ms(ms)))
                .unwrap_or_else(dash),
            sandbox,
            note(o),
        ));
    }
    if status.log_lines_dropped > 0 || status.events_dropped > 0 {
        out.push_str(&format!(
            "the bus could not keep up: {} output line(s) and {} event(s) not forwarded \
             (still in `switchboard logs` and the daemon's log)\n",
            status.log_lines_dropped, status.events_dropped
        ));
    }
    if status.operators.is_empty() {
        out.push_str("(no operators: add manifests to the manifests directory and send SIGHUP)\n");
    }
    for o in &status.operators {
        for (name, url) in &o.links {
            out.push_str(&format!("{name}: {url} ({})\n", o.id));
        }
    }
    if let Some(s) = &status.stream {
        match &s.error {
            Some(e) => out.push_str(&format!("stream {}: {e}\n", s.name)),
            None => {
                let percent = (s.bytes as f64 * 100.0 / s.max_bytes.max(1) as f64).min(100.0);
                out.push_str(&format!(
                    "stream {}: {} message(s), {} of {} ({percent:.0}%), {} consumer(s){}\n",
                    s.name,
                    s.messages,
                    bytesize::ByteSize(s.bytes).display().iec(),
                    bytesize::ByteSize(s.max_bytes).display().iec(),
                    s.consumers,
                    s.oldest
                        .map(|t| format!(", oldest {t}"))
                        .unwrap_or_default(),
                ));
            }
        }
    }
    out
}

/// The NOTE column: why it is in its state (or how it last ended), and
/// lifecycle messages from other processes, which are worth a look.
fn note(o: &OperatorStatus) -> String {
    let mut note = o
        .reason
        .as_deref()
        .or(o.last_exit.as_deref())
        .unwrap_or("")
        .to_owned();
    if o.ignored_lifecycle > 0 {
        if !note.is_empty() {
            note.push_str("; ");
        }
        note.push_str(&format!(
            "{} lifecycle message(s) from another process ignored",
            o.ignored_lifecycle
        ));
    }
    if o.malformed_lifecycle > 0 {
        if !note.is_empty() {
            note.push_str("; ");
        }
        note.push_str(&format!(
            "{} malformed lifecycle message(s) ignored",
            o.malformed_lifecycle
        ));
    }
    if !o.health.is_ok() {
        if !note.is_empty() {
            note.push_str("; ");
        }
        note.push_str(&format!(
            "{}: {}",
            o.health.as_str(),
            o.health_reason.as_deref().unwrap_or("no reason given")
        ));
    }
    note
}

fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `switchboard chat`: lines typed become chat messages in a `console`
/// room; requests to send into that room are printed.
async fn chat(bus: &Bus, instance: &str, room: &str, nick: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt as _;
    let address = ChatAddress::new("console", instance, room);
    let mut inbox = bus
        .subscribe(&ChatPattern::send().address(&address))
        .await?;
    bus.sync().await?;
    println!("chatting in {room} as {nick} (try !ping; Ctrl-D to quit)");
    let subject = address.event_subject(kinds::MESSAGE);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let prompt = || {
        print!("> ");
        let _ = std::io::stdout().flush();
    };
    prompt();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let text = line.trim_end().to_string();
                if !text.is_empty() {
                    let body = ChatMessage {
                        text,
                        sender: nick.to_string(),
                        room: room.to_string(),
                        private: false,
                        extra: Default::default(),
                    };
                    // The console instance is this terminal's: its
                    // events are authentic with the instance as source.
                    let env = Envelope::new(instance, serde_json::to_value(body)?)
                        .with_header(headers::ROOM, room);
                    bus.publish(&subject, &env).await?;
                    bus.flush().await?;
                }
                prompt();
            }
            Some(d) = inbox.next() => {
                let text = SendRequest::deserialize(&d.envelope().body)
                    .map(|r| r.text)
                    .unwrap_or_else(|_| d.envelope().body.to_string());
                println!("\r<{}> {}", d.envelope().source, text);
                prompt();
            }
        }
    }
    bus.close().await;
    Ok(())
}

#[cfg(test)]
mod output_tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_a_terminal() {
        let evil = "hi \u{1b}]0;owned\u{7} \u{1b}[2J\tend";
        let safe = shown(evil, true);
        assert!(!safe.chars().any(|c| c.is_control() && c != '\t'), "{safe}");
        assert!(safe.contains("\\u{1b}"), "{safe}");
        assert_eq!(shown(evil, false), evil, "pipes get the text as it is");
        assert!(matches!(
            shown("plain", true),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn status_shows_what_is_worth_a_look() {
        let op: OperatorStatus = serde_json::from_value(serde_json::json!({
            "id": "p", "state": "running", "restarts": 0, "control": "nats",
            "last_exit": "killed by SIGKILL", "ignored_lifecycle": 3,
            "health": "degraded", "health_reason": "cannot write /logs: Permission denied",
            "links": {"dashboard": "http://127.0.0.1:8477/"}
        }))
        .unwrap();
        let status = StatusReply {
            version: "0".into(),
            pid: 1,
            uptime_ms: 1,
            nats_url: "nats://x".into(),
            nats_embedded: true,
            operators: vec![op],
            log_lines_dropped: 7,
            events_dropped: 0,
            rss_bytes: None,
            cpu_seconds: None,
            stream: Some(switchboard_proto::api::StreamStatus {
                name: "SWITCHBOARD".into(),
                messages: 12,
                bytes: 1536,
                max_bytes: 1 << 20,
                oldest: None,
                consumers: 1,
                error: None,
            }),
        };
        let table = status_table(&status);
        assert!(
            table.contains("degraded: cannot write /logs: Permission denied"),
            "{table}"
        );
        assert!(
            table.contains("dashboard: http://127.0.0.1:8477/ (p)"),
            "{table}"
        );
        assert!(
            table.contains(
                "stream SWITCHBOARD: 12 message(s), 1.5 KiB of 1.0 MiB (0%), 1 consumer(s)"
            ),
            "{table}"
        );
        assert!(
            table
                .contains("killed by SIGKILL; 3 lifecycle message(s) from another process ignored"),
            "{table}"
        );
        assert!(
            table.contains("7 output line(s) and 0 event(s) not forwarded"),
            "{table}"
        );
    }

    #[test]
    fn tail_shows_lifecycle_payloads_as_they_are() {
        let hb = br#"{"id":"p","pid":1,"seq":1,"state":"running","uptime_ms":1,"timestamp":"2026-01-01T00:00:00Z"}"#;
        let line = tail_line("sb.op.p.heartbeat", hb, false, false);
        assert!(line.starts_with("sb.op.p.heartbeat {\"id\""), "{line}");
        assert!(!line.contains("not an envelope"));
        let env = Envelope::new("bot", serde_json::json!({"text": "hi"}));
        let line = tail_line("chat.t.x.r.message", &env.to_vec(), false, false);
        assert!(line.contains("[bot]") && line.contains("hi"), "{line}");
        let line = tail_line("chat.t.x.r.message", b"garbage", false, false);
        assert!(line.contains("not an envelope"), "{line}");
        let line = tail_line("chat.t.x.r.message", b"garbage", true, false);
        assert_eq!(line, "chat.t.x.r.message garbage");
    }
}
