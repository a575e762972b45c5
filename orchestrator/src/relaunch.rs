//! The daemon restarting itself in place (`switchboard rolling-restart`,
//! the `restart` API method): once it has left the cluster and stopped
//! its nats-server, it executes its program again with its original
//! arguments, in the same process, so the pid stays (systemd's
//! `MAINPID`, `make run`'s child, a supervisor's handle keep pointing
//! at it) and the new program's start-up sends `READY=1` again.
//!
//! Which program: the path the daemon was *started from*, resolved when
//! it starts, not `/proc/self/exe`. After a package upgrade replaced the
//! file, `/proc/self/exe` names the old, deleted inode (`... (deleted)`),
//! and executing it would run the old version again; the path names the
//! new file, which is the point of restarting after an upgrade. A symlink
//! (`/usr/bin/switchboard -> /opt/switchboard-2/switchboard`) is kept as a
//! symlink for the same reason: an upgrade may move it.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// How to start this program again: the path it was started from, and
/// its arguments (the first one included).
#[derive(Debug, Clone)]
pub struct Relaunch {
    program: PathBuf,
    args: Vec<OsString>,
}

/// Why the program cannot be executed again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelaunchError {
    /// The program was not found when the daemon started.
    #[error(
        "cannot tell which program to restart: `{argv0}` is neither a path nor found in $PATH; \
         start switchboard by its full path to use `rolling-restart`"
    )]
    NotFound {
        /// The first argument the daemon was started with.
        argv0: String,
    },
    /// `execv` failed (the file was removed, is not executable, ...).
    #[error(
        "cannot execute {} again: {source}; the daemon exits (systemd's Restart=on-failure \
         starts it again; elsewhere start it by hand)",
        program.display()
    )]
    Exec {
        /// The program.
        program: PathBuf,
        /// What `execv` said.
        source: nix::Error,
    },
}

/// The kinds of [`RelaunchError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelaunchErrorKind {
    /// [`RelaunchError::NotFound`].
    NotFound,
    /// [`RelaunchError::Exec`].
    Exec,
}

impl RelaunchError {
    /// What kind of failure.
    pub fn kind(&self) -> RelaunchErrorKind {
        match self {
            RelaunchError::NotFound { .. } => RelaunchErrorKind::NotFound,
            RelaunchError::Exec { .. } => RelaunchErrorKind::Exec,
        }
    }
}

impl Relaunch {
    /// This process's program and arguments, as it was started: call it
    /// first thing, before anything could change the current directory.
    ///
    /// # Errors
    ///
    /// [`RelaunchError::NotFound`] when the first argument is a bare
    /// name not found in `$PATH` (or there is none).
    pub fn capture() -> Result<Relaunch, RelaunchError> {
        let args: Vec<OsString> = std::env::args_os().collect();
        let argv0 = args.first().cloned().unwrap_or_default();
        let program = resolve(
            &argv0,
            std::env::current_dir().ok().as_deref(),
            std::env::var_os("PATH").as_deref(),
        )
        .ok_or_else(|| RelaunchError::NotFound {
            argv0: argv0.to_string_lossy().into_owned(),
        })?;
        Ok(Relaunch { program, args })
    }

    /// The program that will be executed.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Replace this process with the program, same arguments, same
    /// environment (`NOTIFY_SOCKET` included, so the new start-up's
    /// `READY=1` reaches systemd). Returns only on failure.
    ///
    /// Call it with nothing left running that must not be cut off: every
    /// other thread ends with the old program. Descriptors opened by Rust
    /// and tokio are close-on-exec, so the runtime and state locks are
    /// released and the new program takes them.
    pub fn exec(&self) -> RelaunchError {
        let c = |s: &OsStr| std::ffi::CString::new(s.as_bytes());
        let program = match c(self.program.as_os_str()) {
            Ok(p) => p,
            Err(_) => {
                return RelaunchError::Exec {
                    program: self.program.clone(),
                    source: nix::Error::EINVAL,
                }
            }
        };
        let args: Result<Vec<_>, _> = self.args.iter().map(|a| c(a)).collect();
        let Ok(args) = args else {
            return RelaunchError::Exec {
                program: self.program.clone(),
                source: nix::Error::EINVAL,
            };
        };
        match nix::unistd::execv(&program, &args) {
            Ok(never) => match never {},
            Err(source) => RelaunchError::Exec {
                program: self.program.clone(),
                source,
            },
        }
    }
}

/// The path `argv0` names: with a `/`, as given (made absolute against
/// `cwd`); a bare name, the first executable file of that name in
/// `path` (as the shell found it).
fn resolve(argv0: &OsStr, cwd: Option<&Path>, path: Option<&OsStr>) -> Option<PathBuf> {
    if argv0.is_empty() {
        return None;
    }
    if argv0.as_bytes().contains(&b'/') {
        let p = Path::new(argv0);
        return Some(match cwd {
            Some(cwd) if p.is_relative() => cwd.join(p),
            _ => p.to_path_buf(),
        });
    }
    std::env::split_paths(path?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(argv0))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_kept_as_given_and_made_absolute() {
        let cwd = Path::new("/srv/sb");
        assert_eq!(
            resolve(OsStr::new("/usr/bin/switchboard"), Some(cwd), None),
            Some(PathBuf::from("/usr/bin/switchboard"))
        );
        assert_eq!(
            resolve(OsStr::new("./target/debug/switchboard"), Some(cwd), None),
            Some(PathBuf::from("/srv/sb/./target/debug/switchboard"))
        );
    }

    #[test]
    fn a_bare_name_is_found_in_path_like_the_shell_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let not_exec = dir.path().join("a");
        let exec = dir.path().join("b");
        std::fs::create_dir_all(&not_exec).expect("mkdir");
        std::fs::create_dir_all(&exec).expect("mkdir");
        std::fs::write(not_exec.join("switchboard"), "").expect("write");
        std::fs::write(exec.join("switchboard"), "").expect("write");
        std::fs::set_permissions(
            exec.join("switchboard"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        let path = std::env::join_paths([&not_exec, &exec]).expect("join");
        assert_eq!(
            resolve(OsStr::new("switchboard"), None, Some(&path)),
            Some(exec.join("switchboard"))
        );
        assert_eq!(resolve(OsStr::new("nosuch"), None, Some(&path)), None);
        assert_eq!(resolve(OsStr::new(""), None, Some(&path)), None);
    }
}
