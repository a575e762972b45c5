//! What an operator's process is started with: its config, directories,
//! credential files, program, environment (built from nothing, and
//! holding no secret) and sandbox.

use std::path::{Path, PathBuf};

use serde_json::Value;
use switchboard_proto::launch;

use super::Actor;
use crate::files::write_secret;
use crate::manifest::{Control as ControlMode, Manifest};
use crate::process::LaunchSpec;
use crate::sandbox::SandboxPaths;

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
    pub(super) fn effective_config(&self) -> Result<Value, String> {
        if let Some(v) = &self.config_override {
            return Ok(v.clone());
        }
        self.manifest
            .resolve_secrets(|name| std::env::var(name).ok())
            .map_err(|e| e.to_string())
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
    ) -> Result<LaunchSpec, String> {
        let OperatorDirs {
            state: state_dir,
            scratch: scratch_dir,
            own: own_dir,
            config: config_file,
        } = self.operator_dirs();
        let run_as = match &self.manifest.user {
            Some(user) => {
                let ids = crate::process::resolve_run_as(user, self.manifest.group.as_deref())
                    .map_err(|e| format!("{e} (`user` in {})", self.manifest.path.display()))?;
                let me = nix::unistd::geteuid().as_raw();
                if me != 0 && me != ids.0 {
                    return Err(format!(
                        "cannot run as `{user}`: switchboard runs as uid {me}, and only root \
                         can start processes as another user (set in {})",
                        self.manifest.path.display()
                    ));
                }
                Some(ids)
            }
            None => None,
        };
        // Private to the operator: its state may hold sessions and keys.
        crate::files::create_private_dir(&state_dir)
            .map_err(|e| format!("cannot create state dir {}: {e}", state_dir.display()))?;
        let _ = std::fs::remove_dir_all(&scratch_dir);
        crate::files::create_private_dir(&scratch_dir)
            .map_err(|e| format!("cannot create scratch dir {}: {e}", scratch_dir.display()))?;
        // What it is handed, fresh at each start: only the files this
        // start writes are in it.
        let _ = std::fs::remove_dir_all(&own_dir);
        crate::files::create_private_dir(&own_dir)
            .map_err(|e| format!("cannot create {}: {e}", own_dir.display()))?;
        let write = |file: &Path, bytes: &[u8]| {
            write_secret(file, bytes).map_err(|e| format!("cannot write {}: {e}", file.display()))
        };
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
        if let Some((uid, gid)) = run_as {
            // The dir whole (new at each start, so its files go with it):
            // naming a file in it would open the dir to 0711.
            crate::files::hand_over(
                &[&self.shared.state_dir, &self.shared.runtime_dir],
                &[&state_dir, &scratch_dir, &own_dir],
                uid,
                gid,
            )
            .map_err(|e| format!("cannot give the operator's files to uid {uid}: {e}"))?;
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
                return Err(format!(
                    "workdir {} does not exist (set in {})",
                    dir.display(),
                    self.manifest.path.display()
                ));
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
                    .map_err(|e| format!("{e} (set in {})", self.manifest.path.display()))?;
            }
            // Where it writes: made if missing (bwrap binds only what
            // exists), owned by the operator's user when it has one.
            for dir in &self.manifest.sandbox_binds_rw {
                if !dir.exists() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        format!(
                            "cannot create {} (`sandbox_binds_rw` in {}): {e}",
                            dir.display(),
                            self.manifest.path.display()
                        )
                    })?;
                    if let Some((uid, gid)) = run_as {
                        let _ = std::os::unix::fs::chown(dir, Some(uid), Some(gid));
                    }
                }
            }
            for bind in &self.manifest.sandbox_binds {
                if !bind.exists() {
                    return Err(format!(
                        "{} does not exist (`sandbox_binds` in {})",
                        bind.display(),
                        self.manifest.path.display()
                    ));
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
                as_root: run_as
                    .map_or_else(|| nix::unistd::geteuid().is_root(), |(uid, _)| uid == 0),
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
fn resolve_program(manifest: &Manifest, exe_dir: Option<&Path>) -> Result<PathBuf, String> {
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
        .ok_or_else(|| {
            format!(
                "command `{}` not found next to switchboard or on $PATH (set an absolute path in {})",
                manifest.command,
                manifest.path.display()
            )
        })
}
