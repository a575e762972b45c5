//! The launch environment: what the orchestrator tells an operator.
//!
//! Variable names come from [`switchboard_proto::launch`], the one list
//! that the orchestrator and every SDK share (docs/PROTOCOL.md has them
//! in a table for operators written in other languages).

use std::path::PathBuf;
use std::time::Duration;

use switchboard_proto::{launch, OperatorId};

use crate::error::BoxError;
use crate::options::{inbox_prefix_problem, split_urls, BusOptions};

/// How the orchestrator drives this operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlMode {
    /// Control requests over NATS (`sb.ctl.<id>`), acknowledged.
    Nats,
    /// Unix signals only (SIGHUP reload, SIGTERM shutdown, SIGSTOP/SIGCONT).
    Signals,
}

/// Everything an operator learns from its environment at start.
#[derive(Debug, Clone)]
pub struct LaunchEnv {
    /// Its unique ID.
    pub id: OperatorId,
    /// How to reach NATS.
    pub nats: BusOptions,
    /// Its configuration (the manifest's `[config]` table), as JSON.
    pub config: serde_json::Value,
    /// A file holding the current config as JSON, re-read on SIGHUP.
    pub config_file: Option<PathBuf>,
    /// Persistent directory that survives restarts.
    pub state_dir: Option<PathBuf>,
    /// Scratch directory, wiped when the operator stops.
    pub scratch_dir: Option<PathBuf>,
    /// The daemon's durable stream (JetStream), when it keeps one.
    pub stream: Option<String>,
    /// How often to send heartbeats.
    pub heartbeat_interval: Duration,
    /// Control channel chosen in the manifest.
    pub control: ControlMode,
}

/// A launch variable is missing or malformed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A required variable is not set.
    #[error(
        "{name} is not set: operators are normally started by `switchboard run`; \
         to run one by hand, set {name} (see docs/PROTOCOL.md, \"Launch environment\")"
    )]
    Missing {
        /// The variable.
        name: &'static str,
    },
    /// A variable has a value we cannot use.
    #[error("{name} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong with it (never the value of a secret).
        reason: String,
        /// The parser's error, when there is one (an
        /// [`IdError`](switchboard_proto::IdError), a `serde_json::Error`,
        /// a `ParseIntError`).
        source: Option<BoxError>,
    },
}

crate::error::kinds! {
    /// Coarse classes of [`LaunchError`].
    LaunchError => LaunchErrorKind { Missing, Invalid }
}

/// Default heartbeat interval when the launcher gives none.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

