//! The `switchboard` command line: one binary for the daemon and the
//! tools that talk to it.
//!
//! `args` is what clap parses; each command group acts in its own
//! module: [`run`] dispatches to `checks` (validate, conformance: no
//! daemon needed), `control` (status, ctl: the daemon's API), `cluster`
//! (apply, drain, undrain, rolling-restart: cluster mode), `logs`
//! (logs, replay: what was kept) and `live` (tail, pub, chat: the bus
//! now), which reach the daemon through `connect` and print with
//! [`output`].

mod args;
mod checks;
mod cluster;
mod connect;
mod control;
mod live;
mod logs;
pub mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory as _;

pub use args::{
    ApplyArgs, ChatArgs, Cli, Command, CompletionsArgs, ConformanceArgs, CtlArgs, DrainArgs,
    LogsArgs, ManArgs, PubArgs, ReplayArgs, RollingRestartArgs, StatusArgs, TailArgs, ValidateArgs,
};
pub use control::status_table;
pub use live::{is_internal, names_internal};
pub use output::{shown, tail_line};

/// Find the config file when none was given.
pub fn default_config_path() -> Option<PathBuf> {
    ["switchboard.toml", "/etc/switchboard/switchboard.toml"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// How a command line ended.
#[derive(Debug)]
pub enum Finish {
    /// Exit with this code.
    Exit(ExitCode),
    /// The daemon asked to be executed again (a rolling restart): the
    /// caller does it once the async runtime is down.
    Relaunch(crate::relaunch::Relaunch),
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<Finish> {
    if let Command::Run = cli.command {
        // First thing: the program's path as it was started (see
        // `crate::relaunch`), for a restart in place.
        let relaunch = crate::relaunch::Relaunch::capture();
        let config_path = cli.config.clone().or_else(default_config_path);
        return Ok(
            match crate::daemon::run(config_path.as_deref(), relaunch).await? {
                crate::daemon::Ended::Stopped => Finish::Exit(ExitCode::SUCCESS),
                crate::daemon::Ended::Restart(relaunch) => Finish::Relaunch(relaunch),
            },
        );
    }
    command(cli).await.map(Finish::Exit)
}

/// Run every command but `run`.
async fn command(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = cli.config.clone().or_else(default_config_path);
    let client = connect::Client {
        url: cli.url,
        config_path: config_path.clone(),
    };
    match cli.command {
        Command::Run => anyhow::bail!("`run` is started by `cli::run`, not as a client command"),
        Command::Validate(args) => checks::validate(config_path.as_deref(), args),
        Command::Conformance(args) => checks::conformance(args).await,
        Command::Completions(CompletionsArgs { shell }) => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "switchboard",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::FenceWarden => {
            crate::warden::serve(std::io::BufReader::new(std::io::stdin()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(ManArgs { dir }) => {
            crate::manpages::write(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => control::status(&client, args).await,
        Command::Ctl(args) => control::ctl(&client, args).await,
        Command::Apply(args) => cluster::apply(&client, args).await,
        Command::Drain(args) => cluster::drain(&client, args, true).await,
        Command::Undrain(args) => cluster::drain(&client, args, false).await,
        Command::Forget(args) => cluster::forget(&client, args).await,
        Command::RollingRestart(args) => cluster::rolling_restart(&client, args).await,
        Command::Replay(args) => logs::replay(&client, args).await,
        Command::Logs(args) => logs::logs(&client, args).await,
        Command::Tail(args) => live::tail(&client, args).await,
        Command::Pub(args) => live::publish(&client, args).await,
        Command::Chat(args) => live::chat_command(&client, args).await,
    }
}
