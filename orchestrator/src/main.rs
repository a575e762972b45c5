//! `switchboard`: the daemon and its command line (see `cli`).

use clap::Parser;
use switchboard_orchestrator::cli::{self, Cli};
use switchboard_orchestrator::config::{Config, LogConfig, LogFormat};
use switchboard_orchestrator::journal;
use switchboard_orchestrator::logging;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        cli::Command::Run | cli::Command::Conformance(_)
    ) {
        die_on_closed_pipe();
    }
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
    let finish = runtime.block_on(cli::run(cli));
    match finish {
        Ok(cli::Finish::Exit(code)) => code,
        Ok(cli::Finish::Relaunch(relaunch)) => {
            // The daemon's tasks are done; the runtime's threads go
            // before the exec. Then: same pid, same arguments and
            // environment, the program as it is now on disk starts up
            // again (`switchboard rolling-restart`). Returns only on
            // failure.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            let e = relaunch.exec();
            tracing::error!(error = %e, "restart failed");
            eprintln!("switchboard: {e}");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Client commands end quietly when their reader goes away
/// (`switchboard logs x | head -1`), as `cat` does: SIGPIPE back to its
/// default action. Rust ignores it, so every later write would fail and
/// `println!` would panic with "Broken pipe". Not for `run` (the daemon
/// must outlive a closed socket) nor `conformance` (it stops the daemon it
/// started before it exits).
fn die_on_closed_pipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: called first thing in main, before any thread exists, and
    // SIG_DFL installs no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// The daemon logs its own events at `[log] level` of switchboard.toml
/// (default info; libraries stay at warn) in `[log] format`; client
/// commands only warn. `SWITCHBOARD_LOG` / `RUST_LOG` override the level,
/// and `SWITCHBOARD_LOG_FORMAT=json|text` the format. A config that does
/// not load gets the defaults here; `run` then reports why it does not.
fn init_tracing(cli: &Cli) {
    if !matches!(cli.command, cli::Command::Run) {
        // `rolling-restart` restarts this host's own server last: the old
        // connection's reconnects with the old credentials are expected
        // (the progress lines say what happens, and it logs in anew once
        // the daemon is back), so the client library's retries stay out
        // of the user's terminal.
        let default = if matches!(cli.command, cli::Command::RollingRestart(_)) {
            "warn,async_nats=off,switchboard_bus::client::connect=error"
        } else {
            "warn"
        };
        switchboard_bus::init_tracing_with_default(default);
        return;
    }
    let (filter, json) = match Config::load(cli.config.as_deref()) {
        Ok(config) => (config.log.filter(), config.log.format == LogFormat::Json),
        Err(_) => (LogConfig::default().filter(), false),
    };
    if init_journal(&filter, json) {
        return;
    }
    logging::init(&filter, json);
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
