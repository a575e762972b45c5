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
    use tracing_subscriber::EnvFilter;
    let default = if daemon {
        "warn,switchboard=info"
    } else {
        "warn"
    };
    let filter = std::env::var("SWITCHBOARD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let json = std::env::var("SWITCHBOARD_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: not in files, journald
        // or the orchestrator's capture of an operator's output.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
