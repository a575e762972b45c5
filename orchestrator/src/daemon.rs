//! `switchboard run`: wire everything together and live until SIGTERM.
//!
//! Start-up and SIGHUP share one path: load the config and manifests,
//! report every problem, and hand the valid manifests to
//! [`Supervisor::apply`], which diffs them against what runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use futures::{FutureExt as _, StreamExt};
use serde::{Deserialize, Serialize};
use switchboard_bus::{Bus, BusOptions};
use switchboard_proto::{Heartbeat, OperatorId, Ready, SbSubject, ALL_HEARTBEATS, ALL_READY};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::access::{Access, EmbeddedAccess, ExternalAccess};
use crate::api::{self, DaemonInfo};
use crate::config::Config;
use crate::manifest::{self, LoadReport};
use crate::nats_server::{
    cli_permissions, generate_password, EmbeddedNats, EmbeddedSettings, User, Users, CLI_USER,
    DAEMON_USER,
};
use crate::outbox::Outbox;
use crate::process::LogBook;
use crate::relaunch::{Relaunch, RelaunchError};
use crate::supervisor::{Lifecycle, Routes, Shared, Supervisor};
use crate::systemd;

/// What the daemon writes for its CLI: how to reach the bus. Mode 0600 in
/// the 0700 runtime dir, because it holds credentials: with the embedded
/// server, the CLI's own user (an administrator's, see
/// [`crate::nats_server::cli_permissions`]); with an external server, the
/// daemon's own way in (the CLI is the daemon's administrator).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// The daemon's pid.
    pub pid: u32,
    /// NATS URL(s).
    pub url: String,
    /// NATS user, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// NATS password, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// NATS token, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A `.creds` file, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds_file: Option<PathBuf>,
    /// CA to trust for TLS, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// The durable stream's name, when the daemon keeps one (`logs` and
    /// `replay` read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

impl std::fmt::Debug for RuntimeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeInfo")
            .field("pid", &self.pid)
            .field("url", &self.url)
            .field("user", &self.user)
            .field("creds_file", &self.creds_file)
            .field("tls_ca", &self.tls_ca)
            .field("stream", &self.stream)
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
        if let Some(t) = &self.token {
            o = o.token(t.clone());
        }
        if let Some(c) = &self.creds_file {
            o = o.creds_file(c.clone());
        }
        if let Some(ca) = &self.tls_ca {
            o = o.tls_ca(ca.clone());
        }
        // `switchboard replay` republishes stored envelopes: with the id
        // header, the stream keeps them once.
        o.stream_ids(self.stream.is_some())
    }
}

/// Whether operators can be sandboxed here (see `crate::sandbox`): the
/// daemon's private paths are what every sandbox hides. Unavailable: one
/// warning, or the error when `[sandbox] required`.
fn probe_sandbox(
    config: &Config,
    config_path: Option<&Path>,
) -> anyhow::Result<crate::sandbox::Sandboxing> {
    let private = crate::sandbox::private_paths(config, config_path);
    let sandbox = crate::sandbox::Sandboxing::probe(&config.sandbox, private)?;
    if let Some(why) = sandbox.unavailable() {
        tracing::warn!(
            reason = why,
            "operators run WITHOUT a sandbox: each can read what this daemon's user can, \
             other operators' processes included; install bubblewrap and allow unprivileged \
             user namespaces, or set [sandbox] required = true to refuse to start like this"
        );
    }
    Ok(sandbox)
}

/// How the daemon ended.
#[derive(Debug)]
pub enum Ended {
    /// SIGTERM or SIGINT: the process exits.
    Stopped,
    /// A `restart` request (cluster mode): everything is stopped as on
    /// SIGTERM, and the caller executes the program again
    /// ([`Relaunch::exec`]) once the async runtime is down.
    Restart(Relaunch),
}

