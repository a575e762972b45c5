//! The manifest's tables and lists: `[env]`, `[backoff]`, `[crash_loop]`,
//! `[config]`, `[secrets]`, the grants and `inherit_env`, each read with
//! the checker and checked for what only its section knows.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::checker::{article, spanned_strings, text_of, Ctx, Floor, Val};
use super::parse::{resolve, DraftSecret, BACKOFF_KEYS, CRASH_LOOP_KEYS, SECRET_KEYS};
use crate::access::grants::{expand, translate, Direction};
use crate::manifest::suggest::did_you_mean;
use crate::manifest::{is_valid_env_name, Backoff, CrashLoop, SecretRef, RESERVED_ENV_PREFIX};
use switchboard_proto::duration::format_duration;

/// `publish = [...]` / `subscribe = [...]`: patterns that nats-server can
/// enforce (see `access::grants`).
pub(super) fn grant_array(
    ctx: &mut Ctx<'_>,
    value: &Val<'_>,
    direction: Direction,
) -> Option<Vec<String>> {
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
pub(super) fn named_array<G: Copy + PartialEq>(
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
pub(super) fn inherit_env_array(ctx: &mut Ctx<'_>, value: &Val<'_>) -> Option<Vec<String>> {
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

pub(super) fn env_table(ctx: &mut Ctx<'_>, value: &Val<'_>) -> Option<BTreeMap<String, String>> {
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

pub(super) fn backoff_table(ctx: &mut Ctx<'_>, value: &Val<'_>) -> Option<Backoff> {
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

pub(super) fn crash_loop_table(ctx: &mut Ctx<'_>, value: &Val<'_>) -> Option<CrashLoop> {
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
pub(super) fn to_json(ctx: &mut Ctx<'_>, name: &str, value: &Val<'_>) -> Option<Value> {
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
pub(super) fn walk_secrets(
    ctx: &mut Ctx<'_>,
    table: &DeTable<'_>,
    prefix: &str,
    base: &Path,
    out: &mut Vec<DraftSecret>,
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
                    out.push(DraftSecret {
                        path,
                        key_span: key.span(),
                        source,
                    });
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
