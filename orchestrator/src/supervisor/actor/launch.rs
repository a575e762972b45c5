//! What an operator's process is started with: its config, directories,
//! credential files, program, environment (built from nothing, and
//! holding no secret) and sandbox.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;
use switchboard_proto::launch;

use super::Actor;
use crate::files::write_secret;
use crate::manifest::{Control as ControlMode, Manifest, SecretError};
use crate::process::{LaunchSpec, RunAs, RunAsError};
use crate::sandbox::{SandboxError, SandboxPaths};

/// Why an operator's process could not be started. Each ends as the
/// reason of its `failed` state, so each says what to change and names
/// the manifest where that is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// A secret its manifest references cannot be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// Its `user` or `group` names nobody here.
    #[error("{source} (`user` in {})", manifest.display())]
    RunAs {
        /// Which name is unknown.
        source: RunAsError,
        /// The manifest naming it.
        manifest: PathBuf,
    },
    /// It is to run as another user, and the daemon is not root.
    #[error(
        "cannot run as `{user}`: switchboard runs as uid {uid}, and only root \
         can start processes as another user (set in {})",
        manifest.display()
    )]
    NotRoot {
        /// The manifest's `user`.
        user: String,
        /// The daemon's own uid.
        uid: u32,
        /// The manifest naming it.
        manifest: PathBuf,
    },
    /// A directory or file the daemon hands it cannot be made.
    #[error("cannot {action} {}: {source}", path.display())]
    Files {
        /// What was being done ("create state dir", "write").
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Its files cannot be given to its user.
    #[error("cannot give the operator's files to uid {uid}: {source}")]
    HandOver {
        /// The operator's user.
        uid: u32,
        /// What the OS said.
        source: io::Error,
    },
    /// Its `command` is nowhere to be found.
    #[error(
        "command `{command}` not found next to switchboard or on $PATH (set an absolute path in {})",
        manifest.display()
    )]
    Program {
        /// The manifest's `command`.
        command: String,
        /// The manifest.
        manifest: PathBuf,
    },
    /// Its `workdir` does not exist.
    #[error("workdir {} does not exist (set in {})", workdir.display(), manifest.display())]
    Workdir {
        /// The manifest's `workdir`.
        workdir: PathBuf,
        /// The manifest.
        manifest: PathBuf,
    },
    /// A `sandbox_binds` path would show it the daemon's private files.
    #[error("{source} (set in {})", manifest.display())]
    Bind {
        /// Which path, and whose files.
        source: SandboxError,
        /// The manifest.
        manifest: PathBuf,
    },
    /// A `sandbox_binds_rw` directory cannot be made.
    #[error(
        "cannot create {} (`sandbox_binds_rw` in {}): {source}",
        dir.display(),
        manifest.display()
    )]
    BindDir {
        /// The directory.
        dir: PathBuf,
        /// The manifest.
        manifest: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A `sandbox_binds` path does not exist (bwrap binds only what does).
    #[error("{} does not exist (`sandbox_binds` in {})", bind.display(), manifest.display())]
    MissingBind {
        /// The path.
        bind: PathBuf,
        /// The manifest.
        manifest: PathBuf,
    },
}

switchboard_proto::error_kinds!(
    /// Coarse classes of [`LaunchError`].
    LaunchError => LaunchErrorKind {
        Secret, RunAs, NotRoot, Files, HandOver, Program, Workdir, Bind, BindDir, MissingBind
    }
);

