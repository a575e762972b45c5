//! The daemon's resident memory and CPU time, from `/proc/<pid>`: the
//! dashboard runs on the daemon's machine (it is one of its children), so
//! these are the kernel's own figures, not estimates. The reading is the
//! SDK's ([`switchboard_bus::usage`], which the daemon uses for its own
//! status); this is the shape the page gets.

use switchboard_bus::usage::{self, Process};

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Resident set size in bytes (`VmRSS`).
    pub rss_bytes: u64,
    /// CPU time spent, user and system, in seconds (`schedstat`).
    pub cpu_seconds: f64,
}

/// Read `pid`'s figures; `None` when `/proc` does not show it (another
/// pid namespace, or not Linux).
pub fn sample(pid: u32) -> Option<Sample> {
    Some(Sample {
        rss_bytes: usage::rss_bytes(Process::Pid(pid))?,
        cpu_seconds: usage::cpu_seconds(Process::Pid(pid))?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_its_own_process() {
        let s = super::sample(std::process::id()).expect("/proc/self");
        assert!(s.rss_bytes > 0);
        assert!(super::sample(u32::MAX).is_none());
    }
}
