//! What survives a restart, as small JSON files in the operator's state
//! directory, each written whole (temporary file, then rename) with mode
//! 0600 so a crash of the process leaves the old version or the new one,
//! never half (there is no fsync: the marks are written after every
//! notification, and a process crash, unlike a power cut, keeps what the
//! kernel was given):
//!
//! | file | what |
//! | --- | --- |
//! | `session.json` | the tokens, so a restart does not spend `createSession`'s rate limit |
//! | `refused.json` | a login the server refused for good, with a fingerprint of the credentials, so a restart with the same password does not try again |
//! | `poll.json` | the polling high-water mark: the newest `indexedAt` published and the URIs seen at that instant |
//! | `jetstream.json` | the Jetstream cursor (µs) and the URIs of the posts published lately |
//! | `firehose.json` | the firehose cursor (`seq`) and the relay it counts for |
//!
//! Every file names the account (service and identifier) it belongs to; a
//! file of another account is ignored. Without a state directory (an
//! operator started by hand) all this lives in memory only.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::Secret;

/// Why a state file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct StoreError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// The account a file belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The service URL.
    pub service: String,
    /// The login identifier (session files) or the account's DID (marks).
    pub identifier: String,
}

/// `session.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedSession {
    /// Whose.
    pub account: Account,
    /// The account's DID.
    pub did: String,
    /// The account's handle.
    pub handle: String,
    /// Access token.
    #[serde(serialize_with = "Secret::serialize_exposed")]
    pub access_jwt: Secret,
    /// Refresh token.
    #[serde(serialize_with = "Secret::serialize_exposed")]
    pub refresh_jwt: Secret,
}

/// `refused.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refusal {
    /// Whose.
    pub account: Account,
    /// Random salt (hex) of `fingerprint`.
    pub salt: String,
    /// SHA-256 of salt and password (hex): tells whether the password
    /// changed without keeping it.
    pub fingerprint: String,
    /// What the server said.
    pub reason: String,
}

/// `poll.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PollMark {
    /// Whose.
    pub account: Option<Account>,
    /// The newest `indexedAt` handled (RFC 3339), or the start point.
    pub indexed_at: String,
    /// URIs of the notifications handled at exactly `indexed_at`.
    pub uris: Vec<String>,
}

/// `jetstream.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JetstreamMark {
    /// Whose.
    pub account: Option<Account>,
    /// `time_us` of the newest event handled.
    pub cursor: Option<i64>,
    /// Post URIs published lately (oldest first), to drop repeats after
    /// resuming with an overlap.
    pub recent: Vec<String>,
}

/// The state directory, if there is one.
#[derive(Debug, Clone)]
pub struct Store {
    dir: Option<PathBuf>,
}

/// File names.
pub const SESSION: &str = "session.json";
/// See the module table.
pub const REFUSED: &str = "refused.json";
/// See the module table.
pub const POLL: &str = "poll.json";
/// See the module table.
pub const JETSTREAM: &str = "jetstream.json";
/// See the module table.
pub const FIREHOSE: &str = "firehose.json";

impl Store {
    /// Files in `dir`; `None` keeps nothing.
    pub fn new(dir: Option<&Path>) -> Store {
        Store {
            dir: dir.map(Path::to_path_buf),
        }
    }

    /// Whether anything is kept across restarts.
    pub fn persistent(&self) -> bool {
        self.dir.is_some()
    }

    /// Reads `name`; a missing or unreadable file is `None` (logged when
    /// it exists but does not parse, then ignored: the operator starts
    /// over rather than refusing to run).
    pub fn load<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        let path = self.dir.as_ref()?.join(name);
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "state file does not parse; ignoring it");
                None
            }
        }
    }

    /// Writes `name` whole, mode 0600.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the directory is not writable.
    pub fn save<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| StoreError { path, source })
    }

    /// Removes `name` if it exists.
    pub fn remove(&self, name: &str) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_file(dir.join(name));
        }
    }
}

/// Hex SHA-256 of `salt` then `password`.
pub fn fingerprint(salt: &str, password: &Secret) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(salt.as_bytes());
    ctx.update(&[0]);
    ctx.update(password.expose().as_bytes());
    hex(ctx.finish().as_ref())
}

/// A fresh random salt (hex).
pub fn salt() -> String {
    let mut bytes = [0u8; 16];
    // SystemRandom only fails where the OS has no random source at all;
    // the salt then stays zero, which still hides the password.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Some(dir.path()));
        let mark = PollMark {
            account: None,
            indexed_at: "2026-01-01T00:00:00Z".into(),
            uris: vec!["at://a".into()],
        };
        store.save(POLL, &mark).unwrap();
        assert_eq!(store.load::<PollMark>(POLL), Some(mark));
        let mode = std::fs::metadata(dir.path().join(POLL))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(POLL), "{not json").unwrap();
        assert_eq!(store.load::<PollMark>(POLL), None);
        store.remove(POLL);
        assert!(!dir.path().join(POLL).exists());
    }

    #[test]
    fn no_dir_keeps_nothing() {
        let store = Store::new(None);
        store.save(POLL, &PollMark::default()).unwrap();
        assert_eq!(store.load::<PollMark>(POLL), None);
        assert!(!store.persistent());
    }

    #[test]
    fn fingerprints_tell_passwords_apart_without_showing_them() {
        let s = salt();
        let a = fingerprint(&s, &Secret::new("pw-one"));
        assert_eq!(a, fingerprint(&s, &Secret::new("pw-one")));
        assert_ne!(a, fingerprint(&s, &Secret::new("pw-two")));
        assert_ne!(a, fingerprint(&salt(), &Secret::new("pw-one")));
        assert!(!a.contains("pw-one") && a.len() == 64);
    }
}
