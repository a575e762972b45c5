//! Applying a changed user table to the running server: rewrite its
//! config, SIGHUP, and wait until the server says it reloaded (the sha256
//! it logs is not the file's, so reloads are matched by order: there is
//! only ever one in flight).
//!
//! One task does the reloads, one at a time; every request that arrives
//! while one is being prepared joins it, so fifty operators starting
//! together cost one or two reloads, not fifty. A caller changes the
//! table first, then asks: the reload it waits for was written after its
//! change, so its change is in it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};

use super::{write_config, EmbeddedSettings, Note, Users};

/// How long the server may take to confirm a reload.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a reload did not apply.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The config could not be written.
    #[error("cannot write the nats-server config: {0}")]
    Write(String),
    /// The server refused the new config.
    #[error("nats-server refused its new config: {0}")]
    Refused(String),
    /// No confirmation in time (the server is stopped, restarting, hung).
    #[error("nats-server did not confirm the config reload within {0:?}")]
    Timeout(Duration),
    /// No server process to signal (stopping, or between restarts).
    #[error("the embedded nats-server is not running")]
    NotRunning,
}

impl ReloadError {
    /// What kind of failure.
    pub fn kind(&self) -> ReloadErrorKind {
        match self {
            ReloadError::Write(_) => ReloadErrorKind::Write,
            ReloadError::Refused(_) => ReloadErrorKind::Refused,
            ReloadError::Timeout(_) => ReloadErrorKind::Timeout,
            ReloadError::NotRunning => ReloadErrorKind::NotRunning,
        }
    }
}

/// The kinds of [`ReloadError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadErrorKind {
    /// Writing the config failed.
    Write,
    /// The server said no.
    Refused,
    /// The server said nothing.
    Timeout,
    /// No server.
    NotRunning,
}

type Waiter = oneshot::Sender<Result<(), ReloadError>>;

/// Asks the reload task for a reload; cheap to clone.
#[derive(Debug, Clone)]
pub struct Reloader {
    tx: mpsc::UnboundedSender<Waiter>,
}

/// What the reload task works on.
pub(super) struct Target {
    pub settings: EmbeddedSettings,
    pub port: u16,
    pub users: Arc<Users>,
    pub pid: Arc<AtomicU32>,
    pub notes: broadcast::Sender<Note>,
}

impl Reloader {
    pub(super) fn spawn(target: Target) -> Reloader {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(target, rx));
        Reloader { tx }
    }

    /// Apply the current user table; returns once the server has loaded
    /// it (or could not).
    ///
    /// # Errors
    ///
    /// [`ReloadError`] when the server refused the config, did not answer
    /// in time, or is not running.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| ReloadError::NotRunning)?;
        rx.await.unwrap_or(Err(ReloadError::NotRunning))
    }
}

async fn run(target: Target, mut rx: mpsc::UnboundedReceiver<Waiter>) {
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiters.push(more);
        }
        let outcome = reload_once(&target).await;
        match &outcome {
            // Stopped on purpose (daemon shutdown): nothing to apply to.
            Err(e) if e.kind() == ReloadErrorKind::NotRunning => {
                tracing::debug!(error = %e, "nats-server config not reloaded");
            }
            Err(e) => tracing::error!(error = %e, "nats-server config not reloaded"),
            Ok(()) => {}
        }
        for w in waiters {
            let _ = w.send(outcome.clone());
        }
    }
}

async fn reload_once(target: &Target) -> Result<(), ReloadError> {
    let started = std::time::Instant::now();
    // Listen before signalling, so the answer cannot be missed.
    let mut notes = target.notes.subscribe();
    write_config(&target.settings, target.port, &target.users)
        .map_err(|e| ReloadError::Write(e.to_string()))?;
    let pid = target.pid.load(Ordering::SeqCst);
    if pid == 0 {
        return Err(ReloadError::NotRunning);
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|_| ReloadError::NotRunning)?;
    let wait = async {
        loop {
            match notes.recv().await {
                Ok(Note::Reloaded) => return Ok(()),
                Ok(Note::ReloadFailed(why)) => return Err(ReloadError::Refused(why)),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Err(ReloadError::NotRunning),
            }
        }
    };
    let result = tokio::time::timeout(CONFIRM_TIMEOUT, wait)
        .await
        .unwrap_or(Err(ReloadError::Timeout(CONFIRM_TIMEOUT)));
    tracing::debug!(took = ?started.elapsed(), users = target.users.len(), ok = result.is_ok(), "nats-server config reloaded");
    result
}