/// Run the daemon until SIGTERM/SIGINT, or until a `restart` request.
/// `config_path` is the `switchboard.toml` (none: defaults in the current
/// directory); `relaunch` how to execute the program again (or why it
/// cannot be, said to whoever asks for a restart).
pub async fn run(
    config_path: Option<&Path>,
    relaunch: Result<Relaunch, RelaunchError>,
) -> anyhow::Result<Ended> {
    let started = Instant::now();
    let config = Config::load(config_path)?;
    for dir in [&config.state_dir, &config.runtime_dir] {
        // 0700: the runtime dir holds the server's config with every
        // password, the CLI's login and operators' configs with their
        // secrets; the state dir operators' sessions and keys.
        crate::files::create_private_dir(dir)
            .with_context(|| format!("cannot create {} (mode 0700)", dir.display()))?;
    }
    let _runtime_lock = lock_dir(&config.runtime_dir, "runtime_dir")?;
    // (One directory for both is locked once: a second flock of the same
    // file by this process would refuse ourselves.)
    let same = match (
        config.runtime_dir.canonicalize(),
        config.state_dir.canonicalize(),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => config.runtime_dir == config.state_dir,
    };
    let _state_lock = if same {
        None
    } else {
        Some(lock_dir(&config.state_dir, "state_dir")?)
    };

    // A daemon killed with SIGKILL leaves operators' forked helpers
    // running: end them before starting a new set.
    crate::leftovers::sweep(&config.state_dir);

    // Each operator's sandbox: decided once, said once.
    let sandbox = probe_sandbox(&config, config_path)?;

    // NATS: external, or our own child with one user per operator.
    let (daemon_nats, cli_nats, mut access, mut embedded) = match &config.nats.url {
        Some(url) => {
            let daemon = external_client(&config, url)?;
            let access = Access::External(ExternalAccess {
                url: url.clone(),
                tls_ca: config.nats.tls_ca.clone(),
                stream: None,
            });
            (daemon.clone(), daemon, access, None)
        }
        None => {
            let users = Arc::new(Users::default());
            let daemon_password = generate_password();
            let cli_password = generate_password();
            users.set(
                DAEMON_USER,
                User {
                    password: daemon_password.clone(),
                    permissions: None,
                },
            );
            users.set(
                CLI_USER,
                User {
                    password: cli_password.clone(),
                    permissions: Some(cli_permissions()),
                },
            );
            let e = &config.nats.embedded;
            let settings = EmbeddedSettings {
                binary: e.binary.clone(),
                host: e.host.clone(),
                port: e.port,
                jetstream: e.jetstream,
                store_dir: config.state_dir.join("nats"),
                max_file_store: e.max_file_store.as_u64(),
                max_memory_store: e.max_memory_store.as_u64(),
                runtime_dir: config.runtime_dir.clone(),
                tls: e.tls_cert.clone().zip(e.tls_key.clone()),
                monitor_port: e.monitor_port,
                cluster: config.cluster.as_ref().map(|c| {
                    format!(
                        "{}{}",
                        switchboard_cluster::server_fragment(c),
                        crate::cluster::api_mapping(&c.host)
                    )
                }),
            };
            let server = EmbeddedNats::start(settings, Arc::clone(&users)).await?;
            tracing::info!(url = %server.url(), pid = server.pid(), "embedded nats-server listening");
            let tls_ca = config.nats.tls_ca.clone();
            let client = |user: &str, password: String| RuntimeInfo {
                pid: std::process::id(),
                url: server.url(),
                user: Some(user.to_owned()),
                password: Some(password),
                tls_ca: tls_ca.clone(),
                ..RuntimeInfo::default()
            };
            let daemon = client(DAEMON_USER, daemon_password);
            let cli = client(CLI_USER, cli_password);
            let access = Access::Embedded(EmbeddedAccess {
                url: server.url(),
                tls_ca,
                users,
                reloader: server.reloader(),
                stream: None,
                cluster_host: config.cluster.as_ref().map(|c| c.host.clone()),
            });
            (daemon, cli, access, Some(server))
        }
    };
    let opts = daemon_nats.bus_options().name("switchboard");
    // Every ConnectError names the URL (or the file) at fault; adding the
    // URL here said it twice in the one line a failed start prints.
    let bus = Bus::connect(&opts, "switchboard")
        .await
        .context("cannot connect to NATS")?;
    let mut stream_config = config.stream.clone();
    let replicas = config.stream_replicas();
    let stream_name = if config.cluster.is_some() {
        // Cluster mode: JetStream answers only once the cluster has a
        // meta leader (two servers up), which may be after this host is;
        // the stream is made in the background meanwhile (see below).
        (config.stream.enabled && config.nats.embedded.jetstream)
            .then(|| config.stream.name.clone())
    } else {
        ensure_stream(&bus, &config).await
    };
    access.set_stream(stream_name);
    let keeps_stream = access.stream().is_some();
    let info = RuntimeInfo {
        stream: access.stream().map(str::to_owned),
        ..cli_nats
    };
    let nats_url = access.url().to_owned();
    let outbox = Outbox::default();
    let shutdown_early = CancellationToken::new();
    if config.cluster.is_some() && keeps_stream {
        tokio::spawn(ensure_stream_when_ready(
            bus.clone(),
            config.clone(),
            shutdown_early.clone(),
        ));
    }
    // Cluster mode: the fence warden, before any operator can start (see
    // `crate::warden`: what stops this host's operators if this process
    // is frozen while peers take them over).
    let warden = match &config.cluster {
        Some(_) => {
            let exe = std::env::current_exe()
                .context("cannot find this program to start the fence warden")?;
            Some(crate::warden::WardenLink::start(&exe)?)
        }
        None => None,
    };
    let lease = config
        .cluster
        .as_ref()
        .map(|_| Arc::new(std::sync::OnceLock::new()));
    let supervisor = Arc::new(Supervisor::new(Shared {
        bus: bus.clone(),
        access,
        state_dir: config.state_dir.clone(),
        runtime_dir: config.runtime_dir.clone(),
        logs: LogBook::default(),
        outbox: outbox.clone(),
        exe_dir: std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf)),
        sandbox,
        host: config.cluster.as_ref().map(|c| c.host.clone()),
        warden: warden.clone(),
        lease: lease.clone(),
    }));
    // Every long-lived task of the daemon watches this token and is
    // awaited at shutdown (as in mini-redis): nothing is left running
    // behind the last log line.
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(outbox.clone().run(bus.clone(), shutdown.clone()));
    spawn_lifecycle_router(&bus, supervisor.routes(), &shutdown, &mut tasks).await?;
    let api_stats = Arc::new(crate::discovery::ApiStats::default());
    tasks.spawn(crate::discovery::serve(
        bus.clone(),
        crate::discovery::Service {
            id: crate::discovery::new_id(),
            started: crate::discovery::started_at(started),
            stats: Arc::clone(&api_stats),
            host: config.cluster.as_ref().map(|c| c.host.clone()),
        },
        shutdown.clone(),
    ));
    // Cluster mode: the engine decides what runs here (it joins in the
    // background: the other hosts may not be up yet).
    let cluster = config.cluster.as_ref().map(|c| {
        let login = crate::cluster::Login {
            url: nats_url.clone(),
            user: daemon_nats.user.clone().unwrap_or_default(),
            password: daemon_nats.password.clone().unwrap_or_default(),
            tls_ca: config.nats.tls_ca.clone(),
        };
        crate::cluster::Cluster::start(
            c,
            login,
            Arc::clone(&supervisor),
            config.manifests_dir.clone(),
            warden.clone(),
            lease.clone(),
            keeps_stream
                .then(|| {
                    config
                        .stream
                        .operator_streams()
                        .map(|streams| (config.stream.spec(replicas), streams))
                })
                .flatten(),
        )
    });
    // A `restart` request (cluster mode) cancels this: the daemon then
    // stops as on SIGTERM and executes its program again.
    let restart = CancellationToken::new();
    let relaunch = Arc::new(relaunch);
    tasks.spawn(api::serve(
        bus.clone(),
        Arc::clone(&supervisor),
        DaemonInfo {
            restart: api::Restart {
                requested: restart.clone(),
                relaunch: Arc::clone(&relaunch),
            },
            started,
            nats_url: nats_url.clone(),
            nats_embedded: embedded.is_some(),
            stream: info.stream.clone(),
            stats: api_stats,
            cluster: cluster.as_ref().map(crate::cluster::Cluster::state),
        },
        shutdown.clone(),
    ));
    // The API and lifecycle subscriptions must be live before operators
    // start announcing themselves, and before the CLI is told where to
    // find us.
    bus.sync().await?;
    write_runtime_file(&config.runtime_dir, &info)?;

    let mut manifests_dir = config.manifests_dir.clone();
    let mut report = manifest::load_dir(&manifests_dir);
    // In cluster mode an operator's own stream is made where and when the
    // cluster starts it (`crate::cluster`), not for this host's directory.
    if keeps_stream && cluster.is_none() {
        spawn_operator_streams(
            &bus,
            &stream_config,
            replicas,
            &report,
            &shutdown,
            &mut tasks,
        );
    }
    if let Some(c) = &cluster {
        // The directory is what this host proposes to the cluster (see
        // `crate::cluster`), applied by the cluster task once joined.
        tracing::info!(
            host = %c.state().host(),
            dir = %manifests_dir.display(),
            "switchboard running in cluster mode"
        );
        systemd::ready("cluster mode");
    } else {
        report.refuse_placement();
        let summary = apply_report(&supervisor, &manifests_dir, report).await;
        tracing::info!(
            operators = summary.operators,
            problems = summary.problems,
            dir = %manifests_dir.display(),
            "switchboard running"
        );
        systemd::ready(&format!("{} operators", summary.operators));
    }
    if let Some(watchdog) = systemd::watchdog(shutdown.clone()) {
        tasks.spawn(watchdog);
    }

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            () = restart.cancelled() => break,
            _ = sighup.recv() => {
                systemd::reloading();
                tracing::info!("SIGHUP: reloading config and manifests");
                match Config::load(config_path) {
                    Ok(new) => {
                        if new.nats != config.nats {
                            tracing::warn!("[nats] settings changed; they apply at the next start of switchboard");
                        }
                        if new.cluster != config.cluster {
                            tracing::warn!("[cluster] settings changed; they apply at the next start of switchboard");
                        }
                        if new.stream != stream_config {
                            if new.stream.name != stream_config.name
                                || new.stream.enabled != stream_config.enabled
                            {
                                tracing::warn!("[stream] name or enabled changed; they apply at the next start of switchboard");
                            } else if keeps_stream {
                                match bus.ensure_stream(&new.stream.spec(new.stream_replicas())).await {
                                    Ok(done) => tracing::info!(stream = %new.stream.name, outcome = ?done, "durable stream limits applied"),
                                    Err(e) => tracing::error!(error = %e, "durable stream limits not applied; keeping the old ones"),
                                }
                            }
                            stream_config = new.stream.clone();
                        }
                        manifests_dir = new.manifests_dir.clone();
                    }
                    Err(e) => tracing::error!(error = %e, "config not reloaded; keeping the old one"),
                }
                let mut report = manifest::load_dir(&manifests_dir);
                if keeps_stream && cluster.is_none() {
                    spawn_operator_streams(&bus, &stream_config, replicas, &report, &shutdown, &mut tasks);
                }
                if let Some(c) = &cluster {
                    c.reload(manifests_dir.clone());
                    systemd::ready("cluster mode");
                } else {
                    report.refuse_placement();
                    let summary = apply_report(&supervisor, &manifests_dir, report).await;
                    systemd::ready(&format!("{} operators", summary.operators));
                }
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
    let restarting = restart.is_cancelled();
    if restarting {
        tracing::info!("restart requested: leaving the cluster, then executing the program again");
        systemd::restarting();
    } else {
        tracing::info!("stopping operators");
        systemd::stopping();
    }
    // A Ctrl-C reached the embedded server too (same process group): stop
    // the operators without waiting for it to confirm their revocation.
    // (Nothing reached it on a restart.)
    if let Some(server) = embedded.as_mut().filter(|_| !restarting) {
        if server
            .gone_within(std::time::Duration::from_millis(300))
            .await
        {
            tracing::info!(
                "the embedded nats-server stopped with the daemon; operators stop without it"
            );
        }
    }
    // Cluster mode: hand this host's operators over first (the engine
    // stops them, gives their records back and deletes the heartbeat, so
    // peers start them without waiting for the lease to run out).
    if let Some(c) = cluster {
        c.leave().await;
    }
    // The API keeps answering (status shows `stopping`) until every
    // operator is down; then the daemon's own tasks end.
    supervisor.shutdown().await;
    if let Some(warden) = &warden {
        warden.quit().await;
    }
    shutdown_early.cancel();
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    bus.close().await;
    if let Some(server) = embedded {
        server.stop().await;
    }
    let _ = std::fs::remove_file(runtime_file(&config.runtime_dir));
    // A SIGTERM or SIGINT during the restart's shutdown wins (`systemctl
    // stop` while a roll is under way): stop, do not start again.
    let stop_asked =
        sigterm.recv().now_or_never().is_some() || sigint.recv().now_or_never().is_some();
    if restarting && stop_asked {
        tracing::info!("SIGTERM during the restart: stopping instead of starting again");
    }
    if restarting && !stop_asked {
        // (The API accepts a restart only when the program is known.)
        if let Ok(relaunch) = relaunch.as_ref() {
            tracing::info!(program = %relaunch.program().display(), "stopped; executing the program again");
            return Ok(Ended::Restart(relaunch.clone()));
        }
    }
    tracing::info!("stopped");
    Ok(Ended::Stopped)
}

