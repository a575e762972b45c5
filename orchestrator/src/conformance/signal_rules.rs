//! The rules for an operator controlled by signals (`control =
//! "signals"`): it sends no ready, heartbeats or acks, so the kit judges
//! the process itself. It stays up, is frozen by halt (SIGSTOP) and
//! thawed by resume (SIGCONT), survives a reload (SIGHUP: a process
//! without a handler dies of it), and exits 0 on SIGTERM within
//! `stop_timeout`.

use std::time::Duration;

use switchboard_proto::Verb;

use super::harness::{alive, proc_state, Harness};
use super::nats_rules::clean_exit;
use super::{hygiene, Verdict};

/// How long it must stay up after starting, and after a reload.
const SETTLE: Duration = Duration::from_millis(600);

/// Check every rule; SIGTERM last.
pub async fn check(h: &mut Harness) -> Vec<Verdict> {
    let mut out = Vec::new();
    let Some(pid) = h.wait_pid(Duration::from_secs(10)).await else {
        out.push(Verdict::fail("starts", "the daemon could not start it"));
        return out;
    };
    tokio::time::sleep(SETTLE).await;
    let starts = if alive(pid) {
        Verdict::pass("starts", format!("process {pid} up after {SETTLE:?}"))
    } else {
        Verdict::fail("starts", format!("process {pid} exited within {SETTLE:?}"))
    };
    let up = starts.passed;
    out.push(starts);
    if !up {
        return out;
    }
    out.push(Verdict::from_result(
        "halt-resume",
        halt_resume(h, pid).await,
    ));
    out.push(Verdict::from_result("sighup-reload", reload(h, pid).await));
    if !alive(pid) {
        // Nothing else can be judged on a dead process.
        out.push(hygiene::own_subjects(h));
        return out;
    }
    out.push(hygiene::survives_garbage(h, pid, SETTLE).await);
    out.push(Verdict::from_result("sigterm", sigterm(h, pid).await));
    out.push(hygiene::own_subjects(h));
    out
}

/// Wait (briefly) until the process state letter satisfies `want`.
async fn wait_state(pid: u32, want: impl Fn(char) -> bool) -> Option<char> {
    for _ in 0..100 {
        let s = proc_state(pid)?;
        if want(s) {
            return Some(s);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proc_state(pid)
}

/// `switchboard ctl halt` stops the process, `resume` continues it, and
/// it is still alive afterwards.
async fn halt_resume(h: &Harness, pid: u32) -> Result<String, String> {
    h.ctl(Verb::Halt, None).await?;
    let s = wait_state(pid, |s| s == 'T').await;
    if s != Some('T') {
        return Err(format!(
            "after halt (SIGSTOP) process {pid} is in state {s:?}, not stopped"
        ));
    }
    h.ctl(Verb::Resume, None).await?;
    let s = wait_state(pid, |s| s != 'T').await;
    if s == Some('T') || !alive(pid) {
        return Err(format!(
            "after resume (SIGCONT) process {pid} is in state {s:?}"
        ));
    }
    Ok("halt froze it, resume thawed it".into())
}

/// `switchboard ctl reload` (SIGHUP): the same process is alive after.
async fn reload(h: &Harness, pid: u32) -> Result<String, String> {
    h.ctl(Verb::Reload, None).await?;
    tokio::time::sleep(SETTLE).await;
    if !alive(pid) {
        return Err(format!(
            "process {pid} did not survive SIGHUP ({}): handle it (re-read \
             SWITCHBOARD_CONFIG_FILE), in every process of its group",
            h.obituary().await
        ));
    }
    Ok("survived SIGHUP, same process".into())
}

/// SIGTERM: exit 0 within `stop_timeout`.
async fn sigterm(h: &mut Harness, pid: u32) -> Result<String, String> {
    super::harness::terminate(pid)?;
    clean_exit(h, pid, "after SIGTERM").await
}
