//! Turning secret references into the config an operator receives.

use std::path::PathBuf;

use serde_json::{Map, Value};
use switchboard_proto::OperatorId;

use super::{Manifest, SecretRef};

/// Why a manifest's secrets could not be resolved. Messages name the
/// operator, the secret's key and where the value should have come from,
/// never the value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The secret file could not be read.
    #[error(
        "operator `{id}`: cannot read secret `{key}` from file {}: {source}; \
         check that the file exists and the orchestrator may read it",
        path.display()
    )]
    File {
        /// The operator.
        id: OperatorId,
        /// The secret's dotted path in the config.
        key: String,
        /// The file named in the manifest.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The secret file is not UTF-8 text.
    #[error(
        "operator `{id}`: secret `{key}` in file {} is not UTF-8 text",
        path.display()
    )]
    NotText {
        /// The operator.
        id: OperatorId,
        /// The secret's dotted path in the config.
        key: String,
        /// The file named in the manifest.
        path: PathBuf,
    },
    /// The environment variable is not set (or not Unicode).
    #[error(
        "operator `{id}`: secret `{key}` comes from environment variable {var}, \
         which is not set in the orchestrator's environment"
    )]
    EnvUnset {
        /// The operator.
        id: OperatorId,
        /// The secret's dotted path in the config.
        key: String,
        /// The variable named in the manifest.
        var: String,
    },
    /// The secret's path goes through a config value that is not a table,
    /// or has an empty component.
    #[error(
        "operator `{id}`: secret `{key}` cannot go into the config: `{at}` is not a table; \
         rename the secret or the config key"
    )]
    Path {
        /// The operator.
        id: OperatorId,
        /// The secret's dotted path in the config.
        key: String,
        /// The part of the path that is in the way.
        at: String,
    },
}

switchboard_proto::error_kinds!(
    /// Coarse classes of [`SecretError`].
    SecretError => SecretErrorKind { File, NotText, EnvUnset, Path }
);

impl Manifest {
    /// The operator's config with every secret's value inserted at its
    /// dotted path, creating intermediate objects as needed (a value
    /// already at the leaf is replaced; [`load_dir`](super::load_dir)
    /// refuses manifests where that would happen). File secrets are read
    /// now, with trailing newlines (`\n`, `\r\n`) trimmed; environment
    /// secrets are looked up with `lookup_env` (pass
    /// `|name| std::env::var(name).ok()` in the daemon, a map in tests).
    ///
    /// The result holds secret values: hand it to the operator and do not
    /// log it.
    ///
    /// ```
    /// use switchboard_orchestrator::manifest::{Manifest, SecretRef};
    ///
    /// let mut m = Manifest::new("irc".parse()?, "irc-operator");
    /// m.config = serde_json::json!({"sasl": {"user": "sb"}});
    /// m.secrets.insert("sasl.password".into(), SecretRef::Env("IRC_PASS".into()));
    /// let config = m.resolve_secrets(|name| (name == "IRC_PASS").then(|| "hunter2".into()))?;
    /// assert_eq!(config["sasl"]["password"], "hunter2");
    /// assert_eq!(config["sasl"]["user"], "sb");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`SecretError`] for the first secret that cannot be read or placed.
    pub fn resolve_secrets(
        &self,
        lookup_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Value, SecretError> {
        let mut config = match &self.config {
            Value::Object(map) => Value::Object(map.clone()),
            // Only hand-built manifests get here; give them a fresh object
            // rather than losing the secrets.
            _ => Value::Object(Map::new()),
        };
        for (key, source) in &self.secrets {
            let value = match source {
                SecretRef::File(path) => {
                    let bytes = std::fs::read(path).map_err(|source| SecretError::File {
                        id: self.id.clone(),
                        key: key.clone(),
                        path: path.clone(),
                        source,
                    })?;
                    let mut text = String::from_utf8(bytes).map_err(|_| SecretError::NotText {
                        id: self.id.clone(),
                        key: key.clone(),
                        path: path.clone(),
                    })?;
                    let kept = text.trim_end_matches(['\n', '\r']).len();
                    text.truncate(kept);
                    text
                }
                SecretRef::Env(var) => lookup_env(var).ok_or_else(|| SecretError::EnvUnset {
                    id: self.id.clone(),
                    key: key.clone(),
                    var: var.clone(),
                })?,
            };
            insert_at(&mut config, key, Value::String(value)).map_err(|InTheWay(at)| {
                SecretError::Path {
                    id: self.id.clone(),
                    key: key.clone(),
                    at,
                }
            })?;
        }
        Ok(config)
    }
}

/// The prefix of a dotted path that is in the way of an insertion: a
/// value that is not an object, or (for an empty part) the whole path.
#[derive(Debug, PartialEq, Eq)]
struct InTheWay(String);

/// Puts `value` at the dotted `path` inside the object `root`.
fn insert_at(root: &mut Value, path: &str, value: Value) -> Result<(), InTheWay> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(InTheWay(path.to_owned()));
    }
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        let Value::Object(map) = node else {
            return Err(InTheWay(parts[..i].join(".")));
        };
        if i + 1 == parts.len() {
            map.insert((*part).to_owned(), value);
            return Ok(());
        }
        node = map
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn insert_paths() {
        let mut v = json!({"a": {"b": 1}, "s": "x"});
        insert_at(&mut v, "a.c", json!("p")).expect("a.c");
        insert_at(&mut v, "n.m.o", json!("q")).expect("n.m.o");
        insert_at(&mut v, "a.b", json!("r")).expect("replace leaf");
        assert_eq!(
            v,
            json!({"a": {"b": "r", "c": "p"}, "s": "x", "n": {"m": {"o": "q"}}})
        );
        assert_eq!(
            insert_at(&mut v, "s.t", json!(1)),
            Err(InTheWay("s".to_owned()))
        );
        assert_eq!(
            insert_at(&mut v, "a..b", json!(1)),
            Err(InTheWay("a..b".to_owned()))
        );
    }
}
