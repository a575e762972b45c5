//! The daemon's own configuration, `switchboard.toml`: where the manifests,
//! state and runtime files live, which NATS to use, how to log.
//!
//! Read with the `config` crate in two layers: the file, then environment
//! overrides named `SWITCHBOARD__<KEY>` with `__` between levels
//! (`SWITCHBOARD__STATE_DIR`, `SWITCHBOARD__NATS__URL`,
//! `SWITCHBOARD__NATS__EMBEDDED__PORT`), so a systemd unit or a container
//! can adjust one key without a second file. (The single-underscore
//! `SWITCHBOARD_…` names belong to operators' launch environment and are
//! never read here.) Every key is optional; with no file at all the
//! defaults describe a self-contained directory: `operators.d/`, `state/`,
//! `run/` and an embedded nats-server on 127.0.0.1:4222.
//!
//! Relative paths, from the file or from the environment, are resolved
//! against the config file's directory (the current directory when there
//! is no file), once, at load time.
//!
//! ```
//! use switchboard_orchestrator::config::Config;
//!
//! let dir = std::env::temp_dir();
//! let config = Config::load_with_env(None, [
//!     ("SWITCHBOARD__NATS__URL".to_owned(), "nats://10.0.0.5:4222".to_owned()),
//! ])?;
//! assert_eq!(config.nats.url.as_deref(), Some("nats://10.0.0.5:4222"));
//! assert!(config.state_dir.is_absolute());
//! assert_eq!(Config::defaults_in(&dir).manifests_dir, dir.join("operators.d"));
//! # Ok::<(), switchboard_orchestrator::config::ConfigError>(())
//! ```

mod credentials;
mod schema;
mod sections;
mod validate;

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use sections::{EmbeddedNats, LogConfig, LogFormat, NatsConfig, StreamConfig};
pub use validate::is_loopback;

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "SWITCHBOARD__";

/// The whole configuration, with every path absolute (or as given, for
/// [`Config::defaults_in`] with a relative directory).
///
/// Holds no secret values, only where to find them (`password_file`,
/// `password_env`, …), so `Debug` and `Serialize` output is safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of operator manifests (`*.toml`). Key `manifests`;
    /// default `operators.d`.
    #[serde(rename = "manifests", default = "default_manifests")]
    pub manifests_dir: PathBuf,
    /// Persistent state: one directory per operator, kept across restarts,
    /// and the embedded nats-server's JetStream store. Default `state`.
    #[serde(default = "default_state")]
    pub state_dir: PathBuf,
    /// Runtime files wiped at boot: operators' scratch directories, the
    /// embedded server's config and logs. Default `run`.
    #[serde(default = "default_runtime")]
    pub runtime_dir: PathBuf,
    /// Which NATS to use.
    #[serde(default)]
    pub nats: NatsConfig,
    /// How the daemon logs.
    #[serde(default)]
    pub log: LogConfig,
    /// The durable stream (JetStream) that keeps chat, send requests,
    /// operators' output and lifecycle events.
    #[serde(default)]
    pub stream: StreamConfig,
    /// The operators' sandbox (`crate::sandbox`): which bwrap, and
    /// whether running without one is fatal.
    #[serde(default)]
    pub sandbox: crate::sandbox::SandboxConfig,
    /// `[cluster]`: this host is one of several sharing one bus and one
    /// desired state (docs/cluster.md). Absent: a single host, as before.
    #[serde(default)]
    pub cluster: Option<switchboard_cluster::ClusterConfig>,
}

