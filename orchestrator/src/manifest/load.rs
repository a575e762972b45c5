//! Reading and validating manifest files, with every problem pointing at
//! its file and line.
//!
//! The file is parsed into toml's spanned document tree
//! ([`DeTable`]) and walked key by key: each known key's value is
//! converted (through toml's own deserializer where a number is involved)
//! and checked on the spot, and each unknown key is reported with a
//! suggestion. Walking instead of one `#[derive(Deserialize)]` pass is what
//! lets one run report *all* the problems of a file instead of the first.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use switchboard_proto::OperatorId;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::suggest::did_you_mean;
use super::{
    is_valid_env_name, Backoff, Control, CrashLoop, Manifest, RestartPolicy, SandboxKind,
    SecretRef, RESERVED_ENV_PREFIX,
};
use crate::access::grants::{expand, translate, ApiGrant, Direction, StreamGrant};
use switchboard_proto::duration::{format_duration, parse_duration};

/// One thing wrong with a manifest file (or the directory), located as
/// precisely as the file allows.
///
/// Displays like compilers and `nginx -t` do, `path:line: message`, so
/// editors and terminals can jump to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or directory) at fault.
    pub path: PathBuf,
    /// 1-based line, when the problem is at a place in the file (a missing
    /// key, for instance, is not).
    pub line: Option<usize>,
    /// 1-based column in characters, with `line`.
    pub column: Option<usize>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// The outcome of reading a manifest directory: what can run, and what is
/// wrong. Both can be non-empty; the daemon decides whether problems are
/// fatal (at startup) or only reported (on reload, keeping the old
/// manifests of broken files).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadReport {
    /// The valid manifests, sorted by id.
    pub manifests: Vec<Manifest>,
    /// Every problem found, in file-name order, then line order within a
    /// file.
    pub problems: Vec<Problem>,
}

impl LoadReport {
    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

const TOP_KEYS: &[&str] = &[
    "id",
    "command",
    "args",
    "env",
    "workdir",
    "enabled",
    "control",
    "restart",
    "backoff",
    "crash_loop",
    "ready_timeout",
    "heartbeat_interval",
    "missed_heartbeats",
    "stop_timeout",
    "config",
    "secrets",
    "publish",
    "subscribe",
    "api",
    "stream",
    "inherit_env",
    "nats_creds",
    "nats_nkey",
    "user",
    "group",
    "sandbox",
    "sandbox_binds",
    "sandbox_binds_rw",
];
const BACKOFF_KEYS: &[&str] = &["initial", "max", "multiplier", "jitter", "reset_after"];
const CRASH_LOOP_KEYS: &[&str] = &["max_restarts", "window"];
const SECRET_KEYS: &[&str] = &["file", "env"];

/// Reads every manifest in `dir`: the `*.toml` files, in file-name order,
/// skipping hidden files (`.name.toml`), editor backups (`name.toml~`),
/// directories and every other name, so that a README or a
/// `pingbot.toml.disabled` can sit next to the manifests.
///
/// Each file is validated on its own ([`parse_manifest`]); a file with any
/// problem contributes no manifest. Operator ids must be unique across the
/// directory: the first file (in name order) keeps its id and every later
/// file claiming it is refused, with a problem on its `id` line naming
/// both files. A file refused for other reasons still claims its id, so
/// fixing it later cannot silently change which file wins.
///
/// A directory that cannot be read gives one problem for the directory;
/// an empty one gives nothing (whether that is worth a warning is the
/// caller's call).
pub fn load_dir(dir: &Path) -> LoadReport {
    let mut report = LoadReport::default();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            report.problems.push(Problem {
                path: dir.to_owned(),
                line: None,
                column: None,
                message: format!(
                    "cannot read the manifest directory: {err}; create it, or point `manifests` \
                     in switchboard.toml at the directory holding the *.toml manifests"
                ),
            });
            return report;
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let path = entry.path();
                if is_manifest_name(&entry.file_name()) {
                    files.push(path);
                }
            }
            Err(err) => report.problems.push(Problem {
                path: dir.to_owned(),
                line: None,
                column: None,
                message: format!("cannot list the manifest directory: {err}"),
            }),
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));

    // id -> where it was first defined.
    let mut claimed: BTreeMap<OperatorId, (PathBuf, Option<usize>)> = BTreeMap::new();
    for path in files {
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => {}
            Err(err) => {
                report
                    .problems
                    .push(whole_file(&path, format!("cannot read: {err}")));
                continue;
            }
        }
        let text = match read_text(&path) {
            Ok(text) => text,
            Err(problem) => {
                report.problems.push(problem);
                continue;
            }
        };
        let mut parsed = parse(&path, &text);
        if let Some((id, line, column)) = parsed.id {
            if let Some((first, first_line)) = claimed.get(&id) {
                let place = match first_line {
                    Some(l) => format!("{}:{l}", first.display()),
                    None => first.display().to_string(),
                };
                parsed.problems.push(Problem {
                    path: path.clone(),
                    line: Some(line),
                    column: Some(column),
                    message: format!(
                        "duplicate operator id `{id}`: already defined in {place}; \
                         ids must be unique across the directory, rename one of them"
                    ),
                });
                parsed.manifest = None;
            } else {
                claimed.insert(id, (path.clone(), Some(line)));
            }
        }
        sort_problems(&mut parsed.problems);
        report.problems.extend(parsed.problems);
        report.manifests.extend(parsed.manifest);
    }
    report.manifests.sort_by(|a, b| a.id.cmp(&b.id));
    report
}

