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

/// CPU time spent by every thread, user plus system, in seconds: fields
/// 14 and 15 of `stat`, in USER_HZ ticks (100 a second on Linux). Not
/// `schedstat`, which is the main thread's alone: a tokio program works on
/// its worker threads (it showed 0.01 s of 0.17 s).
pub fn cpu_seconds(process: Process) -> Option<f64> {
    let stat = process.file("stat")?;
    // After the command's `)` comes field 3 (state), so 14 and 15 are the
    // 12th and 13th from there.
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: u64 = rest.next()?.parse().ok()?;
    let system: u64 = rest.next()?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_by_either_name() {
        let own = rss_bytes(Process::Own).expect("/proc/self/status");
        let by_pid = rss_bytes(Process::Pid(std::process::id())).expect("/proc/<pid>/status");
        assert!(own > 0 && by_pid > 0);
        // In ticks of 10 ms: a process this young may not have one yet.
        assert!(cpu_seconds(Process::Own).is_some_and(|s| s >= 0.0));
        assert_eq!(rss_bytes(Process::Pid(u32::MAX)), None);
        assert_eq!(cpu_seconds(Process::Pid(u32::MAX)), None);
    }

    #[test]
    fn cpu_time_counts_every_thread() {
        let before = cpu_seconds(Process::Own).expect("/proc/self/stat");
        std::thread::spawn(|| {
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed() < std::time::Duration::from_millis(200) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        })
        .join()
        .expect("the burning thread");
        let after = cpu_seconds(Process::Own).expect("/proc/self/stat");
        assert!(
            after - before >= 0.03,
            "200 ms of work on another thread: {before} -> {after}"
        );
    }
}
