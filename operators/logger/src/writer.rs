//! Appending batches to files, exactly once, and closing old files.
//!
//! Exactly once across crashes comes from a journal, not from reading the
//! files back (a text line has no id, and a file may hold a corrupt line
//! someone else wrote). Before a batch touches any file, the journal
//! records each file's length, the batch's last stream sequence and the
//! sequence every earlier batch is written through, and is synced. After
//! the batch is written (and synced, per policy) the logger acknowledges
//! it. At start, the journal's batch is settled: if the stream's consumer
//! has it as acknowledged, its lines stay; otherwise every file is cut
//! back to its recorded length and the stream delivers the batch again.
//! Messages at or below the written-through sequence are skipped: a
//! nats-server killed hard can forget recent acknowledgements and deliver
//! them again. A failed write (full disk, no permission) is undone the
//! same way at once, and retried.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Fsync, LoggerConfig};
use crate::layout::Entry;

/// Why a batch could not be written (it was undone; nothing partial
/// stays).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Writing the journal failed: nothing was written.
    #[error("cannot write the journal {}: {source}", path.display())]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Writing a log file failed.
    #[error("cannot write {}: {source}", path.display())]
    File {
        /// The log file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The blocking task writing the batch panicked.
    #[error("the file writer panicked: {0}")]
    Panicked(String),
    /// Undoing a failed batch failed too: the journal stays, and the next
    /// start (or the next attempt) undoes it.
    #[error("cannot undo a partial write to {}: {source}", path.display())]
    Undo {
        /// The log file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// A failed write fails the handler as an I/O error, kept as its source.
impl From<WriteError> for switchboard_bus::HandlerError {
    fn from(e: WriteError) -> switchboard_bus::HandlerError {
        switchboard_bus::HandlerError::new(switchboard_bus::HandlerErrorKind::Io, e)
    }
}

switchboard_proto::error_kinds! {
    /// Coarse classes of [`WriteError`].
    WriteError => WriteErrorKind { Journal, File, Panicked, Undo }
}

/// What the journal holds: where each file of the batch ended before it.
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    /// Every message up to this stream sequence was written before this
    /// batch.
    #[serde(default)]
    committed: u64,
    /// The last stream sequence of the batch.
    last_seq: u64,
    /// Absolute path -> length before the batch (0 for a new file).
    files: BTreeMap<PathBuf, u64>,
}

/// What recovery did with a journal left by a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// There was none.
    Clean,
    /// The batch had been acknowledged: its lines stay.
    Kept,
    /// It had not: its lines were removed, the stream sends them again.
    Undone,
}

/// Appends batches under one directory.
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    journal: PathBuf,
    fsync: Fsync,
    rotate_size: u64,
    compress: bool,
    /// Files written since the last [`Writer::maintain`].
    touched: Vec<PathBuf>,
    /// Every message up to this stream sequence is written.
    committed: u64,
    /// The batch written and not yet acknowledged.
    pending: Option<u64>,
}

impl Writer {
    /// A writer for `config`, keeping its journal at `journal`.
    pub fn new(config: &LoggerConfig, journal: PathBuf) -> Writer {
        Writer {
            dir: config.dir.clone(),
            journal,
            fsync: config.fsync,
            rotate_size: config.rotate_size.as_u64(),
            compress: config.compress,
            touched: Vec::new(),
            committed: 0,
            pending: None,
        }
    }

    /// Every message up to this stream sequence is in the files: skip it
    /// if it comes again.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Take a new config (directory, policies) for the next batches.
    pub fn reconfigure(&mut self, config: &LoggerConfig) {
        self.dir = config.dir.clone();
        self.fsync = config.fsync;
        self.rotate_size = config.rotate_size.as_u64();
        self.compress = config.compress;
    }

    /// The last sequence of a batch left unfinished by a crash, if any.
    pub fn pending_batch(&self) -> Option<u64> {
        self.read_journal().map(|j| j.last_seq)
    }

    fn read_journal(&self) -> Option<Journal> {
        let bytes = std::fs::read(&self.journal).ok()?;
        // A journal cut short by a crash while it was being written: the
        // batch had not started, nothing to undo.
        serde_json::from_slice(&bytes).ok()
    }