/// Reads and validates one manifest file.
///
/// # Errors
///
/// Every problem found in the file (at least one), sorted by line.
pub fn load_file(path: &Path) -> Result<Manifest, Vec<Problem>> {
    let text = read_text(path).map_err(|p| vec![p])?;
    parse_manifest(path, &text)
}

/// Validates manifest text as if read from `path` (which names it in
/// problems and anchors its relative paths: `workdir` and secret files are
/// resolved against `path`'s directory).
///
/// ```
/// use std::path::Path;
/// use switchboard_orchestrator::manifest::parse_manifest;
///
/// let problems = parse_manifest(Path::new("x.toml"), "id = \"x\"\ncomand = \"true\"\n")
///     .expect_err("typo");
/// let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
/// assert_eq!(text[0], "x.toml:2: unknown key `comand`; did you mean `command`?");
/// assert!(text[1].contains("missing required key `command`"));
/// ```
///
/// # Errors
///
/// Every problem found (at least one), sorted by line: a TOML syntax error
/// alone, or all the unknown keys, wrong types and invalid values.
pub fn parse_manifest(path: &Path, text: &str) -> Result<Manifest, Vec<Problem>> {
    let mut parsed = parse(path, text);
    sort_problems(&mut parsed.problems);
    match parsed.manifest {
        Some(manifest) if parsed.problems.is_empty() => Ok(manifest),
        _ => Err(parsed.problems),
    }
}

fn is_manifest_name(name: &std::ffi::OsStr) -> bool {
    let Some(name) = name.to_str() else {
        // Not UTF-8, so it cannot end in ".toml" as text either; check the
        // bytes anyway so such a file is not silently ignored.
        return Path::new(name).extension().is_some_and(|e| e == "toml")
            && !name.as_encoded_bytes().starts_with(b".");
    };
    !name.starts_with('.') && !name.ends_with('~') && name.ends_with(".toml")
}

fn whole_file(path: &Path, message: String) -> Problem {
    Problem {
        path: path.to_owned(),
        line: None,
        column: None,
        message,
    }
}

fn read_text(path: &Path) -> Result<String, Problem> {
    let bytes = fs::read(path).map_err(|err| whole_file(path, format!("cannot read: {err}")))?;
    String::from_utf8(bytes).map_err(|err| {
        let valid = err.utf8_error().valid_up_to();
        let before = &err.as_bytes()[..valid];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        Problem {
            path: path.to_owned(),
            line: Some(line),
            column: None,
            message: "the file is not valid UTF-8; TOML files must be UTF-8 text".to_owned(),
        }
    })
}

fn sort_problems(problems: &mut [Problem]) {
    problems.sort_by_key(|p| (p.line.unwrap_or(usize::MAX), p.column.unwrap_or(0)));
}

/// The outcome of one file.
struct Parsed {
    /// Present only when there is no problem.
    manifest: Option<Manifest>,
    /// The id and its line and column, when the `id` key itself is valid
    /// (even if the rest of the file is not), for duplicate detection.
    id: Option<(OperatorId, usize, usize)>,
    problems: Vec<Problem>,
}

type Key<'i> = Spanned<Cow<'i, str>>;
type Val<'i> = Spanned<DeValue<'i>>;

/// Problem collector for one file.
struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    problems: Vec<Problem>,
}

/// Lower bound for a duration.
#[derive(Clone, Copy)]
enum Floor {
    Zero,
    NonZero,
    AtLeast(Duration),
}

