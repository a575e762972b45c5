//! Operator processes: spawn, capture output, stop.
//!
//! Invariants this module keeps:
//! - every operator runs in its own process group, so a stop reaches the
//!   helpers it forked too; in a sandbox (`crate::sandbox`) that group is
//!   the sandbox's init's, and the operator's pid namespace dies with its
//!   process, so nothing it started outlives it, whatever it did (setsid,
//!   double fork);
//! - every child gets `PR_SET_PDEATHSIG = SIGKILL`, so if the orchestrator
//!   is SIGKILLed its operators die with it. The signal follows the
//!   *thread* that spawned the child: children are spawned from tokio
//!   worker threads, which live as long as the runtime, never from the
//!   blocking pool (whose threads exit when idle and would take their
//!   children with them);
//! - stdout and stderr are always read, line by line, so a chatty operator
//!   can never block on a full pipe;
//! - every child is `wait()`ed: no zombies, and tokio keeps its own
//!   SIGCHLD handling (nothing here calls `waitpid(-1)`).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::outbox::{Lane, Outbox};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use switchboard_proto::api::LogLine;
use switchboard_proto::{log_subject, OperatorId, Timestamp};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Everything needed to start one operator process.
#[derive(Clone)]
pub struct LaunchSpec {
    /// Its ID.
    pub id: OperatorId,
    /// Resolved program path.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// The whole environment (nothing else is inherited from the
    /// orchestrator): launch variables, inherited names, the manifest's
    /// `env`. Holds credentials: never logged.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub workdir: Option<PathBuf>,
    /// Run as this uid and gid instead of the daemon's (supplementary
    /// groups are dropped).
    pub run_as: Option<RunAs>,
    /// Run inside this sandbox: bwrap and its arguments up to `--`
    /// (`crate::sandbox::Sandboxing::command`). `None`: unsandboxed.
    pub sandbox: Option<(PathBuf, Vec<OsString>)>,
}

impl std::fmt::Debug for LaunchSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The environment carries the NATS password and the resolved
        // config (which may hold secrets): names only.
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("LaunchSpec")
            .field("id", &self.id)
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &names)
            .field("workdir", &self.workdir)
            .field("run_as", &self.run_as)
            .field("sandboxed", &self.sandbox.is_some())
            .finish()
    }
}

/// A process could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start {program}: {source}")]
pub struct SpawnError {
    /// What we tried to run.
    pub program: String,
    /// Why it failed.
    #[source]
    pub source: std::io::Error,
}

/// A running operator process.
#[derive(Debug)]
pub struct OperatorProcess {
    /// The process the daemon started: the operator, or bwrap's monitor.
    child: tokio::process::Child,
    /// The operator's own process (host numbering): what `status` shows
    /// and `kill` reaches.
    pub pid: u32,
    /// The process group every stop and control signal goes to: the
    /// operator's own, or in a sandbox the init's (which the operator
    /// shares, and which bwrap's monitor is not in).
    pub group: u32,
    /// The sandbox's init (pid 1 of the operator's pid namespace, host
    /// numbering): killing it ends everything in the sandbox.
    pub sandbox_init: Option<u32>,
    /// The process the daemon started (bwrap's monitor in a sandbox, which
    /// leads a group of its own): what `leftovers` records, since killing
    /// it ends the sandbox too.
    pub leader: u32,
    /// When it was spawned.
    pub started: Instant,
    /// The uid and gid it runs as, when not the daemon's.
    pub run_as: Option<RunAs>,
}

/// The last lines each operator printed, for `switchboard logs`.
#[derive(Debug, Clone, Default)]
pub struct LogBook {
    inner: Arc<Mutex<std::collections::HashMap<String, VecDeque<LogLine>>>>,
}

/// Lines kept per operator.
pub const LOG_LINES_KEPT: usize = 1000;
/// Longer lines are cut (and the rest read as the next line), so one
/// runaway line cannot eat the orchestrator's memory.
const MAX_LINE: usize = 16 * 1024;

