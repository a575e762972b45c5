//! What an operator's process is started with: its config, directories,
//! program and environment (built from nothing).

use std::path::{Path, PathBuf};

use serde_json::Value;
use switchboard_proto::launch;

use super::Actor;
use crate::files::write_private;
use crate::manifest::{Control as ControlMode, Manifest};
use crate::process::LaunchSpec;

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

    pub(super) fn operator_dirs(&self) -> (PathBuf, PathBuf, PathBuf) {
        let id = self.id.as_str();
        (
            self.shared.state_dir.join("operators").join(id),
            self.shared.runtime_dir.join("scratch").join(id),
            self.shared
                .runtime_dir
                .join("config")
                .join(format!("{id}.json")),
        )
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
        let (state_dir, scratch_dir, config_file) = self.operator_dirs();
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
        let config_json = config.to_string();
        write_private(&config_file, config_json.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", config_file.display()))?;
        if let Some((uid, gid)) = run_as {
            crate::files::hand_over(
                &[&self.shared.state_dir, &self.shared.runtime_dir],
                &[&state_dir, &scratch_dir, &config_file],
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
            (launch::CONFIG.into(), config_json),
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
        env.extend(nats.into_iter().map(|(k, v)| (k.to_owned(), v)));
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
        Ok(LaunchSpec {
            id: self.id.clone(),
            program,
            args: self.manifest.args.clone(),
            env,
            workdir,
            run_as,
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
