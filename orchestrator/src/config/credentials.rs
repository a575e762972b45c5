//! Reading the daemon's NATS credentials from where `[nats]` says they
//! are; the values are returned to the caller and never kept or logged.

use std::path::Path;

use super::{ConfigError, NatsConfig};

impl NatsConfig {
    /// [`NatsConfig::read_password`] with the process environment.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Credential`] when the file cannot be read or the
    /// variable is not set.
    pub fn password(&self) -> Result<Option<String>, ConfigError> {
        self.read_password(|name| std::env::var(name).ok())
    }

    /// [`NatsConfig::read_token`] with the process environment.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Credential`] when the file cannot be read or the
    /// variable is not set.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        self.read_token(|name| std::env::var(name).ok())
    }

    /// The NATS password, read from `password_file` (trailing newlines
    /// trimmed) or the `password_env` variable (through `lookup_env`);
    /// `None` when neither is configured. Do not log the result.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Credential`] when the file cannot be read or the
    /// variable is not set.
    pub fn read_password(
        &self,
        lookup_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, ConfigError> {
        read_credential(
            "nats.password",
            self.password_file.as_deref(),
            self.password_env.as_deref(),
            lookup_env,
        )
    }

    /// The NATS auth token, like [`NatsConfig::read_password`].
    ///
    /// # Errors
    ///
    /// [`ConfigError::Credential`] when the file cannot be read or the
    /// variable is not set.
    pub fn read_token(
        &self,
        lookup_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, ConfigError> {
        read_credential(
            "nats.token",
            self.token_file.as_deref(),
            self.token_env.as_deref(),
            lookup_env,
        )
    }
}

fn read_credential(
    what: &str,
    file: Option<&Path>,
    var: Option<&str>,
    lookup_env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).map_err(|err| ConfigError::Credential {
            what: format!("{what}_file"),
            message: format!("{}: {err}", file.display()),
        })?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()));
    }
    if let Some(var) = var {
        return lookup_env(var)
            .map(Some)
            .ok_or_else(|| ConfigError::Credential {
                what: format!("{what}_env"),
                message: format!("environment variable {var} is not set"),
            });
    }
    Ok(None)
}
