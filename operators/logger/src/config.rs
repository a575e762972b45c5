//! The logger's `[config]` table.

use std::path::PathBuf;

use bytesize::ByteSize;
use serde::Deserialize;
use switchboard_bus::ConfigError;

/// What the logger writes, where, and how carefully.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggerConfig {
    /// Directory the files go under (created if missing).
    pub dir: PathBuf,
    /// Path of each file under `dir`, without extension: `{network}`
    /// (`irc.libera`; `switchboard` for operators' output and events),
    /// `{room}` (the raw room; the operator ID for output and events),
    /// `{source}` (the envelope's source operator) and `{date}` (UTC,
    /// `2026-12-01`, required: files rotate by day). Default
    /// `{network}/{room}/{date}`.
    #[serde(default = "default_layout")]
    pub layout: String,
    /// `json` (one object per line, everything kept; the default) or
    /// `text` (irssi-like `[12:00:01] <nick> text`, for people).
    #[serde(default)]
    pub format: Format,
    /// Which stored subjects to write, as `*`/`#` patterns. Default: all
    /// the stream keeps (`chat.#`, `send.#`, `sb.log.#`, `sb.event.#`).
    #[serde(default = "default_subjects")]
    pub subjects: Vec<String>,
    /// A file over this size is closed and a new one started
    /// (`2026-12-01.1.jsonl` and so on). Default 64 MiB.
    #[serde(default = "default_rotate_size")]
    pub rotate_size: ByteSize,
    /// Gzip closed files (rotated by size, or of a past day). Default true.
    #[serde(default = "yes")]
    pub compress: bool,
    /// `batch` (default): fsync the files before acknowledging each batch,
    /// so a power cut loses nothing acknowledged. `never`: leave it to the
    /// OS (a crash of the logger still loses nothing; a crash of the
    /// machine may lose the last seconds).
    #[serde(default)]
    pub fsync: Fsync,
    /// At most this many messages per write and acknowledgement
    /// (1..=10000). Default 500.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

/// Line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON lines.
    #[default]
    Json,
    /// irssi-like text.
    Text,
}

impl Format {
    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "jsonl",
            Format::Text => "log",
        }
    }
}

/// When to fsync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Before every acknowledgement.
    #[default]
    Batch,
    /// Never explicitly.
    Never,
}

fn default_layout() -> String {
    "{network}/{room}/{date}".to_owned()
}

fn default_subjects() -> Vec<String> {
    ["chat.#", "send.#", "sb.log.#", "sb.event.#"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

fn default_rotate_size() -> ByteSize {
    ByteSize::mib(64)
}

fn yes() -> bool {
    true
}

fn default_batch() -> usize {
    500
}

/// The placeholders a layout may use.
pub const PLACEHOLDERS: [&str; 4] = ["{network}", "{room}", "{source}", "{date}"];

impl LoggerConfig {
    /// What serde cannot check: the first problem, as the SDK's
    /// [`ConfigError`] (the key in `path`, the fix in `problem`), so a
    /// refused config reads like one serde refused.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] of kind `InvalidValue` for the first key that
    /// cannot be used.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "dir",
                "is empty; give the directory to write under",
            ));
        }
        if !self.layout.contains("{date}") {
            return Err(ConfigError::invalid(
                "layout",
                "has no {date}; files rotate by day, e.g. \"{network}/{room}/{date}\"",
            ));
        }
        let mut rest = self.layout.clone();
        for p in PLACEHOLDERS {
            rest = rest.replace(p, "");
        }
        if rest.contains('{') || rest.contains('}') {
            return Err(ConfigError::invalid(
                "layout",
                format!(
                    "has an unknown placeholder; the placeholders are {}",
                    PLACEHOLDERS.join(", ")
                ),
            ));
        }
        if self.layout.starts_with('/') || self.layout.split('/').any(|c| c == "..") {
            return Err(ConfigError::invalid(
                "layout",
                "must stay under `dir` (no leading `/`, no `..`)",
            ));
        }
        if self.subjects.is_empty() {
            return Err(ConfigError::invalid(
                "subjects",
                "is empty; the logger would write nothing",
            ));
        }
        for (i, s) in self.subjects.iter().enumerate() {
            switchboard_proto::Pattern::parse(s).map_err(|e| {
                ConfigError::invalid(
                    format!("subjects[{i}]"),
                    format!("`{s}` is not a pattern: {e}"),
                )
            })?;
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(ConfigError::invalid("batch", "must be between 1 and 10000"));
        }
        if self.rotate_size.as_u64() < 4096 {
            return Err(ConfigError::invalid(
                "rotate_size",
                "is under 4 KiB; give something like \"64MiB\"",
            ));
        }
        Ok(())
    }
}
