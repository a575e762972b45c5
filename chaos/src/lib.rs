//! The fault suite: a real `switchboard run` (embedded nats-server) with
//! real operators, `!ping` traffic flowing through the ping bot, and one
//! fault injected at a time. Each scenario says what is expected, what was
//! observed, how many pings were accepted (published) and answered (by
//! envelope id, through `in-reply-to`), and how long the answers stopped.
//!
//! Core NATS is at-most-once: a ping published while no ping bot is
//! subscribed is lost by design. Those losses are *counted* here (and
//! listed as such); a path documented as lossless must show 0.

mod irc;
mod nostr;

pub use irc::irc_server_restart;
pub use nostr::nostr_relay_restart;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use switchboard_bus::{Bus, ChatAddress, Envelope, Pattern};
use switchboard_orchestrator::daemon::RuntimeInfo;
use switchboard_proto::api::{OperatorStatus, StatusReply, StatusRequest, SupervisedState};
use switchboard_proto::headers;

/// How long any one wait may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// A ping bot manifest with quick health timings, and no answer limits:
/// the scenarios count on every ping being answered (the limits are
/// tested in the orchestrator's `trust` tests).
pub fn pingbot(id: &str) -> String {
    format!(
        "id = \"{id}\"\ncommand = {:?}\nheartbeat_interval = \"100ms\"\nmissed_heartbeats = 3\n\
         ready_timeout = \"5s\"\nstop_timeout = \"2s\"\nrestart = \"always\"\n\
         [backoff]\ninitial = \"10ms\"\nreset_after = \"100ms\"\n\
         [config.rate]\nsender = \"off\"\nroom = \"off\"\nnetwork = \"off\"\n",
        switchboard_testkit::bin_path("switchboard-pingbot")
    )
}

/// A running daemon in a temporary directory.
pub struct Rig {
    /// Its directory (config, manifests, state, runtime, log).
    pub dir: tempfile::TempDir,
    /// The daemon process.
    pub child: Option<tokio::process::Child>,
    /// The CLI's bus connection.
    pub bus: Bus,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
    }
}

impl Rig {
    /// Start a daemon with these manifests (file name, content).
    ///
    /// # Errors
    ///
    /// When the daemon does not come up.
    pub async fn start(manifests: &[(String, String)]) -> anyhow::Result<Rig> {
        Self::start_in(tempfile::tempdir()?, manifests, "").await
    }

    /// [`Rig::start`] in a prepared directory, with extra lines for the
    /// `[nats.embedded]` table.
    ///
    /// # Errors
    ///
    /// When the daemon does not come up.
    pub async fn start_in(
        dir: tempfile::TempDir,
        manifests: &[(String, String)],
        embedded_extra: &str,
    ) -> anyhow::Result<Rig> {
        std::fs::create_dir_all(dir.path().join("operators.d"))?;
        for (name, text) in manifests {
            std::fs::write(dir.path().join("operators.d").join(name), text)?;
        }
        let nats = switchboard_testkit::nats_server_bin()?;
        std::fs::write(
            dir.path().join("switchboard.toml"),
            format!("[nats.embedded]\nport = 0\nbinary = {nats:?}\n{embedded_extra}\n"),
        )?;
        let (child, bus) = Self::spawn(dir.path()).await?;
        Ok(Rig {
            dir,
            child: Some(child),
            bus,
        })
    }

