//! The manifest's own keys: which exist, what each must hold, and how a
//! file's values become a [`Manifest`] with its defaults.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use switchboard_proto::OperatorId;
use toml::de::DeTable;
use toml::Spanned;

use super::checker::{has_key, string_array, Ctx, Floor, Key, Val};
use super::sections::{
    backoff_table, crash_loop_table, env_table, grant_array, inherit_env_array, named_array,
    to_json, walk_secrets,
};
use super::Problem;
use crate::access::grants::{ApiGrant, Direction, StreamGrant};
use crate::manifest::suggest::did_you_mean;
use crate::manifest::{
    Backoff, Control, CrashLoop, Manifest, RestartPolicy, SandboxKind, SecretRef,
};

pub(super) const TOP_KEYS: &[&str] = &[
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
    "placement",
];
pub(super) const BACKOFF_KEYS: &[&str] = &["initial", "max", "multiplier", "jitter", "reset_after"];
pub(super) const CRASH_LOOP_KEYS: &[&str] = &["max_restarts", "window"];
pub(super) const SECRET_KEYS: &[&str] = &["file", "env"];

/// The outcome of one file.
pub(super) struct Parsed {
    /// Present only when there is no problem.
    pub(super) manifest: Option<Manifest>,
    /// Where the `id` key is, when it is itself valid (even if the rest of
    /// the file is not), for duplicate detection.
    pub(super) id: Option<IdAt>,
    pub(super) problems: Vec<Problem>,
}

/// An operator id and the place in its file that defines it.
pub(super) struct IdAt {
    pub(super) id: OperatorId,
    /// 1-based line.
    pub(super) line: usize,
    /// 1-based column, in characters.
    pub(super) column: usize,
}

/// One `[secrets]` entry as read, before the cross-checks.
pub(super) struct DraftSecret {
    /// The dotted path in `[config]` where its value goes.
    pub(super) path: String,
    /// Where its key is, for problems about it.
    pub(super) key_span: Range<usize>,
    /// Where its value comes from.
    pub(super) source: SecretRef,
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

pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
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
    secrets: Vec<DraftSecret>,
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
    placement: Option<switchboard_cluster::PlacementSpec>,
}

/// Reads one file's text: every key checked, every problem kept.
pub(super) fn parse(path: &Path, text: &str) -> Parsed {
    let mut ctx = Ctx::new(path, text);
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
        d.read(&mut ctx, &base, key, value);
    }
    d.cross_check(&mut ctx);
    d.check_missing(&mut ctx, path, &root);
    let id = d.id.as_ref().map(|id| {
        let (line, column) = ctx.locate(id.span().start);
        IdAt {
            id: id.get_ref().clone(),
            line,
            column,
        }
    });
    let manifest = if ctx.problems.is_empty() {
        d.into_manifest(path)
    } else {
        None
    };
    Parsed {
        manifest,
        id,
        problems: ctx.problems,
    }
}

impl Draft {
    /// Reads one top-level key (or reports it unknown).
    fn read(&mut self, ctx: &mut Ctx<'_>, base: &Path, key: &Key<'_>, value: &Val<'_>) {
        let name: &str = key.get_ref();
        match name {
            "id" => self.id = parse_id(ctx, value),
            "command" => {
                self.command =
                    ctx.non_empty_string(name, value, "command = \"switchboard-pingbot\"");
            }
            "args" => self.args = string_array(ctx, name, value),
            "env" => self.env = env_table(ctx, value),
            "workdir" => {
                self.workdir = ctx
                    .non_empty_string(name, value, "workdir = \"/var/lib/pingbot\"")
                    .map(|w| resolve(base, &w));
            }
            "enabled" => self.enabled = ctx.boolean(name, value),
            "control" => {
                self.control = ctx.choice(
                    name,
                    value,
                    &[("nats", Control::Nats), ("signals", Control::Signals)],
                );
            }
            "restart" => {
                self.restart = ctx.choice(
                    name,
                    value,
                    &[
                        ("always", RestartPolicy::Always),
                        ("on-failure", RestartPolicy::OnFailure),
                        ("never", RestartPolicy::Never),
                    ],
                );
            }
            "backoff" => self.backoff = backoff_table(ctx, value),
            "crash_loop" => self.crash_loop = crash_loop_table(ctx, value),
            "ready_timeout" => self.ready_timeout = ctx.duration(name, value, Floor::NonZero),
            "heartbeat_interval" => {
                self.heartbeat_interval = ctx.duration(
                    name,
                    value,
                    Floor::AtLeast(Manifest::MIN_HEARTBEAT_INTERVAL),
                );
            }
            "missed_heartbeats" => self.missed_heartbeats = ctx.count(name, value, 1, 3),
            "stop_timeout" => self.stop_timeout = ctx.duration(name, value, Floor::Zero),
            "config" => {
                if ctx
                    .table(name, value, "[config] followed by key = value lines")
                    .is_some()
                {
                    self.config = to_json(ctx, "config", value);
                }
            }
            "secrets" => {
                if let Some(table) = ctx.table(
                    name,
                    value,
                    "[secrets] followed by \"sasl.password\" = { file = \"/path\" }",
                ) {
                    walk_secrets(ctx, table, "", base, &mut self.secrets);
                }
            }
            "publish" => self.publish = grant_array(ctx, value, Direction::Publish),
            "subscribe" => self.subscribe = grant_array(ctx, value, Direction::Subscribe),
            "api" => self.api = named_array(ctx, "api", "API method", value, ApiGrant::ALL),
            "stream" => {
                self.stream = named_array(ctx, "stream", "stream grant", value, StreamGrant::ALL)
            }
            "inherit_env" => self.inherit_env = inherit_env_array(ctx, value),
            "nats_creds" => {
                self.nats_creds = ctx
                    .non_empty_string(
                        name,
                        value,
                        "nats_creds = \"/etc/switchboard/nats/pingbot.creds\"",
                    )
                    .map(|w| resolve(base, &w));
            }
            "nats_nkey" => {
                self.nats_nkey = ctx
                    .string(
                        name,
                        value,
                        "nats_nkey = \"/etc/switchboard/nats/pingbot.nk\"",
                    )
                    .map(|s| Spanned::new(s.span(), resolve(base, s.get_ref())));
            }
            "user" => self.user = ctx.non_empty_string(name, value, "user = \"switchboard-irc\""),
            "group" => {
                self.group = ctx
                    .non_empty_string(name, value, "group = \"switchboard\"")
                    .map(|g| Spanned::new(value.span(), g));
            }
            "sandbox" => {
                self.sandbox = ctx.choice(
                    name,
                    value,
                    &[("bwrap", SandboxKind::Bwrap), ("none", SandboxKind::None)],
                );
            }
            "sandbox_binds" => {
                self.sandbox_binds = string_array(ctx, name, value)
                    .map(|v| v.iter().map(|p| resolve(base, p)).collect());
            }
            "sandbox_binds_rw" => {
                self.sandbox_binds_rw = string_array(ctx, name, value)
                    .map(|v| v.iter().map(|p| resolve(base, p)).collect());
            }
            "placement" => self.placement = placement_table(ctx, value),
            _ => ctx.unknown_top_key(key),
        }
    }

