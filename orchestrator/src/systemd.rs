//! systemd integration (`Type=notify`): READY, RELOADING, STOPPING and
//! watchdog pings. Everything here is a no-op outside systemd.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Start-up (or a reload) is complete.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload (SIGHUP) begins; systemd wants the monotonic time with it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A restart in place begins (`switchboard rolling-restart`): said as a
/// reload, not a stop. `STOPPING=1` would make systemd treat the service
/// as going down and kill it after `TimeoutStopSec`; `RELOADING=1` keeps
/// it active and waits for the `READY=1` the executed-again program sends
/// once it is up (same pid, so `NotifyAccess=main` accepts it).
pub fn restarting() {
    let status = NotifyState::Status("restarting in place (rolling restart)");
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now, status]),
        Err(_) => send(&[NotifyState::Reloading, status]),
    }
}

/// Shutdown begins.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping operators"),
    ]);
}

/// If systemd asked for watchdog pings (`WatchdogSec=`), the task that
/// pings at half the interval until `shutdown`; it only runs while the
/// runtime is responsive, so a wedged orchestrator stops pinging and
/// systemd restarts it.
pub fn watchdog(
    shutdown: tokio_util::sync::CancellationToken,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    let every = sd_notify::watchdog_enabled()? / 2;
    let every = every.max(Duration::from_millis(100));
    tracing::info!(?every, "systemd watchdog enabled");
    Some(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
            }
        }
    })
}
