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
//! The file is JSON, written to a temporary file and renamed, right after
//! each batch is published (so a kill loses at most the batch in flight,
//! which the overlap then brings back and nothing repeats what was
//! already out).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::SubscriptionConfig;

/// File name in the state dir.
pub const FILE: &str = "nostr-resume.json";

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
}

/// The resume state (in memory, and in the state dir when there is one).
#[derive(Debug)]
pub struct Resume {
    path: Option<PathBuf>,
    state: Stored,
    overlap: u64,
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
        }
    }

    /// The state in `dir` (a missing file is a first start). A corrupt
    /// file is moved aside and reported; the state then starts empty.
    pub fn load(dir: &Path, overlap_secs: u64) -> (Resume, Option<ResumeError>) {
        let path = dir.join(FILE);
        let mut resume = Resume::in_memory(overlap_secs);
        resume.path = Some(path.clone());
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (resume, None),
            Err(source) => return (resume, Some(ResumeError::Io { path, source })),
        };
        match serde_json::from_str::<Stored>(&text) {
            Ok(state) => {
                resume.state = state;
                (resume, None)
            }
            Err(source) => {
                let mut aside = path.clone().into_os_string();
                aside.push(".corrupt");
                let _ = std::fs::rename(&path, aside);
                (resume, Some(ResumeError::Corrupt { path, source }))
            }
        }
    }

    /// Sets the overlap (after a reload).
    pub fn set_overlap(&mut self, overlap_secs: u64) {
        self.overlap = overlap_secs;
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
        *mark = (*mark).max(created_at);
    }

    /// Whether event `id` was already published.
    pub fn is_seen(&self, id: &str) -> bool {
        self.state.seen.contains_key(id)
    }

    /// Records that event `id` was published.
    pub fn mark_seen(&mut self, id: &str, created_at: u64) {
        self.state.seen.insert(id.to_string(), created_at);
    }

    /// Forgets subscriptions that are no longer configured.
    pub fn retain_subscriptions(&mut self, names: &[&str]) {
        self.state.marks.retain(|k, _| names.contains(&k.as_str()));
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
            .saturating_sub(self.overlap + 1);
        self.state.seen.retain(|_, t| *t >= oldest);
        if self.state.seen.len() > MAX_SEEN {
            let mut times: Vec<u64> = self.state.seen.values().copied().collect();
            times.sort_unstable();
            let cut = times[self.state.seen.len() - MAX_SEEN];
            self.state.seen.retain(|_, t| *t >= cut);
        }
    }

    /// Writes the state (temporary file, then rename). Without a state
    /// dir only prunes.
    pub fn save(&mut self) -> Result<(), ResumeError> {
        self.prune();
        let Some(path) = &self.path else {
            return Ok(());
        };
        self.state.version = 1;
        let io = |source| ResumeError::Io {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_vec(&self.state).map_err(|e| io(std::io::Error::other(e)))?;
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
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
        assert!(!fresh.is_seen("abc"));
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
        let mut r = Resume::in_memory(10);
        r.observe("a", "ws://one", 1000);
        r.mark_seen("old", 100);
        r.mark_seen("recent", 995);
        r.save().unwrap();
        assert!(!r.is_seen("old"));
        assert!(r.is_seen("recent"));
    }
}
