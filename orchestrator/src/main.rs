//! `switchboard`: the daemon and its command line (see `cli`).

use clap::Parser;
use switchboard_orchestrator::cli::{self, Cli};
use switchboard_orchestrator::config::{Config, LogConfig, LogFormat};

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
    match Config::load(cli.config.as_deref()) {
        Ok(config) => switchboard_bus::init_tracing_with(
            &config.log.filter(),
            config.log.format == LogFormat::Json,
        ),
        Err(_) => switchboard_bus::init_tracing_with_default(&LogConfig::default().filter()),
    }
}
