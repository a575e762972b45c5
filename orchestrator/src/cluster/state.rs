//! What the API handlers and the event task share: who this host is,
//! the engine's view, and the desired state's revision this host's
//! manifests directory is based on; apply, drain and the start-up
//! adoption of the cluster's desired state.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use switchboard_cluster::{Buckets, DesiredSet, DesiredStore, ViewHandle};
use switchboard_proto::api::ClusterStatus;

use super::{check_set, set_from_dir, status, ClusterError};

/// What the API handlers and the event task share: who this host is,
/// the buckets once joined, and the revision its directory is based on.
#[derive(Debug)]
pub struct ClusterState {
    pub(super) host: String,
    pub(super) manifests_dir: Mutex<PathBuf>,
    pub(super) buckets: OnceLock<Buckets>,
    pub(super) view: OnceLock<ViewHandle>,
    pub(super) based_on: Mutex<Option<u64>>,
    /// One apply at a time from this host, so `based_on` moves in order.
    pub(super) applying: tokio::sync::Mutex<()>,
}

impl ClusterState {
    /// This host's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn based_on(&self) -> Option<u64> {
        *self.based_on.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_based_on(&self, revision: u64) {
        *self.based_on.lock().unwrap_or_else(|p| p.into_inner()) = Some(revision);
    }