impl LogBook {
    fn push(&self, line: LogLine) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let q = map.entry(line.id.clone()).or_default();
        if q.len() == LOG_LINES_KEPT {
            q.pop_front();
        }
        q.push_back(line);
    }

    /// The last `n` lines of operator `id`, oldest first.
    pub fn tail(&self, id: &str, n: usize) -> Option<Vec<LogLine>> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).map(|q| {
            let skip = q.len().saturating_sub(n);
            q.iter().skip(skip).cloned().collect()
        })
    }

    /// Make sure `id` is known (so `logs` on a silent operator answers
    /// with no lines rather than "unknown").
    pub fn register(&self, id: &str) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.to_string()).or_default();
    }

    /// Forget a removed operator.
    pub fn forget(&self, id: &str) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }
}

impl OperatorProcess {
    /// Start `spec`. Output goes to the orchestrator's log (tagged with the
    /// ID), to `sb.log.<id>.<stream>` and to `logs`. In a sandbox, returns
    /// once bwrap has said which process is the sandbox's init and that
    /// init has forked the operator.
    pub async fn spawn(
        spec: &LaunchSpec,
        outbox: Option<Outbox>,
        logs: LogBook,
    ) -> Result<Self, SpawnError> {
        let spawn_error = |source| SpawnError {
            program: spec.program.display().to_string(),
            source,
        };
        let (mut cmd, info) = match &spec.sandbox {
            Some((bwrap, args)) => {
                let mut cmd = tokio::process::Command::new(bwrap);
                cmd.args(args).arg(&spec.program).args(&spec.args);
                // bwrap writes {"child-pid": N, ...} on fd 3.
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| spawn_error(std::io::Error::from(e)))?;
                let w = write.as_raw_fd();
                // SAFETY: runs between fork and exec, async-signal-safe
                // calls only (dup2, fcntl), no allocation.
                unsafe {
                    cmd.pre_exec(move || {
                        let ok = if w == 3 {
                            nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
                        } else {
                            nix::libc::dup2(w, 3)
                        };
                        if ok < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                (cmd, Some((read, write)))
            }
            None => {
                let mut cmd = tokio::process::Command::new(&spec.program);
                cmd.args(&spec.args);
                (cmd, None)
            }
        };
        // Nothing of the orchestrator's environment (its secrets,
        // systemd's notify socket) unless the spec says so.
        cmd.env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &spec.workdir {
            cmd.current_dir(dir);
        }
        if let Some(RunAs { uid, gid }) = spec.run_as {
            // std sets the gid, drops supplementary groups (when root) and
            // sets the uid before our pre_exec, so the parent-death signal
            // below is set under the new credentials (a credential change
            // would clear it).
            cmd.uid(uid).gid(gid);
        }
        crate::files::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(spawn_error)?;
        let leader = child.id().unwrap_or(0);
        let (pid, group, sandbox_init) = match info {
            None => (leader, leader, None),
            Some((read, write)) => {
                drop(write);
                match read_child_pid(read).await {
                    Some(init) => {
                        let pid = crate::sandbox::first_child(init, Duration::from_secs(2))
                            .await
                            .unwrap_or(init);
                        (pid, init, Some(init))
                    }
                    // bwrap failed before it cloned (it says why on
                    // stderr, which is in the logs): its own group.
                    None => (leader, leader, None),
                }
            }
        };
        // Output is read from here on (the pipes hold what it wrote while
        // bwrap reported its pid), each line tagged with the operator's
        // host pid for the journal.
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(
                spec.id.clone(),
                pid,
                "stdout",
                out,
                outbox.clone(),
                logs.clone(),
            ));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(spec.id.clone(), pid, "stderr", err, outbox, logs));
        }
        Ok(OperatorProcess {
            child,
            pid,
            group,
            sandbox_init,
            leader,
            started: Instant::now(),
            run_as: spec.run_as,
        })
    }

    /// Whether `reported` (a pid from a ready or heartbeat message) is this
    /// operator's: its own process or one in its group, or in a sandbox
    /// any process of its pid namespace (which numbers them from 1).
    pub fn owns(&self, reported: u32) -> bool {
        match self.sandbox_init {
            None => is_in_group(reported, self.group),
            Some(init) => crate::sandbox::members(init)
                .iter()
                .any(|&(host, inner)| inner == reported || host == reported),
        }
    }

    /// Wait for the process to exit, then kill whatever it left in its
    /// group (forked helpers must not outlive it).
    pub async fn wait(&mut self) -> ExitStatus {
        let status = match self.child.wait().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(pid = self.pid, error = %e, "wait failed");
                std::os::unix::process::ExitStatusExt::from_raw(0)
            }
        };
        self.signal_group(Signal::SIGKILL);
        match self.sandbox_init {
            Some(_) => sandboxed_status(status),
            None => status,
        }
    }

    /// Send `sig` to the whole process group (in a sandbox: the operator
    /// and the sandbox's init, which ignores all but SIGKILL and SIGSTOP
    /// and takes the whole sandbox down with it on SIGKILL; a process that
    /// left the group is still in the namespace that dies with the init).
    pub fn signal_group(&self, sig: Signal) {
        if self.group == 0 {
            return;
        }
        // ESRCH (group gone) is the normal case after an exit.
        let _ = killpg(Pid::from_raw(self.group as i32), sig);
    }

    /// SIGKILL everything: the group and, in a sandbox, bwrap's monitor
    /// too (tokio's kill, which never reaches a reaped pid). A monitor
    /// whose sandbox died while bwrap was still setting it up waits on
    /// it forever otherwise.
    fn kill_all(&mut self) {
        self.signal_group(Signal::SIGKILL);
        if self.sandbox_init.is_some() {
            let _ = self.child.start_kill();
        }
    }

    /// SIGTERM the group, wait up to `timeout`, then SIGKILL it; returns
    /// the exit status and whether it had to be killed.
    pub async fn stop(&mut self, timeout: Duration) -> (ExitStatus, bool) {
        self.signal_group(Signal::SIGCONT); // a stopped process cannot act on SIGTERM
        self.signal_group(Signal::SIGTERM);
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(_) => (self.wait().await, false),
            Err(_) => {
                tracing::warn!(pid = self.pid, ?timeout, "did not stop in time; SIGKILL");
                self.kill_all();
                (self.wait().await, true)
            }
        }
    }

    /// Kill the group at once (health failure) and reap.
    pub async fn kill(&mut self) -> ExitStatus {
        self.kill_all();
        self.wait().await
    }

    /// The child's exit, for `select!`.
    pub async fn exited(&mut self) -> ExitStatus {
        self.wait().await
    }
}