/// Create or update the durable stream; its name when the daemon keeps
/// one. Without it the daemon still runs (`logs` falls back to the
/// in-memory lines, the logger operator cannot start), so a failure is one
/// error line, not a refusal to start.
async fn ensure_stream(bus: &Bus, config: &Config) -> Option<String> {
    let stream = &config.stream;
    if !stream.enabled {
        tracing::info!("durable stream off ([stream] enabled = false)");
        return None;
    }
    if config.nats.url.is_none() && !config.nats.embedded.jetstream {
        tracing::info!("durable stream off: JetStream is off ([nats.embedded] jetstream = false)");
        return None;
    }
    match bus
        .ensure_stream(&stream.spec(config.stream_replicas()))
        .await
    {
        Ok(done) => {
            tracing::info!(stream = %stream.name, outcome = ?done, max_age = %switchboard_proto::duration::format_duration(stream.max_age), max_bytes = %stream.max_bytes, "durable stream ready");
            Some(stream.name.clone())
        }
        Err(e) => {
            tracing::error!(error = %e, "durable stream unavailable: `switchboard logs` shows only the last lines in memory and operators granted `stream` cannot read it");
            None
        }
    }
}

/// Cluster mode: create or update the durable stream once JetStream
/// answers (the cluster formed), retrying every few seconds; one line
/// when done, one when it keeps failing.
async fn ensure_stream_when_ready(bus: Bus, config: Config, stop: CancellationToken) {
    let spec = config.stream.spec(config.stream_replicas());
    for attempt in 1u32.. {
        match bus.ensure_stream(&spec).await {
            Ok(done) => {
                tracing::info!(stream = %config.stream.name, outcome = ?done, "durable stream ready");
                return;
            }
            Err(e) if attempt % 10 == 0 => {
                tracing::warn!(error = %e, "durable stream not ready yet (the cluster has no JetStream quorum?); retrying")
            }
            Err(_) => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
    }
}

/// Make sure every operator in `report` has its own stream
/// (`switchboard_bus::stream::OperatorStreams`: a copy of its subjects
/// that another operator's flood cannot evict), in the background so that
/// no operator waits for it: the copy starts from the beginning of the
/// main stream, so nothing is missed by creating it late. Idempotent; the
/// streams of removed operators are kept (their history) until `max_age`
/// empties them.
fn spawn_operator_streams(
    bus: &Bus,
    config: &crate::config::StreamConfig,
    replicas: usize,
    report: &LoadReport,
    shutdown: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let Some(streams) = config.operator_streams() else {
        return;
    };
    let spec = config.spec(replicas);
    let ids: Vec<OperatorId> = report.manifests.iter().map(|m| m.id.clone()).collect();
    let bus = bus.clone();
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        let work = async {
            for id in ids {
                match bus.ensure_operator_stream(&spec, &streams, id.as_str()).await {
                    Ok(switchboard_bus::stream::Ensured::Unchanged) => {}
                    Ok(done) => {
                        tracing::debug!(operator = %id, outcome = ?done, "operator's own stream ready")
                    }
                    Err(e) => tracing::warn!(
                        operator = %id,
                        error = %e,
                        "no stream of its own: its history is kept only in the shared stream, \
                         where another operator's flood can evict it (raise \
                         [nats.embedded] max_file_store or lower [stream] operator_max_bytes)"
                    ),
                }
            }
        };
        tokio::select! {
            () = work => {}
            () = shutdown.cancelled() => {}
        }
    });
}