    /// Settle the journal's batch at start: keep it when `acked_through`
    /// (the consumer's acknowledged sequence) covers it, else cut every
    /// file back. Sets [`Writer::committed`].
    pub fn recover(&mut self, acked_through: u64) -> Result<Recovered, WriteError> {
        let Some(journal) = self.read_journal() else {
            return Ok(Recovered::Clean);
        };
        if acked_through >= journal.last_seq {
            self.committed = journal.last_seq.max(journal.committed);
            return Ok(Recovered::Kept);
        }
        undo(&journal)?;
        self.committed = journal.committed;
        Ok(Recovered::Undone)
    }

    /// Append `entries` (of a batch ending at stream sequence `last_seq`),
    /// in order. On error nothing of the batch stays in any file.
    pub fn write_batch(&mut self, entries: &[Entry], last_seq: u64) -> Result<(), WriteError> {
        self.pending = Some(last_seq);
        if entries.is_empty() {
            return Ok(());
        }
        // Lines per file, files in first-seen order.
        let mut by_file: Vec<(PathBuf, String)> = Vec::new();
        for e in entries {
            let path = self.dir.join(&e.path);
            match by_file.iter_mut().find(|(p, _)| *p == path) {
                Some((_, text)) => text.push_str(&e.line),
                None => by_file.push((path, e.line.clone())),
            }
        }
        let journal = Journal {
            committed: self.committed,
            last_seq,
            files: by_file
                .iter()
                .map(|(p, _)| (p.clone(), std::fs::metadata(p).map_or(0, |m| m.len())))
                .collect(),
        };
        self.write_journal(&journal)?;
        for (path, text) in &by_file {
            if let Err(source) = self.append(path, text.as_bytes()) {
                self.pending = None;
                undo(&journal)?;
                return Err(WriteError::File {
                    path: path.clone(),
                    source,
                });
            }
        }
        for (path, _) in by_file {
            if !self.touched.contains(&path) {
                self.touched.push(path);
            }
        }
        Ok(())
    }

    fn write_journal(&self, journal: &Journal) -> Result<(), WriteError> {
        let fail = |source| WriteError::Journal {
            path: self.journal.clone(),
            source,
        };
        let bytes = serde_json::to_vec(journal).map_err(|e| fail(io::Error::other(e)))?;
        let mut f = File::create(&self.journal).map_err(fail)?;
        f.write_all(&bytes).map_err(fail)?;
        if self.fsync == Fsync::Batch {
            f.sync_all().map_err(fail)?;
        }
        Ok(())
    }

    fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        // A file whose last line was cut (by someone else, or a disk that
        // filled) gets a newline first, so our lines stay whole.
        if ends_without_newline(&mut f)? {
            f.write_all(b"\n")?;
        }
        f.write_all(bytes)?;
        if self.fsync == Fsync::Batch {
            f.sync_data()?;
        }
        Ok(())
    }

    /// The batch is acknowledged: it is written for good. (The journal
    /// stays; the next batch's replaces it.)
    pub fn commit(&mut self) {
        if let Some(seq) = self.pending.take() {
            self.committed = self.committed.max(seq);
        }
    }

    /// Between batches (no journal): rotate the files written since last
    /// time that are over `rotate_size`, and compress closed files (rotated
    /// ones, and files last written before today, UTC). Problems are
    /// returned as text for the log; they never stop the logger.
    pub fn maintain(&mut self, sweep: bool) -> Vec<String> {
        let mut problems = Vec::new();
        for path in std::mem::take(&mut self.touched) {
            let big = std::fs::metadata(&path).is_ok_and(|m| m.len() > self.rotate_size);
            if big {
                match rotate(&path) {
                    Ok(closed) if self.compress => {
                        if let Err(e) = gzip(&closed) {
                            problems.push(format!("cannot compress {}: {e}", closed.display()));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => problems.push(format!("cannot rotate {}: {e}", path.display())),
                }
            }
        }
        if sweep && self.compress {
            let today = start_of_today();
            let mut old = Vec::new();
            collect_old(&self.dir, today, &mut old);
            for path in old {
                if let Err(e) = gzip(&path) {
                    problems.push(format!("cannot compress {}: {e}", path.display()));
                }
            }
        }
        problems
    }
}

fn ends_without_newline(f: &mut File) -> io::Result<bool> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    f.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

fn undo(journal: &Journal) -> Result<(), WriteError> {
    for (path, len) in &journal.files {
        let cut = OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(*len).and_then(|()| f.sync_all()));
        match cut {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(WriteError::Undo {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// `x/2026-12-01.jsonl` -> `x/2026-12-01.1.jsonl` (the first free number).
fn rotate(path: &Path) -> io::Result<PathBuf> {
    let target = numbered(path, |p| p.exists() || gz_name(p).exists());
    std::fs::rename(path, &target)?;
    Ok(target)
}

/// `stem.N.ext` for the first N from 1 where `taken` is false.
fn numbered(path: &Path, taken: impl Fn(&Path) -> bool) -> PathBuf {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("log");
    let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("log");
    (1u32..)
        .map(|n| path.with_file_name(format!("{stem}.{n}.{ext}")))
        .find(|p| !taken(p))
        .unwrap_or_else(|| path.with_extension("overflow"))
}

fn gz_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".gz");
    PathBuf::from(name)
}

/// Compress `path` to `path.gz` (a numbered name if that exists), through
/// a temporary file so a crash leaves either the file or the archive.
fn gzip(path: &Path) -> io::Result<()> {
    let mut target = gz_name(path);
    if target.exists() {
        target = gz_name(&numbered(path, |p| p.exists() || gz_name(p).exists()));
    }
    let mut tmp = target.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut input = File::open(path)?;
        let out = File::create(&tmp)?;
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        io::copy(&mut input, &mut enc)?;
        enc.finish()?.sync_all()?;
    }
    std::fs::rename(&tmp, &target)?;
    std::fs::remove_file(path)
}

fn start_of_today() -> std::time::SystemTime {
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs - secs % 86_400)
}

/// Uncompressed log files under `dir` last written before `before`; also
/// removes temporary archives a crash left.
fn collect_old(dir: &Path, before: std::time::SystemTime, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            collect_old(&path, before, out);
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".gz.tmp") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let ours = name.ends_with(".jsonl") || name.ends_with(".log");
        if ours && meta.modified().is_ok_and(|m| m < before) {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> LoggerConfig {
        serde_json::from_value(serde_json::json!({ "dir": dir })).expect("config")
    }

    fn entry(file: &str, line: &str) -> Entry {
        Entry {
            path: PathBuf::from(file),
            line: format!("{line}\n"),
        }
    }

    #[test]
    fn a_batch_cut_by_a_crash_is_undone_unless_it_was_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal.json");
        let c = config(&dir.path().join("logs"));
        let mut w = Writer::new(&c, journal.clone());
        w.write_batch(&[entry("a.jsonl", "1"), entry("b.jsonl", "2")], 10)
            .unwrap();
        w.commit();
        w.write_batch(&[entry("a.jsonl", "3"), entry("c.jsonl", "4")], 20)
            .unwrap();
        // A crash here: the second batch is on disk, not acknowledged.
        let read =
            |f: &str| std::fs::read_to_string(dir.path().join("logs").join(f)).unwrap_or_default();
        assert_eq!(read("a.jsonl"), "1\n3\n");

        let mut after = Writer::new(&c, journal.clone());
        assert_eq!(after.recover(10).unwrap(), Recovered::Undone);
        assert_eq!(read("a.jsonl"), "1\n");
        assert_eq!(read("c.jsonl"), "");
        assert_eq!(read("b.jsonl"), "2\n");
        assert_eq!(after.committed(), 10);

        // Written again, and this time the acknowledgement got through
        // before the crash: kept, and skipped if delivered again.
        after
            .write_batch(&[entry("a.jsonl", "3"), entry("c.jsonl", "4")], 20)
            .unwrap();
        let mut again = Writer::new(&c, journal);
        assert_eq!(again.recover(20).unwrap(), Recovered::Kept);
        assert_eq!(read("a.jsonl"), "1\n3\n");
        assert_eq!(again.committed(), 20);
    }
}
