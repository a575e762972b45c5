//! A generic checker for a spanned TOML tree: each helper converts one
//! value to the type a key needs or leaves a [`Problem`] pointing at its
//! line, so a caller can go on and report every problem of a file.

use std::borrow::Cow;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::Problem;
use crate::manifest::suggest::did_you_mean;
use switchboard_proto::duration::{format_duration, parse_duration};

pub(super) type Key<'i> = Spanned<Cow<'i, str>>;
pub(super) type Val<'i> = Spanned<DeValue<'i>>;

/// Problem collector for one file.
pub(super) struct Ctx<'a> {
    /// The file, as problems name it.
    pub(super) path: &'a Path,
    /// Its text, to turn byte spans into lines and columns.
    pub(super) text: &'a str,
    /// What was found so far.
    pub(super) problems: Vec<Problem>,
}

/// Lower bound for a duration.
#[derive(Clone, Copy)]
pub(super) enum Floor {
    Zero,
    NonZero,
    AtLeast(Duration),
}

impl<'a> Ctx<'a> {
    /// A collector for `text`, read from `path`.
    pub(super) fn new(path: &'a Path, text: &'a str) -> Ctx<'a> {
        Ctx {
            path,
            text,
            problems: Vec::new(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(super) fn locate(&self, offset: usize) -> (usize, usize) {
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

    pub(super) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = self.locate(span.start);
        self.problems.push(Problem {
            path: self.path.to_owned(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        });
    }

    pub(super) fn nowhere(&mut self, message: impl Into<String>) {
        self.problems
            .push(Problem::whole_file(self.path, message.into()));
    }

    pub(super) fn wrong_type(
        &mut self,
        name: &str,
        value: &Val<'_>,
        expected: &str,
        example: &str,
    ) {
        let found = value.get_ref().type_str();
        self.at(
            value.span(),
            format!(
                "`{name}` must be {expected}, not {} {found}; e.g. {example}",
                article(found)
            ),
        );
    }

    pub(super) fn string(
        &mut self,
        name: &str,
        value: &Val<'_>,
        example: &str,
    ) -> Option<Spanned<String>> {
        match value.get_ref() {
            DeValue::String(s) => Some(Spanned::new(value.span(), s.to_string())),
            _ => {
                self.wrong_type(name, value, "a string", example);
                None
            }
        }
    }

    pub(super) fn non_empty_string(
        &mut self,
        name: &str,
        value: &Val<'_>,
        example: &str,
    ) -> Option<String> {
        let s = self.string(name, value, example)?;
        if s.get_ref().trim().is_empty() {
            self.at(value.span(), format!("`{name}` is empty; e.g. {example}"));
            return None;
        }
        Some(s.into_inner())
    }

    pub(super) fn boolean(&mut self, name: &str, value: &Val<'_>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(name, value, "true or false", &format!("{name} = true"));
                None
            }
        }
    }

    pub(super) fn count(
        &mut self,
        name: &str,
        value: &Val<'_>,
        min: u32,
        example: u32,
    ) -> Option<u32> {
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

    pub(super) fn number(&mut self, name: &str, value: &Val<'_>, example: &str) -> Option<f64> {
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

    pub(super) fn duration(
        &mut self,
        name: &str,
        value: &Val<'_>,
        floor: Floor,
    ) -> Option<Duration> {
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

    pub(super) fn choice<T: Copy>(
        &mut self,
        name: &str,
        value: &Val<'_>,
        options: &[(&str, T)],
    ) -> Option<T> {
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

    pub(super) fn table<'v, 'i>(
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
}

pub(super) fn article(type_name: &str) -> &'static str {
    if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// The source text of a span (for quoting a scalar back).
pub(super) fn text_of(text: &str, span: Range<usize>) -> &str {
    text.get(span).unwrap_or("…")
}

pub(super) fn has_key(table: &DeTable<'_>, name: &str) -> bool {
    table.iter().any(|(k, _)| k.get_ref() == name)
}

pub(super) fn string_array(ctx: &mut Ctx<'_>, name: &str, value: &Val<'_>) -> Option<Vec<String>> {
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
pub(super) fn spanned_strings(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_counts_characters() {
        let ctx = Ctx::new(Path::new("x"), "a = 1\né = 2\n");
        assert_eq!(ctx.locate(0), (1, 1));
        assert_eq!(ctx.locate(6), (2, 1));
        // After "é " (3 bytes, 2 characters).
        assert_eq!(ctx.locate(9), (2, 3));
        assert_eq!(ctx.locate(1000), (3, 1));
    }
}
