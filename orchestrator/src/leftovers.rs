//! What a daemon killed with SIGKILL leaves behind, found and ended at
//! the next start.
//!
//! Each operator runs in its own process group, and its direct child dies
//! with the daemon (`PR_SET_PDEATHSIG`). But a helper it forked
//! (`sh -c 'helper & wait'`) gets no such signal, outlives everything, and
//! a restarted daemon would start a second set beside it. So every
//! operator's process group is recorded in the state dir while it runs
//! (`<state_dir>/groups/<id>`: the group id and the leader's start time),
//! and removed once the group is gone. At start-up, a record still there
//! means the last daemon died without cleaning up: every process still in
//! that group and started no earlier than its leader (so a recycled pid of
//! an unrelated program is left alone) is killed.

use std::path::{Path, PathBuf};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("groups")
}

/// `(process group id, start time)` of a process, from `/proc/<pid>/stat`
/// (fields 5 and 22; the command name in field 2 may hold spaces and
/// parentheses, so fields are counted after its last `)`).
fn group_and_start(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state(3) ppid(4) pgrp(5) ... starttime(22).
    let pgrp = fields.get(2)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((pgrp, start))
}

/// Remember that operator `id` runs as process group `pgid` (its leader's
/// pid). Best effort: a state dir that cannot be written is logged.
pub fn record(state_dir: &Path, id: &str, pgid: u32) {
    let Some((_, start)) = group_and_start(pgid) else {
        return; // already gone
    };
    let path = dir(state_dir).join(id);
    if let Err(e) = crate::files::write_private(&path, format!("{pgid} {start}\n").as_bytes()) {
        tracing::warn!(operator = id, error = %e, path = %path.display(), "cannot record the process group; a daemon crash could leave its helpers running");
    }
}

/// Forget operator `id`'s group (it is gone).
pub fn forget(state_dir: &Path, id: &str) {
    let _ = std::fs::remove_file(dir(state_dir).join(id));
}

/// End what earlier daemons left running, and clear the records. Returns
/// `(operator id, processes killed)` for each group that still had any.
pub fn sweep(state_dir: &Path) -> Vec<(String, usize)> {
    let Ok(entries) = std::fs::read_dir(dir(state_dir)) else {
        return Vec::new();
    };
    let mut ended = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let id = entry.file_name().to_string_lossy().into_owned();
        let record = std::fs::read_to_string(&path).unwrap_or_default();
        let mut parts = record.split_whitespace();
        let (Some(Ok(pgid)), Some(Ok(start))) = (
            parts.next().map(str::parse::<u32>),
            parts.next().map(str::parse::<u64>),
        ) else {
            let _ = std::fs::remove_file(&path);
            continue;
        };
        let members = members(pgid, start);
        if !members.is_empty() {
            if let Ok(raw) = i32::try_from(pgid) {
                let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
            }
            tracing::warn!(
                operator = %id,
                pgid,
                processes = members.len(),
                "ended what a previous switchboard left running"
            );
            ended.push((id, members.len()));
        }
        let _ = std::fs::remove_file(&path);
    }
    ended
}

/// Processes in group `pgid` started no earlier than `start` (the group's
/// recorded leader start time).
fn members(pgid: u32, start: u64) -> Vec<u32> {
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            group_and_start(*pid).is_some_and(|(group, started)| group == pgid && started >= start)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_stat_parses() {
        let me = std::process::id();
        let (group, start) = group_and_start(me).expect("our own stat");
        assert!(group > 0 && start > 0);
        assert!(members(group, start).contains(&me));
        // A later start time excludes us: a recycled pid is not ours.
        assert!(!members(group, start + 1).contains(&me));
    }

    #[test]
    fn stale_and_broken_records_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("groups")).unwrap();
        std::fs::write(dir.path().join("groups/gone"), "999999999 1\n").unwrap();
        std::fs::write(dir.path().join("groups/junk"), "not a record").unwrap();
        assert!(sweep(dir.path()).is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("groups"))
                .unwrap()
                .count(),
            0
        );
    }
}