impl Ctx<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    fn locate(&self, offset: usize) -> (usize, usize) {
        let bytes = self.text.as_bytes();
        let before = &bytes[..offset.min(bytes.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
        (line, column)
    }

    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = self.locate(span.start);
        self.problems.push(Problem {
            path: self.path.to_owned(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        });
    }

    fn nowhere(&mut self, message: impl Into<String>) {
        self.problems.push(whole_file(self.path, message.into()));
    }

    fn wrong_type(&mut self, name: &str, value: &Val<'_>, expected: &str, example: &str) {
        let found = value.get_ref().type_str();
        self.at(
            value.span(),
            format!(
                "`{name}` must be {expected}, not {} {found}; e.g. {example}",
                article(found)
            ),
        );
    }

    fn string(&mut self, name: &str, value: &Val<'_>, example: &str) -> Option<Spanned<String>> {
        match value.get_ref() {
            DeValue::String(s) => Some(Spanned::new(value.span(), s.to_string())),
            _ => {
                self.wrong_type(name, value, "a string", example);
                None
            }
        }
    }

    fn non_empty_string(&mut self, name: &str, value: &Val<'_>, example: &str) -> Option<String> {
        let s = self.string(name, value, example)?;
        if s.get_ref().trim().is_empty() {
            self.at(value.span(), format!("`{name}` is empty; e.g. {example}"));
            return None;
        }
        Some(s.into_inner())
    }

    fn boolean(&mut self, name: &str, value: &Val<'_>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(name, value, "true or false", &format!("{name} = true"));
                None
            }
        }
    }

    fn count(&mut self, name: &str, value: &Val<'_>, min: u32, example: u32) -> Option<u32> {
        if !matches!(value.get_ref(), DeValue::Integer(_)) {
            self.wrong_type(
                name,
                value,
                "a whole number",
                &format!("{name} = {example}"),
            );
            return None;
        }
        let n = i64::deserialize(ValueDeserializer::from(value.clone())).ok();
        if let Some(n) = n.filter(|&n| n < i64::from(min)) {
            self.at(
                value.span(),
                format!("`{name}` must be at least {min}; found {n}"),
            );
            return None;
        }
        let n = n.and_then(|n| u32::try_from(n).ok());
        if n.is_none() {
            self.at(
                value.span(),
                format!("`{name}` is too large; e.g. {name} = {example}"),
            );
        }
        n
    }

    fn number(&mut self, name: &str, value: &Val<'_>, example: &str) -> Option<f64> {
        let parsed = match value.get_ref() {
            DeValue::Integer(_) => i64::deserialize(ValueDeserializer::from(value.clone()))
                .ok()
                // Precision loss is irrelevant at the magnitudes that pass
                // the range checks.
                .map(|n| n as f64),
            DeValue::Float(_) => f64::deserialize(ValueDeserializer::from(value.clone())).ok(),
            _ => {
                self.wrong_type(name, value, "a number", example);
                return None;
            }
        };
        match parsed.filter(|x| x.is_finite()) {
            Some(x) => Some(x),
            None => {
                self.at(
                    value.span(),
                    format!("`{name}` must be a finite number; e.g. {example}"),
                );
                None
            }
        }
    }

    fn duration(&mut self, name: &str, value: &Val<'_>, floor: Floor) -> Option<Duration> {
        let text = match value.get_ref() {
            DeValue::String(s) => s,
            DeValue::Integer(i) => {
                let n = i.as_str();
                self.at(
                    value.span(),
                    format!(
                        "`{name}` must be a duration string with a unit, not a bare number; \
                         write \"{n}s\" or \"{n}ms\""
                    ),
                );
                return None;
            }
            _ => {
                self.wrong_type(
                    name,
                    value,
                    "a duration string",
                    &format!("{name} = \"5s\""),
                );
                return None;
            }
        };
        let d = match parse_duration(text) {
            Ok(d) => d,
            Err(err) => {
                self.at(value.span(), format!("`{name}`: {err}"));
                return None;
            }
        };
        let low = match floor {
            Floor::Zero => None,
            Floor::NonZero if d.is_zero() => Some("greater than 0s".to_owned()),
            Floor::NonZero => None,
            Floor::AtLeast(min) if d < min => Some(format!("at least {}", format_duration(min))),
            Floor::AtLeast(_) => None,
        };
        if let Some(low) = low {
            self.at(
                value.span(),
                format!("`{name}` must be {low}; found \"{}\"", text.trim()),
            );
            return None;
        }
        Some(d)
    }

    fn choice<T: Copy>(&mut self, name: &str, value: &Val<'_>, options: &[(&str, T)]) -> Option<T> {
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let list = names.join(", ");
        let s = self.string(name, value, &format!("{name} = \"{}\"", names[0]))?;
        if let Some((_, v)) = options.iter().find(|(n, _)| *n == s.get_ref()) {
            return Some(*v);
        }
        let hint = did_you_mean(s.get_ref(), &names)
            .map(|n| format!("; did you mean `{n}`?"))
            .unwrap_or_default();
        self.at(
            value.span(),
            format!(
                "`{name}` must be one of {list}; found `{}`{hint}",
                s.get_ref()
            ),
        );
        None
    }

    fn table<'v, 'i>(
        &mut self,
        name: &str,
        value: &'v Val<'i>,
        example: &str,
    ) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong_type(name, value, "a table", example);
                None
            }
        }
    }

    fn unknown_top_key(&mut self, key: &Key<'_>) {
        let k: &str = key.get_ref();
        let message = if let Some(s) = did_you_mean(k, TOP_KEYS) {
            format!("unknown key `{k}`; did you mean `{s}`?")
        } else if let Some(table) = [("backoff", BACKOFF_KEYS), ("crash_loop", CRASH_LOOP_KEYS)]
            .iter()
            .find(|(_, keys)| keys.contains(&k))
            .map(|(t, _)| *t)
        {
            format!(
                "unknown key `{k}` at the top level; did you mean `{table}.{k}` (under [{table}])?"
            )
        } else {
            format!(
                "unknown key `{k}`; the known keys are {}; the operator's own settings go in [config]",
                TOP_KEYS.join(", ")
            )
        };
        self.at(key.span(), message);
    }

    fn unknown_key_in(&mut self, key: &Key<'_>, table: &str, known: &[&str]) {
        let k: &str = key.get_ref();
        let message = if let Some(s) = did_you_mean(k, known) {
            format!("unknown key `{k}` in {table}; did you mean `{s}`?")
        } else if TOP_KEYS.contains(&k) {
            format!(
                "unknown key `{k}` in {table}: `{k}` is a top-level key; \
                 move it above the first [table] header"
            )
        } else {
            format!(
                "unknown key `{k}` in {table}; the known keys are {}",
                known.join(", ")
            )
        };
        self.at(key.span(), message);
    }
}

fn article(type_name: &str) -> &'static str {
    if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// The directory relative paths in a manifest are resolved against: the