    async fn spawn(dir: &std::path::Path) -> anyhow::Result<(tokio::process::Child, Bus)> {
        let _ = std::fs::remove_file(dir.join("run/switchboard.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))?;
        let child = tokio::process::Command::new(switchboard_testkit::bin_path("switchboard"))
            .arg("run")
            .arg("--config")
            .arg(dir.join("switchboard.toml"))
            .stdin(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawn switchboard")?;
        let deadline = Instant::now() + WAIT;
        let info: RuntimeInfo = loop {
            if let Ok(bytes) = std::fs::read(dir.join("run/switchboard.json")) {
                if let Ok(info) = serde_json::from_slice(&bytes) {
                    break info;
                }
            }
            if Instant::now() > deadline {
                bail!("the daemon never wrote its runtime file");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let bus = Bus::connect(&info.bus_options(), "chaos").await?;
        Ok((child, bus))
    }

    /// SIGKILL the daemon, then start it again on the same directory.
    ///
    /// # Errors
    ///
    /// When it does not come back.
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
            let _ = child.wait().await;
        }
        let (child, bus) = Self::spawn(self.dir.path()).await?;
        self.child = Some(child);
        self.bus = bus;
        Ok(())
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(|c| c.id()).unwrap_or(0)
    }

    /// Status, retried while the daemon's own client is reconnecting.
    ///
    /// # Errors
    ///
    /// When it never answers.
    pub async fn status(&self) -> anyhow::Result<StatusReply> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self
                .bus
                .request_json("sb.api.status", &StatusRequest {}, Duration::from_secs(2))
                .await
            {
                Ok(s) => return Ok(s),
                Err(e) if Instant::now() > deadline => bail!("status: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// One operator's status.
    ///
    /// # Errors
    ///
    /// When the daemon does not answer or does not know it.
    pub async fn operator(&self, id: &str) -> anyhow::Result<OperatorStatus> {
        self.status()
            .await?
            .operators
            .into_iter()
            .find(|o| o.id == id)
            .with_context(|| format!("no operator {id}"))
    }

    /// Wait until `cond` holds for `id`.
    ///
    /// # Errors
    ///
    /// After [`WAIT`].
    pub async fn wait_for(
        &self,
        id: &str,
        cond: impl Fn(&OperatorStatus) -> bool,
    ) -> anyhow::Result<OperatorStatus> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(o) = self.operator(id).await {
                if cond(&o) {
                    return Ok(o);
                }
            }
            if Instant::now() > deadline {
                bail!("{id}: condition not met within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Pid of the embedded nats-server (a child of the daemon).
    pub fn nats_pid(&self) -> Option<u32> {
        let me = self.pid();
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == me && head.ends_with("(nats-server")).then_some(pid)
        })
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Peak resident memory of the daemon so far, in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1000.0)
    }
}

/// `!ping` every few milliseconds, answers collected by id.
pub struct Traffic {
    sent: Arc<Mutex<Vec<(String, Instant)>>>,
    answered: Arc<Mutex<Vec<(String, Instant)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What a traffic run saw.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Pings published (accepted by the client).
    pub sent: usize,
    /// Pings answered (distinct ids).
    pub answered: usize,
    /// The longest time without a single answer, from the first ping.
    pub longest_gap: Duration,
}

impl Traffic {
    /// Start pinging through `bus`, one ping every `every`.
    ///
    /// # Errors
    ///
    /// When the subscription to answers fails.
    pub async fn start(bus: &Bus, every: Duration) -> anyhow::Result<Traffic> {
        // Instance `chaos`, this client's source: authentic events.
        let room = ChatAddress::new("chaos", "chaos", "room");
        let mut answers = bus.subscribe(&Pattern::parse("send.chaos.#")?).await?;
        bus.sync().await?;
        let sent: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let answered: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let a = Arc::clone(&answered);
        let listen = tokio::spawn(async move {
            while let Some(d) = answers.next().await {
                if let Some(id) = d.header(headers::IN_REPLY_TO) {
                    a.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((id.to_owned(), Instant::now()));
                }
            }
        });
        let s = Arc::clone(&sent);
        let bus = bus.clone();
        let subject = room.event_subject("message");
        let send = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let env = Envelope::new(
                    "chaos",
                    json!({"text": "!ping", "sender": "chaos", "room": "room"}),
                )
                .with_header(headers::ROOM, "room");
                let id = env.id().unwrap_or_default().to_owned();
                if bus.publish(&subject, &env).await.is_ok() {
                    s.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((id, Instant::now()));
                }
            }
        });
        Ok(Traffic {
            sent,
            answered,
            tasks: vec![listen, send],
        })
    }

