//! Client instructions per delivered message, counted by callgrind: a
//! figure that does not move with the load on the machine.
//!
//! msgs/s and CPU time on a shared 2-core machine move by ±10% from one
//! run to the next; an instruction count moves by well under 1%. The bench
//! re-runs itself as a child (`--icount-child <case>`) under
//! `valgrind --tool=callgrind`: the child connects, subscribes, warms up,
//! then runs one throughput measurement of a fixed message count with the
//! same publisher, subscriber and window as the throughput table. Two
//! marker functions around that measurement tell callgrind to zero its
//! counters on entry ([`begin`]) and dump them ([`end`]), so connecting,
//! the runtime's start and the warm-up are not counted. The count covers
//! every thread of the process (publisher, subscriber, both connections),
//! as the `cpu` column of the throughput tables does.
//!
//! Callgrind runs the threads one at a time, so batching differs from a
//! native run (reads from the socket come in larger chunks); it does so
//! alike for raw and bus, which is what a ratio needs.

use std::path::{Path as FsPath, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::throughput;
use crate::workload::Path;

/// Marker: callgrind zeroes its counters when this is entered
/// (`--zero-before`). Not inlined and not empty, so that the symbol exists
/// and is called.
#[inline(never)]
pub fn begin() {
    std::hint::black_box(MARK_BEGIN);
}

/// Marker: callgrind writes its counters out when this is entered
/// (`--dump-before`).
#[inline(never)]
pub fn end() {
    std::hint::black_box(MARK_END);
}

// Distinct values, so that the two markers can never be folded into one
// function by the compiler.
const MARK_BEGIN: u32 = 0xb361;
const MARK_END: u32 = 0xe4d0;

/// The symbol patterns callgrind matches the markers by (demangled names).
const BEGIN_PATTERN: &str = "switchboard_bench::icount::begin";
const END_PATTERN: &str = "switchboard_bench::icount::end";

/// One case the child can run: how the messages travel and the body size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// Raw, raw + decode, or bus.
    pub path: Path,
    /// Body size in bytes.
    pub body: usize,
}

impl Case {
    /// The name the child is given on its command line, e.g. `bus-128`.
    pub fn arg(&self) -> String {
        let path = match self.path {
            Path::Raw => "raw",
            Path::RawDecode => "dec",
            Path::Bus { .. } => "bus",
        };
        format!("{path}-{}", self.body)
    }

    /// Parses [`Case::arg`]'s form; bus cases use `pattern`.
    pub fn parse(text: &str, pattern: &'static str) -> anyhow::Result<Case> {
        let (path, body) = text
            .split_once('-')
            .with_context(|| format!("icount case `{text}` is not <raw|dec|bus>-<bytes>"))?;
        let path = match path {
            "raw" => Path::Raw,
            "dec" => Path::RawDecode,
            "bus" => Path::Bus { pattern },
            other => bail!("icount case `{text}`: unknown path `{other}`"),
        };
        let body = body
            .parse()
            .with_context(|| format!("icount case `{text}`: body size is not a number"))?;
        Ok(Case { path, body })
    }
}

/// The child side: warm up, then one counted run between the markers.
/// Prints the number of messages delivered in the counted run.
pub async fn child(url: &str, case: Case, messages: u64, window: u64) -> anyhow::Result<()> {
    let spec = |messages, count_instructions| throughput::Spec {
        path: case.path,
        body: case.body,
        messages,
        budget: Duration::from_secs(600),
        window,
        server_pid: None,
        count_instructions,
    };
    throughput::run(url, spec((messages / 5).max(1_000), false))
        .await
        .context("icount warm-up")?;
    let outcome = throughput::run(url, spec(messages, true))
        .await
        .context("icount run")?;
    if !outcome.complete() {
        bail!(
            "icount run lost messages: {} of {}",
            outcome.received,
            outcome.sent
        );
    }
    println!("received {}", outcome.received);
    Ok(())
}

/// What one counted run gave.
#[derive(Debug, Clone, Copy)]
pub struct Count {
    /// Instructions (callgrind's `Ir`) of the counted run, all threads.
    pub instructions: u64,
    /// Messages delivered in it.
    pub messages: u64,
}

impl Count {
    /// Instructions per delivered message.
    pub fn per_message(&self) -> f64 {
        self.instructions as f64 / self.messages.max(1) as f64
    }
}

/// Whether callgrind can be run here: `None` when it can, else why not.
pub fn unavailable() -> Option<String> {
    match Command::new("valgrind").arg("--version").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "valgrind --version failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("valgrind not found ({e}); install valgrind")),
    }
}

/// Runs `case` in a child of this binary under callgrind and reads back
/// the count. `dir` receives callgrind's output files.
pub fn measure(
    url: &str,
    case: Case,
    messages: u64,
    window: u64,
    dir: &FsPath,
) -> anyhow::Result<Count> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let out_base = dir.join(format!("callgrind.{}", case.arg()));
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_base.display()))
        .arg(format!("--zero-before={BEGIN_PATTERN}"))
        .arg(format!("--dump-before={END_PATTERN}"))
        .arg("--dump-instr=no")
        .arg(&exe)
        .args(["--icount-child", &case.arg(), "--icount-url", url])
        .args(["--messages", &messages.to_string()])
        .args(["--window", &window.to_string()])
        .output()
        .context("running the bench under valgrind")?;
    if !output.status.success() {
        bail!(
            "callgrind run of {} failed ({}): {}",
            case.arg(),
            output.status,
            tail(&String::from_utf8_lossy(&output.stderr), 600)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let delivered = stdout
        .lines()
        .find_map(|l| l.strip_prefix("received "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .with_context(|| format!("the icount child said nothing about delivery: {stdout}"))?;
    let dump = first_dump(&out_base)?;
    let text =
        std::fs::read_to_string(&dump).with_context(|| format!("reading {}", dump.display()))?;
    let instructions =
        summary_ir(&text).with_context(|| format!("no `summary:` line in {}", dump.display()))?;
    Ok(Count {
        instructions,
        messages: delivered,
    })
}

/// The dump callgrind wrote when [`end`] was entered: `<base>.1`
/// (callgrind numbers dumps from 1; the one at exit comes after it).
fn first_dump(base: &FsPath) -> anyhow::Result<PathBuf> {
    let mut name = base.as_os_str().to_owned();
    name.push(".1");
    let path = PathBuf::from(name);
    if path.exists() {
        Ok(path)
    } else {
        bail!(
            "callgrind wrote no dump at the end marker ({} is missing): was the bench \
             built without its symbols?",
            path.display()
        )
    }
}

/// The `Ir` total of a callgrind output file (`summary: <n>` or
/// `totals: <n>`).
fn summary_ir(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The last `max` bytes of `text` (on a char boundary), for error messages.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_round_trip() {
        for case in [
            Case {
                path: Path::Raw,
                body: 128,
            },
            Case {
                path: Path::RawDecode,
                body: 1024,
            },
            Case {
                path: Path::Bus { pattern: "a.b" },
                body: 128,
            },
        ] {
            assert_eq!(Case::parse(&case.arg(), "a.b").expect("parses"), case);
        }
        assert!(Case::parse("bus", "a").is_err());
        assert!(Case::parse("zzz-1", "a").is_err());
    }

    #[test]
    fn reads_the_summary() {
        let text = "version: 1\nevents: Ir\nsummary: 123456\n";
        assert_eq!(summary_ir(text), Some(123_456));
        assert_eq!(summary_ir("totals: 7\n"), Some(7));
        assert_eq!(summary_ir("nothing"), None);
    }
}
