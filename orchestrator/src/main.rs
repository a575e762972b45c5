//! `switchboard`: the daemon and its command line (see `cli`).

use clap::Parser;
use switchboard_orchestrator::cli::{self, Cli};
use switchboard_orchestrator::config::{Config, LogConfig, LogFormat};
use switchboard_orchestrator::journal;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The daemon logs its own events at `[log] level` of switchboard.toml
/// (default info; libraries stay at warn) in `[log] format`; client
/// commands only warn. `SWITCHBOARD_LOG` / `RUST_LOG` override the level,
/// and `SWITCHBOARD_LOG_FORMAT=json|text` the format. A config that does
/// not load gets the defaults here; `run` then reports why it does not.
fn init_tracing(cli: &Cli) {
    if !matches!(cli.command, cli::Command::Run) {
        switchboard_bus::init_tracing_with_default("warn");
        return;
    }
    let (filter, json) = match Config::load(cli.config.as_deref()) {
        Ok(config) => (config.log.filter(), config.log.format == LogFormat::Json),
        Err(_) => (LogConfig::default().filter(), false),
    };
    if init_journal(&filter, json) {
        return;
    }
    switchboard_bus::init_tracing_with(&filter, json);
}

/// Under systemd, text logs go to the journal as structured entries
/// (`journalctl -u switchboard OPERATOR=<id>`); JSON lines were asked for
/// explicitly and stay lines. False: plain lines to stderr instead.
fn init_journal(filter: &str, json: bool) -> bool {
    if switchboard_bus::json_format(json) || !journal::stderr_is_journal() {
        return false;
    }
    match journal::init(filter) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("switchboard: logging to stderr: {e}");
            false
        }
    }
}