impl LaunchEnv {
    /// Read the process environment.
    pub fn from_env() -> Result<LaunchEnv, LaunchError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Read from any lookup function (tests use a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<LaunchEnv, LaunchError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let id_raw = get(launch::ID).ok_or(LaunchError::Missing { name: launch::ID })?;
        let id = OperatorId::new(&id_raw).map_err(|e| LaunchError::Invalid {
            name: launch::ID,
            reason: e.to_string(),
            source: Some(Box::new(e)),
        })?;
        let urls = get(launch::NATS_URL).unwrap_or_else(|| "nats://127.0.0.1:4222".to_string());
        let mut nats = BusOptions::new(&urls).name(id.as_str());
        if split_urls(&urls).is_empty() {
            return Err(LaunchError::Invalid {
                name: launch::NATS_URL,
                reason: "no URL in the list".into(),
                source: None,
            });
        }
        let password = secret(get, launch::NATS_PASSWORD, launch::NATS_PASSWORD_FILE)?;
        match (get(launch::NATS_USER), password) {
            (Some(u), Some(p)) => nats = nats.user_password(u, p),
            (Some(_), None) => {
                return Err(LaunchError::Missing {
                    name: launch::NATS_PASSWORD_FILE,
                })
            }
            (None, Some(_)) => {
                return Err(LaunchError::Missing {
                    name: launch::NATS_USER,
                })
            }
            (None, None) => {}
        }
        if let Some(t) = secret(get, launch::NATS_TOKEN, launch::NATS_TOKEN_FILE)? {
            nats = nats.token(t);
        }
        if let Some(p) = get(launch::NATS_CREDS) {
            nats = nats.creds_file(p);
        }
        if let Some(p) = get(launch::NATS_NKEY) {
            nats = nats.nkey_file(p);
        }
        if let Some(prefix) = get(launch::NATS_INBOX_PREFIX) {
            // Checked here, not only at connect, so that a typo is a
            // launch error naming the variable.
            if let Some(reason) = inbox_prefix_problem(&prefix) {
                return Err(LaunchError::Invalid {
                    name: launch::NATS_INBOX_PREFIX,
                    reason: format!("`{prefix}` is not a subject prefix: {reason}"),
                    source: None,
                });
            }
            nats = nats.inbox_prefix(prefix);
        }
        if let Some(p) = get(launch::NATS_TLS_CA) {
            nats = nats.tls_ca(p);
        }
        match (get(launch::NATS_TLS_CERT), get(launch::NATS_TLS_KEY)) {
            (Some(c), Some(k)) => nats = nats.tls_client_cert(c, k),
            (Some(_), None) => {
                return Err(LaunchError::Missing {
                    name: launch::NATS_TLS_KEY,
                })
            }
            (None, Some(_)) => {
                return Err(LaunchError::Missing {
                    name: launch::NATS_TLS_CERT,
                })
            }
            (None, None) => {}
        }
        let stream = get(launch::STREAM);
        nats = nats.stream_ids(stream.is_some());
        // The file the orchestrator writes, else the variable an operator
        // run by hand may be given, else nothing.
        let config_file = get(launch::CONFIG_FILE).map(PathBuf::from);
        let (config_name, config_text) = match &config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| LaunchError::Invalid {
                    name: launch::CONFIG_FILE,
                    reason: format!("cannot read {}: {e}", path.display()),
                    source: Some(Box::new(e)),
                })?;
                (launch::CONFIG_FILE, Some(text))
            }
            None => (launch::CONFIG, get(launch::CONFIG)),
        };
        let config = match config_text {
            Some(json) => serde_json::from_str(&json).map_err(|e| LaunchError::Invalid {
                name: config_name,
                reason: format!("not JSON: {e}"),
                source: Some(Box::new(e)),
            })?,
            None => serde_json::Value::Object(Default::default()),
        };
        let heartbeat_interval = match get(launch::HEARTBEAT_MS) {
            Some(ms) => {
                let ms: u64 = ms.trim().parse().map_err(|e| LaunchError::Invalid {
                    name: launch::HEARTBEAT_MS,
                    reason: format!("`{ms}` is not a whole number of milliseconds"),
                    source: Some(Box::new(e)),
                })?;
                if ms == 0 {
                    return Err(LaunchError::Invalid {
                        name: launch::HEARTBEAT_MS,
                        reason: "must be at least 1 ms".into(),
                        source: None,
                    });
                }
                Duration::from_millis(ms)
            }
            None => DEFAULT_HEARTBEAT,
        };
        let control = match get(launch::CONTROL).as_deref() {
            None | Some("nats") => ControlMode::Nats,
            Some("signals") => ControlMode::Signals,
            Some(other) => {
                return Err(LaunchError::Invalid {
                    name: launch::CONTROL,
                    reason: format!("`{other}` is neither `nats` nor `signals`"),
                    source: None,
                })
            }
        };
        Ok(LaunchEnv {
            id,
            nats,
            config,
            config_file,
            state_dir: get(launch::STATE_DIR).map(PathBuf::from),
            scratch_dir: get(launch::SCRATCH_DIR).map(PathBuf::from),
            stream,
            heartbeat_interval,
            control,
        })
    }
}

