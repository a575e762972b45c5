//! Between manifest files and the cluster's desired state: a manifests
//! directory becomes a [`DesiredSet`] (the text of each manifest, as
//! written, with its `[placement]`), and a manifest from the desired
//! state becomes a [`Manifest`] on the host told to run it, through the
//! same loader and checks as a file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchboard_cluster::lease::STOP_BUDGET;
use switchboard_cluster::{DesiredOperator, DesiredSet};

use crate::manifest::{self, Manifest, Problem};

/// The longest SIGTERM grace an operator gets in cluster mode: a stop
/// must be over within [`STOP_BUDGET`] (docs/cluster.md, "Leases"), and
/// SIGKILL plus the reaping need a little of it.
pub const MAX_STOP_GRACE: Duration = Duration::from_millis(STOP_BUDGET.as_millis() as u64 * 7 / 10);

/// Read `dir` as the whole desired state: every manifest's text and
/// placement. Any problem refuses the whole directory: an apply replaces
/// the cluster's state, so half a directory would remove operators.
///
/// # Errors
///
/// Every problem found (the loader's, or a file that changed between
/// the check and the read).
pub fn set_from_dir(dir: &Path) -> Result<DesiredSet, Vec<Problem>> {
    let report = manifest::load_dir(dir);
    if !report.problems.is_empty() {
        return Err(report.problems);
    }
    let mut set = DesiredSet::default();
    let mut problems = Vec::new();
    for m in report.manifests {
        // The text goes into the bucket as written (secret references,
        // relative paths), checked again so that what is sent is what was
        // validated.
        let text = match std::fs::read_to_string(&m.path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(Problem::whole_file(&m.path, format!("cannot read: {e}")));
                continue;
            }
        };
        match manifest::parse_manifest(&m.path, &text) {
            Ok(again) if again.id == m.id => {
                set.operators.insert(
                    m.id.to_string(),
                    DesiredOperator {
                        placement: again.placement.clone(),
                        manifest: text,
                    },
                );
            }
            Ok(_) | Err(_) => problems.push(Problem::whole_file(
                &m.path,
                "changed while it was being read; apply again".to_owned(),
            )),
        }
    }
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(problems)
    }
}

/// Check every manifest of `set` as this host would load it (ids match,
/// the loader accepts the text, placement as stated): a set written by a
/// tool rather than `switchboard apply` is held to the same rules.
///
/// # Errors
///
/// One line per problem.
pub fn check_set(set: &DesiredSet, manifests_dir: &Path) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for (id, op) in &set.operators {
        match manifest_of(manifests_dir, id, &op.manifest) {
            Ok(m) if m.placement != op.placement => problems.push(format!(
                "operator `{id}`: its placement differs from its manifest's [placement]"
            )),
            Ok(_) => {}
            Err(ps) => problems.extend(ps.iter().map(ToString::to_string)),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Where a manifest from the desired state is said to live on this host:
/// `<manifests dir>/<id>.toml`. Problems name it, and its relative paths
/// (`workdir`, secret files) resolve against this host's manifests
/// directory, so secrets are this host's.
pub fn nominal_path(manifests_dir: &Path, id: &str) -> PathBuf {
    manifests_dir.join(format!("{id}.toml"))
}

/// The manifest the engine gave for `id`, loaded as a file would be, with
/// its stop grace capped at [`MAX_STOP_GRACE`].
///
/// # Errors
///
/// The loader's problems, or one when the text names another id.
pub fn manifest_of(manifests_dir: &Path, id: &str, text: &str) -> Result<Manifest, Vec<Problem>> {
    let path = nominal_path(manifests_dir, id);
    let mut m = manifest::parse_manifest(&path, text)?;
    if m.id.as_str() != id {
        return Err(vec![Problem::whole_file(
            &path,
            format!(
                "the desired state lists it as `{id}` but its manifest says id = \"{}\"",
                m.id
            ),
        )]);
    }
    if m.stop_timeout > MAX_STOP_GRACE {
        tracing::debug!(
            operator = %m.id,
            asked = ?m.stop_timeout,
            given = ?MAX_STOP_GRACE,
            "cluster mode: stop_timeout capped so a stop ends within the lease's stop budget"
        );
        m.stop_timeout = MAX_STOP_GRACE;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_becomes_a_set_and_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("a.toml"),
            "id = \"ping-a\"\ncommand = \"true\"\nstop_timeout = \"10s\"\n\
             [placement]\nlabels = [\"eu\"]\n",
        )
        .expect("write");
        let set = set_from_dir(dir.path()).expect("valid dir");
        let op = &set.operators["ping-a"];
        assert!(op.placement.labels.contains("eu"));
        check_set(&set, Path::new("/etc/sb/operators.d")).expect("consistent");
        let m =
            manifest_of(Path::new("/etc/sb/operators.d"), "ping-a", &op.manifest).expect("loads");
        assert_eq!(m.stop_timeout, MAX_STOP_GRACE);
        assert_eq!(m.path, Path::new("/etc/sb/operators.d/ping-a.toml"));
        let wrong = manifest_of(Path::new("/x"), "other", &op.manifest).expect_err("id");
        assert!(wrong[0].message.contains("says id = \"ping-a\""));

        std::fs::write(dir.path().join("b.toml"), "id = \"b\"\n").expect("write");
        let problems = set_from_dir(dir.path()).expect_err("b has no command");
        assert!(problems[0].to_string().contains("command"), "{problems:?}");
    }
}