/// [`LaunchError::Files`] for `action` on `path`.
fn files(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LaunchError {
    let path = path.to_owned();
    move |source| LaunchError::Files {
        action,
        path,
        source,
    }
}

/// The files and directories one operator is given.
pub(super) struct OperatorDirs {
    /// `<state_dir>/operators/<id>`: kept across restarts, read-write.
    pub state: PathBuf,
    /// `<runtime_dir>/scratch/<id>`: wiped at each start, read-write.
    pub scratch: PathBuf,
    /// `<runtime_dir>/operators/<id>`: what the daemon hands it, read-only
    /// (a directory, bound whole, so a rewritten file shows inside the
    /// sandbox: a bind of the file itself would keep the old one).
    pub own: PathBuf,
    /// `<own>/config.json`.
    pub config: PathBuf,
}

impl Actor {
    /// The config this operator should run with: an override from
    /// `ctl reload`, else the manifest's with secrets resolved.
    pub(super) fn effective_config(&self) -> Result<Value, SecretError> {
        if let Some(v) = &self.config_override {
            return Ok(v.clone());
        }
        self.manifest
            .resolve_secrets(|name| std::env::var(name).ok())
    }

    pub(super) fn operator_dirs(&self) -> OperatorDirs {
        let id = self.id.as_str();
        let own = self.shared.runtime_dir.join("operators").join(id);
        OperatorDirs {
            state: self.shared.state_dir.join("operators").join(id),
            scratch: self.shared.runtime_dir.join("scratch").join(id),
            config: own.join("config.json"),
            own,
        }
    }

    /// Everything the process is started with. Its environment is built
    /// from nothing: the variables `inherit_env` names (from the daemon's
    /// own environment), the launch variables with its own NATS access
    /// (`nats`), then the manifest's `env`. No other variable of the
    /// daemon's reaches it.
    pub(super) fn launch_spec(
        &self,
        config: &Value,
        nats: Vec<(&'static str, String)>,
    ) -> Result<LaunchSpec, LaunchError> {
        let OperatorDirs {
            state: state_dir,
            scratch: scratch_dir,
            own: own_dir,
            config: config_file,
        } = self.operator_dirs();
        let run_as = match &self.manifest.user {
            Some(user) => {
                let ids = crate::process::resolve_run_as(user, self.manifest.group.as_deref())
                    .map_err(|source| LaunchError::RunAs {
                        source,
                        manifest: self.manifest.path.clone(),
                    })?;
                let me = nix::unistd::geteuid().as_raw();
                if me != 0 && me != ids.uid {
                    return Err(LaunchError::NotRoot {
                        user: user.clone(),
                        uid: me,
                        manifest: self.manifest.path.clone(),
                    });
                }
                Some(ids)
            }
            None => None,
        };
        // Private to the operator: its state may hold sessions and keys.
        crate::files::create_private_dir(&state_dir)
            .map_err(files("create state dir", &state_dir))?;
        let _ = std::fs::remove_dir_all(&scratch_dir);
        crate::files::create_private_dir(&scratch_dir)
            .map_err(files("create scratch dir", &scratch_dir))?;
        // What it is handed, fresh at each start: only the files this
        // start writes are in it.
        let _ = std::fs::remove_dir_all(&own_dir);
        crate::files::create_private_dir(&own_dir).map_err(files("create", &own_dir))?;
        let write =
            |file: &Path, bytes: &[u8]| write_secret(file, bytes).map_err(files("write", file));
        write(&config_file, config.to_string().as_bytes())?;
        // Secrets travel as files, never in the environment (readable in
        // /proc, inherited by every child): the variable names the file.
        let mut nats_env: Vec<(String, String)> = Vec::with_capacity(nats.len());
        let mut given_paths: Vec<PathBuf> = Vec::new();
        for (name, value) in nats {
            let file_var = match name {
                n if n == launch::NATS_PASSWORD => {
                    Some((launch::NATS_PASSWORD_FILE, "nats-password"))
                }
                n if n == launch::NATS_TOKEN => Some((launch::NATS_TOKEN_FILE, "nats-token")),
                _ => None,
            };
            match file_var {
                Some((var, file_name)) => {
                    let file = own_dir.join(file_name);
                    write(&file, value.as_bytes())?;
                    nats_env.push((var.to_owned(), file.display().to_string()));
                }
                None => {
                    if [launch::NATS_CREDS, launch::NATS_NKEY, launch::NATS_TLS_CA].contains(&name)
                    {
                        given_paths.push(PathBuf::from(&value));
                    }
                    nats_env.push((name.to_owned(), value));
                }
            }
        }
        if let Some(RunAs { uid, gid }) = run_as {
            // The dir whole (new at each start, so its files go with it):
            // naming a file in it would open the dir to 0711.
            crate::files::hand_over(
                &[&self.shared.state_dir, &self.shared.runtime_dir],
                &[&state_dir, &scratch_dir, &own_dir],
                uid,
                gid,
            )
            .map_err(|source| LaunchError::HandOver { uid, source })?;
        }
        let program = resolve_program(&self.manifest, self.shared.exe_dir.as_deref())?;
        let path = |p: &Path| p.display().to_string();
        let mut env: Vec<(String, String)> = self
            .manifest
            .inherit_env
            .iter()
            .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?)))
            .collect();
        env.extend([
            // Structured lines, which the daemon renders and forwards with
            // their fields; the manifest's [env] may say "text".
            (launch::LOG_FORMAT.into(), "json".into()),
            (launch::ID.into(), self.id.to_string()),
            (launch::CONFIG_FILE.into(), path(&config_file)),
            (launch::STATE_DIR.into(), path(&state_dir)),
            (launch::SCRATCH_DIR.into(), path(&scratch_dir)),
            (
                launch::HEARTBEAT_MS.into(),
                self.manifest
                    .heartbeat_interval
                    .as_millis()
                    .max(1)
                    .to_string(),
            ),
            (
                launch::CONTROL.into(),
                match self.manifest.control {
                    ControlMode::Nats => launch::CONTROL_NATS,
                    ControlMode::Signals => launch::CONTROL_SIGNALS,
                }
                .into(),
            ),
        ]);
        env.extend(nats_env);
        env.extend(
            self.manifest
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let workdir = self.manifest.workdir.clone();
        if let Some(dir) = &workdir {
            if !dir.is_dir() {
                return Err(LaunchError::Workdir {
                    workdir: dir.clone(),
                    manifest: self.manifest.path.clone(),
                });
            }
        }
        let sandbox = if self.shared.sandbox.applies(self.manifest.sandbox) {
            for bind in self
                .manifest
                .sandbox_binds
                .iter()
                .chain(&self.manifest.sandbox_binds_rw)
            {
                self.shared
                    .sandbox
                    .check_bind(bind)
                    .map_err(|source| LaunchError::Bind {
                        source,
                        manifest: self.manifest.path.clone(),
                    })?;
            }
            // Where it writes: made if missing (bwrap binds only what
            // exists), owned by the operator's user when it has one.
            for dir in &self.manifest.sandbox_binds_rw {
                if !dir.exists() {
                    std::fs::create_dir_all(dir).map_err(|source| LaunchError::BindDir {
                        dir: dir.clone(),
                        manifest: self.manifest.path.clone(),
                        source,
                    })?;
                    if let Some(RunAs { uid, gid }) = run_as {
                        let _ = std::os::unix::fs::chown(dir, Some(uid), Some(gid));
                    }
                }
            }
            for bind in &self.manifest.sandbox_binds {
                if !bind.exists() {
                    return Err(LaunchError::MissingBind {
                        bind: bind.clone(),
                        manifest: self.manifest.path.clone(),
                    });
                }
            }
            let cwd = workdir.clone().or_else(|| std::env::current_dir().ok());
            let words = self
                .manifest
                .args
                .iter()
                .chain(self.manifest.env.values())
                .map(String::as_str);
            let mut needed = crate::sandbox::needed_paths(&program, words, cwd.as_deref());
            if workdir.is_none() {
                // The daemon's own directory is not the operator's: only
                // what the arguments name in it is shown.
                needed.retain(|p| Some(p) != cwd.as_ref());
            }
            let paths = SandboxPaths {
                writable: vec![state_dir.clone(), scratch_dir.clone()],
                own_readonly: std::iter::once(own_dir.clone())
                    .chain(given_paths)
                    .collect(),
                needed,
                extra: self.manifest.sandbox_binds.clone(),
                extra_rw: self.manifest.sandbox_binds_rw.clone(),
                as_root: run_as.map_or_else(|| nix::unistd::geteuid().is_root(), |r| r.uid == 0),
            };
            self.shared.sandbox.command(&paths)
        } else {
            None
        };
        Ok(LaunchSpec {
            id: self.id.clone(),
            program,
            args: self.manifest.args.clone(),
            env,
            workdir,
            run_as,
            sandbox,
        })
    }
}

/// Find the program: a path with a slash is taken relative to the
/// manifest's directory; a bare name is looked up in the orchestrator's
/// own directory, then `$PATH`.
fn resolve_program(manifest: &Manifest, exe_dir: Option<&Path>) -> Result<PathBuf, LaunchError> {
    let cmd = Path::new(&manifest.command);
    if manifest.command.contains('/') {
        let base = manifest.path.parent().unwrap_or(Path::new("."));
        let p = if cmd.is_absolute() {
            cmd.to_path_buf()
        } else {
            base.join(cmd)
        };
        return Ok(p);
    }
    let mut dirs: Vec<PathBuf> = exe_dir.map(Path::to_path_buf).into_iter().collect();
    if let Some(paths) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&paths));
    }
    dirs.into_iter()
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
        .ok_or_else(|| LaunchError::Program {
            command: manifest.command.clone(),
            manifest: manifest.path.clone(),
        })
}
