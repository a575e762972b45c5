//! A process's resident memory and CPU time, from `/proc`: the kernel's
//! own figures, for `switchboard status` (the daemon's own) and the
//! dashboard (the daemon's, read from its child). One reader here, since
//! both need the same two numbers read the same way; it lives in the SDK
//! rather than in `proto` because it is no part of the wire contract.
//!
//! `None` wherever `/proc` does not show the process (another pid
//! namespace, or not Linux): a figure missing is said as missing, never
//! as zero.

/// Which process: this one, or another by pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// The calling process (`/proc/self`).
    Own,
    /// Another process.
    Pid(u32),
}

impl Process {
    fn file(self, name: &str) -> Option<String> {
        let path = match self {
            Process::Own => format!("/proc/self/{name}"),
            Process::Pid(pid) => format!("/proc/{pid}/{name}"),
        };
        std::fs::read_to_string(path).ok()
    }
}

/// Resident set size in bytes (`VmRSS` of `status`).
pub fn rss_bytes(process: Process) -> Option<u64> {
    let status = process.file("status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// CPU time spent, user and system, in seconds (the first field of
/// `schedstat`: time on the CPU in nanoseconds).
pub fn cpu_seconds(process: Process) -> Option<f64> {
    let sched = process.file("schedstat")?;
    let ns: u64 = sched.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_by_either_name() {
        let own = rss_bytes(Process::Own).expect("/proc/self/status");
        let by_pid = rss_bytes(Process::Pid(std::process::id())).expect("/proc/<pid>/status");
        assert!(own > 0 && by_pid > 0);
        assert!(cpu_seconds(Process::Own).is_some_and(|s| s > 0.0));
        assert_eq!(rss_bytes(Process::Pid(u32::MAX)), None);
        assert_eq!(cpu_seconds(Process::Pid(u32::MAX)), None);
    }
}
