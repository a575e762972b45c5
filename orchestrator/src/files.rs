//! Small file and process helpers shared by the daemon's modules.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Write `bytes` to `path` so that only the owner can read it (configs and
/// runtime files carry credentials), atomically: readers see the old file
/// or the new one, never half of one. No fsync: these files are rewritten
/// at every start (they live under the runtime dir, /run on a real
/// install), and an fsync per operator start costs more than the spawn.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    std::fs::rename(tmp, path)
}

/// Like [`write_private`], but read-only even for the owner (0400): what
/// an operator is handed (its config, its NATS password) is for it to
/// read, never to rewrite.
pub fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(&tmp)?;
    f.write_all(bytes)?;
    std::fs::rename(tmp, path)
}

/// Create `dir` (and its parents) and make it private to the owner
/// (0700), whoever created it: the daemon's runtime and state dirs hold
/// credentials and secrets.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Give an operator that runs as another user what it needs and nothing
/// more: `own` (its state dir, scratch dir, config file) become its own
/// (recursively for its state dir, once, when it was someone else's), and
/// every directory between a root in `roots` and them becomes 0711:
/// traversable by others, not listable. Everything else under the roots
/// (the server's config, the CLI's login, other operators' files) keeps
/// its owner and its 0600/0700 mode.
pub fn hand_over(roots: &[&Path], own: &[&Path], uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let owner =
        |p: &Path| -> std::io::Result<()> { std::os::unix::fs::chown(p, Some(uid), Some(gid)) };
    for path in own {
        if let Some(root) = roots.iter().find(|r| path.starts_with(r)) {
            let mut dir = path.parent();
            while let Some(d) = dir {
                if !d.starts_with(root) {
                    break;
                }
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))?;
                dir = d.parent();
            }
        }
        let meta = std::fs::metadata(path)?;
        if meta.uid() == uid && meta.gid() == gid {
            continue;
        }
        owner(path)?;
        if meta.is_dir() {
            let mut stack = vec![path.to_path_buf()];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir)?.flatten() {
                    let p = entry.path();
                    let m = std::fs::symlink_metadata(&p)?;
                    if m.file_type().is_symlink() {
                        continue;
                    }
                    owner(&p)?;
                    if m.is_dir() {
                        stack.push(p);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Make the child die with the orchestrator: `PR_SET_PDEATHSIG = SIGKILL`
/// set between fork and exec (see the invariants in `process`).
pub fn die_with_parent(cmd: &mut tokio::process::Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes async-signal-safe syscalls (prctl, getppid); it does not
    // allocate.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            // The orchestrator may have died between fork and prctl.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn private_files_are_0600_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/x.json");
        write_private(&p, b"one").unwrap();
        write_private(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!p.with_extension("tmp").exists());
    }

    #[test]
    fn secret_files_are_0400_and_can_be_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        write_secret(&p, b"one").unwrap();
        write_secret(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
    }
}
