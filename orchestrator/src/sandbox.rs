//! The operator sandbox: each operator runs inside its own bubblewrap
//! (`bwrap`, Debian `bubblewrap`, the sandbox Flatpak uses), unprivileged.
//!
//! Why bubblewrap and not our own namespaces + Landlock, or a transient
//! systemd unit per operator: bwrap is one small, audited, widely packaged
//! setuid-free program that already does the fiddly parts right (user
//! namespace maps, pivot_root, a pid-1 reaper, `PR_SET_PDEATHSIG`,
//! `--cap-drop`); Landlock would add a crate and only restrict paths (no
//! pid namespace, so `/proc` would still show every process of the uid),
//! and systemd-run needs a system bus and root or a user manager, which a
//! daemon run from a shell or a container does not have. Cost: about
//! 5-15 ms per start (`make bench`, "sandbox" rows).
//!
//! What an operator sees ([`Sandboxing::command`]):
//! - the system, read-only: `/usr`, `/etc`, `/opt` and the `/bin`,
//!   `/lib*`, `/sbin` links or dirs; in `/etc`, the files only root should
//!   read (`shadow`, `ssh/`, `ssl/private`, `sudoers`) and `/etc/switchboard`
//!   are hidden (a root daemon's operators are uid 0 without capabilities,
//!   who would otherwise read root's 0600 files);
//! - a fresh `/proc` of its own pid namespace (its own processes only),
//!   a minimal `/dev`, an empty private `/tmp`;
//! - read-only, what it needs to run: its program's directory (the prefix
//!   above a `bin/`, for a venv or a Node install), the paths its
//!   arguments, its `workdir` and its manifest's `env` values name, and its
//!   manifest's `sandbox_binds`;
//! - its own state and scratch dirs read-write, its own runtime dir (config
//!   and credential files) read-only;
//! - the network (to reach NATS and its chat service).
//!
//! And not: the daemon's state and runtime dirs (runtime file, nats-server
//! config, JetStream store, other operators' files), its manifests and
//! config, home directories, other processes. A path it would otherwise
//! get that holds one of those is masked by an empty tmpfs.
//!
//! Processes: `--unshare-pid` makes bwrap's own init pid 1 of a namespace
//! that dies with it, and bwrap exits when the operator's process does, so
//! nothing it started (`setsid`, double fork) outlives it; `--new-session`
//! puts the operator in the init's process group, which the daemon signals
//! (`SIGTERM`, `SIGHUP`, `SIGSTOP`) without reaching bwrap's monitor.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `sandbox` in a manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxKind {
    /// Its own bubblewrap sandbox (the default).
    #[default]
    Bwrap,
    /// None: the operator sees what the daemon's uid sees, every process
    /// of that uid included. The daemon warns at each start.
    None,
}

impl SandboxKind {
    /// As written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxKind::Bwrap => "bwrap",
            SandboxKind::None => "none",
        }
    }
}

/// `[sandbox]` in switchboard.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// The bubblewrap program: a bare name looked up in `PATH`, or a path.
    /// Default `bwrap`.
    pub program: PathBuf,
    /// Refuse to start when operators cannot be sandboxed (no bwrap, or no
    /// unprivileged user namespaces), instead of warning once and running
    /// them unsandboxed. Default false.
    pub required: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            program: PathBuf::from("bwrap"),
            required: false,
        }
    }
}

/// The sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// bwrap is missing or does not work here, and the config requires it.
    #[error(
        "operators cannot be sandboxed: {reason}; install bubblewrap (Debian/Ubuntu: \
         `apt install bubblewrap`) and allow unprivileged user namespaces, or set \
         `[sandbox] required = false` to run them unsandboxed"
    )]
    Unavailable {
        /// What the probe found.
        reason: String,
    },
    /// A manifest asks to bind a path that holds the daemon's secrets.
    #[error(
        "`sandbox_binds` (or `sandbox_binds_rw`) names {}, which would show the daemon's private files ({}) to the \
         operator; bind a directory beside them instead",
        path.display(), private.display()
    )]
    PrivateBind {
        /// The path asked for.
        path: PathBuf,
        /// The private path it contains or lies in.
        private: PathBuf,
    },
}