    /// Stop sending, let late answers arrive, and count.
    pub async fn stop(self) -> Tally {
        if let Some(send) = self.tasks.get(1) {
            send.abort();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        for t in &self.tasks {
            t.abort();
        }
        let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let answered = self
            .answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let ids: HashSet<&str> = answered.iter().map(|(id, _)| id.as_str()).collect();
        let sent_ids: HashSet<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
        let mut times: Vec<Instant> = answered.iter().map(|(_, t)| *t).collect();
        times.sort();
        let start = sent.first().map(|(_, t)| *t);
        let end = sent.last().map(|(_, t)| *t);
        let mut longest = Duration::ZERO;
        if let (Some(start), Some(end)) = (start, end) {
            let mut last = start;
            for t in times.iter().copied().filter(|t| *t <= end) {
                longest = longest.max(t.saturating_duration_since(last));
                last = last.max(t);
            }
            longest = longest.max(end.saturating_duration_since(last));
        }
        Tally {
            sent: sent_ids.len(),
            answered: ids.intersection(&sent_ids).count(),
            longest_gap: longest,
        }
    }
}

/// One scenario's result, a row of docs/reliability.md.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The fault.
    pub fault: &'static str,
    /// What should happen.
    pub expected: &'static str,
    /// What did.
    pub observed: String,
    /// Traffic, when the scenario had any.
    pub tally: Option<Tally>,
    /// Whether the expectation held.
    pub ok: bool,
    /// Whether losses are acceptable on this path (at-most-once).
    pub at_most_once: bool,
}

impl Outcome {
    /// The table row.
    pub fn row(&self) -> String {
        let (accepted, delivered, lost, gap) = match &self.tally {
            Some(t) => (
                t.sent.to_string(),
                t.answered.to_string(),
                (t.sent - t.answered.min(t.sent)).to_string(),
                format!("{} ms", t.longest_gap.as_millis()),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        format!(
            "| {} | {} | {} | {accepted} | {delivered} | {lost}{} | {gap} | {} |",
            self.fault,
            self.expected,
            self.observed,
            if self.at_most_once && lost != "0" && lost != "-" {
                " (at-most-once, counted)"
            } else {
                ""
            },
            if self.ok { "ok" } else { "FAILED" }
        )
    }
}

/// Whether `pid` is a live process (a zombie is not).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// Wait (up to a second) for `pid` to be gone.
async fn gone(pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return true };
    for _ in 0..50 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn sig(pid: u32, s: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), s);
}

/// Traffic flows through `bot`, then `fault` runs, then traffic goes on
/// until answers are back (or [`WAIT`]).
async fn with_traffic<F, Fut>(rig: &Rig, before: Duration, fault: F) -> anyhow::Result<Tally>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let traffic = Traffic::start(&rig.bus, Duration::from_millis(5)).await?;
    tokio::time::sleep(before).await;
    fault().await?;
    // Recovery: keep pinging until answers flow again for a while.
    let answered_now = || traffic.answered.lock().map(|a| a.len()).unwrap_or(0);
    let deadline = Instant::now() + WAIT;
    let mut seen = answered_now();
    let mut steady = 0;
    while steady < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = answered_now();
        steady = if now > seen { steady + 1 } else { 0 };
        seen = now;
    }
    Ok(traffic.stop().await)
}

/// `signal` to the ping bot while pings flow; it must be replaced by a
/// new process and answers must resume.
async fn operator_signal(
    signal: Signal,
    fault: &'static str,
    expected: &'static str,
) -> anyhow::Result<Outcome> {
    let rig = Rig::start(&[("bot.toml".into(), pingbot("bot"))]).await?;
    let pid = rig
        .wait_for("bot", |o| o.state == SupervisedState::Running)
        .await?
        .pid;
    let tally = with_traffic(&rig, Duration::from_millis(300), || async {
        sig(pid.unwrap_or(0), signal);
        Ok(())
    })
    .await?;
    let after = rig
        .wait_for("bot", |o| {
            o.state == SupervisedState::Running && o.pid != pid
        })
        .await;
    Ok(Outcome {
        fault,
        expected,
        observed: match &after {
            Ok(o) => format!(
                "replaced (pid {:?} -> {:?}, restarts {}, last exit: {})",
                pid,
                o.pid,
                o.restarts,
                o.last_exit.clone().unwrap_or_default()
            ),
            Err(e) => format!("not replaced: {e}"),
        },
        ok: after.is_ok() && tally.answered > 0,
        tally: Some(tally),
        at_most_once: true,
    })
}

