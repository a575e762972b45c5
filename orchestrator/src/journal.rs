//! The daemon's logs straight into the systemd journal, as structured
//! entries, when systemd runs it.
//!
//! Under systemd, stderr lines reach the journal too, but as flat text:
//! `journalctl -u switchboard OPERATOR=irc-libera` needs the operator id as
//! a field of its own. The journal's native protocol keeps every tracing
//! field: `operator` becomes `OPERATOR`, `pid` `PID`, `stream` `STREAM`;
//! the level becomes `PRIORITY` (so `journalctl -p warning` works) and the
//! target `TARGET`. The layer is the `tracing-journald` crate (part of the
//! tracing project, a few hundred lines, no C library) rather than
//! libsystemd bindings, which would need libsystemd-dev to build.
//!
//! Anywhere else (a terminal, a pipe, a file, a container without
//! journald) the daemon keeps its plain lines: see [`stderr_is_journal`].

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The variable systemd sets when it connects stdout/stderr to the journal:
/// `<device>:<inode>` of that stream (systemd.exec(5), "$JOURNAL_STREAM").
const JOURNAL_STREAM: &str = "JOURNAL_STREAM";

/// Whether stderr is the journal's stream, as systemd.exec(5) says to
/// check: the variable alone is not enough, since it is inherited by
/// children whose stderr was redirected elsewhere (a shell started from a
/// service, `switchboard run 2>file`).
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var(JOURNAL_STREAM) else {
        return false;
    };
    let Some((dev, ino)) = parse_stream(&value) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(meta) => meta.dev() == dev && meta.ino() == ino,
        Err(_) => false,
    }
}

/// `<device>:<inode>`, both decimal.
fn parse_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// journald's socket (/run/systemd/journal/socket) could not be opened.
    #[error("cannot open the journal's socket: {0}")]
    Socket(#[source] std::io::Error),
    /// A subscriber was already installed.
    #[error("a log subscriber is already installed")]
    AlreadyInstalled,
}

impl JournalError {
    /// What kind of failure, for callers that branch on it.
    pub fn kind(&self) -> JournalErrorKind {
        match self {
            JournalError::Socket(_) => JournalErrorKind::Socket,
            JournalError::AlreadyInstalled => JournalErrorKind::AlreadyInstalled,
        }
    }
}

/// The kinds of [`JournalError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalErrorKind {
    /// The socket could not be opened.
    Socket,
    /// A subscriber was already installed.
    AlreadyInstalled,
}

/// Install the journal as the only log output, with `default_filter`
/// unless `SWITCHBOARD_LOG` / `RUST_LOG` say otherwise (as for plain
/// lines). Fields keep their own names (no `F_` prefix), so journalctl
/// matches read as the code writes them.
pub fn init(default_filter: &str) -> Result<(), JournalError> {
    let layer = tracing_journald::layer()
        .map_err(JournalError::Socket)?
        .with_field_prefix(None)
        .with_syslog_identifier("switchboard".to_string());
    tracing_subscriber::registry()
        .with(switchboard_bus::env_filter(default_filter))
        .with(layer)
        .try_init()
        .map_err(|_| JournalError::AlreadyInstalled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_and_inode() {
        assert_eq!(parse_stream("8:1234"), Some((8, 1234)));
        assert_eq!(parse_stream("8:"), None);
        assert_eq!(parse_stream("x:1"), None);
        assert_eq!(parse_stream("81234"), None);
    }

    /// Both ways in one test: the variables are process-wide (nextest
    /// runs each test in its own process).
    #[test]
    fn stderr_is_the_journal_only_when_it_is_the_named_stream() {
        let fd = std::io::stderr().as_fd().try_clone_to_owned().unwrap();
        let meta = std::fs::File::from(fd).metadata().unwrap();
        std::env::set_var(JOURNAL_STREAM, format!("{}:{}", meta.dev(), meta.ino()));
        assert!(stderr_is_journal());
        std::env::set_var(JOURNAL_STREAM, format!("{}:{}", meta.dev(), meta.ino() + 1));
        assert!(!stderr_is_journal());
        std::env::remove_var(JOURNAL_STREAM);
        assert!(!stderr_is_journal());
    }
}
