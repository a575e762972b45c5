//! Reading the files back, for tools and tests: every log file under a
//! directory, its lines (gzipped or not), and the envelope ids in JSON
//! lines.

use std::collections::HashMap;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

/// Every log file under `dir` (`.jsonl`, `.log`, and those gzipped), in
/// path order; unreadable directories are skipped.
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let name = name.strip_suffix(".gz").unwrap_or(name);
            if name.ends_with(".jsonl") || name.ends_with(".log") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The lines of one file, gunzipped when it ends in `.gz`; invalid UTF-8
/// is replaced, so a damaged line does not hide the others.
pub fn read_lines(path: &Path) -> io::Result<Vec<String>> {
    let mut bytes = Vec::new();
    let file = std::fs::File::open(path)?;
    if path.extension().is_some_and(|x| x == "gz") {
        flate2::read::GzDecoder::new(file).read_to_end(&mut bytes)?;
    } else {
        let mut file = file;
        file.read_to_end(&mut bytes)?;
    }
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Envelope id -> how many lines carry it, over the JSON-lines files under
/// `dir` (gzipped ones included).
pub fn ids(dir: &Path) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for path in log_files(dir) {
        let name = path.to_string_lossy();
        if !(name.ends_with(".jsonl") || name.ends_with(".jsonl.gz")) {
            continue;
        }
        for line in read_lines(&path).unwrap_or_default() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(id) = v["id"].as_str() {
                *out.entry(id.to_owned()).or_default() += 1;
            }
        }
    }
    out
}
