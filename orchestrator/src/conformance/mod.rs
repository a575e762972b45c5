//! `switchboard conformance`: run any operator, in any language, under a
//! temporary daemon and a real nats-server, and check it against each
//! rule of docs/PROTOCOL.md. Operators are written against the wire
//! contract, not the Rust SDK; this is how their authors find out whether
//! they got it right before a supervisor restarts them in production.
//!
//! [`harness`] starts the world, [`nats_rules`] and [`signal_rules`]
//! check an operator by its manifest's `control`, [`hygiene`] the rules
//! both share (garbage, own subjects), [`report`] prints the verdicts.

pub mod harness;
pub mod hygiene;
pub mod nats_rules;
pub mod report;
pub mod signal_rules;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::manifest::{Control, Manifest};
pub use report::{Report, Verdict};

switchboard_proto::error_kinds!(
    /// Kinds of [`ConformanceError`].
    ConformanceError => ConformanceErrorKind {
        Manifest, Prepare, Daemon
    }
);

/// Why the kit could not check an operator at all (a broken rule is a
/// verdict, not an error).
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// The manifest could not be read or is not valid.
    #[error("manifest {path}: {message}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// Every problem, one per line.
        message: String,
    },
    /// The temporary directory could not be set up.
    #[error("cannot prepare the temporary daemon in {dir}: {source}")]
    Prepare {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The temporary daemon did not come up or went away.
    #[error("the temporary switchboard daemon: {0}")]
    Daemon(String),
}

/// What the kit runs: `switchboard conformance [--manifest m.toml] --
/// <command> [args]`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The operator's manifest; without it, a minimal one (id
    /// `conformance`, `control = "nats"`, config `{}`).
    pub manifest: Option<PathBuf>,
    /// The command and its arguments; replaces the manifest's.
    pub command: Vec<String>,
    /// A chat text the operator answers: enables the `halt-holds-chat`
    /// rule (NATS control only; a SIGSTOPped process holds by itself).
    pub probe: Option<String>,
}

/// Heartbeat interval the kit gives the operator (`SWITCHBOARD_HEARTBEAT_MS`),
/// so a run takes seconds whatever the manifest says.
pub const HEARTBEAT: Duration = Duration::from_millis(200);

/// Check one operator; the report (the caller prints it).
pub async fn run(opts: &Options) -> Result<Report, ConformanceError> {
    let (manifest, text) = prepare_manifest(opts)?;
    let control = manifest.control;
    let mut h = harness::Harness::start(manifest, &text).await?;
    let mut rules = match control {
        Control::Nats => nats_rules::check(&mut h, opts.probe.as_deref()).await,
        Control::Signals => signal_rules::check(&mut h).await,
    };
    let id = h.id().to_string();
    h.stop().await;
    if opts.manifest.is_some() && !opts.command.is_empty() {
        rules.push(manifest_command(opts).await?);
    }
    Ok(Report::new(&id, control.as_str(), rules))
}

/// `manifest-command` (with `--manifest` and a command after `--`): the
/// command the manifest itself names starts and comes up (ready for NATS
/// control, still running for signals). The rules above ran the command
/// given after `--`, which hides a manifest that crash-loops under the
/// daemon (an interpreter without the SDK, a path relative to the wrong
/// directory); so that command gets a run of its own.
async fn manifest_command(opts: &Options) -> Result<Verdict, ConformanceError> {
    const RULE: &str = "manifest-command";
    let own = Options {
        manifest: opts.manifest.clone(),
        command: Vec::new(),
        probe: None,
    };
    let (manifest, text) = prepare_manifest(&own)?;
    let command = manifest.command.clone();
    let control = manifest.control;
    let within = manifest.ready_timeout;
    let mut h = harness::Harness::start(manifest, &text).await?;
    let verdict = match h.wait_pid(Duration::from_secs(10)).await {
        None => Verdict::fail(
            RULE,
            format!(
                "the daemon could not start `{command}`: {}",
                h.obituary().await
            ),
        ),
        Some(pid) => {
            let up = match control {
                Control::Nats => harness::Harness::next(&mut h.ready, within).await.is_some(),
                Control::Signals => {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    harness::alive(pid)
                }
            };
            if up {
                Verdict::pass(RULE, format!("`{command}` starts and comes up"))
            } else {
                Verdict::fail(
                    RULE,
                    format!(
                        "`{command}` (the manifest's own command, not the one after `--`) \
                         did not come up: {}",
                        h.obituary().await
                    ),
                )
            }
        }
    };
    h.stop().await;
    Ok(verdict)
}

/// Read (or make) the manifest, put the command in, and set what the kit
/// needs of the daemon: fast heartbeats, never a restart of its own, and
/// supervision timeouts the daemon never reaches (the kit, not the daemon,
/// judges ready and heartbeats, against the manifest's own `ready_timeout`
/// and `stop_timeout`, which stay in the parsed manifest returned).
fn prepare_manifest(opts: &Options) -> Result<(Manifest, String), ConformanceError> {
    let path = opts
        .manifest
        .clone()
        .unwrap_or_else(|| PathBuf::from("conformance.toml"));
    let bad = |message: String| ConformanceError::Manifest {
        path: path.clone(),
        message,
    };
    if opts.manifest.is_none() && opts.command.is_empty() {
        return Err(bad(
            "no command: give one after `--`, e.g. `switchboard conformance -- python3 op.py`"
                .into(),
        ));
    }
    let text = match &opts.manifest {
        Some(p) => std::fs::read_to_string(p).map_err(|e| bad(e.to_string()))?,
        None => "id = \"conformance\"\ncommand = \"\"\n".to_owned(),
    };
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    if let Some((command, args)) = opts.command.split_first() {
        table.insert("command".into(), command.clone().into());
        table.insert(
            "args".into(),
            toml::Value::Array(args.iter().map(|a| a.clone().into()).collect()),
        );
    }
    let problems = |p: Vec<crate::manifest::Problem>| {
        bad(p
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n"))
    };
    let manifest = crate::manifest::parse_manifest(&path, &table.to_string()).map_err(problems)?;
    // A relative command with a `/` is relative to the manifest's
    // directory (or, given after `--`, to the current one); the adapted
    // manifest lives elsewhere, so it gets the absolute path.
    if manifest.command.contains('/') && !Path::new(&manifest.command).is_absolute() {
        let base = match (&opts.manifest, opts.command.is_empty()) {
            (Some(m), true) => m.parent().map(Path::to_path_buf).unwrap_or_default(),
            _ => PathBuf::new(),
        };
        let absolute = std::path::absolute(base.join(&manifest.command))
            .map_err(|e| bad(format!("command {}: {e}", manifest.command)))?;
        table.insert("command".into(), absolute.display().to_string().into());
    }
    // Likewise `workdir`, which the parser resolved against the
    // manifest's own directory.
    if let Some(dir) = &manifest.workdir {
        table.insert("workdir".into(), dir.display().to_string().into());
    }
    table.insert(
        "heartbeat_interval".into(),
        format!("{}ms", HEARTBEAT.as_millis()).into(),
    );
    table.insert("restart".into(), "never".into());
    table.insert("ready_timeout".into(), "1h".into());
    table.insert("missed_heartbeats".into(), 100_000.into());
    table.insert(
        "stop_timeout".into(),
        format!("{}ms", manifest.stop_timeout.as_millis() + 5_000).into(),
    );
    let adapted = table.to_string();
    crate::manifest::parse_manifest(&path, &adapted).map_err(problems)?;
    Ok((manifest, adapted))
}