/// What applying a manifest directory came to, for the log and systemd's
/// status line.
struct Applied {
    /// Operators configured.
    operators: usize,
    /// Manifest problems found.
    problems: usize,
}

/// Log every manifest problem (one line each) and apply the valid ones.
async fn apply_report(supervisor: &Supervisor, dir: &Path, report: LoadReport) -> Applied {
    for p in &report.problems {
        tracing::error!("{p}");
    }
    if report
        .problems
        .iter()
        .any(|p| p.path == dir && p.line.is_none())
    {
        // The directory itself could not be read (moved, remounted,
        // permissions): that says nothing about the operators, so none is
        // stopped or changed.
        let running = supervisor.status().len();
        if running > 0 {
            tracing::error!(
                dir = %dir.display(),
                running,
                "manifest directory unreadable; keeping every running operator as it is"
            );
        }
        return Applied {
            operators: running,
            problems: report.problems.len(),
        };
    }
    if report.manifests.is_empty() && report.problems.is_empty() {
        tracing::warn!(
            dir = %dir.display(),
            "no operator manifests: add one (see deploy/operators.d/pingbot.toml), then send SIGHUP"
        );
    }
    for m in &report.manifests {
        for note in m.grant_notes() {
            tracing::warn!("{note}");
        }
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
    Applied {
        operators: n,
        problems: report.problems.len(),
    }
}

async fn spawn_lifecycle_router(
    bus: &Bus,
    routes: Routes,
    shutdown: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<()> {
    let mut ready = bus.subscribe_raw(ALL_READY).await?;
    let mut heartbeats = bus.subscribe_raw(ALL_HEARTBEATS).await?;
    // The operator the message is about, from the one parser of `sb.…`
    // subjects; anything else on these wildcards is ignored.
    let id_of = |subject: &str| match SbSubject::parse(subject) {
        Ok(SbSubject::Ready { id } | SbSubject::Heartbeat { id }) => Some(id.into_string()),
        _ => None,
    };
    let r = routes.clone();
    let stop = shutdown.clone();
    tasks.spawn(async move {
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => return,
                msg = ready.next() => match msg { Some(m) => m, None => return },
            };
            let Some(id) = id_of(&msg.subject) else {
                continue;
            };
            match serde_json::from_slice::<Ready>(&msg.payload) {
                Ok(m) => r.deliver(&id, Lifecycle::Ready(m)),
                Err(e) => r.deliver(
                    &id,
                    Lifecycle::Malformed {
                        what: "ready",
                        error: e.to_string(),
                    },
                ),
            }
        }
    });
    let stop = shutdown.clone();
    tasks.spawn(async move {
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => return,
                msg = heartbeats.next() => match msg { Some(m) => m, None => return },
            };
            let Some(id) = id_of(&msg.subject) else {
                continue;
            };
            match serde_json::from_slice::<Heartbeat>(&msg.payload) {
                Ok(m) => routes.deliver(&id, Lifecycle::Heartbeat(m)),
                Err(e) => routes.deliver(
                    &id,
                    Lifecycle::Malformed {
                        what: "heartbeat",
                        error: e.to_string(),
                    },
                ),
            }
        }
    });
    Ok(())
}

