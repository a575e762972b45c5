//! `switchboard run`: wire everything together and live until SIGTERM.
//!
//! Start-up and SIGHUP share one path: load the config and manifests,
//! report every problem, and hand the valid manifests to
//! [`Supervisor::apply`], which diffs them against what runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use switchboard_bus::{Bus, BusOptions};
use switchboard_proto::{Heartbeat, Ready, ALL_HEARTBEATS, ALL_READY};
use tokio::signal::unix::{signal, SignalKind};

use crate::api::{self, DaemonInfo};
use crate::config::Config;
use crate::manifest::{self, LoadReport};
use crate::nats_server::{generate_password, EmbeddedNats, EmbeddedSettings};
use crate::process::LogBook;
use crate::supervisor::{Lifecycle, NatsAccess, Routes, Shared, Supervisor};
use crate::systemd;

/// What the daemon writes for its CLI: how to reach the bus. Mode 0600 in
/// the runtime dir, because it holds the embedded server's password.
#[derive(Clone, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// The daemon's pid.
    pub pid: u32,
    /// NATS URL(s).
    pub url: String,
    /// NATS user, if any.
    #[serde(default)]
    pub user: Option<String>,
    /// NATS password, if any.
    #[serde(default)]
    pub password: Option<String>,
}

impl std::fmt::Debug for RuntimeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeInfo")
            .field("pid", &self.pid)
            .field("url", &self.url)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The runtime file's path under a runtime dir.
pub fn runtime_file(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("switchboard.json")
}

impl RuntimeInfo {
    /// Connection options for a client of this daemon.
    pub fn bus_options(&self) -> BusOptions {
        let mut o = BusOptions::new(&self.url);
        if let (Some(u), Some(p)) = (&self.user, &self.password) {
            o = o.user_password(u.clone(), p.clone());
        }
        o
    }
}

/// Run the daemon until SIGTERM/SIGINT. `config_path` is the
/// `switchboard.toml` (none: defaults in the current directory).
pub async fn run(config_path: Option<&Path>) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = Config::load(config_path)?;
    for dir in [&config.state_dir, &config.runtime_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let _lock = lock_runtime_dir(&config.runtime_dir)?;

    // NATS: external, or our own child.
    let (access, mut embedded) = match &config.nats.url {
        Some(url) => (external_access(&config, url)?, None),
        None => {
            let password = generate_password();
            let settings = EmbeddedSettings {
                binary: config.nats.embedded.binary.clone(),
                host: config.nats.embedded.host.clone(),
                port: config.nats.embedded.port,
                jetstream: config.nats.embedded.jetstream,
                store_dir: config.state_dir.join("nats"),
                runtime_dir: config.runtime_dir.clone(),
                user: "switchboard".to_string(),
                password: password.clone(),
            };
            let server = EmbeddedNats::start(settings).await?;
            tracing::info!(url = %server.url(), pid = server.pid(), "embedded nats-server listening");
            let access = NatsAccess {
                url: server.url(),
                user_password: Some(("switchboard".to_string(), password)),
            };
            (access, Some(server))
        }
    };
    let mut opts = BusOptions::new(&access.url).name("switchboard");
    if let Some((u, p)) = &access.user_password {
        opts = opts.user_password(u.clone(), p.clone());
    }
    let bus = Bus::connect(&opts, "switchboard").await?;
    let info = RuntimeInfo {
        pid: std::process::id(),
        url: access.url.clone(),
        user: access.user_password.as_ref().map(|(u, _)| u.clone()),
        password: access.user_password.as_ref().map(|(_, p)| p.clone()),
    };
    let supervisor = Arc::new(Supervisor::new(Shared {
        bus: bus.clone(),
        nats: access.clone(),
        state_dir: config.state_dir.clone(),
        runtime_dir: config.runtime_dir.clone(),
        logs: LogBook::default(),
        exe_dir: std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf)),
    }));
    spawn_lifecycle_router(&bus, supervisor.routes()).await?;
    tokio::spawn(api::serve(
        bus.clone(),
        Arc::clone(&supervisor),
        DaemonInfo {
            started,
            nats_url: access.url.clone(),
            nats_embedded: embedded.is_some(),
        },
    ));
    // The API and lifecycle subscriptions must be live before operators
    // start announcing themselves, and before the CLI is told where to
    // find us.
    bus.sync().await?;
    write_runtime_file(&config.runtime_dir, &info)?;

    let mut manifests_dir = config.manifests_dir.clone();
    let report = manifest::load_dir(&manifests_dir);
    let summary = apply_report(&supervisor, &manifests_dir, report).await;
    tracing::info!(
        operators = summary.0,
        problems = summary.1,
        dir = %manifests_dir.display(),
        "switchboard running"
    );
    systemd::ready(&format!("{} operators", summary.0));
    let _watchdog = systemd::spawn_watchdog();

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                systemd::reloading();
                tracing::info!("SIGHUP: reloading config and manifests");
                match Config::load(config_path) {
                    Ok(new) => {
                        if new.nats != config.nats {
                            tracing::warn!("[nats] settings changed; they apply at the next start of switchboard");
                        }
                        manifests_dir = new.manifests_dir.clone();
                    }
                    Err(e) => tracing::error!(error = %e, "config not reloaded; keeping the old one"),
                }
                let report = manifest::load_dir(&manifests_dir);
                let summary = apply_report(&supervisor, &manifests_dir, report).await;
                systemd::ready(&format!("{} operators", summary.0));
            }
            why = async {
                match embedded.as_mut() {
                    Some(server) => server.exited().await,
                    None => std::future::pending().await,
                }
            } => {
                tracing::error!(exit = %why, "embedded nats-server died; restarting it");
                if let Some(server) = embedded.as_mut() {
                    if let Err(e) = server.restart().await {
                        tracing::error!(error = %e, "cannot restart the embedded nats-server; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    } else {
                        tracing::info!(pid = server.pid(), "embedded nats-server is back");
                    }
                }
            }
        }
    }
    tracing::info!("stopping operators");
    systemd::stopping();
    supervisor.shutdown().await;
    bus.close().await;
    if let Some(server) = embedded {
        server.stop().await;
    }
    let _ = std::fs::remove_file(runtime_file(&config.runtime_dir));
    tracing::info!("stopped");
    Ok(())
}