/// A secret given as `file_var` (a path: the file's content, one trailing
/// newline removed) or, for an operator started by hand, as `var` itself.
/// The orchestrator sets only the `_FILE` variant (docs/PROTOCOL.md,
/// "Launch environment"): an environment is readable in `/proc` and
/// inherited by every child. `get` returns a variable's non-blank value.
///
/// # Errors
///
/// [`LaunchError::Invalid`] naming `file_var` when the file cannot be
/// read (the message never holds its content).
pub fn secret(
    get: impl Fn(&str) -> Option<String>,
    var: &'static str,
    file_var: &'static str,
) -> Result<Option<String>, LaunchError> {
    match get(file_var) {
        Some(path) => {
            let mut text = std::fs::read_to_string(&path).map_err(|e| LaunchError::Invalid {
                name: file_var,
                reason: format!("cannot read {path}: {e}"),
                source: Some(Box::new(e)),
            })?;
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            Ok(Some(text))
        }
        None => Ok(get(var)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<LaunchEnv, LaunchError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LaunchEnv::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn minimal_environment() {
        let e = env(&[(launch::ID, "echo-1")]).unwrap();
        assert_eq!(e.id.as_str(), "echo-1");
        assert_eq!(e.heartbeat_interval, DEFAULT_HEARTBEAT);
        assert_eq!(e.control, ControlMode::Nats);
        assert_eq!(e.config, serde_json::json!({}));
        assert_eq!(e.nats.inbox_prefix, None);
    }

    #[test]
    fn inbox_prefix_is_read() {
        let e = env(&[
            (launch::ID, "irc-libera"),
            (launch::NATS_INBOX_PREFIX, "_INBOX_irc-libera"),
        ])
        .unwrap();
        assert_eq!(e.nats.inbox_prefix.as_deref(), Some("_INBOX_irc-libera"));
        // Blank counts as unset, as for every launch variable.
        let e = env(&[(launch::ID, "x"), (launch::NATS_INBOX_PREFIX, "  ")]).unwrap();
        assert_eq!(e.nats.inbox_prefix, None);
    }

    #[test]
    fn full_environment() {
        let e = env(&[
            (launch::ID, "irc-libera"),
            (launch::NATS_URL, "nats://a:1,nats://b:2"),
            (launch::NATS_USER, "u"),
            (launch::NATS_PASSWORD, "pw-secret"),
            (launch::CONFIG, r#"{"nick":"sb"}"#),
            (launch::HEARTBEAT_MS, "250"),
            (launch::CONTROL, "signals"),
            (launch::STATE_DIR, "/var/lib/sb/irc"),
        ])
        .unwrap();
        assert_eq!(e.nats.urls(), ["nats://a:1", "nats://b:2"]);
        assert_eq!(e.heartbeat_interval, Duration::from_millis(250));
        assert_eq!(e.control, ControlMode::Signals);
        assert_eq!(e.config["nick"], "sb");
        assert!(!format!("{e:?}").contains("pw-secret"));
    }

    #[test]
    fn secrets_and_config_come_from_files_first() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "from-file\n").unwrap();
        let cfg = dir.path().join("config.json");
        std::fs::write(&cfg, r#"{"nick":"file"}"#).unwrap();
        let e = env(&[
            (launch::ID, "x"),
            (launch::NATS_USER, "u"),
            (launch::NATS_PASSWORD, "from-env"),
            (launch::NATS_PASSWORD_FILE, pw.to_str().unwrap()),
            (launch::CONFIG, r#"{"nick":"env"}"#),
            (launch::CONFIG_FILE, cfg.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(e.config["nick"], "file");
        assert_eq!(e.config_file.as_deref(), Some(cfg.as_path()));
        let got = secret(
            |k| (k == launch::NATS_PASSWORD_FILE).then(|| pw.display().to_string()),
            launch::NATS_PASSWORD,
            launch::NATS_PASSWORD_FILE,
        )
        .unwrap();
        assert_eq!(got.as_deref(), Some("from-file"));
        // A missing file is an error naming the variable, never a silent
        // fallback to no credentials.
        let missing = dir.path().join("gone");
        let err = env(&[
            (launch::ID, "x"),
            (launch::NATS_USER, "u"),
            (launch::NATS_PASSWORD_FILE, missing.to_str().unwrap()),
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains(launch::NATS_PASSWORD_FILE),
            "{err}"
        );
        let err = env(&[
            (launch::ID, "x"),
            (launch::CONFIG_FILE, missing.to_str().unwrap()),
        ])
        .unwrap_err();
        assert!(err.to_string().contains(launch::CONFIG_FILE), "{err}");
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], launch::ID),
            (&[(launch::ID, "bad id")], launch::ID),
            (
                &[(launch::ID, "x"), (launch::CONFIG, "{nope")],
                launch::CONFIG,
            ),
            (
                &[(launch::ID, "x"), (launch::HEARTBEAT_MS, "soon")],
                launch::HEARTBEAT_MS,
            ),
            (
                &[(launch::ID, "x"), (launch::HEARTBEAT_MS, "0")],
                launch::HEARTBEAT_MS,
            ),
            (
                &[(launch::ID, "x"), (launch::CONTROL, "smoke")],
                launch::CONTROL,
            ),
            (
                &[(launch::ID, "x"), (launch::NATS_USER, "u")],
                launch::NATS_PASSWORD_FILE,
            ),
            (
                &[(launch::ID, "x"), (launch::NATS_URL, ",,")],
                launch::NATS_URL,
            ),
            (
                &[(launch::ID, "x"), (launch::NATS_INBOX_PREFIX, "_INBOX.>")],
                launch::NATS_INBOX_PREFIX,
            ),
            (
                &[(launch::ID, "x"), (launch::NATS_INBOX_PREFIX, "a..b")],
                launch::NATS_INBOX_PREFIX,
            ),
        ];
        for (pairs, var) in cases {
            let e = env(pairs).unwrap_err();
            assert!(e.to_string().contains(var), "{e} should name {var}");
        }
    }
}
