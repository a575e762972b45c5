//! The daemon's resident memory and CPU time, from `/proc/<pid>`: the
//! dashboard runs on the daemon's machine (it is one of its children), so
//! these are the kernel's own figures, not estimates.

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
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    // First field: time on the CPU in nanoseconds.
    let sched = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let cpu_ns: u64 = sched.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        rss_bytes: rss_kb * 1024,
        cpu_seconds: cpu_ns as f64 / 1e9,
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