/// file's directory, made absolute so the result does not depend on the
/// daemon's working directory later.
fn base_dir(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::path::absolute(&parent).unwrap_or(parent)
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

/// Values read so far; `None` means absent or invalid (invalid ones have
/// left a problem behind).
#[derive(Default)]
struct Draft {
    id: Option<Spanned<OperatorId>>,
    command: Option<String>,
    args: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    workdir: Option<PathBuf>,
    enabled: Option<bool>,
    control: Option<Control>,
    restart: Option<RestartPolicy>,
    backoff: Option<Backoff>,
    crash_loop: Option<CrashLoop>,
    ready_timeout: Option<Duration>,
    heartbeat_interval: Option<Duration>,
    missed_heartbeats: Option<u32>,
    stop_timeout: Option<Duration>,
    config: Option<Value>,
    /// Dotted path, span of its key, reference.
    secrets: Vec<(String, Range<usize>, SecretRef)>,
    publish: Option<Vec<String>>,
    subscribe: Option<Vec<String>>,
    api: Option<Vec<ApiGrant>>,
    stream: Option<Vec<StreamGrant>>,
    inherit_env: Option<Vec<String>>,
    nats_creds: Option<PathBuf>,
    nats_nkey: Option<Spanned<PathBuf>>,
    user: Option<String>,
    group: Option<Spanned<String>>,
    sandbox: Option<SandboxKind>,
    sandbox_binds: Option<Vec<PathBuf>>,
    sandbox_binds_rw: Option<Vec<PathBuf>>,
}

fn parse(path: &Path, text: &str) -> Parsed {
    let mut ctx = Ctx {
        path,
        text,
        problems: Vec::new(),
    };
    let root = match DeTable::parse(text) {
        Ok(root) => root.into_inner(),
        Err(err) => {
            let message = format!("TOML syntax error: {}", err.message().trim());
            match err.span() {
                Some(span) => ctx.at(span, message),
                None => ctx.nowhere(message),
            }
            return Parsed {
                manifest: None,
                id: None,
                problems: ctx.problems,
            };
        }
    };
    let base = base_dir(path);
    let mut d = Draft::default();
    for (key, value) in &root {
        let name: &str = key.get_ref();
        match name {
            "id" => d.id = parse_id(&mut ctx, value),
            "command" => {
                d.command = ctx.non_empty_string(name, value, "command = \"switchboard-pingbot\"");
            }
            "args" => d.args = string_array(&mut ctx, name, value),
            "env" => d.env = env_table(&mut ctx, value),
            "workdir" => {
                d.workdir = ctx
                    .non_empty_string(name, value, "workdir = \"/var/lib/pingbot\"")
                    .map(|w| resolve(&base, &w));
            }
            "enabled" => d.enabled = ctx.boolean(name, value),
            "control" => {
                d.control = ctx.choice(
                    name,
                    value,
                    &[("nats", Control::Nats), ("signals", Control::Signals)],
                );
            }
            "restart" => {
                d.restart = ctx.choice(
                    name,
                    value,
                    &[
                        ("always", RestartPolicy::Always),
                        ("on-failure", RestartPolicy::OnFailure),
                        ("never", RestartPolicy::Never),
                    ],
                );
            }
            "backoff" => d.backoff = backoff_table(&mut ctx, value),
            "crash_loop" => d.crash_loop = crash_loop_table(&mut ctx, value),
            "ready_timeout" => d.ready_timeout = ctx.duration(name, value, Floor::NonZero),
            "heartbeat_interval" => {
                d.heartbeat_interval = ctx.duration(
                    name,
                    value,
                    Floor::AtLeast(Manifest::MIN_HEARTBEAT_INTERVAL),
                );
            }
            "missed_heartbeats" => d.missed_heartbeats = ctx.count(name, value, 1, 3),
            "stop_timeout" => d.stop_timeout = ctx.duration(name, value, Floor::Zero),
            "config" => {
                if ctx
                    .table(name, value, "[config] followed by key = value lines")
                    .is_some()
                {
                    d.config = to_json(&mut ctx, "config", value);
                }
            }
            "secrets" => {
                if let Some(table) = ctx.table(
                    name,
                    value,
                    "[secrets] followed by \"sasl.password\" = { file = \"/path\" }",
                ) {
                    walk_secrets(&mut ctx, table, "", &base, &mut d.secrets);
                }
            }
            "publish" => d.publish = grant_array(&mut ctx, value, Direction::Publish),
            "subscribe" => d.subscribe = grant_array(&mut ctx, value, Direction::Subscribe),
            "api" => d.api = named_array(&mut ctx, "api", "API method", value, ApiGrant::ALL),
            "stream" => {
                d.stream = named_array(&mut ctx, "stream", "stream grant", value, StreamGrant::ALL)
            }
            "inherit_env" => d.inherit_env = inherit_env_array(&mut ctx, value),
            "nats_creds" => {
                d.nats_creds = ctx
                    .non_empty_string(
                        name,
                        value,
                        "nats_creds = \"/etc/switchboard/nats/pingbot.creds\"",
                    )
                    .map(|w| resolve(&base, &w));
            }
            "nats_nkey" => {
                d.nats_nkey = ctx
                    .string(
                        name,
                        value,
                        "nats_nkey = \"/etc/switchboard/nats/pingbot.nk\"",
                    )
                    .map(|s| Spanned::new(s.span(), resolve(&base, s.get_ref())));
            }
            "user" => d.user = ctx.non_empty_string(name, value, "user = \"switchboard-irc\""),
            "group" => {
                d.group = ctx
                    .non_empty_string(name, value, "group = \"switchboard\"")
                    .map(|g| Spanned::new(value.span(), g));
            }
            "sandbox" => {
                d.sandbox = ctx.choice(
                    name,
                    value,
                    &[("bwrap", SandboxKind::Bwrap), ("none", SandboxKind::None)],
                );
            }
            "sandbox_binds" => {
                d.sandbox_binds = string_array(&mut ctx, name, value)
                    .map(|v| v.iter().map(|p| resolve(&base, p)).collect());
            }
            "sandbox_binds_rw" => {
                d.sandbox_binds_rw = string_array(&mut ctx, name, value)
                    .map(|v| v.iter().map(|p| resolve(&base, p)).collect());
            }
            _ => ctx.unknown_top_key(key),
        }
    }
    if let (None, Some(group)) = (&d.user, &d.group) {
        ctx.at(
            group.span(),
            "`group` without `user`: the group applies to the user the operator runs as; \
             add user = \"...\" or remove it",
        );
    }
    if let (Some(_), Some(nkey)) = (&d.nats_creds, &d.nats_nkey) {
        ctx.at(
            nkey.span(),
            "`nats_nkey` and `nats_creds` are both set; an operator authenticates one way, keep one",
        );
    }
    check_secret_paths(&mut ctx, &d);

    if d.id.is_none() && !has_key(&root, "id") {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| OperatorId::new(*s).is_ok())
            .unwrap_or("pingbot");
        ctx.nowhere(format!(
            "missing required key `id`: add e.g. id = \"{stem}\" at the top \
             (1 to 64 of A-Z, a-z, 0-9, `_` and `-`, unique across the directory)"
        ));
    }
    if d.command.is_none() && !has_key(&root, "command") {
        ctx.nowhere(
            "missing required key `command`: the program to run, \
             e.g. command = \"switchboard-pingbot\"",
        );
    }

    let id = d.id.as_ref().map(|id| {
        let (line, column) = ctx.locate(id.span().start);
        (id.get_ref().clone(), line, column)
    });
    // Both structs are spelled out in full (no `..`): a field added to
    // `Draft` or to `Manifest` does not compile until it is carried over.
    let Draft {
        id: draft_id,
        command,
        args,
        env,
        workdir,
        enabled,
        control,
        restart,
        backoff,
        crash_loop,
        ready_timeout,
        heartbeat_interval,
        missed_heartbeats,
        stop_timeout,
        config,
        secrets,
        publish,
        subscribe,
        api,
        stream,
        inherit_env,
        nats_creds,
        nats_nkey,
        user,
        group,
        sandbox,
        sandbox_binds,
        sandbox_binds_rw,
    } = d;
    let manifest = match (draft_id, command) {
        (Some(id), Some(command)) if ctx.problems.is_empty() => {
            let defaults = Manifest::new(id.get_ref().clone(), "");
            Some(Manifest {
                id: id.into_inner(),
                path: path.to_owned(),
                command,
                args: args.unwrap_or_default(),
                env: env.unwrap_or_default(),
                workdir,
                enabled: enabled.unwrap_or(defaults.enabled),
                control: control.unwrap_or(defaults.control),
                restart: restart.unwrap_or(defaults.restart),
                backoff: backoff.unwrap_or(defaults.backoff),
                crash_loop: crash_loop.unwrap_or(defaults.crash_loop),
                ready_timeout: ready_timeout.unwrap_or(defaults.ready_timeout),
                heartbeat_interval: heartbeat_interval.unwrap_or(defaults.heartbeat_interval),
                missed_heartbeats: missed_heartbeats.unwrap_or(defaults.missed_heartbeats),
                stop_timeout: stop_timeout.unwrap_or(defaults.stop_timeout),
                config: config.unwrap_or(defaults.config),
                secrets: secrets
                    .into_iter()
                    .map(|(path, _, source)| (path, source))
                    .collect(),
                publish: publish.unwrap_or(defaults.publish),
                subscribe: subscribe.unwrap_or(defaults.subscribe),
                api: api.unwrap_or(defaults.api),
                stream: stream.unwrap_or(defaults.stream),
                inherit_env: inherit_env.unwrap_or(defaults.inherit_env),
                nats_creds,
                nats_nkey: nats_nkey.map(Spanned::into_inner),
                user,
                group: group.map(Spanned::into_inner),
                sandbox: sandbox.unwrap_or(defaults.sandbox),
                sandbox_binds: sandbox_binds.unwrap_or_default(),
                sandbox_binds_rw: sandbox_binds_rw.unwrap_or_default(),
            })
        }
        _ => None,
    };
    Parsed {
        manifest,
        id,
        problems: ctx.problems,
    }
}