switchboard_proto::error_kinds!(
    /// Coarse classes of [`SandboxError`].
    SandboxError => SandboxErrorKind { Unavailable, PrivateBind }
);

/// Whether and how operators are sandboxed on this host, decided once at
/// start.
#[derive(Debug, Clone)]
pub struct Sandboxing {
    /// The bwrap program, when it works here.
    program: Option<PathBuf>,
    /// Why not, when it does not.
    unavailable: Option<String>,
    /// The daemon's private paths: state and runtime dirs, manifests,
    /// config file.
    private: Vec<PathBuf>,
}

/// What one operator's sandbox contains besides the system.
#[derive(Debug, Clone, Default)]
pub struct SandboxPaths {
    /// Read-write: state and scratch dirs.
    pub writable: Vec<PathBuf>,
    /// Read-only and exact (never masked): its runtime dir with its config
    /// and credential files, credential files it is given by path.
    pub own_readonly: Vec<PathBuf>,
    /// Read-only, what it needs to run (program, arguments, env values,
    /// workdir): masked where they would show private paths.
    pub needed: Vec<PathBuf>,
    /// Read-only, from the manifest's `sandbox_binds` (checked).
    pub extra: Vec<PathBuf>,
    /// Read-write, from the manifest's `sandbox_binds_rw` (checked).
    pub extra_rw: Vec<PathBuf>,
    /// Whether it runs as uid 0 (a root daemon, no `user`): then root's
    /// own files in `/etc` are hidden too (each mask is a mount, so the
    /// others are spared them).
    pub as_root: bool,
}

/// What every operator's sandbox is made with, and so what the probe at
/// start must find working: new user, pid, ipc, uts and (where the kernel
/// has it) cgroup namespaces, no capabilities, gone with its parent, no
/// controlling terminal.
const ISOLATION: &[&str] = &[
    "--unshare-user",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--cap-drop",
    "ALL",
    "--die-with-parent",
    "--new-session",
];

/// Directories too broad to bind whole for a path found in an argument:
/// the file alone is bound instead.
const BROAD: &[&str] = &[
    "/", "/home", "/root", "/tmp", "/var", "/var/tmp", "/var/lib", "/run", "/etc", "/srv", "/mnt",
    "/media", "/usr", "/opt", "/dev", "/proc", "/sys", "/boot",
];

/// Always hidden: the conventional home of the daemon's config.
const DAEMON_ETC: &str = "/etc/switchboard";

/// Only root should read these; a root daemon's sandboxed operators are
/// uid 0 (without capabilities), so for them they are hidden.
const ROOT_ONLY: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/security/opasswd",
];

impl Sandboxing {
    /// Probe `config.program` once (a sandbox with the namespaces every
    /// operator gets, running `true`). Unavailable: an error when
    /// `required`, else a [`Sandboxing`] that runs operators unsandboxed
    /// and says why ([`Sandboxing::unavailable`]).
    ///
    /// # Errors
    ///
    /// [`SandboxError::Unavailable`] when required and unavailable.
    pub fn probe(
        config: &SandboxConfig,
        private: Vec<PathBuf>,
    ) -> Result<Sandboxing, SandboxError> {
        let result = probe_program(&config.program);
        match result {
            Ok(program) => Ok(Sandboxing {
                program: Some(program),
                unavailable: None,
                private,
            }),
            Err(reason) if config.required => Err(SandboxError::Unavailable { reason }),
            Err(reason) => Ok(Sandboxing {
                program: None,
                unavailable: Some(reason),
                private,
            }),
        }
    }

    /// No sandbox at all (tests of the process layer).
    pub fn disabled() -> Sandboxing {
        Sandboxing {
            program: None,
            unavailable: Some("sandboxing disabled".into()),
            private: Vec::new(),
        }
    }

    /// Why operators run unsandboxed on this host, if they do.
    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// What `status` and `validate` show for an operator with `kind`.
    pub fn describe(&self, kind: SandboxKind) -> String {
        match (kind, &self.program) {
            (SandboxKind::None, _) => "none".to_owned(),
            (SandboxKind::Bwrap, Some(_)) => "bwrap".to_owned(),
            (SandboxKind::Bwrap, None) => "none (bwrap unavailable)".to_owned(),
        }
    }

