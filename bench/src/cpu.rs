//! CPU time of a process (all its threads), for "CPU per message".
//!
//! On a machine with few cores the client, the server and everything else
//! compete for the same CPUs, so msgs/s alone does not say *where* the
//! bus costs: CPU time per delivered message, for this process and for
//! nats-server separately, does. Linux only (`/proc/<pid>/task/*/
//! schedstat`, nanosecond resolution); elsewhere the numbers are absent.

use std::time::Duration;

/// Total CPU time consumed so far by the threads of process `pid` (this
/// process for `None`), or `None` where `/proc` does not tell.
///
/// Threads that exited are not counted; the ones that matter here (tokio
/// workers, nats-server's) live as long as the measurement.
pub fn process_time(pid: Option<u32>) -> Option<Duration> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}/task"),
        None => "/proc/self/task".to_owned(),
    };
    let mut total: u64 = 0;
    for entry in std::fs::read_dir(dir).ok()? {
        let Ok(entry) = entry else { continue };
        // A thread may exit between listing and reading: skip it.
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        let on_cpu: u64 = text.split_whitespace().next()?.parse().ok()?;
        total = total.saturating_add(on_cpu);
    }
    Some(Duration::from_nanos(total))
}

/// CPU time of this process and of the server, read together.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    client: Option<Duration>,
    server: Option<Duration>,
}

impl Snapshot {
    /// Reads both now.
    pub fn take(server_pid: Option<u32>) -> Snapshot {
        Snapshot {
            client: process_time(None),
            server: server_pid.and_then(|pid| process_time(Some(pid))),
        }
    }

    /// CPU used since `earlier`: (this process, server).
    pub fn since(&self, earlier: &Snapshot) -> (Option<Duration>, Option<Duration>) {
        let diff = |now: Option<Duration>, then: Option<Duration>| Some(now?.saturating_sub(then?));
        (
            diff(self.client, earlier.client),
            diff(self.server, earlier.server),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_grows() {
        let Some(before) = process_time(None) else {
            return; // not Linux: nothing to check
        };
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let after = process_time(None).expect("readable twice");
        assert!(after > before, "{after:?} <= {before:?} ({x})");
    }
}
