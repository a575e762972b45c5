//! The logger as an operator: a durable consumer of the daemon's stream,
//! batches written by [`Writer`], acknowledged only once on disk.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_bus::stream::{Durable, StartAt, Stored};
use switchboard_bus::{Bus, Context, Counter, HandlerResult, HealthReport, Operator};
use switchboard_proto::{Health, Pattern};
use tokio::sync::watch;

use crate::config::LoggerConfig;
use crate::layout;
use crate::writer::{Recovered, Writer};

/// How long the stream waits for an acknowledgement before sending a
/// batch again (to this consumer, after a crash or a stall).
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Envelope ids remembered to drop republished copies.
const RECENT_IDS: usize = 65_536;
/// How often closed files are looked for (besides at start).
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// The logging operator (see the crate docs).
#[derive(Debug, Default)]
pub struct Logger {
    config: Option<watch::Sender<LoggerConfig>>,
    stop: Option<watch::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The counters it reports.
#[derive(Debug, Clone)]
struct Counters {
    written: Counter,
    skipped: Counter,
    write_errors: Counter,
    batches: Counter,
    undone: Counter,
}

impl Operator for Logger {
    type Config = LoggerConfig;

    async fn start(&mut self, ctx: &mut Context, config: LoggerConfig) -> HandlerResult {
        config.check()?;
        let stream = ctx.launch().stream.clone().ok_or(
            "the daemon keeps no durable stream (SWITCHBOARD_STREAM is not set): turn on \
             [stream] and JetStream in switchboard.toml, and grant `stream = [\"consume\"]` \
             in this operator's manifest",
        )?;
        let state = ctx
            .state_dir()
            .ok_or("no state directory (SWITCHBOARD_STATE_DIR): the journal needs one")?
            .to_path_buf();
        std::fs::create_dir_all(&state)
            .map_err(|e| format!("cannot create the state directory {}: {e}", state.display()))?;
        let stats = ctx.bus().stats();
        let counters = Counters {
            written: stats.counter("lines_written"),
            skipped: stats.counter("duplicates_skipped"),
            write_errors: stats.counter("write_errors"),
            batches: stats.counter("batches"),
            undone: stats.counter("batches_undone"),
        };
        let mut writer = Writer::new(&config, state.join("journal.json"));
        let mut durable = ctx
            .bus()
            .durable(
                &stream,
                ctx.id().as_str(),
                &filters(&config.subjects),
                ACK_WAIT,
                StartAt::First,
            )
            .await?;
        // A batch a crash left between write and acknowledgement.
        if writer.pending_batch().is_some() {
            let acked = durable.acked_through().await?;
            match writer.recover(acked)? {
                Recovered::Undone => {
                    counters.undone.inc();
                    tracing::warn!(
                        "undid a batch a crash left unacknowledged; the stream sends it again"
                    );
                }
                Recovered::Kept => {
                    tracing::info!("a batch written before a crash was acknowledged; kept")
                }
                Recovered::Clean => {}
            }
        }
        for p in writer.maintain(true) {
            tracing::warn!("{p}");
        }
        let (config_tx, config_rx) = watch::channel(config);
        let (stop_tx, stop_rx) = watch::channel(false);
        let run = Run {
            bus: ctx.bus().clone(),
            stream,
            id: ctx.id().to_string(),
            health: ctx.health().clone(),
            counters,
            recent: Recent::default(),
        };
        let writer = Arc::new(Mutex::new(writer));
        self.task = Some(tokio::spawn(run.run(writer, durable, config_rx, stop_rx)));
        self.config = Some(config_tx);
        self.stop = Some(stop_tx);
        Ok(())
    }

    async fn reload(&mut self, _ctx: &mut Context, config: LoggerConfig) -> HandlerResult {
        config.check()?;
        if let Some(tx) = &self.config {
            tx.send_replace(config);
        }
        Ok(())
    }