    /// What no single key can be wrong about: keys that need or exclude
    /// each other, and secrets that collide.
    fn cross_check(&self, ctx: &mut Ctx<'_>) {
        if let (None, Some(group)) = (&self.user, &self.group) {
            ctx.at(
                group.span(),
                "`group` without `user`: the group applies to the user the operator runs as; \
             add user = \"...\" or remove it",
            );
        }
        if let (Some(_), Some(nkey)) = (&self.nats_creds, &self.nats_nkey) {
            ctx.at(
            nkey.span(),
            "`nats_nkey` and `nats_creds` are both set; an operator authenticates one way, keep one",
        );
        }
        check_secret_paths(ctx, self);
    }

    /// The required keys, when absent (a present but invalid one has
    /// already said so).
    fn check_missing(&self, ctx: &mut Ctx<'_>, path: &Path, root: &DeTable<'_>) {
        if self.id.is_none() && !has_key(root, "id") {
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
        if self.command.is_none() && !has_key(root, "command") {
            ctx.nowhere(
                "missing required key `command`: the program to run, \
             e.g. command = \"switchboard-pingbot\"",
            );
        }
    }

    /// The manifest, with defaults for what the file left out; `None`
    /// without a valid `id` and `command`.
    fn into_manifest(self, path: &Path) -> Option<Manifest> {
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
            placement,
        } = self;
        let (id, command) = (draft_id?, command?);
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
            secrets: secrets.into_iter().map(|s| (s.path, s.source)).collect(),
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
            placement: placement.unwrap_or_default(),
        })
    }
}

/// `[placement]`: the cluster engine's own type, so the keys and their
/// meaning are defined once; every host and label name must be a valid
/// name (they are matched against `[cluster] host` and `labels`).
fn placement_table(
    ctx: &mut Ctx<'_>,
    value: &Val<'_>,
) -> Option<switchboard_cluster::PlacementSpec> {
    let example =
        "[placement] followed by hosts = [\"alpha\"], labels = [\"eu\"], spread = \"irc\"";
    ctx.table("placement", value, example)?;
    let json = to_json(ctx, "placement", value)?;
    match serde_json::from_value::<switchboard_cluster::PlacementSpec>(json) {
        Ok(spec) => {
            let names = spec
                .hosts
                .iter()
                .chain(&spec.labels)
                .chain(spec.spread.iter());
            for name in names {
                if !switchboard_cluster::config::is_valid_name(name) {
                    ctx.at(
                        value.span(),
                        format!(
                            "[placement] `{name}` is not a valid host, label or group name: use \
                             1 to 64 of A-Z, a-z, 0-9, `_` and `-`"
                        ),
                    );
                    return None;
                }
            }
            Some(spec)
        }
        Err(e) => {
            ctx.at(
                value.span(),
                format!("[placement]: {e}; the keys are hosts, labels and spread ({example})"),
            );
            None
        }
    }
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

/// Secrets must not collide with each other or with `[config]` values.
fn check_secret_paths(ctx: &mut Ctx<'_>, d: &Draft) {
    for (i, secret) in d.secrets.iter().enumerate() {
        let (path, span) = (&secret.path, &secret.key_span);
        for other in d.secrets[..i].iter().map(|s| &s.path) {
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

/// Unknown keys, told with this format's key sets: a suggestion, or where
/// the key belongs instead.
impl Ctx<'_> {
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

    pub(super) fn unknown_key_in(&mut self, key: &Key<'_>, table: &str, known: &[&str]) {
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
        m.placement.spread = Some("s".into());
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
}