    /// Whether an operator with `kind` runs in a sandbox here.
    pub fn applies(&self, kind: SandboxKind) -> bool {
        kind == SandboxKind::Bwrap && self.program.is_some()
    }

    /// Refuse a `sandbox_binds` entry that contains or lies in one of the
    /// daemon's private paths.
    ///
    /// # Errors
    ///
    /// [`SandboxError::PrivateBind`].
    pub fn check_bind(&self, path: &Path) -> Result<(), SandboxError> {
        let path = canonical(path);
        for private in &self.private {
            if path.starts_with(private) || private.starts_with(&path) {
                return Err(SandboxError::PrivateBind {
                    path,
                    private: private.clone(),
                });
            }
        }
        Ok(())
    }

    /// The bwrap program and its arguments up to (and including) `--`,
    /// for an operator with `paths`; `None` when operators run
    /// unsandboxed here. The info fd (`--info-fd 3`) reports the pid of
    /// the sandbox's init (see [`crate::process`]).
    pub fn command(&self, paths: &SandboxPaths) -> Option<(PathBuf, Vec<OsString>)> {
        let program = self.program.clone()?;
        let mut a = Args::default();
        a.flags(ISOLATION);
        a.flags(&["--info-fd", "3"]);
        // The system, read-only.
        for dir in ["/usr", "/etc", "/opt"] {
            if Path::new(dir).is_dir() {
                a.bind("--ro-bind", Path::new(dir));
            }
        }
        for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            let p = Path::new(top);
            match std::fs::read_link(p) {
                Ok(target) => {
                    a.flags(&["--symlink"]);
                    a.path(&target);
                    a.path(p);
                }
                Err(_) if p.is_dir() => a.bind("--ro-bind", p),
                Err(_) => {}
            }
        }
        // A resolv.conf that links out of /etc (systemd-resolved).
        if let Ok(target) = std::fs::canonicalize("/etc/resolv.conf") {
            if !target.starts_with("/etc") && !target.starts_with("/usr") {
                if let Some(dir) = target.parent() {
                    a.bind("--ro-bind", dir);
                }
            }
        }
        a.flags(&["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
        // What it needs to run.
        let mut bound: Vec<PathBuf> = vec!["/usr".into(), "/etc".into(), "/opt".into()];
        for given in &paths.needed {
            let p = canonical(given);
            if self.private.iter().any(|private| p.starts_with(private)) {
                continue; // never a way into the daemon's files
            }
            if !bound.iter().any(|b| p.starts_with(b)) {
                a.bind("--ro-bind", &p);
                bound.push(p.clone());
            }
            // Reached through a symlink (a venv in a linked tools dir):
            // the same files at the path the command line uses too.
            if given.is_absolute() && *given != p && !bound.iter().any(|b| given.starts_with(b)) {
                a.flags(&["--ro-bind"]);
                a.path(&p);
                a.path(given);
                bound.push(given.clone());
            }
        }
        // Masks: the daemon's private paths and root's files, wherever a
        // bind above would show them.
        let root_only: &[&str] = if paths.as_root { ROOT_ONLY } else { &[] };
        let masks = self
            .private
            .iter()
            .cloned()
            .chain(std::iter::once(PathBuf::from(DAEMON_ETC)))
            .chain(root_only.iter().map(PathBuf::from));
        for m in masks {
            if !bound.iter().any(|b| m.starts_with(b)) {
                continue;
            }
            match std::fs::symlink_metadata(&m) {
                Ok(meta) if meta.is_dir() => {
                    a.flags(&["--tmpfs"]);
                    a.path(&m);
                }
                Ok(_) => {
                    a.flags(&["--ro-bind", "/dev/null"]);
                    a.path(&m);
                }
                Err(_) => {}
            }
        }
        // Its own, exact.
        for p in &paths.own_readonly {
            a.bind("--ro-bind", p);
        }
        for p in &paths.writable {
            a.bind("--bind", p);
        }
        for p in &paths.extra {
            a.bind("--ro-bind", &canonical(p));
        }
        for p in &paths.extra_rw {
            a.bind("--bind", &canonical(p));
        }
        a.flags(&["--"]);
        Some((program, a.0))
    }
}

/// bwrap's argument list being built.
#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn flags(&mut self, flags: &[&str]) {
        self.0.extend(flags.iter().map(OsString::from));
    }
    fn path(&mut self, p: &Path) {
        self.0.push(p.as_os_str().to_owned());
    }
    /// `flag src dest` with the same path inside.
    fn bind(&mut self, flag: &str, p: &Path) {
        self.flags(&[flag]);
        self.path(p);
        self.path(p);
    }
}

