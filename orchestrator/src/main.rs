//! `switchboard`: the daemon and its command line (see `cli`).

use clap::Parser;
use switchboard_orchestrator::cli::{self, Cli};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(cli.command, cli::Command::Run));
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

/// The daemon logs at info (its own events), quiet for libraries; client
/// commands only warn. `SWITCHBOARD_LOG` / `RUST_LOG` override, and
/// `SWITCHBOARD_LOG_FORMAT=json` gives one JSON object per line.
fn init_tracing(daemon: bool) {
    let default = if daemon {
        "warn,switchboard=info"
    } else {
        "warn"
    };
    switchboard_bus::init_tracing_with_default(default);
}
