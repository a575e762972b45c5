//! What `/proc` says about the processes the supervision benchmarks run:
//! who is whose child, memory, CPU ticks, and a cheap watch for "a new
//! child of this supervisor is running this program".
//!
//! Linux only, like the supervisors being measured. This kernel has no
//! `/proc/<pid>/task/<tid>/children`, so children are found from the
//! `ppid` field of `/proc/<pid>/stat`.

use std::time::{Duration, Instant};

/// The fields of `/proc/<pid>/stat` used here.
#[derive(Debug, Clone)]
pub struct Stat {
    /// Command name (15 characters at most; the kernel truncates).
    pub comm: String,
    /// `R`, `S`, `Z`, ...
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// User + system CPU time, in clock ticks (`CLK_TCK`, 100 on Linux).
    pub cpu_ticks: u64,
}

/// `/proc/<pid>/stat`, or `None` when the process is gone.
pub fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and parentheses: it ends at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let state = rest.first()?.chars().next()?;
    let ppid = rest.get(1)?.parse().ok()?;
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        cpu_ticks: utime + stime,
    })
}

/// Clock ticks per second of `cpu_ticks` (USER_HZ: 100 on every Linux
/// architecture that matters here).
pub const TICKS_PER_SEC: f64 = 100.0;

/// Whether `pid` exists and is not a zombie (the one judgement every
/// harness shares).
pub use switchboard_testkit::daemon::alive;

/// Every pid in `/proc`.
fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live children of `parent` (a full scan of `/proc`).
pub fn children(parent: u32) -> Vec<(u32, Stat)> {
    all_pids()
        .into_iter()
        .filter_map(|pid| stat(pid).map(|s| (pid, s)))
        .filter(|(_, s)| s.ppid == parent && s.state != 'Z')
        .collect()
}

/// Live descendants of `root` (children, their children, ...).
pub fn descendants(root: u32) -> Vec<u32> {
    let table: Vec<(u32, Stat)> = all_pids()
        .into_iter()
        .filter_map(|pid| stat(pid).map(|s| (pid, s)))
        .filter(|(_, s)| s.state != 'Z')
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, s) in &table {
            if s.ppid == p && !out.contains(pid) {
                out.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    out
}

/// Whether a (possibly truncated) kernel comm names `program`.
pub fn comm_is(comm: &str, program: &str) -> bool {
    !comm.is_empty() && (comm == program || (comm.len() == 15 && program.starts_with(comm)))
}

/// A field of `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM`, ...).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The most recently allocated pid (last field of `/proc/loadavg`).
fn newest_pid() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().last()?.parse().ok()
}

/// Watches for a new child of `parent` running `program`, cheaply enough
/// to poll every 100 µs: pids are handed out in increasing order, so only
/// the pids allocated since the last look (`/proc/loadavg` names the
/// newest) need a `stat`, plus the few children seen but not yet past
/// their `exec`.
#[derive(Debug)]
pub struct NewChild {
    parent: u32,
    program: String,
    /// Pids below this were looked at already.
    next: u32,
    /// Children of `parent` seen, not yet running `program`.
    pending: Vec<u32>,
}

impl NewChild {
    /// Start watching now: children that exist already do not count.
    pub fn new(parent: u32, program: &str) -> NewChild {
        NewChild {
            parent,
            program: program.to_owned(),
            next: newest_pid().map_or(0, |p| p + 1),
            pending: Vec::new(),
        }
    }

    /// One look; the pid of the new child once it runs `program`.
    pub fn poll(&mut self) -> Option<u32> {
        let newest = newest_pid()?;
        if newest + 1 < self.next {
            // pid numbers wrapped around: look at every child once.
            for (pid, _) in children(self.parent) {
                if !self.pending.contains(&pid) {
                    self.pending.push(pid);
                }
            }
        } else {
            for pid in self.next..=newest {
                // Thread ids share the pid space; a thread's stat names
                // its process's parent, so a new thread inside a child
                // lands here too. It never runs `program` under its
                // own tid unless it is the main thread, so it is harmless.
                if stat(pid).is_some_and(|s| s.ppid == self.parent) {
                    self.pending.push(pid);
                }
            }
        }
        self.next = newest + 1;
        let mut found = None;
        self.pending.retain(|&pid| match stat(pid) {
            Some(s) if s.ppid == self.parent && s.state != 'Z' => {
                if found.is_none() && comm_is(&s.comm, &self.program) {
                    found = Some(pid);
                }
                true
            }
            _ => false,
        });
        found
    }

    /// Poll every ~100 µs until found or `timeout`; the pid and when it
    /// was seen.
    pub fn wait(mut self, timeout: Duration) -> Option<(u32, Instant)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pid) = self.poll() {
                return Some((pid, Instant::now()));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// Wait (polling `/proc` every 10 ms) until `parent` has a live child
/// running `program`; its pid.
pub fn wait_for_child(parent: u32, program: &str, timeout: Duration) -> Option<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((pid, _)) = children(parent)
            .into_iter()
            .find(|(_, s)| comm_is(&s.comm, program))
        {
            return Some(pid);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Send `sig` to `pid` (errors ignored: it may be gone already).
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// Wait until every pid in `pids` is gone (or a zombie); the ones still
/// alive at `timeout`.
pub fn wait_gone(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGKILL every pid still alive in `pids`, and wait for them briefly;
/// the ones that had to be killed.
pub fn kill_leftovers(pids: &[u32]) -> Vec<u32> {
    let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    for &p in &left {
        signal(p, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = wait_gone(&left, Duration::from_secs(2));
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_stat() {
        let me = std::process::id();
        let s = stat(me).expect("own stat");
        assert_eq!(s.ppid, std::os::unix::process::parent_id());
        assert!(alive(me));
        assert!(status_kb(me, "VmRSS").is_some_and(|kb| kb > 0));
    }

    #[test]
    fn sees_a_new_child() {
        let me = std::process::id();
        let watch = NewChild::new(me, "sleep");
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let seen = watch.wait(Duration::from_secs(5));
        assert_eq!(seen.map(|(pid, _)| pid), Some(child.id()));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn truncated_comm() {
        assert!(comm_is("switchboard-pin", "switchboard-pingbot"));
        assert!(comm_is("sleep", "sleep"));
        assert!(!comm_is("sleepy", "sleep"));
        assert!(!comm_is("", "sleep"));
    }
}
