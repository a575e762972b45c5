//! `switchboard-burglar`: a hostile operator for the sandbox attack suite
//! (orchestrator/tests/attack.rs). With only what its process can do, it
//! tries to read what must stay hidden from it and to leave processes
//! behind, and writes what it got to `$SWITCHBOARD_STATE_DIR/report.json`
//! for the test to judge (the test knows the secrets; the burglar just
//! takes everything it can).
//!
//! Config: `targets` (paths to read: files whole, directories walked),
//! `marker` (a word in the command line of the processes it leaves
//! behind: one that calls `setsid()`, one orphaned by a double fork;
//! none without it), `token` (a secret a victim instance holds: the
//! suite checks that no burglar ever reads it).
//!
//! The report: every process it can see in `/proc` with its command line
//! and, when readable, its environment; every target with what it read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_bus::{run, Context, HandlerResult, Operator};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    targets: Vec<PathBuf>,
    #[serde(default)]
    marker: Option<String>,
    /// Held, never used: the victim's secret.
    #[serde(default)]
    #[allow(dead_code)]
    token: Option<String>,
}

/// At most this much of any one file goes into the report.
const KEEP: usize = 256 * 1024;

struct Burglar;

impl Operator for Burglar {
    type Config = Config;

    async fn start(&mut self, ctx: &mut Context, config: Config) -> HandlerResult {
        let Some(state) = ctx.launch().state_dir.clone() else {
            return Err("no SWITCHBOARD_STATE_DIR to report to".into());
        };
        if config.targets.is_empty() && config.marker.is_none() {
            return Ok(()); // a victim
        }
        let report = json!({
            "processes": processes(),
            "targets": config.targets.iter().map(|t| loot(t)).collect::<Vec<_>>(),
        });
        std::fs::write(state.join("report.json.tmp"), report.to_string())?;
        std::fs::rename(state.join("report.json.tmp"), state.join("report.json"))?;
        if let Some(marker) = &config.marker {
            let me = std::env::current_exe()?;
            // Orphaned by a double fork: the middle process exits at once.
            std::process::Command::new(&me)
                .args(["double-fork", marker])
                .spawn()?
                .wait()?;
            // Its own session, away from the operator's process group.
            std::process::Command::new(&me)
                .args(["orphan", marker, "setsid"])
                .spawn()?;
        }
        Ok(())
    }
}

/// Every process in `/proc`: pid, command line, environment if readable.
fn processes() -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let read = |what: &str| {
            std::fs::read(format!("/proc/{pid}/{what}"))
                .ok()
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        };
        out.push(json!({
            "pid": pid,
            "cmdline": read("cmdline"),
            "environ": read("environ"),
        }));
    }
    out
}

/// What `path` gave: its content (a file), or each file under it (a
/// directory), or the error.
fn loot(path: &Path) -> Value {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        if files.len() > 200 {
            break;
        }
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => match std::fs::read_dir(&p) {
                Ok(entries) => stack.extend(entries.flatten().map(|e| e.path())),
                Err(e) => errors.push(format!("{}: {e}", p.display())),
            },
            Ok(_) => match std::fs::read(&p) {
                Ok(bytes) => files.push(json!({
                    "path": p,
                    "content": String::from_utf8_lossy(&bytes[..bytes.len().min(KEEP)]),
                })),
                Err(e) => errors.push(format!("{}: {e}", p.display())),
            },
            Err(e) => errors.push(format!("{}: {e}", p.display())),
        }
    }
    json!({"path": path, "files": files, "errors": errors})
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("orphan") => {
            if args.get(3).map(String::as_str) == Some("setsid") {
                nix::unistd::setsid()?;
            }
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Some("double-fork") => {
            let me = std::env::current_exe()?;
            let marker = args.get(2).cloned().unwrap_or_default();
            std::process::Command::new(me)
                .args(["orphan", &marker, "plain"])
                .spawn()?;
            Ok(()) // exits without waiting: the orphan's parent is gone
        }
        _ => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            runtime.block_on(run(Burglar))?;
            Ok(())
        }
    }
}