    async fn stop(&mut self, _ctx: &mut Context) -> HandlerResult {
        if let Some(stop) = &self.stop {
            let _ = stop.send(true);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        Ok(())
    }
}

fn lock(w: &Mutex<Writer>) -> std::sync::MutexGuard<'_, Writer> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

/// The NATS subjects to ask the stream for: each pattern's subscription
/// plan (a bare root like `chat`, which the stream never holds, left out).
pub fn filters(subjects: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for s in subjects {
        let Ok(p) = Pattern::parse(s) else { continue };
        for subject in p.nats_plan().subjects {
            if (subject.contains('.') || subject == ">") && !out.contains(&subject) {
                out.push(subject);
            }
        }
    }
    out
}

/// Envelope ids seen lately, to drop a republished copy the stream stored
/// again (outside its duplicate window).
#[derive(Debug, Default)]
struct Recent {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Recent {
    fn first_time(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == RECENT_IDS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }
}

struct Run {
    bus: Bus,
    stream: String,
    id: String,
    health: HealthReport,
    counters: Counters,
    recent: Recent,
}

impl Run {
    async fn run(
        mut self,
        writer: Arc<Mutex<Writer>>,
        mut durable: Durable,
        mut config: watch::Receiver<LoggerConfig>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut current = config.borrow_and_update().clone();
        let mut last_sweep = tokio::time::Instant::now();
        let mut backoff = Backoff::default();
        while !*stop.borrow() {
            if config.has_changed().unwrap_or(false) {
                let new = config.borrow_and_update().clone();
                if new.subjects != current.subjects {
                    match self
                        .bus
                        .durable(
                            &self.stream,
                            &self.id,
                            &filters(&new.subjects),
                            ACK_WAIT,
                            StartAt::First,
                        )
                        .await
                    {
                        Ok(d) => durable = d,
                        Err(e) => tracing::error!(error = %e, "new subjects not applied"),
                    }
                }
                lock(&writer).reconfigure(&new);
                current = new;
            }
            let batch = tokio::select! {
                _ = stop.changed() => break,
                b = durable.fetch(current.batch, Duration::from_secs(1)) => b,
            };
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    self.health
                        .set(Health::Degraded, format!("cannot read the stream: {e}"));
                    backoff.wait(&mut stop).await;
                    continue;
                }
            };
            let Some(last) = batch.last().map(|m| m.seq) else {
                if last_sweep.elapsed() >= SWEEP_EVERY {
                    last_sweep = tokio::time::Instant::now();
                    self.maintain(&writer, true).await;
                }
                continue;
            };
            let committed = lock(&writer).committed();
            let entries = self.entries(&batch, &current, committed);
            // Written (or, full disk and the like, retried until it is):
            // nothing is acknowledged that is not on disk.
            let entries = Arc::new(entries);
            loop {
                let result = {
                    let (w, entries) = (Arc::clone(&writer), Arc::clone(&entries));
                    tokio::task::spawn_blocking(move || lock(&w).write_batch(&entries, last))
                        .await
                        .unwrap_or_else(|e| Err(crate::writer::WriteError::Panicked(e.to_string())))
                };
                match result {
                    Ok(()) => break,
                    Err(e) => {
                        self.counters.write_errors.inc();
                        self.health.set(
                            Health::Degraded,
                            format!("{e}; messages wait in the stream until it can write"),
                        );
                        backoff.wait(&mut stop).await;
                    }
                }
            }
            // The last message's ack covers the batch (ack policy "all").
            let mut acked = false;
            while !acked {
                match batch.last_mut().map(Stored::ack) {
                    Some(ack) => match ack.await {
                        Ok(()) => acked = true,
                        Err(e) => {
                            self.health
                                .set(Health::Degraded, format!("cannot acknowledge: {e}"));
                            if *stop.borrow() {
                                // Left to the journal: the next start settles it.
                                return;
                            }
                            backoff.wait(&mut stop).await;
                        }
                    },
                    None => acked = true,
                }
            }
            lock(&writer).commit();
            self.counters.batches.inc();
            self.counters.written.add(entries.len() as u64);
            backoff.reset();
            if self.health.get().0 != Health::Ok {
                self.health.ok();
            }
            let sweep = last_sweep.elapsed() >= SWEEP_EVERY;
            if sweep {
                last_sweep = tokio::time::Instant::now();
            }
            self.maintain(&writer, sweep).await;
        }
    }

    fn entries(
        &mut self,
        batch: &[Stored],
        config: &LoggerConfig,
        committed: u64,
    ) -> Vec<layout::Entry> {
        let patterns: Vec<Pattern> = config
            .subjects
            .iter()
            .filter_map(|s| Pattern::parse(s).ok())
            .collect();
        let mut out = Vec::with_capacity(batch.len());
        for m in batch {
            // Written already: delivered again because the server forgot
            // an acknowledgement (a hard kill), or by a rewind.
            if m.seq <= committed {
                self.counters.skipped.inc();
                continue;
            }
            if !patterns.iter().any(|p| p.matches(&m.subject)) {
                continue;
            }
            if let Some(id) = &m.msg_id {
                if !self.recent.first_time(id) {
                    self.counters.skipped.inc();
                    continue;
                }
            }
            if let Some(e) = layout::entry(m, config) {
                out.push(e);
            }
        }
        out
    }

    async fn maintain(&self, writer: &Arc<Mutex<Writer>>, sweep: bool) {
        let w = Arc::clone(writer);
        let problems = tokio::task::spawn_blocking(move || lock(&w).maintain(sweep))
            .await
            .unwrap_or_else(|e| vec![format!("file maintenance failed: {e}")]);
        for p in problems {
            tracing::warn!("{p}");
        }
    }
}

/// Waits between attempts: 250 ms doubling to 5 s, cut short by a stop.
#[derive(Debug)]
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(250))
    }
}

impl Backoff {
    async fn wait(&mut self, stop: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(self.0) => {}
            _ = stop.changed() => {}
        }
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }

    fn reset(&mut self) {
        *self = Backoff::default();
    }
}
