//! The daemon's resident memory and CPU time, from `/proc/<pid>`: the
//! dashboard runs on the daemon's machine (it is one of its children), so
//! these are the kernel's own figures, not estimates.

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Resident set size in bytes (`VmRSS`).
    pub rss_bytes: u64,
    /// CPU time spent by every thread, user and system, in seconds.
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
    // User and system time of every thread, fields 14 and 15 of `stat`
    // in USER_HZ ticks (100 a second on Linux); `schedstat` would be the
    // main thread's alone, a small part of a tokio program's.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: u64 = rest.next()?.parse().ok()?;
    let system: u64 = rest.next()?.parse().ok()?;
    Some(Sample {
        rss_bytes: rss_kb * 1024,
        cpu_seconds: (user + system) as f64 / 100.0,
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

    #[test]
    fn cpu_time_counts_every_thread() {
        let me = std::process::id();
        let before = super::sample(me).expect("/proc/self").cpu_seconds;
        std::thread::spawn(|| {
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed() < std::time::Duration::from_millis(200) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        })
        .join()
        .expect("the burning thread");
        let after = super::sample(me).expect("/proc/self").cpu_seconds;
        assert!(
            after - before >= 0.03,
            "200 ms of work on another thread: {before} -> {after}"
        );
    }
}