/// The Unix identity an operator runs as when its manifest names a
/// `user`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    /// The user id.
    pub uid: u32,
    /// The group id (the manifest's `group`, else the user's primary
    /// group).
    pub gid: u32,
}

/// A manifest's `user` or `group` names nobody on this machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunAsError {
    /// No such user name.
    #[error("user `{user}` does not exist on this machine (create it, or use a numeric uid)")]
    NoUser {
        /// The name given.
        user: String,
    },
    /// No such group name.
    #[error("group `{group}` does not exist on this machine")]
    NoGroup {
        /// The name given.
        group: String,
    },
    /// A numeric uid without an entry, so without a primary group.
    #[error("uid {uid} has no entry in the user database: set `group` too")]
    NoPrimaryGroup {
        /// The uid given.
        uid: u32,
    },
}

switchboard_proto::error_kinds!(
    /// Coarse classes of [`RunAsError`].
    RunAsError => RunAsErrorKind { NoUser, NoGroup, NoPrimaryGroup }
);

/// The uid and gid for a manifest's `user` and `group` (names or numbers).
///
/// # Errors
///
/// [`RunAsError`] naming the unknown user or group.
pub fn resolve_run_as(user: &str, group: Option<&str>) -> Result<RunAs, RunAsError> {
    use nix::unistd::{Group, User};
    let found = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| (u.uid.as_raw(), Some(u.gid.as_raw())))
            .or(Some((uid, None))),
        Err(_) => User::from_name(user)
            .ok()
            .flatten()
            .map(|u| (u.uid.as_raw(), Some(u.gid.as_raw()))),
    };
    let Some((uid, primary)) = found else {
        return Err(RunAsError::NoUser {
            user: user.to_owned(),
        });
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => Group::from_name(g)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
                .ok_or_else(|| RunAsError::NoGroup {
                    group: g.to_owned(),
                })?,
        },
        None => primary.ok_or(RunAsError::NoPrimaryGroup { uid })?,
    };
    Ok(RunAs { uid, gid })
}