/// The path with symlinks resolved when it exists, else as given.
fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Run a sandbox like an operator's around `true` (once, at start: a few
/// milliseconds).
///
/// The error is the reason as shown to the user (in
/// [`SandboxError::Unavailable`], or by [`Sandboxing::unavailable`] in
/// the log and `validate`): callers branch on `required`, never on why.
fn probe_program(program: &Path) -> Result<PathBuf, String> {
    let resolved = if program.components().count() > 1 {
        program.to_path_buf()
    } else {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("`{}` is not on PATH", program.display()))?
    };
    let mut cmd = std::process::Command::new(&resolved);
    cmd.args(ISOLATION);
    cmd.args([
        "--ro-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "true",
    ])
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", resolved.display()))?;
    if out.status.success() {
        Ok(resolved)
    } else {
        let said = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{} fails here ({}): {}",
            resolved.display(),
            crate::process::describe_exit(&out.status),
            said.trim()
        ))
    }
}

/// The daemon's private paths, which every sandbox hides: state and
/// runtime dirs, manifests, the config file (symlinks resolved).
pub fn private_paths(config: &crate::config::Config, config_path: Option<&Path>) -> Vec<PathBuf> {
    let mut private = vec![
        config.state_dir.clone(),
        config.runtime_dir.clone(),
        config.manifests_dir.clone(),
    ];
    private.extend(config_path.map(|p| std::path::absolute(p).unwrap_or(p.to_path_buf())));
    private.iter().map(|p| canonical(p)).collect()
}

/// The paths an operator's command line needs inside its sandbox: the
/// program's directory (the prefix above `bin/`, so a venv's or a Node
/// install's libraries come along), and each argument and value that
/// names an existing path, absolute or relative to `cwd` (its directory
/// for a file, unless that is too broad: then the file alone). Values may
/// be `:`-separated lists (`NODE_PATH`, `PYTHONPATH`), and an argument
/// `NAME=value` counts as its value (`env PYTHONPATH=… python3 bot.py`).
pub fn needed_paths<'a>(
    program: &Path,
    words: impl IntoIterator<Item = &'a str>,
    cwd: Option<&Path>,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in [program.to_path_buf(), canonical(program)] {
        if let Some(dir) = p.parent() {
            let dir = match (dir.file_name(), dir.parent()) {
                (Some(name), Some(prefix)) if name == "bin" && !is_broad(prefix) => prefix,
                _ => dir,
            };
            if !is_broad(dir) {
                out.push(dir.to_path_buf());
            }
        }
    }
    for word in words {
        // `NAME=value` (an `env NAME=value program` wrapper, a common way
        // to run a script with its PYTHONPATH): the value names the path.
        let word = match word.split_once('=') {
            Some((name, value))
                if !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !name.as_bytes()[0].is_ascii_digit() =>
            {
                value
            }
            _ => word,
        };
        for part in word.split(':') {
            if part.is_empty() || part.starts_with('-') || part.contains('\0') {
                continue;
            }
            let p = Path::new(part);
            let p = match (p.is_absolute(), cwd) {
                (true, _) => p.to_path_buf(),
                (false, Some(cwd)) => cwd.join(p),
                (false, None) => continue,
            };
            let Ok(meta) = std::fs::metadata(&p) else {
                continue;
            };
            // As written (the sandbox shows it there, through any
            // symlink) and where it really is (for links inside it).
            for p in [p.clone(), canonical(&p)] {
                if meta.is_dir() {
                    if !is_broad(&p) {
                        out.push(p);
                    }
                } else {
                    // A program given as an argument (`env … venv/bin/python`)
                    // needs its prefix as the program itself does.
                    let dir = p.parent().map(|dir| match (dir.file_name(), dir.parent()) {
                        (Some(name), Some(prefix)) if name == "bin" && !is_broad(prefix) => prefix,
                        _ => dir,
                    });
                    match dir {
                        Some(dir) if !is_broad(dir) => out.push(dir.to_path_buf()),
                        _ => out.push(p),
                    }
                }
            }
        }
    }
    if let Some(cwd) = cwd {
        if !is_broad(cwd) {
            out.push(cwd.to_path_buf());
        }
    }
    out
}

