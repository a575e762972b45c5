//! Where each subscription left off, per relay, and which events were
//! already published: kept in the state dir so that neither a reconnect
//! nor a restart (even after SIGKILL) leaves a gap or publishes twice.
//!
//! The mark of (subscription, relay) is the newest `created_at` that relay
//! sent for that subscription, counted only once the event is published
//! (or skipped as a repeat or the bot's own), and never later than our own
//! clock, so a future-dated event cannot hide the ones after it. A resumed `REQ`
//! starts at the mark minus `resume_overlap`; what the overlap brings back
//! again is recognised by id. Marks are per relay because relays
//! disagree: a relay that was down must be asked from where *it* stopped,
//! not from where the others are.
//!
//! On disk: a snapshot (`nostr-resume.json`, written to a temporary file
//! and renamed) and a journal (`nostr-resume.log`, one JSON line of
//! changes appended right after each published batch). The journal keeps
//! each save as small as the batch, however many ids are remembered; it is
//! folded into a new snapshot once it passes 1 MiB or a minute. A kill
//! loses at most the batch in flight, which the overlap brings back, and
//! nothing repeats what was already out. A torn last journal line (a kill
//! mid-write) is ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::SubscriptionConfig;

/// Snapshot file name in the state dir.
pub const FILE: &str = "nostr-resume.json";
/// Journal file name in the state dir.
pub const JOURNAL: &str = "nostr-resume.log";

/// The journal is folded into the snapshot past this size...
const COMPACT_BYTES: u64 = 1 << 20;
/// ...or this age.
const COMPACT_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Most event ids remembered (the oldest go first).
const MAX_SEEN: usize = 50_000;

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// Reading or writing the file failed.
    #[error("resume state {}: {source}; check that the state dir is writable", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not what we wrote.
    #[error("resume state {} is not valid ({source}); it was moved aside to {}.corrupt and the operator starts afresh", path.display(), path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What serde_json said.
        source: serde_json::Error,
    },
}

switchboard_bus::proto::error_kinds!(
    /// What kind of [`ResumeError`] this is.
    ResumeError => ResumeErrorKind { Io, Corrupt }
);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    version: u32,
    /// subscription → relay URL → newest `created_at`.
    marks: BTreeMap<String, BTreeMap<String, u64>>,
    /// event id (hex) → its `created_at`.
    seen: HashMap<String, u64>,
    /// subscription → where its first `REQ` ever started.
    #[serde(default)]
    starts: BTreeMap<String, u64>,
}

/// One journal line: what changed since the line before.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Change {
    /// (subscription, relay, mark).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    marks: Vec<(String, String, u64)>,
    /// (event id, created_at).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    seen: Vec<(String, u64)>,
    /// (subscription, start of its first `REQ`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    starts: Vec<(String, u64)>,
}

impl Change {
    fn is_empty(&self) -> bool {
        self.marks.is_empty() && self.seen.is_empty() && self.starts.is_empty()
    }
}

/// The resume state (in memory, and in the state dir when there is one).
#[derive(Debug)]
pub struct Resume {
    path: Option<PathBuf>,
    state: Stored,
    overlap: u64,
    /// The longest subscription lookback (ids that old can come again).
    lookback: u64,
    /// Changes not yet in the journal.
    pending: Change,
    /// Something was forgotten (a removed subscription): only a new
    /// snapshot can say so.
    needs_snapshot: bool,
    journal_bytes: u64,
    last_snapshot: std::time::Instant,
    compact_bytes: u64,
}