/// bwrap exits with 128 + n when the operator was killed by signal n:
/// say so as the signal, as for an unsandboxed operator.
fn sandboxed_status(status: ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt as _;
    match status.code() {
        Some(code @ 129..=159) => ExitStatus::from_raw(code - 128),
        _ => status,
    }
}

/// Read bwrap's info fd up to the end of its JSON object: the host pid of
/// the sandbox's init. `None` when bwrap ended without writing it.
async fn read_child_pid(read: std::os::fd::OwnedFd) -> Option<u32> {
    let reader = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::from(read);
        let mut text = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while !text.contains(&b'}') && text.len() < 4096 {
            match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
            }
        }
        text
    });
    let text = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .ok()?
        .ok()?;
    let info: serde_json::Value = serde_json::from_slice(&text).ok()?;
    info.get("child-pid")?.as_u64()?.try_into().ok()
}

/// Whether `pid` is `leader` or a process in `leader`'s process group
/// (an operator's pid is its group id; a wrapper script's child counts as
/// the operator, a process from an earlier start does not).
pub fn is_in_group(pid: u32, leader: u32) -> bool {
    if pid == leader {
        return true;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    nix::unistd::getpgid(Some(Pid::from_raw(raw))).is_ok_and(|g| g.as_raw() as u32 == leader)
}

/// Describe an exit for people: "exited with code 1", "killed by SIGKILL".
pub fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exited with code {code}")
    } else if let Some(sig) = status.signal() {
        match Signal::try_from(sig) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        }
    } else {
        "ended".to_string()
    }
}

/// Read a stream line by line until EOF; each line goes to tracing (with
/// the operator's id and pid as fields: `journalctl OPERATOR=… PID=…`), the
/// log book and the bus.
async fn pump(
    id: OperatorId,
    pid: u32,
    stream: &'static str,
    reader: impl AsyncRead + Unpin,
    outbox: Option<Outbox>,
    logs: LogBook,
) {
    let mut reader = BufReader::with_capacity(8 * 1024, reader);
    let subject = log_subject(&id, stream);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        match read_line_capped(&mut reader, &mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(operator = %id, stream, error = %e, "output stream error");
                break;
            }
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let raw = String::from_utf8_lossy(&buf).into_owned();
        let (text, fields) = match crate::structured::parse(&raw) {
            Some((text, fields)) => (text, Some(fields)),
            None => (raw, None),
        };
        tracing::info!(target: "switchboard::operator", operator = %id, pid, stream, "{text}");
        let line = LogLine {
            id: id.to_string(),
            stream: stream.to_string(),
            line: text,
            fields,
            timestamp: Timestamp::now(),
        };
        if let Some(outbox) = &outbox {
            // Never waits for the bus: a chatty operator during an outage
            // must not stall anything (shed lines are counted).
            outbox.push_json(Lane::Log, subject.clone(), &line);
        }
        logs.push(line);
    }
}