/// Log every manifest problem (one line each) and apply the valid ones.
/// Returns (operators configured, problems).
async fn apply_report(supervisor: &Supervisor, dir: &Path, report: LoadReport) -> (usize, usize) {
    for p in &report.problems {
        tracing::error!("{p}");
    }
    if report.manifests.is_empty() && report.problems.is_empty() {
        tracing::warn!(
            dir = %dir.display(),
            "no operator manifests: add one (see deploy/operators.d/pingbot.toml), then send SIGHUP"
        );
    }
    let broken: Vec<PathBuf> = report.problems.iter().map(|p| p.path.clone()).collect();
    let n = report.manifests.len();
    let summary = supervisor.apply(report.manifests, &broken).await;
    tracing::info!(
        added = ?summary.added,
        removed = ?summary.removed,
        restarted = ?summary.restarted,
        reloaded = ?summary.reloaded,
        updated = ?summary.updated,
        kept_broken = ?summary.kept_broken,
        "manifests applied"
    );
    (n, report.problems.len())
}

async fn spawn_lifecycle_router(bus: &Bus, routes: Routes) -> anyhow::Result<()> {
    let mut ready = bus.subscribe_raw(ALL_READY).await?;
    let mut heartbeats = bus.subscribe_raw(ALL_HEARTBEATS).await?;
    let id_of = |subject: &str| subject.split('.').nth(2).map(str::to_string);
    let r = routes.clone();
    tokio::spawn(async move {
        while let Some(msg) = ready.next().await {
            let Some(id) = id_of(&msg.subject) else {
                continue;
            };
            match serde_json::from_slice::<Ready>(&msg.payload) {
                Ok(m) => r.deliver(&id, Lifecycle::Ready(m)),
                Err(e) => tracing::warn!(operator = %id, error = %e, "malformed ready message"),
            }
        }
    });
    tokio::spawn(async move {
        while let Some(msg) = heartbeats.next().await {
            let Some(id) = id_of(&msg.subject) else {
                continue;
            };
            match serde_json::from_slice::<Heartbeat>(&msg.payload) {
                Ok(m) => routes.deliver(&id, Lifecycle::Heartbeat(m)),
                Err(e) => tracing::debug!(operator = %id, error = %e, "malformed heartbeat"),
            }
        }
    });
    Ok(())
}

fn external_access(config: &Config, url: &str) -> anyhow::Result<NatsAccess> {
    let password = config
        .nats
        .password()
        .context("cannot read the NATS password for [nats]")?;
    let user_password = match (&config.nats.user, password) {
        (Some(u), Some(p)) => Some((u.clone(), p)),
        (None, None) => None,
        (Some(_), None) => anyhow::bail!("[nats] user is set but no password_file or password_env"),
        (None, Some(_)) => anyhow::bail!("[nats] has a password but no user"),
    };
    Ok(NatsAccess {
        url: url.to_string(),
        user_password,
    })
}

fn write_runtime_file(dir: &Path, info: &RuntimeInfo) -> anyhow::Result<()> {
    let path = runtime_file(dir);
    crate::files::write_private(&path, &serde_json::to_vec_pretty(info)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// One daemon per runtime dir: two would each start every operator.
fn lock_runtime_dir(dir: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = dir.join("switchboard.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!(
            "another switchboard is running with runtime dir {} (see `switchboard status`); \
             stop it first or use another config",
            dir.display()
        )
    })
}
