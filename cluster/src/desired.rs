//! The cluster's one desired state: every operator's manifest and
//! placement keys, as one value under one key, so an apply is all or
//! nothing and has one revision.
//!
//! Any host may apply (SIGHUP or `switchboard apply <dir>`), always
//! *based on* the revision it last read: JetStream
//! writes only if that is still the latest revision of the key
//! (`Nats-Expected-Last-Subject-Sequence`), so a host that missed a newer
//! edit gets [`ApplyError::Stale`] naming the revision that won, instead
//! of silently undoing it.

use std::collections::BTreeMap;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use crate::placement::PlacementSpec;

/// The key holding the set.
pub const DESIRED_KEY: &str = "set";

/// Largest encoded set accepted: below nats-server's default 1 MiB
/// `max_payload` with room for headers. Roughly a thousand typical
/// manifests.
pub const MAX_SET_BYTES: usize = 1_000_000;

/// One operator in the desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredOperator {
    /// Where it may run.
    #[serde(default)]
    pub placement: PlacementSpec,
    /// The manifest as written (TOML text): the orchestrator that starts
    /// it parses it as it parses a local manifest today. Secrets stay
    /// references (`secret:`/`env:`/`file:`), resolved on the host that
    /// runs the operator, so the bucket never holds one.
    pub manifest: String,
}

/// Every operator the cluster should run, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredSet {
    /// Operator id to operator.
    pub operators: BTreeMap<String, DesiredOperator>,
}

/// Why an apply was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// Someone applied after the revision this apply was based on.
    #[error(
        "the desired state changed since revision {based_on}: revision {current} won; \
         read it, merge your change and apply again",
        based_on = based_on.map_or_else(|| "none (first apply)".to_owned(), |r| r.to_string())
    )]
    Stale {
        /// The revision the caller based its edit on (`None`: it thought
        /// there was none).
        based_on: Option<u64>,
        /// The revision that is there now.
        current: u64,
    },
    /// An operator id that is not valid.
    #[error("desired state: {0}")]
    BadId(#[from] switchboard_proto::IdError),
    /// The set is too large for one NATS message.
    #[error("desired state is {bytes} bytes encoded; at most {MAX_SET_BYTES} fit in one message")]
    TooLarge {
        /// Encoded size.
        bytes: usize,
    },
    /// The value in the bucket is not a set this version understands.
    #[error("the desired state at revision {revision} cannot be read: {source}")]
    Decode {
        /// Its revision.
        revision: u64,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The bucket could not be read or written.
    #[error("desired state bucket: {0}")]
    Store(#[source] async_nats::Error),
}

/// The kinds of [`ApplyError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyErrorKind {
    /// [`ApplyError::Stale`].
    Stale,
    /// [`ApplyError::BadId`].
    BadId,
    /// [`ApplyError::TooLarge`].
    TooLarge,
    /// [`ApplyError::Decode`].
    Decode,
    /// [`ApplyError::Store`].
    Store,
}

impl ApplyError {
    /// What kind of failure.
    pub fn kind(&self) -> ApplyErrorKind {
        match self {
            ApplyError::Stale { .. } => ApplyErrorKind::Stale,
            ApplyError::BadId(_) => ApplyErrorKind::BadId,
            ApplyError::TooLarge { .. } => ApplyErrorKind::TooLarge,
            ApplyError::Decode { .. } => ApplyErrorKind::Decode,
            ApplyError::Store(_) => ApplyErrorKind::Store,
        }
    }
}

/// Read and apply the desired state.
#[derive(Debug, Clone)]
pub struct DesiredStore {
    kv: kv::Store,
}

impl DesiredStore {
    /// Over the desired-state bucket (see [`crate::Buckets`]).
    pub fn new(kv: kv::Store) -> DesiredStore {
        DesiredStore { kv }
    }

    /// The current set and its revision; `None` before the first apply.
    ///
    /// # Errors
    ///
    /// [`ApplyError::Store`] or [`ApplyError::Decode`].
    pub async fn load(&self) -> Result<Option<(DesiredSet, u64)>, ApplyError> {
        let entry = self
            .kv
            .entry(DESIRED_KEY)
            .await
            .map_err(|e| ApplyError::Store(e.into()))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let set = decode(&e.value, e.revision)?;
                Ok(Some((set, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Write `set` if the latest revision is still `based_on` (`None`:
    /// only if there is no set yet). Returns the new revision.
    ///
    /// # Errors
    ///
    /// [`ApplyError::Stale`] with the winning revision when someone else
    /// applied in between; [`ApplyError::BadId`], [`ApplyError::TooLarge`],
    /// [`ApplyError::Store`].
    pub async fn apply(&self, set: &DesiredSet, based_on: Option<u64>) -> Result<u64, ApplyError> {
        for id in set.operators.keys() {
            switchboard_proto::OperatorId::new(id.as_str())?;
        }
        let bytes = serde_json::to_vec(set).map_err(|e| ApplyError::Store(e.into()))?;
        if bytes.len() > MAX_SET_BYTES {
            return Err(ApplyError::TooLarge { bytes: bytes.len() });
        }
        let result = match based_on {
            Some(rev) => self.kv.update(DESIRED_KEY, bytes.into(), rev).await,
            // Revision 0: "no message on this subject yet".
            None => self.kv.update(DESIRED_KEY, bytes.into(), 0).await,
        };
        match result {
            Ok(rev) => Ok(rev),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                let current = self
                    .kv
                    .entry(DESIRED_KEY)
                    .await
                    .map_err(|e| ApplyError::Store(e.into()))?
                    .map_or(0, |e| e.revision);
                Err(ApplyError::Stale { based_on, current })
            }
            Err(e) => Err(ApplyError::Store(e.into())),
        }
    }
}

impl DesiredStore {
    /// The current set (when there is one), then every new one, with its
    /// revision; a value that does not decode is skipped. For a host
    /// that must notice an edited manifest of an operator it runs (the
    /// engine itself only reacts to ids coming and going).
    ///
    /// # Errors
    ///
    /// [`ApplyError::Store`] when the watch cannot start.
    pub async fn watch(
        &self,
    ) -> Result<impl futures::Stream<Item = (DesiredSet, u64)> + Send + 'static, ApplyError> {
        use futures::StreamExt as _;
        let watch = self
            .kv
            .watch_with_history(DESIRED_KEY)
            .await
            .map_err(|e| ApplyError::Store(e.into()))?;
        Ok(watch
            .take_while(|entry| futures::future::ready(entry.is_ok()))
            .filter_map(|entry| {
                futures::future::ready(match entry {
                    Ok(e) if e.operation == kv::Operation::Put => decode(&e.value, e.revision)
                        .ok()
                        .map(|set| (set, e.revision)),
                    _ => None,
                })
            }))
    }
}

/// Decode a set read at `revision`.
pub(crate) fn decode(value: &[u8], revision: u64) -> Result<DesiredSet, ApplyError> {
    serde_json::from_slice(value).map_err(|source| ApplyError::Decode { revision, source })
}
