//! The speed guard: client instructions per message (callgrind, which is
//! deterministic within about 1%, unlike msgs/s on a shared machine) of
//! the bus against raw async-nats at 128 B and 1 KiB, and of the stored
//! publish, compared with the budgets in `bus/perf-budgets.txt`. A case
//! more than 5% over its budget fails, saying by how much.
//!
//! Why in `make test`: the publish/receive path once got 65% more
//! expensive (a NATS header on every message) and nothing noticed until
//! the next `make bench` (issue 21). A speed-up lowers the budget in the
//! same commit; a change that must cost more raises it and says why.
//!
//! The cases run `examples/icount.rs` built in release (`make test` builds
//! it first; the test fails if it is missing or older than the sources)
//! under valgrind.

use std::path::{Path, PathBuf};
use std::process::Command;

use switchboard_testkit::NatsServer;

/// How far over budget a case may be before the guard fails.
const TOLERANCE: f64 = 0.05;

/// Messages per counted run (plus a fifth of that to warm up).
const MESSAGES: u64 = 4_000;
/// Stored publishes wait for an ack each: fewer.
const STORED_MESSAGES: u64 = 1_000;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bus/ has a parent")
        .to_path_buf()
}

/// Budgets: `<case> <instructions per message>` lines, `#` comments.
fn budgets(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (case, n) = l
                .split_once(char::is_whitespace)
                .unwrap_or_else(|| panic!("budget line `{l}` is not `<case> <number>`"));
            let n: f64 = n
                .trim()
                .replace(['_', ','], "")
                .parse()
                .unwrap_or_else(|_| panic!("budget line `{l}`: not a number"));
            (case.to_string(), n)
        })
        .collect()
}

/// What builds the counted binary; `make test` runs it before the tests
/// (a build inside a test would share the cores with the other tests, and
/// cargo under the test runner sees another environment and rebuilds).
const BUILD: &str = "cargo build --release -p switchboard-bus --example icount";

/// The example, built in release and newer than every source it counts.
fn icount_binary() -> PathBuf {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let exe = target.join("release/examples/icount");
    let built = std::fs::metadata(&exe)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{} is missing ({e}): run `{BUILD}`", exe.display()));
    let mut stale = Vec::new();
    // Sources only: cargo rebuilds the example when one of them is newer;
    // a Cargo.lock change that leaves bus's dependencies alone rebuilds
    // nothing, so its time says nothing about the binary.
    for dir in ["bus/src", "bus/examples", "proto/src"] {
        newer_than(&root.join(dir), built, &mut stale);
    }
    assert!(
        stale.is_empty(),
        "{} is older than {}: run `{BUILD}`",
        exe.display(),
        stale.join(", ")
    );
    exe
}

/// Files under `path` modified after `built`.
fn newer_than(path: &Path, built: std::time::SystemTime, out: &mut Vec<String>) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            newer_than(&entry.path(), built, out);
        }
    } else if meta.modified().is_ok_and(|m| m > built) {
        out.push(path.display().to_string());
    }
}

/// Instructions per message of `case` under callgrind.
fn measure(exe: &Path, url: &str, case: &str, messages: u64, dir: &Path) -> f64 {
    let out = dir.join(format!("callgrind.{case}"));
    let run = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("--zero-before=icount::begin")
        .arg("--dump-before=icount::end")
        .arg("--dump-instr=no")
        .arg(exe)
        .args([case, url, &messages.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("valgrind not runnable ({e}); `make tools` installs it"));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{case} under callgrind failed: {}\n{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    let received: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("received "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{case}: no `received` line in {stdout}"));
    assert_eq!(received, messages, "{case} lost messages");
    let dump = dir.join(format!("callgrind.{case}.1"));
    let text = std::fs::read_to_string(&dump)
        .unwrap_or_else(|e| panic!("{case}: no dump at the end marker {}: {e}", dump.display()));
    let total: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{case}: no summary line in {}", dump.display()));
    total as f64 / messages as f64
}

#[test]
fn instructions_per_message_stay_within_budget() {
    let file = workspace_root().join("bus/perf-budgets.txt");
    let text = std::fs::read_to_string(&file).expect("bus/perf-budgets.txt");
    let budgets = budgets(&text);
    assert!(!budgets.is_empty(), "no budgets in {}", file.display());
    let exe = icount_binary();
    let server = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().expect("temp dir");
    // The raw async-nats cases are the reference: measured first, and
    // every other case is compared relative to the reference of its size,
    // so that another CPU (memchr picks its SIMD at run time) or toolchain
    // moves the budgets with it instead of failing the guard. A change in
    // the raw figures alone (a dependency upgrade) is printed, not failed.
    let mut measured: Vec<(String, f64)> = Vec::new();
    let mut over = Vec::new();
    let mut ordered: Vec<&(String, f64)> = budgets
        .iter()
        .filter(|(c, _)| c.starts_with("raw-"))
        .collect();
    ordered.extend(budgets.iter().filter(|(c, _)| !c.starts_with("raw-")));
    for (case, budget) in ordered {
        let messages = if case.starts_with("stored") {
            STORED_MESSAGES
        } else {
            MESSAGES
        };
        let got = measure(&exe, &server.url(), case, messages, dir.path());
        let size = case.rsplit('-').next().unwrap_or("");
        let reference = format!("raw-{size}");
        let scale = if case.starts_with("raw-") {
            1.0
        } else {
            let raw_got = measured
                .iter()
                .find(|(c, _)| *c == reference)
                .map(|(_, n)| *n);
            let raw_budget = budgets
                .iter()
                .find(|(c, _)| *c == reference)
                .map(|(_, n)| *n);
            match (raw_got, raw_budget) {
                (Some(g), Some(b)) => g / b,
                _ => 1.0,
            }
        };
        let excess = got / (budget * scale) - 1.0;
        eprintln!(
            "{case}: {got:.0} instructions/msg, budget {budget:.0} x reference {scale:.3} ({:+.1}%)",
            excess * 100.0
        );
        if case.starts_with("raw-") {
            if (excess.abs()) > TOLERANCE {
                eprintln!(
                    "note: the raw reference {case} moved {:+.1}% from its budget (another CPU, \
                     toolchain or async-nats): the other cases are compared relative to it",
                    excess * 100.0
                );
            }
        } else if excess > TOLERANCE {
            over.push(format!(
                "{case}: {got:.0} instructions/msg is {:.1}% over its budget {budget:.0} \
                 (scaled by the raw reference's {scale:.3})",
                excess * 100.0
            ));
        }
        measured.push((case.clone(), got));
    }
    for size in ["128", "1024"] {
        let get = |path: &str| {
            measured
                .iter()
                .find(|(c, _)| *c == format!("{path}-{size}"))
                .map(|(_, n)| *n)
        };
        if let (Some(bus), Some(raw)) = (get("bus"), get("raw")) {
            eprintln!("bus/raw at {size} B: {:.2}x", bus / raw);
        }
    }
    assert!(
        over.is_empty(),
        "over budget (more than {:.0}%; {}): {}. Find what costs more (callgrind_annotate on \
         the dumps, see docs/benchmarks.md) or, if it must, raise the budget in the same commit \
         and say why",
        TOLERANCE * 100.0,
        file.display(),
        over.join("; ")
    );
}