    pub(super) fn manifests_dir(&self) -> PathBuf {
        self.manifests_dir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The cluster as this host's engine sees it now.
    pub fn status(&self) -> ClusterStatus {
        status::status(
            &self.host,
            self.based_on(),
            self.view.get().map(ViewHandle::get),
        )
    }

    /// Write `set` as the cluster's desired state, based on `based_on`
    /// (absent: the revision this host's directory is based on). Returns the
    /// new revision.
    ///
    /// # Errors
    ///
    /// [`ClusterError::NotJoined`], [`ClusterError::Invalid`], or
    /// [`ClusterError::Apply`] ([`ApplyError::Stale`] when the desired
    /// state moved on since the revision it is based on).
    pub async fn apply(&self, set: DesiredSet, based_on: Option<u64>) -> Result<u64, ClusterError> {
        let buckets = self.buckets.get().ok_or(ClusterError::NotJoined)?;
        check_set(&set, &self.manifests_dir()).map_err(ClusterError::Invalid)?;
        let _one = self.applying.lock().await;
        let base = based_on.or(self.based_on());
        let revision = DesiredStore::new(buckets.desired.clone())
            .apply(&set, base)
            .await?;
        self.set_based_on(revision);
        tracing::info!(
            revision,
            operators = set.operators.len(),
            "cluster: desired state applied"
        );
        Ok(revision)
    }

    /// SIGHUP: apply this host's manifests directory, based on the
    /// revision its directory is based on; problems and staleness are
    /// logged, nothing is overwritten.
    pub(super) async fn apply_dir(&self, dir: &Path) {
        *self.manifests_dir.lock().unwrap_or_else(|p| p.into_inner()) = dir.to_owned();
        let set = match set_from_dir(dir) {
            Ok(set) if set.operators.is_empty() => {
                // An empty directory proposes nothing (as at start): a
                // reload of a host that only follows the cluster must not
                // remove every operator. `switchboard apply` of an empty
                // directory does, on purpose.
                tracing::info!(
                    dir = %dir.display(),
                    "cluster: no manifests here, nothing proposed to the desired state"
                );
                return;
            }
            Ok(set) => set,
            Err(problems) => {
                for p in &problems {
                    tracing::error!("{p}");
                }
                tracing::error!(
                    dir = %dir.display(),
                    "cluster: manifests not applied to the desired state: fix the problems above \
                     and send SIGHUP again"
                );
                return;
            }
        };
        if let Err(e) = self.apply(set, None).await {
            match e.current() {
                Some(current) => tracing::error!(
                    based_on = ?self.based_on(),
                    current,
                    "cluster: manifests not applied: the desired state changed since this host \
                     last read it (revision {current} was applied from another host); review \
                     it (`switchboard status`) and run `switchboard apply <dir> --based-on \
                     {current}` to replace it"
                ),
                None => tracing::error!(error = %e, "cluster: manifests not applied"),
            }
        }
    }

    /// At start: adopt the cluster's desired state if it has one (a host
    /// that joins or comes back must not undo newer edits with an older
    /// directory); otherwise propose this host's directory, unless it is
    /// empty (a host with nothing to propose waits for an apply).
    pub(super) async fn initial(&self, dir: &Path) {
        let Some(buckets) = self.buckets.get() else {
            return;
        };
        let store = DesiredStore::new(buckets.desired.clone());
        for attempt in 0..30 {
            match store.load().await {
                Ok(Some((set, revision))) => {
                    self.adopt(dir, &set, revision).await;
                    return;
                }
                Ok(None) => break,
                Err(e) if attempt < 29 => {
                    tracing::debug!(error = %e, "cluster: desired state not readable yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cluster: cannot read the desired state");
                    return;
                }
            }
        }
        match set_from_dir(dir) {
            Ok(set) if set.operators.is_empty() => tracing::info!(
                "cluster: no desired state yet and no manifests here; waiting for \
                 `switchboard apply` or SIGHUP on any host"
            ),
            Ok(set) => match self.apply(set, None).await {
                Ok(_) => {}
                Err(e) => match e.current() {
                    // Another host proposed first: follow it.
                    Some(_) => match store.load().await {
                        Ok(Some((set, revision))) => self.adopt(dir, &set, revision).await,
                        _ => tracing::error!(
                            "cluster: another host wrote the first desired state, which cannot \
                             be read now"
                        ),
                    },
                    None => tracing::error!(error = %e, "cluster: manifests not applied"),
                },
            },
            Err(problems) => {
                for p in &problems {
                    tracing::error!("{p}");
                }
                tracing::error!(
                    "cluster: manifests not applied to the desired state: fix the problems \
                     above and send SIGHUP"
                );
            }
        }
    }

    /// Follow the cluster's desired state `set` at `revision`. This
    /// host's later applies are based on that revision only if its
    /// directory says the same: a host that comes back with an older
    /// directory must not overwrite newer edits at its next SIGHUP.
    async fn adopt(&self, dir: &Path, set: &DesiredSet, revision: u64) {
        let _one = self.applying.lock().await;
        if set_from_dir(dir).is_ok_and(|mine| mine == *set) {
            self.set_based_on(revision);
            tracing::info!(
                revision,
                operators = set.operators.len(),
                "cluster: the cluster's desired state is this host's manifests directory"
            );
        } else {
            tracing::info!(
                revision,
                operators = set.operators.len(),
                "cluster: the cluster has a desired state and this host follows it; its own \
                 manifests directory differs, so a SIGHUP here is refused as stale until \
                 `switchboard apply <dir> --based-on {revision}` (or a later revision) replaces \
                 the cluster's on purpose"
            );
        }
    }

    /// The other hosts with a live heartbeat, as this host's engine sees
    /// them.
    pub fn live_peers(&self) -> Vec<String> {
        let Some(view) = self.view.get().map(ViewHandle::get) else {
            return Vec::new();
        };
        view.hosts
            .iter()
            .filter(|(name, rec)| {
                **name != self.host && rec.state == switchboard_cluster::buckets::HostState::Alive
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The host whose live incarnation owns `id`, as this host's engine
    /// sees it.
    pub fn owner(&self, id: &str) -> Option<String> {
        self.view.get()?.get().owner_of(id).map(str::to_owned)
    }

    /// The buckets, to write about `host`: one this host's engine has
    /// seen (heartbeat or drain flag), so a misspelt name is refused with
    /// the names there are.
    fn buckets_for(&self, host: &str) -> Result<&Buckets, ClusterError> {
        let buckets = self.buckets.get().ok_or(ClusterError::NotJoined)?;
        let view = self.view.get().ok_or(ClusterError::NotJoined)?.get();
        if !view.hosts.contains_key(host) && !view.drained.contains(host) {
            return Err(ClusterError::UnknownHost {
                host: host.to_owned(),
                known: view.hosts.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        Ok(buckets)
    }

    /// `drain` (`on`) or `undrain` a host of the cluster.
    ///
    /// # Errors
    ///
    /// [`ClusterError::NotJoined`], [`ClusterError::UnknownHost`],
    /// [`ClusterError::Bucket`].
    pub async fn drain(&self, host: &str, on: bool) -> Result<(), ClusterError> {
        let buckets = self.buckets_for(host)?;
        if on {
            buckets.drain(host).await?;
        } else {
            buckets.undrain(host).await?;
        }
        tracing::info!(host, drained = on, "cluster: drain flag written");
        Ok(())
    }

    /// `forget` a host that is gone for good ([`switchboard_cluster::Buckets::forget`]).
    ///
    /// # Errors
    ///
    /// [`ClusterError::NotJoined`], [`ClusterError::UnknownHost`] (not in
    /// this host's view), [`ClusterError::Bucket`] (alive, or a write
    /// failed).
    pub async fn forget(&self, host: &str) -> Result<(), ClusterError> {
        let buckets = self.buckets_for(host)?;
        buckets.forget(host).await?;
        tracing::info!(host, "cluster: host forgotten");
        Ok(())
    }
}
