//! The header: what machine and server produced the numbers, and when.
//!
//! Benchmark numbers without their machine are meaningless, and this
//! machine may be shared: the load average at the start says whether
//! something else was competing for the cores.

use std::path::Path;
use std::process::Command;

use time::macros::format_description;
use time::OffsetDateTime;

/// Facts about this run's environment; unknown ones say so.
#[derive(Debug)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cores: String,
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// `nats-server --version` of the server the bench started.
    pub nats_server: String,
    /// Load average (1, 5, 15 min) when the bench started.
    pub load: String,
    /// Start time, UTC.
    pub date: String,
}

impl Machine {
    /// Looks everything up; never fails (a missing fact reads `unknown`).
    pub fn describe(nats_server_bin: &Path) -> Machine {
        let unknown = || "unknown".to_owned();
        let cores = std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| unknown());
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, name)| name.trim().to_owned())
            })
            .unwrap_or_else(unknown);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| unknown());
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(unknown);
        let nats_server = Command::new(nats_server_bin)
            .arg("--version")
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| {
                let text = String::from_utf8_lossy(&out.stdout);
                let text = text.trim();
                text.strip_prefix("nats-server:")
                    .unwrap_or(text)
                    .trim()
                    .to_owned()
            })
            .unwrap_or_else(unknown);
        let date = OffsetDateTime::now_utc()
            .format(format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .unwrap_or_else(|_| unknown());
        Machine {
            cores,
            cpu,
            kernel,
            nats_server,
            load,
            date,
        }
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "date:        {}", self.date)?;
        writeln!(
            f,
            "machine:     {} cores ({}), Linux {}",
            self.cores, self.cpu, self.kernel
        )?;
        writeln!(f, "load avg:    {} (1/5/15 min, at start)", self.load)?;
        writeln!(f, "nats-server: {}", self.nats_server)?;
        write!(
            f,
            "build:       {}",
            if cfg!(debug_assertions) {
                "DEBUG (numbers are meaningless: use --release)"
            } else {
                "release"
            }
        )
    }
}
