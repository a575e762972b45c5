//! The supervisors Switchboard is compared with, restarting the same
//! crashing program in the same run: s6 (Debian package `s6`) and
//! supervisord (PyPI `supervisor`, in `.tools/venv`), both installed by
//! `make bench-tools`, both with their default restart behaviour.
//!
//! Each is a guard: dropping it stops the supervisor and kills whatever
//! it left behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::Signal;

use crate::procfs;

/// A third-party supervisor running one service: `program args...`.
pub struct Rival {
    /// What it is, with its version: `s6 2.11.3.2`.
    pub name: String,
    /// Its top process (s6-svscan, supervisord), our child.
    top: Option<Child>,
    /// The process whose child the service is (s6-supervise,
    /// supervisord).
    pub parent: u32,
    /// The service process right now.
    pub service: u32,
    _dir: tempfile::TempDir,
}

/// Why a rival cannot run here (printed as "skipped").
#[derive(Debug)]
pub struct Missing(pub String);

/// `which`: a program on `$PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn version_of(cmd: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

impl Rival {
    /// s6-svscan on a fresh scan directory with one service whose `run`
    /// script execs `program`. s6's defaults: nothing in the service
    /// directory but `run`.
    pub fn s6(program: &str, args: &[&str]) -> Result<anyhow::Result<Rival>, Missing> {
        Rival::s6_with(program, args, false)
    }

    /// Like [`Rival::s6`], but the service tells s6 it is ready (a
    /// `notification-fd` file; the run script writes a newline to fd 3
    /// before it execs `program`). s6 restarts a service that has been
    /// ready for over a second at once instead of after 1 s.
    pub fn s6_ready(program: &str, args: &[&str]) -> Result<anyhow::Result<Rival>, Missing> {
        Rival::s6_with(program, args, true)
    }

    fn s6_with(
        program: &str,
        args: &[&str],
        notify: bool,
    ) -> Result<anyhow::Result<Rival>, Missing> {
        let Some(svscan) = on_path("s6-svscan") else {
            return Err(Missing("s6-svscan not found".into()));
        };
        if on_path("s6-supervise").is_none() {
            return Err(Missing("s6-supervise not found".into()));
        }
        let version = version_of(Path::new("dpkg-query"), &["-W", "-f", "${Version}", "s6"])
            .map(|v| format!("s6 {}", v.split('-').next().unwrap_or(&v)))
            .unwrap_or_else(|| "s6".to_owned());
        Ok((|| {
            let dir = tempfile::Builder::new().prefix("sb-bench-s6-").tempdir()?;
            let service = dir.path().join("scan").join("crasher");
            std::fs::create_dir_all(&service)?;
            let mut line = format!("exec {program}");
            for a in args {
                line.push(' ');
                line.push_str(a);
            }
            let script = if notify {
                std::fs::write(service.join("notification-fd"), "3\n")?;
                format!("#!/bin/sh\necho >&3\nexec 3>&-\n{line}\n")
            } else {
                format!("#!/bin/sh\n{line}\n")
            };
            let run = service.join("run");
            std::fs::write(&run, script)?;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755))?;
            let top = Command::new(&svscan)
                .arg(dir.path().join("scan"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("spawning s6-svscan")?;
            let mut rival = Rival {
                name: version,
                parent: 0,
                service: 0,
                top: Some(top),
                _dir: dir,
            };
            let top_pid = rival.top_pid();
            rival.parent = procfs::wait_for_child(top_pid, "s6-supervise", Duration::from_secs(10))
                .context("s6-svscan started no s6-supervise")?;
            rival.service = procfs::wait_for_child(
                rival.parent,
                program_name(program),
                Duration::from_secs(10),
            )
            .context("s6-supervise did not start the service")?;
            Ok(rival)
        })())
    }

    /// supervisord (nodaemon) with one `[program:crasher]`,
    /// `autorestart=true`, `startsecs=0`, everything else default.
    pub fn supervisord(program: &str, args: &[&str]) -> Result<anyhow::Result<Rival>, Missing> {
        let bin = switchboard_testkit::workspace_root().join(".tools/venv/bin/supervisord");
        if !bin.is_file() {
            return Err(Missing(format!("{} not found", bin.display())));
        }
        let version = version_of(&bin, &["--version"])
            .map(|v| format!("supervisord {v}"))
            .unwrap_or_else(|| "supervisord".to_owned());
        Ok((|| {
            let dir = tempfile::Builder::new().prefix("sb-bench-sd-").tempdir()?;
            let d = dir.path().display().to_string();
            let mut command = program.to_owned();
            for a in args {
                command.push(' ');
                command.push_str(a);
            }
            let conf = dir.path().join("supervisord.conf");
            std::fs::write(
                &conf,
                format!(
                    "[supervisord]\nnodaemon=true\nuser=root\nlogfile={d}/supervisord.log\n\
                     pidfile={d}/supervisord.pid\nchildlogdir={d}\n\n\
                     [program:crasher]\ncommand={command}\nautorestart=true\nstartsecs=0\n\
                     stdout_logfile={d}/crasher.out\nstderr_logfile={d}/crasher.err\n"
                ),
            )?;
            let top = Command::new(&bin)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("spawning supervisord")?;
            let mut rival = Rival {
                name: version,
                parent: 0,
                service: 0,
                top: Some(top),
                _dir: dir,
            };
            rival.parent = rival.top_pid();
            rival.service = procfs::wait_for_child(
                rival.parent,
                program_name(program),
                Duration::from_secs(15),
            )
            .context("supervisord did not start the program")?;
            Ok(rival)
        })())
    }

    fn top_pid(&self) -> u32 {
        self.top.as_ref().map_or(0, Child::id)
    }

    /// Stop the supervisor and its service; the processes that had to be
    /// SIGKILLed (a problem to report).
    pub fn stop(mut self) -> anyhow::Result<Vec<u32>> {
        let Some(mut top) = self.top.take() else {
            return Ok(Vec::new());
        };
        let pid = top.id();
        let before = procfs::descendants(pid);
        procfs::signal(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        let exited = loop {
            if top.try_wait()?.is_some() {
                break true;
            }
            if Instant::now() >= deadline {
                let _ = top.kill();
                let _ = top.wait();
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let left = procfs::wait_gone(&before, Duration::from_secs(5));
        let killed = procfs::kill_leftovers(&left);
        if !exited {
            bail!("{} did not exit within 15 s of SIGTERM (killed)", self.name);
        }
        Ok(killed)
    }
}

impl Drop for Rival {
    fn drop(&mut self) {
        let Some(mut top) = self.top.take() else {
            return;
        };
        let before = procfs::descendants(top.id());
        procfs::signal(top.id(), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while top.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = top.kill();
                let _ = top.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = procfs::wait_gone(&before, Duration::from_secs(3));
        procfs::kill_leftovers(&left);
    }
}

/// `/bin/sleep` -> `sleep`, as the kernel names the process.
pub fn program_name(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}
