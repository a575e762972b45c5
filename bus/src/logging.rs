//! Structured logs for operators: quiet by default, JSON on request.
//!
//! The default filter shows `info` from the operator's own code, whatever
//! its crate is called, and from Switchboard's crates, and `warn` from
//! everything else (the NATS client, TLS, …). "The operator's own code" is
//! the crate of the type handed to [`run`](crate::run) and the crate of the
//! running binary (its file name with `-` as `_`, which is what Cargo names
//! a binary's crate).

use std::path::Path;

/// Install a `tracing` subscriber writing to stderr (which the
/// orchestrator captures line by line and tags with the operator ID).
///
/// The filter comes from `SWITCHBOARD_LOG`, then `RUST_LOG`, else
/// [`default_filter`] for this binary's crate: `info` for it and for
/// Switchboard's crates, `warn` for libraries. `SWITCHBOARD_LOG_FORMAT=json`
/// switches to one JSON object per line. Calling it twice is harmless.
/// [`run`](crate::run) calls it (adding the operator type's crate).
pub fn init_tracing() {
    init_tracing_with_default(&filter_for(None));
}

/// What [`run`](crate::run) installs: [`init_tracing`], with `info` also
/// for the crate that defines the operator type (`type_name` is
/// `std::any::type_name::<O>()`).
pub(crate) fn init_tracing_for(type_name: &str) {
    init_tracing_with_default(&filter_for(Some(type_name)));
}

fn filter_for(type_name: Option<&str>) -> String {
    let own = own_crates(type_name);
    default_filter(&own.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The default filter: `warn` for everything, `info` for Switchboard's
/// crates and for each crate in `own` (crate names as in paths, with `_`).
///
/// ```
/// assert_eq!(
///     switchboard_bus::default_filter(&["greeter"]),
///     "warn,switchboard=info,greeter=info"
/// );
/// ```
pub fn default_filter(own: &[&str]) -> String {
    let mut filter = String::from("warn,switchboard=info");
    for name in own {
        if is_crate_name(name) && !name.starts_with("switchboard") {
            filter.push(',');
            filter.push_str(name);
            filter.push_str("=info");
        }
    }
    filter
}

/// [`init_tracing`] with another default filter (used when neither
/// `SWITCHBOARD_LOG` nor `RUST_LOG` is set), e.g. `"warn"` for a CLI.
pub fn init_tracing_with_default(default_filter: &str) {
    init_tracing_with(default_filter, false);
}

/// [`init_tracing_with_default`], with JSON lines by default when `json`
/// (the daemon's `[log] format`); `SWITCHBOARD_LOG_FORMAT` (`json` or
/// `text`) still wins.
pub fn init_tracing_with(default_filter: &str, json: bool) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter(default_filter))
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: not in files, journald
        // or the orchestrator's capture of an operator's output.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = if json_format(json) {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The filter in force: `SWITCHBOARD_LOG`, then `RUST_LOG` (if it parses),
/// else `default_filter`. Public for subscribers built elsewhere (the
/// daemon's journald output) so the variables mean the same everywhere.
pub fn env_filter(default_filter: &str) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    std::env::var("SWITCHBOARD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter))
}

/// Whether lines are JSON: `SWITCHBOARD_LOG_FORMAT` (`json` or `text`)
/// wins over `configured`.
pub fn json_format(configured: bool) -> bool {
    match std::env::var(switchboard_proto::launch::LOG_FORMAT).as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => configured,
    }
}

/// The operator's own crates: the one defining `type_name` (if given)
/// and the running binary's, without repeats.
fn own_crates(type_name: Option<&str>) -> Vec<String> {
    let mut own: Vec<String> = type_name
        .and_then(crate_of)
        .map(str::to_owned)
        .into_iter()
        .collect();
    if let Some(name) = std::env::current_exe()
        .ok()
        .and_then(|exe| binary_crate(&exe))
    {
        if !own.contains(&name) {
            own.push(name);
        }
    }
    own
}

/// The crate of a type path such as `greeter::Greeter` or
/// `my_bot::Wrapper<other::X>`.
fn crate_of(type_name: &str) -> Option<&str> {
    let end = type_name
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(type_name.len());
    Some(&type_name[..end]).filter(|name| is_crate_name(name))
}

/// The crate name Cargo gives the binary at `exe` (`switchboard-irc` →
/// `switchboard_irc`), if its file name can be one.
fn binary_crate(exe: &Path) -> Option<String> {
    let name = exe.file_name()?.to_str()?.replace('-', "_");
    is_crate_name(&name).then_some(name)
}

fn is_crate_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn crate_names() {
        assert_eq!(crate_of("greeter::Greeter"), Some("greeter"));
        assert_eq!(crate_of("my_bot::W<other::X>"), Some("my_bot"));
        assert_eq!(crate_of("Local"), Some("Local"));
        assert_eq!(crate_of("<a as b>::C"), None);
        assert_eq!(
            binary_crate(Path::new("/usr/bin/switchboard-irc")).as_deref(),
            Some("switchboard_irc")
        );
        assert_eq!(
            binary_crate(Path::new("target/debug/greeter")).as_deref(),
            Some("greeter")
        );
        assert_eq!(binary_crate(Path::new("/x/bot.sh")), None);
        assert_eq!(binary_crate(Path::new("/x/9lives")), None);
    }

    #[test]
    fn default_filters() {
        assert_eq!(default_filter(&[]), "warn,switchboard=info");
        assert_eq!(
            default_filter(&["greeter", "switchboard_irc", "bad name", ""]),
            "warn,switchboard=info,greeter=info"
        );
        // What `run` builds for an operator type of this crate's tests.
        let own = own_crates(Some("greeter::Greeter"));
        assert_eq!(own.first().map(String::as_str), Some("greeter"));
        assert!(filter_for(Some("greeter::Greeter")).contains(",greeter=info"));
    }

    /// Records the target of each event that passes the filter.
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut seen = self.0.lock().expect("not poisoned");
            seen.push(format!(
                "{} {}",
                event.metadata().level(),
                event.metadata().target()
            ));
        }
    }

    #[test]
    fn the_operators_own_info_is_shown_and_libraries_are_quiet() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let filter = tracing_subscriber::EnvFilter::new(filter_for(Some("greeter::Greeter")));
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(Seen(Arc::clone(&seen)));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "greeter", "shown: the operator's crate");
            tracing::info!(target: "greeter::handlers", "shown: a module of it");
            tracing::debug!(target: "greeter", "hidden: debug");
            tracing::info!(target: "switchboard_bus::operator", "shown: ours");
            tracing::info!(target: "async_nats", "hidden: a library's info");
            tracing::warn!(target: "async_nats", "shown: a library's warning");
        });
        let seen = seen.lock().expect("not poisoned").clone();
        assert_eq!(
            seen,
            [
                "INFO greeter",
                "INFO greeter::handlers",
                "INFO switchboard_bus::operator",
                "WARN async_nats"
            ]
        );
    }
}