/// How the daemon itself connects to an external NATS: every credential
/// `[nats]` names (user/password, token, creds file) and its TLS CA.
fn external_client(config: &Config, url: &str) -> anyhow::Result<RuntimeInfo> {
    let nats = &config.nats;
    let password = nats
        .password()
        .context("cannot read the NATS password for [nats]")?;
    let token = nats
        .token()
        .context("cannot read the NATS token for [nats]")?;
    if let Some(file) = &nats.creds_file {
        std::fs::metadata(file)
            .with_context(|| format!("[nats] creds_file {} cannot be read", file.display()))?;
    }
    if let Some(ca) = &nats.tls_ca {
        std::fs::metadata(ca)
            .with_context(|| format!("[nats] tls_ca {} cannot be read", ca.display()))?;
    }
    Ok(RuntimeInfo {
        pid: std::process::id(),
        url: url.to_owned(),
        user: nats.user.clone(),
        password,
        token,
        creds_file: nats.creds_file.clone(),
        tls_ca: nats.tls_ca.clone(),
        stream: None,
    })
}

fn write_runtime_file(dir: &Path, info: &RuntimeInfo) -> anyhow::Result<()> {
    let path = runtime_file(dir);
    crate::files::write_private(&path, &serde_json::to_vec_pretty(info)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// One daemon per runtime dir and per state dir: two would each start
/// every operator (two daemons with different runtime dirs but one state
/// dir, e.g. against an external NATS, would run every operator twice).
/// The lock file holds the holder's pid, so the refusal can name it.
fn lock_dir(dir: &Path, what: &str) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    use std::io::{Read as _, Seek as _, Write as _};
    let path = dir.join("switchboard.lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut holder = String::new();
    let _ = file.read_to_string(&mut holder);
    let mut lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| {
            let who = match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            anyhow::anyhow!(
                "another switchboard{who} is running with {what} {}: stop it first (see \
                 `switchboard status`), or give this one its own `{what}` in switchboard.toml",
                dir.display()
            )
        })?;
    lock.set_len(0)?;
    lock.rewind()?;
    write!(lock, "{}", std::process::id())?;
    Ok(lock)
}
