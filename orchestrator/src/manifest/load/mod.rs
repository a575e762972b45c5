//! Reading and validating manifest files, with every problem pointing at
//! its file and line.
//!
//! The file is parsed into toml's spanned document tree
//! ([`DeTable`]) and walked key by key: each known key's value is
//! converted (through toml's own deserializer where a number is involved)
//! and checked on the spot, and each unknown key is reported with a
//! suggestion. Walking instead of one `#[derive(Deserialize)]` pass is what
//! lets one run report *all* the problems of a file instead of the first.

mod checker;
mod parse;
mod sections;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use switchboard_proto::OperatorId;

use super::Manifest;
use parse::parse;

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

impl Problem {
    /// A problem with the whole file (it cannot be read, it is not TOML
    /// at all, a key is missing): no line to point at.
    pub fn whole_file(path: &Path, message: impl Into<String>) -> Problem {
        Problem {
            path: path.to_owned(),
            line: None,
            column: None,
            message: message.into(),
        }
    }
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

    /// On a single host (no `[cluster]` in switchboard.toml) a
    /// `[placement]` table would be read and then mean nothing: each
    /// manifest with one becomes a problem instead of an operator.
    pub fn refuse_placement(&mut self) {
        let (keep, refused): (Vec<Manifest>, Vec<Manifest>) = std::mem::take(&mut self.manifests)
            .into_iter()
            .partition(|m| m.placement == switchboard_cluster::PlacementSpec::default());
        self.manifests = keep;
        for m in refused {
            self.problems.push(Problem {
                path: m.path.clone(),
                line: None,
                column: None,
                message: format!(
                    "operator `{}` has a [placement] table, which only means something in \
                     cluster mode: add [cluster] to switchboard.toml (docs/cluster.md) or remove \
                     [placement]",
                    m.id
                ),
            });
        }
    }
}

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
                    .push(Problem::whole_file(&path, format!("cannot read: {err}")));
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
        if let Some(parse::IdAt { id, line, column }) = parsed.id {
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

fn read_text(path: &Path) -> Result<String, Problem> {
    let bytes =
        fs::read(path).map_err(|err| Problem::whole_file(path, format!("cannot read: {err}")))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
