//! [`Secret`]: a password or token an operator uses but never shows.
//!
//! Every protocol operator holds some (an IRC server password, a Bluesky
//! app password, a dashboard token), and each had its own copy of the
//! same wrapper. One type here means one place that decides how a secret
//! prints (`***`, in `Debug` and `Display`, so a `{config:?}` in a log
//! line or a panic message shows no secret), how it is compared (in
//! constant time, for tokens a client offers) and that its bytes are
//! overwritten when it is dropped (`zeroize`, already in the workspace
//! through the TLS and Nostr crates; a heap copy left behind is what a
//! core dump would show).

use std::fmt;

use serde::Deserialize;
use zeroize::Zeroize;

use crate::launch::{secret, LaunchError};

/// A password or token: used, compared, never printed.
///
/// It deserialises from a JSON string (a config key given by secret
/// reference: the orchestrator resolves the reference and hands the
/// value over in the config). It does not implement `Serialize`: writing
/// one out is a decision made where it happens, with
/// [`Secret::serialize_exposed`].
///
/// ```
/// use switchboard_bus::Secret;
///
/// let s = Secret::new("hunter2");
/// assert_eq!(format!("{s:?} {s}"), "\"***\" ***");
/// assert!(s.matches("hunter2") && !s.matches("hunter3"));
/// assert_eq!(s.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, to hand to a login or a protocol line; the
    /// caller must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string (a config that names the
    /// key but gives nothing).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `offered` is this secret, in time independent of where
    /// they differ: a token guessed byte by byte learns nothing from how
    /// long the answer took.
    pub fn matches(&self, offered: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), offered.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }

    /// Read a secret the way the SDK reads its launch secrets
    /// ([`crate::secret`]): from the file named by `file_var` (one
    /// trailing newline removed), else, for an operator started by hand,
    /// from `var` itself. `None` when neither is set (or both are blank).
    ///
    /// # Errors
    ///
    /// [`LaunchError::Invalid`] naming `file_var` when the file cannot be
    /// read (the message never holds its content).
    pub fn from_env(
        var: &'static str,
        file_var: &'static str,
    ) -> Result<Option<Secret>, LaunchError> {
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Ok(secret(get, var, file_var)?.map(Secret))
    }

    /// For `#[serde(serialize_with = "Secret::serialize_exposed")]` on a
    /// field that must be written out with its value: a saved session in
    /// the operator's own state directory, never a log, a status or a
    /// published envelope.
    ///
    /// # Errors
    ///
    /// Whatever the serializer returns.
    pub fn serialize_exposed<S: serde::Serializer>(
        secret: &Secret,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&secret.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s: Secret = serde_json::from_str(r#""pw-Zq8x""#).expect("a JSON string");
        assert_eq!(s.expose(), "pw-Zq8x");
        let shown = format!("{s} {s:?} {:?}", Some(&s));
        assert!(!shown.contains("pw-Zq8x"), "{shown}");
    }

    #[test]
    fn compares_by_value() {
        let s = Secret::new("abc");
        assert!(s.matches("abc"));
        for other in ["", "ab", "abd", "abcd", "xbc"] {
            assert!(!s.matches(other), "{other}");
        }
        assert_eq!(s, Secret::new("abc"));
        assert!(Secret::new("").is_empty() && !s.is_empty());
    }

    #[test]
    fn written_out_only_when_asked() {
        #[derive(serde::Serialize)]
        struct Saved {
            #[serde(serialize_with = "Secret::serialize_exposed")]
            token: Secret,
        }
        let text = serde_json::to_string(&Saved {
            token: Secret::new("t0ken"),
        })
        .expect("serialises");
        assert_eq!(text, r#"{"token":"t0ken"}"#);
    }

    #[test]
    fn read_from_a_file_variable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "from-file\n").expect("write");
        // Variable names no other test uses: the environment is shared.
        std::env::set_var("SB_SECRET_TEST_FILE", &path);
        std::env::set_var("SB_SECRET_TEST", "from-var");
        let s = Secret::from_env("SB_SECRET_TEST", "SB_SECRET_TEST_FILE");
        assert_eq!(
            s.expect("readable")
                .map(|s| s.expose().to_string())
                .as_deref(),
            Some("from-file")
        );
        std::env::remove_var("SB_SECRET_TEST_FILE");
        let s = Secret::from_env("SB_SECRET_TEST", "SB_SECRET_TEST_FILE");
        assert_eq!(
            s.expect("set").map(|s| s.expose().to_string()).as_deref(),
            Some("from-var")
        );
        std::env::remove_var("SB_SECRET_TEST");
        let s = Secret::from_env("SB_SECRET_TEST", "SB_SECRET_TEST_FILE");
        assert!(s.expect("unset is fine").is_none());
        std::env::set_var("SB_SECRET_TEST_FILE", dir.path().join("missing"));
        let e = Secret::from_env("SB_SECRET_TEST", "SB_SECRET_TEST_FILE").unwrap_err();
        std::env::remove_var("SB_SECRET_TEST_FILE");
        assert!(e.to_string().contains("SB_SECRET_TEST_FILE"), "{e}");
    }
}