/// `read_until(b'\n')` that stops at [`MAX_LINE`] bytes.
async fn read_line_capped(
    reader: &mut BufReader<impl AsyncRead + Unpin>,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(total);
        }
        let room = MAX_LINE - buf.len();
        let window = &available[..available.len().min(room)];
        if let Some(pos) = window.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&window[..=pos]);
            reader.consume(pos + 1);
            return Ok(total + pos + 1);
        }
        let n = window.len();
        buf.extend_from_slice(window);
        reader.consume(n);
        total += n;
        if buf.len() >= MAX_LINE {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(program: &str, args: &[&str]) -> LaunchSpec {
        LaunchSpec {
            id: OperatorId::new("t1").unwrap(),
            program: PathBuf::from(program),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("SECRET_THING".into(), "hunter2".into())],
            workdir: None,
            run_as: None,
            sandbox: None,
        }
    }

    #[tokio::test]
    async fn captures_output_lines_and_exit_codes() {
        let logs = LogBook::default();
        let mut p = OperatorProcess::spawn(
            &spec(
                "/bin/sh",
                &["-c", "echo one; echo two >&2; printf 'no newline'; exit 3"],
            ),
            None,
            logs.clone(),
        )
        .await
        .unwrap();
        let status = p.exited().await;
        assert_eq!(describe_exit(&status), "exited with code 3");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut lines: Vec<String> = logs
            .tail("t1", 10)
            .unwrap()
            .into_iter()
            .map(|l| format!("{}:{}", l.stream, l.line))
            .collect();
        lines.sort();
        assert_eq!(lines, ["stderr:two", "stdout:no newline", "stdout:one"]);
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_and_reaches_the_group() {
        // The shell ignores SIGTERM and leaves a grandchild in its group.
        let mut p = OperatorProcess::spawn(
            &spec("/bin/sh", &["-c", "trap '' TERM; sleep 30 & echo $!; wait"]),
            None,
            LogBook::default(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pgid = p.group;
        let (status, killed) = p.stop(Duration::from_millis(200)).await;
        assert!(killed);
        assert_eq!(describe_exit(&status), "killed by SIGKILL");
        // Nothing is left alive in the group (an orphaned grandchild may
        // linger as a zombie until init reaps it; that is not running).
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let live = live_members(pgid);
            if live.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still alive in group {pgid}: {live:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Non-zombie processes whose process group is `pgid`.
    fn live_members(pgid: u32) -> Vec<u32> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(rest) = stat.rsplit(')').next() else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str()) {
                out.push(pid);
            }
        }
        out
    }

    #[test]
    fn debug_never_shows_env_values() {
        let s = format!("{:?}", spec("/bin/true", &[]));
        assert!(s.contains("SECRET_THING") && !s.contains("hunter2"), "{s}");
    }

    #[tokio::test]
    async fn long_lines_are_cut_not_buffered_forever() {
        let logs = LogBook::default();
        let mut p = OperatorProcess::spawn(
            &spec(
                "/bin/sh",
                &["-c", "head -c 40000 /dev/zero | tr '\\0' x; echo"],
            ),
            None,
            logs.clone(),
        )
        .await
        .unwrap();
        p.exited().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let lines = logs.tail("t1", 10).unwrap();
        assert!(lines.len() >= 3, "{}", lines.len());
        assert!(lines.iter().all(|l| l.line.len() <= MAX_LINE));
    }

    #[test]
    fn run_as_names_what_is_unknown() {
        // root exists everywhere, with gid 0.
        assert_eq!(resolve_run_as("root", None), Ok(RunAs { uid: 0, gid: 0 }));
        assert_eq!(resolve_run_as("0", Some("7")), Ok(RunAs { uid: 0, gid: 7 }));
        let cases = [
            ("no-such-user-sb", None, RunAsErrorKind::NoUser),
            ("root", Some("no-such-group-sb"), RunAsErrorKind::NoGroup),
            // A uid with no passwd entry has no primary group to default to.
            ("3999999", None, RunAsErrorKind::NoPrimaryGroup),
        ];
        for (user, group, kind) in cases {
            let e = resolve_run_as(user, group).expect_err(user);
            assert_eq!(e.kind(), kind, "{user}: {e}");
        }
        assert_eq!(
            resolve_run_as("3999999", Some("5")),
            Ok(RunAs {
                uid: 3_999_999,
                gid: 5
            })
        );
    }
}