/// SIGKILL of the ping bot while pings flow.
///
/// # Errors
///
/// When the rig fails (not when the expectation does: that is the outcome).
pub async fn operator_sigkill() -> anyhow::Result<Outcome> {
    operator_signal(
        Signal::SIGKILL,
        "operator SIGKILL",
        "restarted at once; answers resume; pings sent while no bot listened are lost",
    )
    .await
}

/// SIGSTOP of the ping bot (a hang).
///
/// # Errors
///
/// When the rig fails.
pub async fn operator_sigstop() -> anyhow::Result<Outcome> {
    operator_signal(
        Signal::SIGSTOP,
        "operator SIGSTOP (hung)",
        "3 missed heartbeats (300 ms), killed, replaced; answers resume",
    )
    .await
}

/// SIGKILL of the embedded nats-server while pings flow.
///
/// # Errors
///
/// When the rig fails.
pub async fn nats_sigkill() -> anyhow::Result<Outcome> {
    let rig = Rig::start(&[("bot.toml".into(), pingbot("bot"))]).await?;
    let pid = rig
        .wait_for("bot", |o| o.state == SupervisedState::Running)
        .await?
        .pid;
    let nats = rig.nats_pid().context("no embedded nats-server")?;
    let tally = with_traffic(&rig, Duration::from_millis(300), || async {
        sig(nats, Signal::SIGKILL);
        Ok(())
    })
    .await?;
    let after = rig.operator("bot").await;
    let same = after
        .as_ref()
        .is_ok_and(|o| o.pid == pid && o.state == SupervisedState::Running);
    Ok(Outcome {
        fault: "nats-server SIGKILL",
        expected:
            "the daemon restarts it on its port; every client reconnects; no operator is restarted",
        observed: format!(
            "server restarted: {}; bot kept its pid: {same}",
            rig.nats_pid().is_some_and(|p| p != nats)
        ),
        ok: same && tally.answered > 0,
        tally: Some(tally),
        at_most_once: true,
    })
}

/// A logger manifest writing under `dir` (writable in its sandbox), with
/// fast health timings.
pub fn logger(dir: &std::path::Path) -> String {
    format!(
        "id = \"logger\"\ncommand = {:?}\npublish = []\nsubscribe = []\nstream = [\"consume\"]\n\
         heartbeat_interval = \"100ms\"\nmissed_heartbeats = 3\nrestart = \"always\"\n\
         sandbox_binds_rw = [{:?}]\n\
         [backoff]\ninitial = \"10ms\"\nreset_after = \"100ms\"\n[config]\ndir = {:?}\n",
        switchboard_testkit::bin_path("switchboard-logger"),
        dir,
        dir
    )
}

/// The envelope ids the stream holds on subjects matching `filter`.
async fn ids_in_stream(bus: &Bus, filter: &str) -> anyhow::Result<HashSet<String>> {
    let mut out = HashSet::new();
    let Some(mut reader) = bus
        .read_stored(
            switchboard_bus::stream::DEFAULT_STREAM,
            &[filter.to_owned()],
            switchboard_bus::stream::StartAt::First,
            false,
        )
        .await?
    else {
        return Ok(out);
    };
    while let Some(m) = reader.next().await {
        if let Some(id) = m?.msg_id {
            out.insert(id);
        }
    }
    Ok(out)
}