fn has_key(table: &DeTable<'_>, name: &str) -> bool {
    table.iter().any(|(k, _)| k.get_ref() == name)
}

fn parse_id(ctx: &mut Ctx<'_>, value: &Val<'_>) -> Option<Spanned<OperatorId>> {
    let s = ctx.string("id", value, "id = \"pingbot\"")?;
    match OperatorId::new(s.get_ref().as_str()) {
        Ok(id) => Some(Spanned::new(s.span(), id)),
        Err(err) => {
            ctx.at(s.span(), format!("invalid `id`: {err}"));
            None
        }
    }
}

fn string_array(ctx: &mut Ctx<'_>, name: &str, value: &Val<'_>) -> Option<Vec<String>> {
    let example = format!("{name} = [\"--verbose\", \"--port\", \"8080\"]");
    let DeValue::Array(items) = value.get_ref() else {
        ctx.wrong_type(name, value, "an array of strings", &example);
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match ctx.string(&format!("{name}[{i}]"), item, &example) {
            Some(s) => out.push(s.into_inner()),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// The items of an array of strings, each with its span; `None` (and a
/// problem) when it is not one.
fn spanned_strings(
    ctx: &mut Ctx<'_>,
    name: &str,
    value: &Val<'_>,
    example: &str,
) -> Option<Vec<Spanned<String>>> {
    let DeValue::Array(items) = value.get_ref() else {
        ctx.wrong_type(name, value, "an array of strings", example);
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match ctx.string(&format!("{name}[{i}]"), item, example) {
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// `publish = [...]` / `subscribe = [...]`: patterns that nats-server can
/// enforce (see `access::grants`).
fn grant_array(ctx: &mut Ctx<'_>, value: &Val<'_>, direction: Direction) -> Option<Vec<String>> {
    let name = direction.key();
    let example = format!("{name} = [\"chat.irc.#\", \"send.irc.#\"]");
    let items = spanned_strings(ctx, name, value, &example)?;
    let mut ok = true;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        // `{id}` is checked as any id would be; it is expanded per operator.
        match translate(&expand(item.get_ref(), "id"), direction) {
            Ok(_) => out.push(item.into_inner()),
            Err(e) => {
                ctx.at(item.span(), format!("`{name}`: {e}"));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// A list of named grants: `api = ["status"]`, `stream = ["consume"]`.
fn named_array<G: Copy + PartialEq>(
    ctx: &mut Ctx<'_>,
    key: &str,
    what: &str,
    value: &Val<'_>,
    all: &[(&str, G)],
) -> Option<Vec<G>> {
    let names: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
    let example = format!("{key} = [\"{}\"]", names[0]);
    let items = spanned_strings(ctx, key, value, &example)?;
    let mut ok = true;
    let mut out = Vec::new();
    for item in items {
        match all.iter().find(|(n, _)| n == item.get_ref()) {
            Some((_, g)) => {
                if !out.contains(g) {
                    out.push(*g);
                }
            }
            None => {
                let hint = did_you_mean(item.get_ref(), &names)
                    .map(|n| format!("; did you mean `{n}`?"))
                    .unwrap_or_default();
                ctx.at(
                    item.span(),
                    format!(
                        "`{key}`: unknown {what} `{}`; the choices are {}{hint}",
                        item.get_ref(),
                        names.join(", ")
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// `inherit_env = ["PATH", ...]`: names of the daemon's variables to pass
/// through.
fn inherit_env_array(ctx: &mut Ctx<'_>, value: &Val<'_>) -> Option<Vec<String>> {
    let items = spanned_strings(
        ctx,
        "inherit_env",
        value,
        "inherit_env = [\"PATH\", \"HOME\"]",
    )?;
    let mut ok = true;
    let mut out = Vec::new();
    for item in items {
        let name = item.get_ref();
        if !is_valid_env_name(name) {
            ctx.at(
                item.span(),
                format!("`inherit_env`: `{name}` is not a valid environment variable name"),
            );
            ok = false;
        } else if switchboard_proto::launch::ALL.contains(&name.as_str()) {
            ctx.at(
                item.span(),
                format!("`inherit_env`: `{name}` is set by the orchestrator for each operator; remove it"),
            );
            ok = false;
        } else {
            out.push(item.into_inner());
        }
    }
    ok.then_some(out)
}

fn env_table(ctx: &mut Ctx<'_>, value: &Val<'_>) -> Option<BTreeMap<String, String>> {
    let table = ctx.table("env", value, "[env] followed by RUST_LOG = \"info\"")?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (key, v) in table {
        let name: &str = key.get_ref();
        if !is_valid_env_name(name) {
            ctx.at(
                key.span(),
                format!(
                    "`env.{name}` is not a valid environment variable name; \
                     use letters, digits and `_`, not starting with a digit"
                ),
            );
            ok = false;
            continue;
        }
        if name.starts_with(RESERVED_ENV_PREFIX) {
            ctx.at(
                key.span(),
                format!(
                    "`env.{name}`: names starting with {RESERVED_ENV_PREFIX} are reserved for \
                     the variables the orchestrator sets at launch; rename it \
                     (the operator's settings can also go in [config])"
                ),
            );
            ok = false;
            continue;
        }
        match v.get_ref() {
            DeValue::String(s) => {
                out.insert(name.to_owned(), s.to_string());
            }
            DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
                ctx.at(
                    v.span(),
                    format!(
                        "`env.{name}` must be a string (environment values are text); \
                         quote it, e.g. {name} = \"{}\"",
                        &text_of(ctx.text, v.span())
                    ),
                );
                ok = false;
            }
            _ => {
                ctx.wrong_type(
                    &format!("env.{name}"),
                    v,
                    "a string",
                    &format!("{name} = \"1\""),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// The source text of a span (for quoting a scalar back).
fn text_of(text: &str, span: Range<usize>) -> &str {
    text.get(span).unwrap_or("…")
}

fn backoff_table(ctx: &mut Ctx<'_>, value: &Val<'_>) -> Option<Backoff> {
    let table = ctx.table(
        "backoff",
        value,
        "[backoff] followed by initial = \"100ms\"",
    )?;
    let before = ctx.problems.len();
    let mut b = Backoff::default();
    let mut initial_at = None;
    let mut max_at = None;
    for (key, v) in table {
        match &**key.get_ref() {
            "initial" => {
                if let Some(d) = ctx.duration("backoff.initial", v, Floor::NonZero) {
                    b.initial = d;
                    initial_at = Some(v.span());
                }
            }
            "max" => {
                if let Some(d) = ctx.duration("backoff.max", v, Floor::NonZero) {
                    b.max = d;
                    max_at = Some(v.span());
                }
            }
            "multiplier" => {
                if let Some(x) = ctx.number("backoff.multiplier", v, "multiplier = 2.0") {
                    if x >= 1.0 {
                        b.multiplier = x;
                    } else {
                        ctx.at(
                            v.span(),
                            format!(
                                "`backoff.multiplier` must be at least 1.0 \
                                 (1.0 keeps the delay constant, 2.0 doubles it); found {x}"
                            ),
                        );
                    }
                }
            }
            "jitter" => {
                if let Some(x) = ctx.number("backoff.jitter", v, "jitter = 0.1") {
                    if (0.0..=1.0).contains(&x) {
                        b.jitter = x;
                    } else {
                        ctx.at(
                            v.span(),
                            format!(
                                "`backoff.jitter` must be between 0.0 and 1.0 \
                                 (a fraction of the delay: 0.1 spreads it by ±10%); found {x}"
                            ),
                        );
                    }
                }
            }
            "reset_after" => {
                if let Some(d) = ctx.duration("backoff.reset_after", v, Floor::NonZero) {
                    b.reset_after = d;
                }
            }
            _ => ctx.unknown_key_in(key, "[backoff]", BACKOFF_KEYS),
        }
    }
    if b.initial > b.max {
        if let Some(span) = max_at.or(initial_at) {
            ctx.at(
                span,
                format!(
                    "`backoff.initial` ({}) is longer than `backoff.max` ({}); \
                     lower initial or raise max",
                    format_duration(b.initial),
                    format_duration(b.max)
                ),
            );
        }
    }
    (ctx.problems.len() == before).then_some(b)
}

fn crash_loop_table(ctx: &mut Ctx<'_>, value: &Val<'_>) -> Option<CrashLoop> {
    let table = ctx.table(
        "crash_loop",
        value,
        "[crash_loop] followed by max_restarts = 5",
    )?;
    let before = ctx.problems.len();
    let mut c = CrashLoop::default();
    for (key, v) in table {
        match &**key.get_ref() {
            "max_restarts" => {
                if let Some(n) = ctx.count("crash_loop.max_restarts", v, 1, 5) {
                    c.max_restarts = n;
                }
            }
            "window" => {
                if let Some(d) = ctx.duration("crash_loop.window", v, Floor::NonZero) {
                    c.window = d;
                }
            }
            _ => ctx.unknown_key_in(key, "[crash_loop]", CRASH_LOOP_KEYS),
        }
    }
    (ctx.problems.len() == before).then_some(c)
}

/// The `[config]` table (or any value inside it) as JSON.
fn to_json(ctx: &mut Ctx<'_>, name: &str, value: &Val<'_>) -> Option<Value> {
    match value.get_ref() {
        DeValue::String(s) => Some(Value::String(s.to_string())),
        DeValue::Boolean(b) => Some(Value::Bool(*b)),
        DeValue::Datetime(dt) => Some(Value::String(dt.to_string())),
        DeValue::Integer(_) => {
            let de = || ValueDeserializer::from(value.clone());
            let n = i64::deserialize(de())
                .map(Value::from)
                .or_else(|_| u64::deserialize(de()).map(Value::from));
            match n {
                Ok(n) => Some(n),
                Err(_) => {
                    ctx.at(
                        value.span(),
                        format!("`{name}` is out of the 64-bit integer range; use a string"),
                    );
                    None
                }
            }
        }
        DeValue::Float(_) => {
            let x = f64::deserialize(ValueDeserializer::from(value.clone())).ok();
            match x.and_then(serde_json::Number::from_f64) {
                Some(n) => Some(Value::Number(n)),
                None => {
                    ctx.at(
                        value.span(),
                        format!(
                            "`{name}` is {}, which JSON cannot carry; use a string",
                            text_of(ctx.text, value.span())
                        ),
                    );
                    None
                }
            }
        }
        DeValue::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                match to_json(ctx, &format!("{name}[{i}]"), item) {
                    Some(v) => out.push(v),
                    None => ok = false,
                }
            }
            ok.then_some(Value::Array(out))
        }
        DeValue::Table(table) => {
            let mut out = serde_json::Map::new();
            let mut ok = true;
            for (key, item) in table {
                let key: &str = key.get_ref();
                match to_json(ctx, &format!("{name}.{key}"), item) {
                    Some(v) => {
                        out.insert(key.to_owned(), v);
                    }
                    None => ok = false,
                }
            }
            ok.then_some(Value::Object(out))
        }
    }
}

/// Collects the `[secrets]` entries. Both spellings of a path work:
/// `"sasl.password" = { file = … }` (one quoted key) and
/// `sasl.password = { file = … }` or `[secrets.sasl]` (nested tables). A
/// table whose values are all tables is a level of nesting; any other
/// table is a reference.
fn walk_secrets(
    ctx: &mut Ctx<'_>,
    table: &DeTable<'_>,
    prefix: &str,
    base: &Path,
    out: &mut Vec<(String, Range<usize>, SecretRef)>,
) {
    for (key, value) in table {
        let k: &str = key.get_ref();
        let path = if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        };
        if k.split('.').any(str::is_empty) {
            ctx.at(
                key.span(),
                format!(
                    "secret `{path}` has an empty part in its path; \
                     write dotted paths like \"sasl.password\""
                ),
            );
            continue;
        }
        match value.get_ref() {
            DeValue::Table(t) if !t.is_empty() && t.values().all(|v| v.get_ref().is_table()) => {
                walk_secrets(ctx, t, &path, base, out);
            }
            DeValue::Table(t) => {
                if let Some(source) = secret_ref(ctx, &path, key.span(), t, base) {
                    out.push((path, key.span(), source));
                }
            }
            other => {
                // Never quote the value: it may be the secret itself.
                let found = other.type_str();
                ctx.at(
                    value.span(),
                    format!(
                        "secret `{path}` must be a reference, {{ file = \"/path/to/file\" }} or \
                         {{ env = \"VAR\" }}, not {} {found}; never write a secret's value in a \
                         manifest",
                        article(found)
                    ),
                );
            }
        }
    }
}

fn secret_ref(
    ctx: &mut Ctx<'_>,
    path: &str,
    key_span: Range<usize>,
    table: &DeTable<'_>,
    base: &Path,
) -> Option<SecretRef> {
    let before = ctx.problems.len();
    let (mut has_file, mut has_env) = (false, false);
    let mut source = None;
    for (key, value) in table {
        match &**key.get_ref() {
            "file" => {
                has_file = true;
                let name = format!("secrets.{path}.file");
                if let Some(file) =
                    ctx.non_empty_string(&name, value, "file = \"/etc/switchboard/secrets/x\"")
                {
                    source = Some(SecretRef::File(resolve(base, &file)));
                }
            }
            "env" => {
                has_env = true;
                let name = format!("secrets.{path}.env");
                if let Some(var) = ctx.string(&name, value, "env = \"IRC_PASSWORD\"") {
                    if is_valid_env_name(var.get_ref()) {
                        source = Some(SecretRef::Env(var.into_inner()));
                    } else {
                        ctx.at(
                            value.span(),
                            format!(
                                "`{name}` is not a valid environment variable name; \
                                 use letters, digits and `_`, not starting with a digit"
                            ),
                        );
                    }
                }
            }
            _ => ctx.unknown_key_in(key, &format!("secret `{path}`"), SECRET_KEYS),
        }
    }
    match (has_file, has_env) {
        (true, true) => ctx.at(
            key_span,
            format!("secret `{path}` has both `file` and `env`; keep exactly one"),
        ),
        (false, false) => ctx.at(
            key_span,
            format!(
                "secret `{path}` needs exactly one of `file = \"/path/to/file\"` \
                 or `env = \"VAR\"`"
            ),
        ),
        _ => {}
    }
    if ctx.problems.len() == before {
        source
    } else {
        None
    }
}

/// Secrets must not collide with each other or with `[config]` values.
fn check_secret_paths(ctx: &mut Ctx<'_>, d: &Draft) {
    for (i, (path, span, _)) in d.secrets.iter().enumerate() {
        for (other, _, _) in &d.secrets[..i] {
            let message = if other == path {
                format!("secret `{path}` is defined twice; keep one")
            } else if path.starts_with(&format!("{other}.")) {
                format!("secret `{path}` would go inside secret `{other}`, which is a string")
            } else if other.starts_with(&format!("{path}.")) {
                format!("secret `{path}` would replace the table holding secret `{other}`")
            } else {
                continue;
            };
            ctx.at(span.clone(), message);
        }
        let Some(config) = &d.config else { continue };
        let parts: Vec<&str> = path.split('.').collect();
        let mut node = config;
        for (depth, part) in parts.iter().enumerate() {
            let Some(next) = node.get(part) else { break };
            let here = parts[..=depth].join(".");
            if depth + 1 == parts.len() {
                ctx.at(
                    span.clone(),
                    format!(
                        "secret `{path}` would replace `config.{here}`; \
                         remove that key from [config] (the secret provides it)"
                    ),
                );
            } else if !next.is_object() {
                ctx.at(
                    span.clone(),
                    format!(
                        "secret `{path}` cannot go inside `config.{here}`, which is not a table; \
                         rename the secret or that config key"
                    ),
                );
                break;
            }
            node = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `TOP_KEYS` (did-you-mean, "the known keys are") must be exactly the
    /// fields a manifest has, and the parser must understand each: a field
    /// added to `Manifest` fails here until the loader knows its key.
    #[test]
    fn top_keys_are_the_manifest_fields_and_all_parse() {
        let mut m = Manifest::new(OperatorId::new("k").expect("id"), "c");
        // Optional fields serialize only when set.
        m.workdir = Some("w".into());
        m.nats_creds = Some("c".into());
        m.nats_nkey = Some("n".into());
        m.user = Some("u".into());
        m.group = Some("g".into());
        m.sandbox_binds = vec!["b".into()];
        m.sandbox_binds_rw = vec!["w".into()];
        let serde_json::Value::Object(fields) = serde_json::to_value(&m).expect("json") else {
            panic!("a manifest serializes to an object");
        };
        let mut fields: Vec<&str> = fields.keys().map(String::as_str).collect();
        fields.retain(|f| *f != "path");
        fields.sort_unstable();
        let mut keys = TOP_KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(fields, keys);
        for key in TOP_KEYS.iter().filter(|k| !["id", "command"].contains(*k)) {
            let text = format!("id = \"k\"\ncommand = \"c\"\n{key} = 12345\n");
            let problems = parse(Path::new("k.toml"), &text).problems;
            assert!(
                !problems.iter().any(|p| p.message.contains("unknown key")),
                "{key}: {problems:?}"
            );
        }
    }

    #[test]
    fn locate_counts_characters() {
        let ctx = Ctx {
            path: Path::new("x"),
            text: "a = 1\né = 2\n",
            problems: Vec::new(),
        };
        assert_eq!(ctx.locate(0), (1, 1));
        assert_eq!(ctx.locate(6), (2, 1));
        // After "é " (3 bytes, 2 characters).
        assert_eq!(ctx.locate(9), (2, 3));
        assert_eq!(ctx.locate(1000), (3, 1));
    }

    #[test]
    fn manifest_names() {
        for ok in ["a.toml", "pingbot.toml", "x.y.toml"] {
            assert!(is_manifest_name(ok.as_ref()), "{ok}");
        }
        for bad in [".a.toml", "a.toml~", "a.toml.disabled", "README", "toml"] {
            assert!(!is_manifest_name(bad.as_ref()), "{bad}");
        }
    }
}
