//! How client commands reach the daemon's bus: `--url` (or an
//! operator's launch environment), else the runtime file the daemon
//! wrote.

use std::path::PathBuf;

use anyhow::Context as _;
use switchboard_bus::{Bus, BusOptions};

use crate::config::Config;
use crate::daemon::{runtime_file, RuntimeInfo};

/// Where a client command finds the daemon: the global `--url` and
/// `--config` options (the latter defaulted as `run` does).
pub(super) struct Client {
    /// NATS to reach directly instead of through the runtime file.
    pub(super) url: Option<String>,
    /// The daemon's config file, which says where its runtime file is.
    pub(super) config_path: Option<PathBuf>,
}

impl Client {
    /// [`connect`], and the durable stream's name: the runtime file's, else
    /// (with `--url`) the config's `[stream]` when enabled.
    pub(super) async fn connect_with_stream(&self) -> anyhow::Result<(Bus, Option<String>)> {
        let (url, config_path) = (&self.url, self.config_path.as_deref());
        let bus = self.connect().await?;
        let direct = url.is_some() || std::env::var(switchboard_proto::launch::NATS_URL).is_ok();
        let stream = if direct {
            Config::load(config_path)
                .ok()
                .filter(|c| c.stream.enabled)
                .map(|c| c.stream.name)
        } else {
            Config::load(config_path)
                .ok()
                .and_then(|c| std::fs::read(runtime_file(&c.runtime_dir)).ok())
                .and_then(|bytes| serde_json::from_slice::<RuntimeInfo>(&bytes).ok())
                .and_then(|info| info.stream)
        };
        Ok((bus, stream))
    }

    /// Connect a client: `--url` (or `$SWITCHBOARD_NATS_URL`), else the
    /// runtime file the daemon wrote.
    pub(super) async fn connect(&self) -> anyhow::Result<Bus> {
        let (url, config_path) = (&self.url, self.config_path.as_deref());
        let opts = match url
            .clone()
            .or_else(|| std::env::var(switchboard_proto::launch::NATS_URL).ok())
        {
            Some(url) => {
                use switchboard_proto::launch;
                let mut o = BusOptions::new(&url);
                // An operator's own login (a shell operator's `tail`, `pub`):
                // the password file its launch environment names.
                let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
                let password = switchboard_bus::secret(
                    get,
                    launch::NATS_PASSWORD,
                    launch::NATS_PASSWORD_FILE,
                )?;
                if let (Some(u), Some(p)) = (get(launch::NATS_USER), password) {
                    o = o.user_password(u, p);
                }
                if let Some(prefix) = get(launch::NATS_INBOX_PREFIX) {
                    o = o.inbox_prefix(prefix);
                }
                o
            }
            None => {
                let config = Config::load(config_path)?;
                let path = runtime_file(&config.runtime_dir);
                let text = std::fs::read(&path).with_context(|| match config_path {
                Some(p) => format!(
                    "cannot reach the orchestrator: {} is missing or unreadable; \
                     is `switchboard run` running with this config ({})?",
                    path.display(),
                    p.display()
                ),
                // The built-in defaults put the runtime file under the
                // current directory: most likely the wrong place.
                None => format!(
                    "cannot reach the orchestrator: {} is missing or unreadable, and no config \
                     file was given or found (./switchboard.toml, /etc/switchboard/switchboard.toml); \
                     name the daemon's with --config FILE or SWITCHBOARD_TOML=FILE, or reach NATS \
                     directly with --url",
                    path.display()
                ),
            })?;
                let info: RuntimeInfo = serde_json::from_slice(&text).with_context(|| {
                    format!("{} is not a switchboard runtime file", path.display())
                })?;
                info.bus_options()
            }
        };
        let opts = opts
            .connect_timeout(std::time::Duration::from_secs(3))
            .name("switchboard-cli");
        let urls = opts.urls().join(",");
        Bus::connect(&opts, "cli")
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the orchestrator's bus at {urls}: {e}"))
    }
}

pub(super) fn unreachable_hint(e: switchboard_bus::RequestError) -> anyhow::Error {
    match e.kind() {
        switchboard_bus::RequestErrorKind::NoResponders
        | switchboard_bus::RequestErrorKind::TimedOut => {
            anyhow::anyhow!("{e}\nis `switchboard run` running with this config?")
        }
        _ => e.into(),
    }
}