/// Now, in unix seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Now, in unix milliseconds.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Resume {
    /// State kept in memory only (no state dir).
    pub fn in_memory(overlap_secs: u64) -> Resume {
        Resume {
            path: None,
            state: Stored {
                version: 1,
                ..Stored::default()
            },
            overlap: overlap_secs,
            lookback: 0,
            pending: Change::default(),
            needs_snapshot: false,
            journal_bytes: 0,
            last_snapshot: std::time::Instant::now(),
            compact_bytes: COMPACT_BYTES,
        }
    }

    fn journal_path(&self) -> Option<PathBuf> {
        self.path.as_ref().map(|p| p.with_file_name(JOURNAL))
    }

    fn apply(&mut self, change: Change) {
        for (sub, relay, mark) in change.marks {
            let m = self
                .state
                .marks
                .entry(sub)
                .or_default()
                .entry(relay)
                .or_insert(0);
            *m = (*m).max(mark);
        }
        for (id, t) in change.seen {
            self.state.seen.insert(id, t);
        }
        for (sub, start) in change.starts {
            self.state.starts.entry(sub).or_insert(start);
        }
    }

    /// Replays the journal over the snapshot; stops at a torn line.
    fn replay(&mut self) -> Result<(), ResumeError> {
        let Some(path) = self.journal_path() else {
            return Ok(());
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(ResumeError::Io { path, source }),
        };
        self.journal_bytes = text.len() as u64;
        for line in text.lines() {
            match serde_json::from_str::<Change>(line) {
                Ok(change) => self.apply(change),
                // Only the last line can be torn (a kill mid-append).
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// The state in `dir` (a missing file is a first start). A corrupt
    /// file is moved aside and reported; the state then starts empty.
    pub fn load(dir: &Path, overlap_secs: u64) -> (Resume, Option<ResumeError>) {
        let path = dir.join(FILE);
        let mut resume = Resume::in_memory(overlap_secs);
        resume.path = Some(path.clone());
        let problem = match std::fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str::<Stored>(&text) {
                Ok(state) => {
                    resume.state = state;
                    None
                }
                Err(source) => {
                    let mut aside = path.clone().into_os_string();
                    aside.push(".corrupt");
                    let _ = std::fs::rename(&path, aside);
                    Some(ResumeError::Corrupt { path, source })
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => Some(ResumeError::Io { path, source }),
        };
        let replayed = resume.replay().err();
        (resume, problem.or(replayed))
    }

    /// Sets the overlap (after a reload).
    pub fn set_overlap(&mut self, overlap_secs: u64) {
        self.overlap = overlap_secs;
    }

    /// Sets the longest lookback of the subscriptions (see
    /// [`SubscriptionConfig::lookback`]): published ids stay known that
    /// much longer, so a lookback never publishes one twice.
    pub fn set_lookback(&mut self, subs: &[SubscriptionConfig]) {
        self.lookback = subs.iter().map(|s| s.lookback).max().unwrap_or(0);
    }

    /// What subscription `name` publishes nothing older than: where its
    /// first `REQ` ever started, less the overlap (`None` before that
    /// `REQ`). Its look-back asks relays for more; this keeps it from
    /// bringing a new bot what was written before it was listening.
    pub fn floor(&self, name: &str) -> Option<u64> {
        self.state
            .starts
            .get(name)
            .map(|s| s.saturating_sub(self.overlap))
    }

    /// Where the `REQ` of `sub` on `relay` starts, and whether it is the
    /// first one ever for that subscription (then `limit` applies). A
    /// relay new to a subscription starts where the subscription's other
    /// relays are; a new subscription at its `since` or now. The start is
    /// recorded, so a restart before any event resumes from it.
    pub fn since(&mut self, sub: &SubscriptionConfig, relay: &str) -> (u64, bool) {
        let overlap = self.overlap;
        let marks = self.state.marks.entry(sub.name.clone()).or_default();
        if let Some(mark) = marks.get(relay) {
            return (mark.saturating_sub(overlap), false);
        }
        let first = marks.is_empty();
        let start = match marks.values().max() {
            Some(max) => max.saturating_sub(overlap),
            None => sub.since.unwrap_or_else(now_secs),
        };
        marks.insert(relay.to_string(), start);
        self.pending
            .marks
            .push((sub.name.clone(), relay.to_string(), start));
        if first && !self.state.starts.contains_key(&sub.name) {
            self.state.starts.insert(sub.name.clone(), start);
            self.pending.starts.push((sub.name.clone(), start));
        }
        // Saved at once: a restart before any event must resume from this
        // start, not from the time of the restart.
        if let Err(e) = self.save() {
            tracing::warn!(error = %e, "could not save the resume state");
        }
        (start, first)
    }

    /// Records that `relay` sent an event with `created_at` for `sub`.
    pub fn observe(&mut self, sub: &str, relay: &str, created_at: u64) {
        let created_at = created_at.min(now_secs());
        let mark = self
            .state
            .marks
            .entry(sub.to_string())
            .or_default()
            .entry(relay.to_string())
            .or_insert(0);
        if created_at > *mark {
            *mark = created_at;
            self.pending
                .marks
                .push((sub.to_string(), relay.to_string(), created_at));
        }
    }

    /// Whether event `id` was already published.
    pub fn is_seen(&self, id: &str) -> bool {
        self.state.seen.contains_key(id)
    }

    /// Records that event `id` was published.
    pub fn mark_seen(&mut self, id: &str, created_at: u64) {
        if self.state.seen.insert(id.to_string(), created_at).is_none() {
            self.pending.seen.push((id.to_string(), created_at));
        }
    }

    /// Forgets subscriptions that are no longer configured.
    pub fn retain_subscriptions(&mut self, names: &[&str]) {
        let before = self.state.marks.len();
        self.state.marks.retain(|k, _| names.contains(&k.as_str()));
        self.state.starts.retain(|k, _| names.contains(&k.as_str()));
        if self.state.marks.len() != before {
            self.needs_snapshot = true;
        }
    }

    /// Drops ids that no resumed `REQ` can bring back (older than the
    /// oldest mark minus the overlap), and the oldest beyond the cap.
    fn prune(&mut self) {
        let oldest = self
            .state
            .marks
            .values()
            .flat_map(|m| m.values())
            .min()
            .copied()
            .unwrap_or(0)
            .saturating_sub(self.overlap + self.lookback + 1);
        self.state.seen.retain(|_, t| *t >= oldest);
        if self.state.seen.len() > MAX_SEEN {
            let mut times: Vec<u64> = self.state.seen.values().copied().collect();
            times.sort_unstable();
            let cut = times[self.state.seen.len() - MAX_SEEN];
            self.state.seen.retain(|_, t| *t >= cut);
        }
    }

    /// Writes what changed: one journal line, or (when the journal is
    /// big or old, or something was forgotten) a new snapshot and an
    /// empty journal. Without a state dir only prunes, now and then.
    pub fn save(&mut self) -> Result<(), ResumeError> {
        let Some(path) = self.path.clone() else {
            self.pending = Change::default();
            if self.state.seen.len() > MAX_SEEN {
                self.prune();
            }
            return Ok(());
        };
        let compact = self.needs_snapshot
            || self.journal_bytes > self.compact_bytes
            || self.last_snapshot.elapsed() > COMPACT_AFTER;
        if compact {
            return self.snapshot(&path);
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let journal = path.with_file_name(JOURNAL);
        let io = |source| ResumeError::Io {
            path: journal.clone(),
            source,
        };
        let mut line =
            serde_json::to_vec(&self.pending).map_err(|e| io(std::io::Error::other(e)))?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal)
            .map_err(io)?;
        std::io::Write::write_all(&mut file, &line).map_err(io)?;
        self.journal_bytes += line.len() as u64;
        self.pending = Change::default();
        Ok(())
    }

    /// A new snapshot (temporary file, then rename), then an empty
    /// journal: a kill between the two replays the old journal over the
    /// new snapshot, which changes nothing.
    fn snapshot(&mut self, path: &Path) -> Result<(), ResumeError> {
        self.prune();
        self.state.version = 1;
        let io = |source| ResumeError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = serde_json::to_vec(&self.state).map_err(|e| io(std::io::Error::other(e)))?;
        let mut tmp = path.to_path_buf().into_os_string();
        tmp.push(".tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        std::fs::write(path.with_file_name(JOURNAL), b"").map_err(io)?;
        self.journal_bytes = 0;
        self.last_snapshot = std::time::Instant::now();
        self.needs_snapshot = false;
        self.pending = Change::default();
        Ok(())
    }

    /// The marks, for status replies: subscription → relay → `created_at`.
    pub fn marks(&self) -> &BTreeMap<String, BTreeMap<String, u64>> {
        &self.state.marks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(name: &str) -> SubscriptionConfig {
        SubscriptionConfig {
            name: name.to_string(),
            kinds: vec![1],
            authors: vec![],
            mentions: vec![],
            hashtags: vec![],
            since: Some(1000),
            limit: Some(5),
            lookback: 0,
        }
    }

    #[test]
    fn first_req_then_resume_with_overlap_per_relay() {
        let mut r = Resume::in_memory(60);
        let s = sub("a");
        assert_eq!(r.since(&s, "ws://one"), (1000, true));
        assert_eq!(r.since(&s, "ws://one"), (940, false));
        r.observe("a", "ws://one", 5000);
        r.observe("a", "ws://one", 4000);
        assert_eq!(r.since(&s, "ws://one").0, 4940);
        // A relay new to the subscription starts where the others are.
        assert_eq!(r.since(&s, "ws://two"), (4940, false));
        // A future-dated event does not move the mark past now.
        r.observe("a", "ws://one", u64::MAX);
        assert!(r.since(&s, "ws://one").0 <= now_secs());
    }

    #[test]
    fn survives_a_restart_and_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, e) = Resume::load(dir.path(), 10);
        assert!(e.is_none());
        r.since(&sub("a"), "ws://one");
        r.observe("a", "ws://one", now_secs());
        r.mark_seen("abc", now_secs());
        r.save().unwrap();
        let (mut again, e) = Resume::load(dir.path(), 10);
        assert!(e.is_none());
        assert!(again.is_seen("abc"));
        assert_eq!(again.since(&sub("a"), "ws://one").0, now_secs() - 10);
        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        let (fresh, e) = Resume::load(dir.path(), 10);
        assert_eq!(e.unwrap().kind(), ResumeErrorKind::Corrupt);
        // The journal still holds what was saved after the last snapshot.
        assert!(fresh.is_seen("abc"));
        assert!(dir.path().join("nostr-resume.json.corrupt").exists());
    }

    #[test]
    fn a_first_start_is_saved_before_any_event() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, _) = Resume::load(dir.path(), 10);
        let (start, first) = r.since(&sub("a"), "ws://one");
        assert!(first);
        let (mut again, _) = Resume::load(dir.path(), 10);
        assert_eq!(again.since(&sub("a"), "ws://one"), (start - 10, false));
    }

    #[test]
    fn prunes_ids_no_req_can_bring_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, _) = Resume::load(dir.path(), 10);
        r.observe("a", "ws://one", 1000);
        r.mark_seen("old", 100);
        r.mark_seen("recent", 995);
        r.needs_snapshot = true;
        r.save().unwrap();
        assert!(!r.is_seen("old"));
        assert!(r.is_seen("recent"));
    }

    #[test]
    fn the_first_start_is_a_floor_that_survives_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, _) = Resume::load(dir.path(), 10);
        assert_eq!(r.floor("a"), None);
        let (start, first) = r.since(&sub("a"), "ws://one");
        assert!(first);
        assert_eq!(r.floor("a"), Some(start - 10));
        r.observe("a", "ws://one", start + 100);
        r.save().unwrap();
        // A relay new to the subscription does not move it.
        r.since(&sub("a"), "ws://two");
        let (r, problem) = Resume::load(dir.path(), 10);
        assert!(problem.is_none());
        assert_eq!(r.floor("a"), Some(start - 10));
        let mut r = r;
        r.retain_subscriptions(&[]);
        assert_eq!(r.floor("a"), None);
    }

    #[test]
    fn a_lookback_keeps_ids_it_can_bring_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, _) = Resume::load(dir.path(), 10);
        let mut dms = sub("dms");
        dms.lookback = 500;
        r.set_lookback(&[sub("a"), dms.clone()]);
        r.observe("dms", "ws://one", 1000);
        // A gift wrap stamped 400 s before the mark can come again.
        r.mark_seen("wrap", 600);
        r.mark_seen("older", 100);
        r.needs_snapshot = true;
        r.save().unwrap();
        assert!(r.is_seen("wrap"));
        assert!(!r.is_seen("older"));
        let f = dms.filter(1000, false);
        assert_eq!(f.since.map(|t| t.as_secs()), Some(500));
    }

    #[test]
    fn the_journal_keeps_saves_small_and_is_folded_in() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, _) = Resume::load(dir.path(), 10);
        r.compact_bytes = 300;
        let t = now_secs();
        r.observe("a", "ws://one", t);
        r.mark_seen("id-0", t);
        r.save().unwrap();
        let journal = dir.path().join(JOURNAL);
        let one = std::fs::metadata(&journal).unwrap().len();
        assert!(
            one > 0 && !dir.path().join(FILE).exists(),
            "a save appends, no snapshot"
        );
        for i in 1..20 {
            r.mark_seen(&format!("id-{i}"), t);
            r.save().unwrap();
        }
        // Past 300 bytes the journal was folded into a snapshot.
        assert!(dir.path().join(FILE).exists());
        assert!(std::fs::metadata(&journal).unwrap().len() < 300 + 100);
        let (again, e) = Resume::load(dir.path(), 10);
        assert!(e.is_none());
        for i in 0..20 {
            assert!(again.is_seen(&format!("id-{i}")), "id-{i}");
        }
    }

    #[test]
    fn a_torn_journal_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, _) = Resume::load(dir.path(), 10);
        r.mark_seen("kept", now_secs());
        r.save().unwrap();
        let journal = dir.path().join(JOURNAL);
        let mut text = std::fs::read_to_string(&journal).unwrap();
        text.push_str("{\"seen\":[[\"torn");
        std::fs::write(&journal, text).unwrap();
        let (again, e) = Resume::load(dir.path(), 10);
        assert!(e.is_none());
        assert!(again.is_seen("kept"));
    }
}
