//! The state dir on a full filesystem (a 2 MB tmpfs; needs root).

use std::path::PathBuf;

use anyhow::bail;
use switchboard_testkit::daemon::DaemonConfig;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use switchboard_proto::api::SupervisedState;

use crate::rig::{operator, sig};
use crate::{pingbot, Outcome, WAIT};

/// A tmpfs mounted for the length of a scenario.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path, size: &str) -> anyhow::Result<Mount> {
        std::fs::create_dir_all(at)?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .context("run mount")?;
        if !out.status.success() {
            bail!(
                "cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The state dir fills up (a 2 MB tmpfs): the daemon keeps running, a new
/// operator still starts (nothing it needs there is written then but the
/// process-group record, whose failure is one clear line), and the running
/// one is untouched.
///
/// # Errors
///
/// When the rig fails, or no tmpfs can be mounted (not root).
pub async fn full_state_dir() -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let mount = Mount::tmpfs(&dir.path().join("state"), "2m")?;
    let mut rig = DaemonConfig::new()
        .manifest("bot.toml", pingbot("bot"))
        .embedded(|e| e.jetstream = Some(false))
        .try_start_in(dir)
        .await?;
    let pid = rig
        .try_wait_for("bot", "running", |o| o.state == SupervisedState::Running)
        .await?
        .pid;
    // Fill it.
    let filler = mount.0.join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler)?;
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    // A few more small files take the last inodes and bytes.
    for i in 0..10_000 {
        if std::fs::create_dir(mount.0.join(format!("d{i}"))).is_err() {
            break;
        }
    }
    std::fs::write(
        rig.dir.path().join("operators.d/bot2.toml"),
        pingbot("bot2"),
    )?;
    sig(rig.pid(), Signal::SIGHUP);
    let started = rig
        .try_wait_for("bot2", "running", |o| o.state == SupervisedState::Running)
        .await;
    let bot = operator(&rig, "bot").await?;
    let untouched = bot.pid == pid && bot.state == SupervisedState::Running;
    let said = rig
        .log()
        .lines()
        .filter(|l| l.contains("No space left"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let _ = std::fs::remove_file(&filler);
    for i in 0..10_000 {
        if std::fs::remove_dir(mount.0.join(format!("d{i}"))).is_err() {
            break;
        }
    }
    let observed = format!(
        "new operator {}; running one untouched: {untouched}; the daemon said: {}",
        if started.is_ok() {
            "started"
        } else {
            "did not start"
        },
        said.first().map_or("nothing", |l| l
            .split_once("WARN ")
            .map_or(l.as_str(), |(_, w)| w))
    );
    sig(rig.pid(), Signal::SIGTERM);
    let _ = rig.process.wait(WAIT).await;
    drop(mount);
    Ok(Outcome {
        fault: "state dir on a full filesystem",
        expected: "the daemon keeps running and starting operators; what it cannot write (the process-group record) is one clear line",
        observed,
        ok: started.is_ok() && untouched && !said.is_empty(),
        tally: None,
        at_most_once: false,
    })
}