fn default_manifests() -> PathBuf {
    PathBuf::from("operators.d")
}
fn default_state() -> PathBuf {
    PathBuf::from("state")
}
fn default_runtime() -> PathBuf {
    PathBuf::from("run")
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The named config file does not exist.
    #[error(
        "config file {} does not exist; create it (deploy/switchboard.toml in the Switchboard \
         sources is a documented example to copy), or give no config file to run with the \
         defaults in the current directory",
        path.display()
    )]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The config file exists but cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Unreadable {
        /// The path given.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Relative paths need a base, and the current directory is gone.
    #[error("cannot determine the current directory: {0}")]
    CurrentDir(#[source] io::Error),
    /// The file does not parse, or has unknown keys, wrong types or invalid
    /// values; one line per problem, each naming the key and where it came
    /// from (the file or the environment variable).
    #[error("{}", problems.join("\n"))]
    Invalid {
        /// Every problem found.
        problems: Vec<String>,
    },
    /// A NATS credential could not be read (the message never includes
    /// the credential).
    #[error("cannot read {what}: {message}")]
    Credential {
        /// Which credential (`nats.password_file`, …).
        what: String,
        /// Why.
        message: String,
    },
}

impl Config {
    /// Copies of the durable streams: one per server of the cluster's
    /// buckets in cluster mode ([`switchboard_cluster::REPLICAS`]), so a
    /// lost host loses no history; 1 on one host.
    pub fn stream_replicas(&self) -> usize {
        match self.cluster {
            Some(_) => switchboard_cluster::REPLICAS,
            None => 1,
        }
    }

    /// The defaults, with relative paths resolved against `dir`: what a
    /// missing config file means when the daemon runs in `dir`.
    pub fn defaults_in(dir: &Path) -> Config {
        let mut config = Config {
            manifests_dir: default_manifests(),
            state_dir: default_state(),
            runtime_dir: default_runtime(),
            nats: NatsConfig::default(),
            log: LogConfig::default(),
            stream: StreamConfig::default(),
            sandbox: crate::sandbox::SandboxConfig::default(),
            cluster: None,
        };
        config.resolve_paths(dir);
        config
    }

    /// Loads the configuration: `path` (or the defaults in the current
    /// directory when `None`), then the `SWITCHBOARD__…` variables of the
    /// process environment.
    ///
    /// # Errors
    ///
    /// See [`Config::load_with_env`].
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Self::load_with_env(path, env)
    }

    /// [`Config::load`] with the environment given as name/value pairs
    /// instead of read from the process, so tests need not touch the
    /// (process-wide, racy) real environment. Only names starting with
    /// [`ENV_PREFIX`] are used; empty values count as unset.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NotFound`] when `path` does not exist,
    /// [`ConfigError::Unreadable`] when it cannot be read,
    /// [`ConfigError::Invalid`] for TOML syntax errors, unknown keys (file
    /// or environment, with a suggestion), wrong types and invalid values,
    /// [`ConfigError::CurrentDir`] when `path` is `None` and the current
    /// directory is unknown.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (base, file) = locate(path)?;

        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(name, _)| {
                name.get(..ENV_PREFIX.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
            })
            .collect();
        let mut builder = config::Config::builder();
        if let Some(file) = &file {
            builder = builder.add_source(
                config::File::from(file.as_path())
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("SWITCHBOARD")
                .separator("__")
                .ignore_empty(true)
                .source(Some(env)),
        );
        let origin = file
            .as_ref()
            .map_or_else(|| "defaults".to_owned(), |f| f.display().to_string());
        let invalid = |err: config::ConfigError| ConfigError::Invalid {
            problems: vec![match err {
                // The crate names the file by a path relative to the
                // current directory; name it as given instead.
                config::ConfigError::FileParse { cause, .. } => format!("{origin}: {cause}"),
                other => {
                    let message = other.to_string();
                    // Values from the environment say so themselves.
                    if message.ends_with(schema::ENV_ORIGIN) {
                        message
                    } else {
                        format!("{origin}: {message}")
                    }
                }
            }],
        };
        let merged = builder.build().map_err(invalid)?;

        let mut problems = Vec::new();
        schema::unknown_keys(&merged.cache, "", &schema::schema(), &origin, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { problems });
        }
        let mut config: Config = merged.try_deserialize().map_err(invalid)?;
        config.resolve_paths(&base);
        config.validate(&origin)?;
        Ok(config)
    }

    /// Makes every relative path absolute against `base`.
    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.manifests_dir);
        resolve(&mut self.state_dir);
        resolve(&mut self.runtime_dir);
        let nats = &mut self.nats;
        for p in [
            &mut nats.password_file,
            &mut nats.token_file,
            &mut nats.creds_file,
            &mut nats.tls_ca,
            &mut nats.embedded.tls_cert,
            &mut nats.embedded.tls_key,
        ]
        .into_iter()
        .flatten()
        {
            resolve(p);
        }
        if let Some(tls) = self.cluster.as_mut().and_then(|c| c.tls.as_mut()) {
            for p in [&mut tls.cert, &mut tls.key, &mut tls.ca] {
                resolve(p);
            }
        }
        let nats = &mut self.nats;
        if let Some(binary) = &mut nats.embedded.binary {
            // A bare name is for a PATH lookup.
            if binary.components().count() > 1 {
                resolve(binary);
            }
        }
        if self.sandbox.program.components().count() > 1 {
            resolve(&mut self.sandbox.program);
        }
    }
}

/// The config file made absolute, and the directory relative paths are
/// resolved against: the file's, or the current directory without a
/// file.
fn locate(path: Option<&Path>) -> Result<(PathBuf, Option<PathBuf>), ConfigError> {
    let located = match path {
        Some(path) => {
            match std::fs::metadata(path) {
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return Err(ConfigError::NotFound {
                        path: path.to_owned(),
                    })
                }
                Err(source) => {
                    return Err(ConfigError::Unreadable {
                        path: path.to_owned(),
                        source,
                    })
                }
                Ok(meta) if meta.is_dir() => {
                    return Err(ConfigError::Unreadable {
                        path: path.to_owned(),
                        source: io::Error::other(
                            "it is a directory; name the switchboard.toml file inside it",
                        ),
                    })
                }
                Ok(_) => {}
            }
            let file = std::path::absolute(path).map_err(ConfigError::CurrentDir)?;
            let base = file
                .parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_owned);
            (base, Some(file))
        }
        None => (
            std::env::current_dir().map_err(ConfigError::CurrentDir)?,
            None,
        ),
    };
    Ok(located)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve_against_the_directory() {
        let c = Config::defaults_in(Path::new("/srv/sb"));
        assert_eq!(c.manifests_dir, Path::new("/srv/sb/operators.d"));
        assert_eq!(c.state_dir, Path::new("/srv/sb/state"));
        assert_eq!(c.runtime_dir, Path::new("/srv/sb/run"));
        assert!(c.nats.is_embedded());
        assert_eq!(c.nats.embedded.port, 4222);
        assert!(c.nats.embedded.jetstream);
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn binary_bare_name_stays_for_path_lookup() {
        let mut c = Config::defaults_in(Path::new("/srv"));
        c.nats.embedded.binary = Some("nats-server".into());
        c.resolve_paths(Path::new("/srv"));
        assert_eq!(
            c.nats.embedded.binary.as_deref(),
            Some(Path::new("nats-server"))
        );
        c.nats.embedded.binary = Some("bin/nats-server".into());
        c.resolve_paths(Path::new("/srv"));
        assert_eq!(
            c.nats.embedded.binary.as_deref(),
            Some(Path::new("/srv/bin/nats-server"))
        );
    }
}