/// `/`, a top-level system dir, or a home directory.
fn is_broad(p: &Path) -> bool {
    if BROAD.iter().any(|b| p == Path::new(b)) {
        return true;
    }
    // /home/<user>: a whole home.
    p.parent() == Some(Path::new("/home"))
}

/// The pid (host numbering) of each process in the sandbox whose init is
/// `init`, with the pid it has inside (the last of `NSpid`), found by
/// walking `/proc/<pid>/task/<tid>/children` from the init.
pub fn members(init: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![init];
    while let Some(pid) = stack.pop() {
        if out.len() > 4096 {
            break; // a fork bomb: enough
        }
        if let Some(inner) = inner_pid(pid) {
            out.push((pid, inner));
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// The pid `pid` has in its innermost pid namespace.
pub fn inner_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// The first child of the sandbox's init (the operator's own process),
/// waiting up to `within` for the init to fork it; `None` when the init is
/// gone (or a zombie: the operator exited at once) or has not forked by
/// then.
pub async fn first_child(init: u32, within: Duration) -> Option<u32> {
    let deadline = tokio::time::Instant::now() + within;
    let path = format!("/proc/{init}/task/{init}/children");
    loop {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                if let Some(pid) = text.split_whitespace().next().and_then(|c| c.parse().ok()) {
                    return Some(pid);
                }
            }
            Err(_) => return None,
        }
        let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.trim_start().chars().next());
        if !matches!(state, Some('R' | 'S' | 'D')) {
            return None; // exited (zombie), stopped or gone: no child is coming
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_env_assignment_argument_names_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib");
        std::fs::create_dir_all(&lib).unwrap();
        let arg = format!("PYTHONPATH={}", lib.display());
        let paths = needed_paths(Path::new("/usr/bin/env"), [arg.as_str()], None);
        assert!(paths.contains(&lib), "{paths:?}");
        // A program as an argument brings its prefix, as the program does.
        std::fs::create_dir_all(dir.path().join("venv/bin")).unwrap();
        let python = dir.path().join("venv/bin/python");
        std::fs::write(&python, "").unwrap();
        let python = python.display().to_string();
        let paths = needed_paths(Path::new("/usr/bin/env"), [python.as_str()], None);
        assert!(paths.contains(&dir.path().join("venv")), "{paths:?}");
        // Not a variable name before `=`: the word as written (no path).
        let odd = format!("-X={}", lib.display());
        let paths = needed_paths(Path::new("/usr/bin/env"), [odd.as_str()], None);
        assert!(!paths.contains(&lib), "{paths:?}");
    }

    #[test]
    fn needed_paths_take_the_prefix_of_a_bin_dir_and_never_a_broad_dir() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("venv");
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        std::fs::write(venv.join("bin/python"), "").unwrap();
        std::fs::write(dir.path().join("op.py"), "").unwrap();
        let paths = needed_paths(
            &venv.join("bin/python"),
            ["op.py", "--flag", "/", "/etc/hostname", "not-a-path"],
            Some(dir.path()),
        );
        let venv = canonical(&venv);
        let root = canonical(dir.path());
        assert!(paths.contains(&venv), "{paths:?}");
        assert!(paths.contains(&root), "{paths:?}");
        assert!(!paths.contains(&PathBuf::from("/")), "{paths:?}");
        assert!(!paths.contains(&PathBuf::from("/etc")), "{paths:?}");
    }

    #[test]
    fn a_bind_into_or_around_a_private_dir_is_refused() {
        let s = Sandboxing {
            program: None,
            unavailable: None,
            private: vec![PathBuf::from("/var/lib/switchboard")],
        };
        for bad in ["/var/lib/switchboard/operators/x", "/var/lib"] {
            let e = s.check_bind(Path::new(bad)).unwrap_err();
            assert_eq!(e.kind(), SandboxErrorKind::PrivateBind, "{bad}");
        }
        s.check_bind(Path::new("/srv/data")).unwrap();
    }
}
