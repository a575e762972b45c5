//! docs/writing-operators.md, run as a newcomer would: every block of the
//! guide, in order. Files (```` ```python file=dicebot/dice.py ````) are
//! written under a temporary home; `sh` blocks run in one bash session
//! (`set -euo pipefail`, so a failing command fails the test; `expect=X`
//! means the output must contain X); `sh daemon` (`make run`) is the one
//! step the test does its own way: it starts `switchboard run` on the dev
//! config, on a free port; `rust excerpt=PATH` must be, line for line,
//! in that (compiled) file. A block of any other kind fails the test, so
//! nothing in the guide goes unchecked.
//!
//! `$SB`, the checkout, is a temporary copy of its layout: links to the
//! real `sdk/`, `operators/`, `.tools/` and Makefile, `target/release`
//! pointing to the debug binaries (no release build in tests), and a
//! real `deploy/dev/` whose `operators.d/` the guide writes into.
//!
//! Long (it installs the SDKs from PyPI and npm, compiles TypeScript and
//! runs the conformance kit four times): `make e2e-guide`, not `make test`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// One fenced block: its info string's words and its text.
struct Block {
    line: usize,
    info: Vec<String>,
    text: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    line: i + 1,
                    info: info.split_whitespace().map(str::to_owned).collect(),
                    text: String::new(),
                })
            }
            (Some(_), Some("")) => out.extend(open.take()),
            (Some(b), _) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed block");
    out
}

/// `key=value` from a block's info string.
fn attr<'a>(b: &'a Block, key: &str) -> Option<&'a str> {
    b.info
        .iter()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Processes stopped when the test ends, passing or not.
struct Reap(Vec<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SIGTERM first: the daemon stops its operators.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            for _ in 0..100 {
                if c.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The checkout's layout in `dir`, as described in the module docs.
fn checkout(dir: &Path) -> PathBuf {
    let root = switchboard_testkit::workspace_root();
    let sb = dir.join("switchboard");
    std::fs::create_dir_all(sb.join("target")).unwrap();
    std::fs::create_dir_all(sb.join("deploy/dev/operators.d")).unwrap();
    for name in ["Makefile", "sdk", "operators", ".tools", "scripts"] {
        std::os::unix::fs::symlink(root.join(name), sb.join(name)).unwrap();
    }
    let debug = switchboard_testkit::bin_path("switchboard")
        .parent()
        .unwrap()
        .to_owned();
    for name in ["release", "debug"] {
        std::os::unix::fs::symlink(&debug, sb.join("target").join(name)).unwrap();
    }
    let config = std::fs::read_to_string(root.join("deploy/dev/switchboard.toml")).unwrap();
    assert!(config.contains("port = 4222"), "{config}");
    std::fs::write(
        sb.join("deploy/dev/switchboard.toml"),
        config.replace("port = 4222", "port = 0"),
    )
    .unwrap();
    sb
}

#[test]
#[ignore = "long (PyPI, npm, tsc, four conformance runs): make e2e-guide"]
fn every_block_of_the_writing_operators_guide_works() {
    let root = switchboard_testkit::workspace_root();
    let guide = std::fs::read_to_string(root.join("docs/writing-operators.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sb = checkout(dir.path());
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let nats = switchboard_testkit::nats_server_bin().expect("nats-server (make tools)");

    let mut reap = Reap(Vec::new());
    let mut bash = Command::new("bash")
        .args(["--noprofile", "--norc"])
        .current_dir(&sb)
        .env("HOME", &home)
        .env_remove("SB")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("bash");
    let mut stdin = bash.stdin.take().unwrap();
    let stdout = bash.stdout.take().unwrap();
    reap.0.push(bash);
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    writeln!(stdin, "exec 2>&1; set -euo pipefail").unwrap();

    let mut ran = 0;
    for b in blocks(&guide) {
        let kind: Vec<&str> = b.info.iter().map(String::as_str).collect();
        match kind.as_slice() {
            ["sh", "daemon"] => {
                let daemon = Command::new(sb.join("target/release/switchboard"))
                    .arg("run")
                    .arg("--config")
                    .arg(sb.join("deploy/dev/switchboard.toml"))
                    .env("SWITCHBOARD_NATS_SERVER", &nats)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
                    .spawn()
                    .expect("switchboard run");
                reap.0.push(daemon);
                let runtime = sb.join(".run/run/switchboard.json");
                for _ in 0..300 {
                    if runtime.is_file() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                assert!(runtime.is_file(), "the dev daemon did not start");
            }
            ["sh", rest @ ..] if rest.iter().all(|w| w.starts_with("expect=")) => {
                let marker = format!("__guide_block_{}_done__", b.line);
                writeln!(stdin, "{}echo {marker}", b.text).unwrap();
                let mut output = String::new();
                loop {
                    match lines.recv_timeout(Duration::from_secs(600)) {
                        // A prompt without a newline (`chat`'s "> ") may
                        // come before the marker on its line.
                        Ok(l) if l.ends_with(&marker) => {
                            output.push_str(&l[..l.len() - marker.len()]);
                            break;
                        }
                        Ok(l) => {
                            output.push_str(&l);
                            output.push('\n');
                        }
                        Err(e) => panic!(
                            "the block at docs/writing-operators.md:{} failed ({e}):\n{}\n\
                             its output:\n{output}\ndaemon log:\n{}",
                            b.line,
                            b.text,
                            std::fs::read_to_string(dir.path().join("daemon.log"))
                                .unwrap_or_default()
                        ),
                    }
                }
                if let Some(want) = attr(&b, "expect") {
                    assert!(
                        output.contains(want),
                        "the block at docs/writing-operators.md:{} printed no {want:?}:\n{output}",
                        b.line
                    );
                }
            }
            [_, file] if file.starts_with("file=") => {
                let path = home.join(attr(&b, "file").unwrap());
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &b.text).unwrap();
            }
            ["rust", excerpt] if excerpt.starts_with("excerpt=") => {
                let source = std::fs::read_to_string(root.join(attr(&b, "excerpt").unwrap()))
                    .expect("the excerpt's file");
                assert!(
                    source.contains(&b.text),
                    "docs/writing-operators.md:{}: not in {excerpt}:\n{}",
                    b.line,
                    b.text
                );
            }
            other => panic!(
                "docs/writing-operators.md:{}: a block of kind {other:?} that no test runs",
                b.line
            ),
        }
        ran += 1;
    }
    assert!(ran >= 10, "only {ran} blocks: did the guide lose its code?");
    // The guide's bots answered in the dev daemon's chat above; what they
    // wrote into operators.d is the daemon's, not the checkout's.
    assert!(sb.join("deploy/dev/operators.d/dice.toml").is_file());
    drop(stdin);
    drop(reap);
}
