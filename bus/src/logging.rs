//! Structured logs for operators: quiet by default, JSON on request.

/// Install a `tracing` subscriber writing to stderr (which the
/// orchestrator captures line by line and tags with the operator ID).
///
/// The filter comes from `SWITCHBOARD_LOG`, then `RUST_LOG`, else `info`
/// for this process and `warn` for libraries. `SWITCHBOARD_LOG_FORMAT=json`
/// switches to one JSON object per line. Calling it twice is harmless.
pub fn init_tracing() {
    init_tracing_with_default("warn,switchboard=info");
}

/// [`init_tracing`] with another default filter (used when neither
/// `SWITCHBOARD_LOG` nor `RUST_LOG` is set), e.g. `"warn"` for a CLI.
pub fn init_tracing_with_default(default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("SWITCHBOARD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
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
