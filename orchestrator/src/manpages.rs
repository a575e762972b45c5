//! Man pages, generated from the command line's own definition (clap's
//! `clap_mangen`), so they cannot drift from `--help`: one page for
//! `switchboard` and one per subcommand (`switchboard-status.1`, ...).
//! `make install` and `make deb` write them with the hidden
//! `switchboard man <dir>`; nothing is generated at build time, which
//! keeps a build.rs (and a second compile of the CLI) out of every build.

use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;

/// Write every page into `dir` (created if missing), section 1.
pub fn write(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_page_per_command_and_none_for_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        super::write(dir.path()).unwrap();
        let main = std::fs::read_to_string(dir.path().join("switchboard.1")).unwrap();
        assert!(main.contains(".TH switchboard 1"), "{main}");
        assert!(dir.path().join("switchboard-status.1").is_file());
        assert!(!dir.path().join("switchboard-man.1").exists());
    }
}