/// The logger while pings flow: SIGKILLed, then the nats-server
/// SIGKILLed, then the logger again. Every envelope the stream stored
/// must be in the files exactly once.
///
/// # Errors
///
/// When the rig fails.
pub async fn logger_under_faults() -> anyhow::Result<Outcome> {
    let logs = tempfile::tempdir()?;
    let rig = Rig::start(&[
        ("bot.toml".into(), pingbot("bot")),
        ("logger.toml".into(), logger(logs.path())),
    ])
    .await?;
    rig.wait_for("bot", |o| o.state == SupervisedState::Running)
        .await?;
    let first = rig
        .wait_for("logger", |o| o.state == SupervisedState::Running)
        .await?;
    let tally = with_traffic(&rig, Duration::from_millis(300), || async {
        sig(first.pid.unwrap_or(0), Signal::SIGKILL);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(nats) = rig.nats_pid() {
            sig(nats, Signal::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let again = rig
            .wait_for("logger", |o| {
                o.state == SupervisedState::Running && o.pid != first.pid
            })
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        sig(again.pid.unwrap_or(0), Signal::SIGKILL);
        Ok(())
    })
    .await?;
    let stored = ids_in_stream(&rig.bus, "*.chaos.>").await?;
    let deadline = Instant::now() + WAIT;
    let mut files = switchboard_logger::read::ids(logs.path());
    while stored.iter().any(|id| !files.contains_key(id)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        files = switchboard_logger::read::ids(logs.path());
    }
    let missing = stored.iter().filter(|id| !files.contains_key(*id)).count();
    let twice = files.values().filter(|n| **n > 1).count();
    let restarts = rig.operator("logger").await.map_or(0, |o| o.restarts);
    Ok(Outcome {
        fault: "logger SIGKILL, nats-server SIGKILL, logger SIGKILL",
        expected: "every envelope the stream stored is in the files exactly once",
        observed: format!(
            "stored {}; missing from files {missing}; written twice {twice}; logger restarts {restarts}",
            stored.len()
        ),
        ok: missing == 0 && twice == 0 && !stored.is_empty() && restarts >= 2,
        tally: Some(tally),
        at_most_once: true,
    })
}

/// The misbehaving Python operator (chaos/operators/misbehaving.py) with
/// fast health timings; needs `make tools` (nats-py in .tools/venv).
pub fn misbehaving(id: &str) -> String {
    let root = switchboard_testkit::workspace_root();
    format!(
        "id = \"{id}\"\ncommand = {:?}\nargs = [{:?}]\nheartbeat_interval = \"100ms\"\n\
         missed_heartbeats = 3\nready_timeout = \"10s\"\nstop_timeout = \"1s\"\n",
        root.join(".tools/venv/bin/python"),
        root.join("chaos/operators/misbehaving.py"),
    )
}

/// An operator that sends malformed heartbeats between valid ones and
/// never answers control requests, while pings flow through the ping bot.
///
/// # Errors
///
/// When the rig fails.
pub async fn misbehaving_operator() -> anyhow::Result<Outcome> {
    let rig = Rig::start(&[
        ("bot.toml".into(), pingbot("bot")),
        ("bad.toml".into(), misbehaving("bad")),
    ])
    .await?;
    rig.wait_for("bot", |o| o.state == SupervisedState::Running)
        .await?;
    let first = rig
        .wait_for("bad", |o| o.state == SupervisedState::Running)
        .await?;
    let mut halt = None;
    let mut status_during = None;
    let mut restarted = None;
    let tally = with_traffic(&rig, Duration::from_millis(300), || async {
        // `halt` is never answered: the daemon must time out, not hang,
        // and keep answering status meanwhile.
        let bus = rig.bus.clone();
        let ctl = tokio::spawn(async move {
            let started = Instant::now();
            let reply: Result<switchboard_proto::api::CtlReply, _> = bus
                .request_json(
                    "sb.api.ctl",
                    &json!({"verb": "halt", "target": "bad"}),
                    Duration::from_secs(30),
                )
                .await;
            (started.elapsed(), reply)
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        status_during = Some((rig.status().await.is_ok(), started.elapsed()));
        halt = Some(ctl.await?);
        // A restart is the daemon's own doing (signals), so it works.
        let _: switchboard_proto::api::CtlReply = rig
            .bus
            .request_json(
                "sb.api.ctl",
                &json!({"verb": "restart", "target": "bad"}),
                Duration::from_secs(30),
            )
            .await?;
        restarted = Some(
            rig.wait_for("bad", |o| {
                o.state == SupervisedState::Running && o.pid != first.pid
            })
            .await,
        );
        Ok(())
    })
    .await?;
    let after = rig.operator("bad").await?;
    let (halt_took, halt_reply) = halt.context("halt was sent")?;
    let halt_error = match &halt_reply {
        Ok(r) => r.results.first().and_then(|o| o.error.clone()),
        Err(e) => Some(format!("request failed: {e}")),
    };
    let (status_ok, status_took) = status_during.unwrap_or((false, Duration::ZERO));
    let ok = after.malformed_lifecycle > 0
        && halt_reply
            .as_ref()
            .is_ok_and(|r| r.results.first().is_some_and(|o| !o.ok))
        && status_ok
        && status_took < Duration::from_secs(1)
        && restarted.as_ref().is_some_and(Result::is_ok);
    Ok(Outcome {
        fault: "operator sends malformed heartbeats and ignores control",
        expected: "garbage counted, it stays running on its valid heartbeats; an unanswered `halt` fails after the control timeout while status keeps answering; `restart` replaces it",
        observed: format!(
            "malformed counted: {}; halt answered in {} ms: {}; status during it in {} ms; restarted: {}",
            after.malformed_lifecycle,
            halt_took.as_millis(),
            halt_error.unwrap_or_else(|| "no error".into()),
            status_took.as_millis(),
            restarted.as_ref().is_some_and(Result::is_ok)
        ),
        ok,
        tally: Some(tally),
        at_most_once: true,
    })
}

/// SIGKILL of the daemon itself, and a new one on the same directory.
///
/// # Errors
///
/// When the rig fails.
pub async fn daemon_sigkill() -> anyhow::Result<Outcome> {
    let mut rig = Rig::start(&[("bot.toml".into(), pingbot("bot"))]).await?;
    let pid = rig
        .wait_for("bot", |o| o.state == SupervisedState::Running)
        .await?
        .pid;
    let started = Instant::now();
    rig.kill_and_restart().await?;
    let after = rig
        .wait_for("bot", |o| o.state == SupervisedState::Running)
        .await;
    let back = started.elapsed();
    let old_gone = gone(pid).await;
    let tally = with_traffic(&rig, Duration::from_millis(300), || async { Ok(()) }).await?;
    Ok(Outcome {
        fault: "daemon SIGKILL, then restart",
        expected:
            "operators die with it; the new daemon starts one set (no duplicates) and answers",
        observed: format!(
            "old bot gone: {old_gone}; bot running again after {} ms",
            back.as_millis()
        ),
        ok: after.is_ok() && old_gone && tally.answered == tally.sent,
        tally: Some(tally),
        at_most_once: false,
    })
}

/// An operator that never becomes ready.
///
/// # Errors
///
/// When the rig fails.
pub async fn hang_at_start() -> anyhow::Result<Outcome> {
    let manifest = "id = \"mute\"\ncommand = \"/bin/sleep\"\nargs = [\"1000\"]\nready_timeout = \"300ms\"\n\
                    [backoff]\ninitial = \"10ms\"\n[crash_loop]\nmax_restarts = 3\nwindow = \"1m\"\n";
    let rig = Rig::start(&[("mute.toml".into(), manifest.into())]).await?;
    let started = Instant::now();
    let failed = rig
        .wait_for("mute", |o| o.state == SupervisedState::Failed)
        .await;
    Ok(Outcome {
        fault: "operator hangs at start (never ready)",
        expected: "killed after ready_timeout, restarted with backoff, `failed` after the crash-loop limit with the reason",
        observed: match &failed {
            Ok(o) => format!(
                "failed after {} ms: {}",
                started.elapsed().as_millis(),
                o.reason.clone().unwrap_or_default()
            ),
            Err(e) => format!("not failed: {e}"),
        },
        ok: failed.is_ok_and(|o| o.reason.is_some_and(|r| r.contains("not ready within"))),
        tally: None,
        at_most_once: false,
    })
}

/// An operator that ignores SIGTERM, and a daemon asked to stop.
///
/// # Errors
///
/// When the rig fails.
pub async fn hang_on_shutdown() -> anyhow::Result<Outcome> {
    let manifest = "id = \"stubborn\"\ncommand = \"/bin/sh\"\ncontrol = \"signals\"\nstop_timeout = \"500ms\"\n\
                    args = [\"-c\", \"trap '' TERM; while :; do sleep 1; done\"]\n";
    let mut rig = Rig::start(&[("stubborn.toml".into(), manifest.into())]).await?;
    let pid = rig
        .wait_for("stubborn", |o| o.state == SupervisedState::Running)
        .await?
        .pid;
    let started = Instant::now();
    sig(rig.pid(), Signal::SIGTERM);
    let mut child = rig.child.take().context("daemon")?;
    let status = tokio::time::timeout(WAIT, child.wait()).await;
    let took = started.elapsed();
    let gone = gone(pid).await;
    Ok(Outcome {
        fault: "operator ignores SIGTERM at shutdown",
        expected: "SIGKILL to its group after stop_timeout (500 ms); the daemon exits 0",
        observed: format!(
            "daemon exited after {} ms; operator gone: {gone}",
            took.as_millis()
        ),
        ok: matches!(status, Ok(Ok(s)) if s.success()) && gone && took < Duration::from_secs(5),
        tally: None,
        at_most_once: false,
    })
}

/// An operator that writes 100 MB to stdout.
///
/// # Errors
///
/// When the rig fails.
pub async fn flood_of_output(megabytes: u64) -> anyhow::Result<Outcome> {
    let manifest = format!(
        "id = \"loud\"\ncommand = \"/bin/sh\"\ncontrol = \"signals\"\nrestart = \"never\"\n\
         args = [\"-c\", \"head -c {} /dev/zero | tr '\\\\0' x | fold -w 100\"]\n",
        megabytes * 1_000_000
    );
    let rig = Rig::start(&[
        ("loud.toml".into(), manifest),
        ("bot.toml".into(), pingbot("bot")),
    ])
    .await?;
    rig.wait_for("bot", |o| o.state == SupervisedState::Running)
        .await?;
    let started = Instant::now();
    let traffic = Traffic::start(&rig.bus, Duration::from_millis(5)).await?;
    let done = rig
        .wait_for("loud", |o| o.state == SupervisedState::Exited)
        .await;
    let took = started.elapsed();
    let tally = traffic.stop().await;
    let status = rig.status().await?;
    let rss = rig.peak_rss_mb();
    Ok(Outcome {
        fault: "operator writes a flood of stdout",
        expected: "read to the end (no blocked pipe), daemon memory bounded, pings still answered; lines the bus could not take are counted",
        observed: format!(
            "{megabytes} MB read in {} ms; daemon peak RSS {rss:.1} MB; lines not forwarded: {}",
            took.as_millis(),
            status.log_lines_dropped
        ),
        ok: done.is_ok() && rss < 200.0 && tally.answered > 0,
        tally: Some(tally),
        at_most_once: true,
    })
}

/// Many manifests at once.
///
/// # Errors
///
/// When the rig fails.
pub async fn many_manifests(n: usize) -> anyhow::Result<Outcome> {
    let manifests: Vec<(String, String)> = (0..n)
        .map(|i| {
            (
                format!("s{i:04}.toml"),
                format!(
                    "id = \"s{i:04}\"\ncommand = \"/bin/sleep\"\nargs = [\"1000\"]\ncontrol = \"signals\"\nstop_timeout = \"1s\"\n"
                ),
            )
        })
        .collect();
    let started = Instant::now();
    let mut rig = Rig::start(&manifests).await?;
    let deadline = Instant::now() + WAIT * 3;
    let running = loop {
        let s = rig.status().await?;
        let running = s
            .operators
            .iter()
            .filter(|o| o.state == SupervisedState::Running)
            .count();
        if running == n || Instant::now() > deadline {
            break running;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = started.elapsed();
    let stop_started = Instant::now();
    sig(rig.pid(), Signal::SIGTERM);
    let mut child = rig.child.take().context("daemon")?;
    let stopped = tokio::time::timeout(WAIT * 3, child.wait()).await;
    Ok(Outcome {
        fault: "many manifests at once",
        expected: "all running (each with its own NATS user: reloads are coalesced), then all stopped by SIGTERM",
        observed: format!(
            "{running}/{n} running after {} ms; stopped in {} ms",
            took.as_millis(),
            stop_started.elapsed().as_millis()
        ),
        ok: running == n && matches!(stopped, Ok(Ok(s)) if s.success()),
        tally: None,
        at_most_once: false,
    })
}

/// A tmpfs mounted for the length of a scenario.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path, size: &str) -> anyhow::Result<Mount> {
        std::fs::create_dir_all(at)?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .context("run mount")?;
        if !out.status.success() {
            bail!(
                "cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The state dir fills up (a 2 MB tmpfs): the daemon keeps running, a new
/// operator still starts (nothing it needs there is written then but the
/// process-group record, whose failure is one clear line), and the running
/// one is untouched.
///
/// # Errors
///
/// When the rig fails, or no tmpfs can be mounted (not root).
pub async fn full_state_dir() -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let mount = Mount::tmpfs(&dir.path().join("state"), "2m")?;
    let mut rig = Rig::start_in(
        dir,
        &[("bot.toml".into(), pingbot("bot"))],
        "jetstream = false",
    )
    .await?;
    let pid = rig
        .wait_for("bot", |o| o.state == SupervisedState::Running)
        .await?
        .pid;
    // Fill it.
    let filler = mount.0.join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler)?;
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    // A few more small files take the last inodes and bytes.
    for i in 0..10_000 {
        if std::fs::create_dir(mount.0.join(format!("d{i}"))).is_err() {
            break;
        }
    }
    std::fs::write(
        rig.dir.path().join("operators.d/bot2.toml"),
        pingbot("bot2"),
    )?;
    sig(rig.pid(), Signal::SIGHUP);
    let started = rig
        .wait_for("bot2", |o| o.state == SupervisedState::Running)
        .await;
    let bot = rig.operator("bot").await?;
    let untouched = bot.pid == pid && bot.state == SupervisedState::Running;
    let said = rig
        .log()
        .lines()
        .filter(|l| l.contains("No space left"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let _ = std::fs::remove_file(&filler);
    for i in 0..10_000 {
        if std::fs::remove_dir(mount.0.join(format!("d{i}"))).is_err() {
            break;
        }
    }
    let observed = format!(
        "new operator {}; running one untouched: {untouched}; the daemon said: {}",
        if started.is_ok() {
            "started"
        } else {
            "did not start"
        },
        said.first().map_or("nothing", |l| l
            .split_once("WARN ")
            .map_or(l.as_str(), |(_, w)| w))
    );
    sig(rig.pid(), Signal::SIGTERM);
    if let Some(mut child) = rig.child.take() {
        let _ = tokio::time::timeout(WAIT, child.wait()).await;
    }
    drop(mount);
    Ok(Outcome {
        fault: "state dir on a full filesystem",
        expected: "the daemon keeps running and starting operators; what it cannot write (the process-group record) is one clear line",
        observed,
        ok: started.is_ok() && untouched && !said.is_empty(),
        tally: None,
        at_most_once: false,
    })
}

/// Where the report goes by default.
pub fn default_report() -> PathBuf {
    switchboard_testkit::workspace_root().join("docs/reliability.md")
}
