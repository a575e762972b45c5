//! The account's task: one loop that polls (or reads Jetstream or the
//! firehose), carries
//! out send requests and applies reloads, one thing at a time, so the
//! session and the marks need no locks. The bus side
//! ([`crate::operator`]) talks to it through a channel. The loop, login
//! and reload are here; the inbound work is in `stream`, the outbound in
//! `send`.

mod firehose;
mod send;
mod stream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::api::{jitter, Api, ApiError, Counters, MAX_RATE_LIMIT_WAIT};
use crate::config::{BskyConfig, Strategy};
use crate::inbound::Publisher;
use crate::jetstream::{self, Socket, Tracker};
use crate::outbound::{Refusal, Request};
use crate::poller::Poller;
use crate::session::AuthError;
use crate::store::{Account, Store};
use crate::xrpc::{rate_limit_wait, Xrpc, XrpcError};

/// What the bus side asks of the task.
#[derive(Debug)]
pub enum Command {
    /// Carry out a send request; answer on `reply` if given.
    Send {
        /// The request.
        request: Request,
        /// The NATS reply subject.
        reply: Option<String>,
    },
    /// Apply a new configuration.
    Reload(Box<BskyConfig>, Publisher),
    /// Stop (true) or restart (false) reading notifications.
    Pause(bool),
}

/// The running task.
#[derive(Debug)]
pub struct WorkerHandle {
    tx: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl WorkerHandle {
    /// Starts the task for `api`; when it is not logged in yet, the
    /// login is tried again after `login_in`.
    pub fn spawn(
        api: Api,
        config: BskyConfig,
        tls: Arc<rustls::ClientConfig>,
        store: Store,
        login_in: Duration,
    ) -> WorkerHandle {
        let (tx, rx) = mpsc::channel(256);
        let worker = Worker::new(api, config, tls, store, rx, login_in);
        WorkerHandle {
            tx,
            task: tokio::spawn(worker.run()),
        }
    }

    /// Hands `command` to the task.
    ///
    /// # Errors
    ///
    /// [`Refusal::Ended`] when the task has ended.
    pub async fn send(&self, command: Command) -> Result<(), Refusal> {
        self.tx.send(command).await.map_err(|_| Refusal::Ended)
    }

    /// Ends the task: what it is doing may finish within `grace`; the marks
    /// are saved as it goes, so stopping it after that loses nothing.
    pub async fn shutdown(self, grace: Duration) {
        drop(self.tx);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// How many resolved handles are kept.
const HANDLE_CACHE: usize = 1000;

struct Worker {
    api: Api,
    config: BskyConfig,
    tls: Arc<rustls::ClientConfig>,
    store: Store,
    rx: mpsc::Receiver<Command>,
    paused: bool,
    poller: Option<Poller>,
    tracker: Option<Tracker>,
    /// The firehose state (strategy `firehose`).
    hose: Option<crate::firehose::Firehose>,
    /// The firehose connection ended with `auto_reconnect = false`: no new
    /// one until a reload or a resume.
    hose_stopped: bool,
    socket: Option<Socket>,
    next_poll: Instant,
    poll_delay: Duration,
    next_connect: Instant,
    connect_delay: Duration,
    next_login: Option<Instant>,
    /// When the socket last gave a frame (or connected).
    last_frame: Instant,
    /// Whether a ping went out since that frame.
    pinged: bool,
    /// A send request found the login refused for good (the reason).
    refused: Option<String>,
    login_delay: Duration,
    handles: HashMap<String, String>,
}

/// The next frame, or never when there is no socket.
async fn next_frame(
    socket: &mut Option<Socket>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match socket {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

impl Worker {
    fn new(
        api: Api,
        config: BskyConfig,
        tls: Arc<rustls::ClientConfig>,
        store: Store,
        rx: mpsc::Receiver<Command>,
        login_in: Duration,
    ) -> Worker {
        let logged_in = api.tokens().is_some();
        let now = Instant::now();
        let mut w = Worker {
            api,
            tls,
            store,
            rx,
            paused: false,
            poller: None,
            tracker: None,
            hose: None,
            hose_stopped: false,
            socket: None,
            next_poll: now,
            poll_delay: config.polling.interval,
            next_connect: now,
            connect_delay: config.retry.initial,
            next_login: (!logged_in).then_some(now + login_in),
            last_frame: now,
            pinged: false,
            refused: None,
            login_delay: config.retry.initial,
            handles: HashMap::new(),
            config,
        };
        w.set_strategy();
        w
    }

    /// Poller or tracker for the current strategy and account, once
    /// logged in. Their marks belong to the account's DID, so logging in
    /// by handle instead of DID (or e-mail) keeps them.
    fn set_strategy(&mut self) {
        let Some(did) = self.api.tokens().map(|t| t.did.clone()) else {
            return;
        };
        let account = Account {
            service: self.config.service.clone(),
            identifier: did,
        };
        match self.config.strategy {
            Strategy::Polling => {
                self.tracker = None;
                self.drop_hose();
                self.socket = None;
                if self.poller.as_ref().is_none_or(|p| *p.account() != account) {
                    self.poller = Some(Poller::new(
                        account,
                        self.store.clone(),
                        self.config.polling.process_from,
                    ));
                }
                self.next_poll = Instant::now();
            }
            Strategy::Jetstream => {
                self.poller = None;
                self.drop_hose();
                if self
                    .tracker
                    .as_ref()
                    .is_none_or(|t| *t.account() != account)
                {
                    self.tracker = Some(Tracker::new(account, self.store.clone()));
                }
                self.next_connect = Instant::now();
            }
            Strategy::Firehose => {
                self.poller = None;
                self.tracker = None;
                self.set_hose(account);
                self.hose_stopped = false;
                self.next_connect = Instant::now();
            }
        }
    }

    fn logged_in(&self) -> bool {
        self.api.tokens().is_some()
    }

    async fn run(mut self) {
        loop {
            let polling = self.poller.is_some() && !self.paused && self.logged_in();
            let streaming = self.tracker.is_some() || (self.hose.is_some() && !self.hose_stopped);
            let connecting = streaming && self.socket.is_none() && !self.paused && self.logged_in();
            let login_at = self.next_login;
            let connected = self.socket.is_some();
            let keepalive = match self.config.strategy {
                Strategy::Firehose => self.config.firehose.keepalive,
                _ => self.config.jetstream.keepalive,
            };
            let quiet_until = self.last_frame
                + if self.pinged {
                    keepalive + keepalive.mul_f64(jetstream::SILENCE_FACTOR)
                } else {
                    keepalive
                };
            tokio::select! {
                command = self.rx.recv() => match command {
                    None => break,
                    Some(command) => self.command(command).await,
                },
                _ = tokio::time::sleep_until(login_at.unwrap_or_else(Instant::now)), if login_at.is_some() => {
                    self.try_login().await;
                }
                _ = tokio::time::sleep_until(self.next_poll), if polling => self.poll().await,
                _ = tokio::time::sleep_until(self.next_connect), if connecting => {
                    if self.hose.is_some() {
                        self.connect_firehose().await;
                    } else {
                        self.connect().await;
                    }
                }
                frame = next_frame(&mut self.socket) => {
                    self.last_frame = Instant::now();
                    self.pinged = false;
                    if self.hose.is_some() {
                        self.firehose_frame(frame).await;
                    } else {
                        self.frame(frame).await;
                    }
                }
                _ = tokio::time::sleep_until(quiet_until), if connected => self.quiet().await,
            }
        }
        if let Some(t) = &mut self.tracker {
            t.save();
        }
        if let Some(h) = &mut self.hose {
            h.save();
        }
    }

    async fn try_login(&mut self) {
        match self.api.login().await {
            Ok(tokens) => {
                tracing::info!(handle = %tokens.handle, did = %tokens.did, "logged in");
                self.next_login = None;
                self.login_delay = self.config.retry.initial;
                self.set_strategy();
            }
            Err(e) => {
                // createSession's limit is tight (30 per 5 minutes): a 429
                // waits for its reset, not for the backoff.
                let limited = match &e {
                    AuthError::Call {
                        source: XrpcError::RateLimited { reset, .. },
                    } => Some(rate_limit_wait(
                        *reset,
                        self.login_delay,
                        MAX_RATE_LIMIT_WAIT,
                    )),
                    _ => None,
                };
                let e = ApiError::from(e);
                self.fatal_if_refused(&e).await;
                let wait = match limited {
                    Some(wait) => {
                        self.api.counters.rate_limit_waits.inc();
                        wait
                    }
                    None => jitter(self.login_delay),
                };
                tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "cannot log in; trying again");
                self.next_login = Some(Instant::now() + wait);
                self.login_delay = (self.login_delay * 2).min(self.config.retry.max);
            }
        }
    }

    /// A login refused for good cannot pass while this process runs: say
    /// so and exit non-zero; the supervisor restarts the operator, whose
    /// start knows the refusal (it is remembered) and reports health
    /// `failed` with the reason, without another login, until a reload
    /// brings other credentials.
    async fn fatal_if_refused(&self, e: &ApiError) {
        if e.is_refused_login() {
            self.stop_refused(&e.to_string()).await;
        }
    }

    async fn stop_refused(&self, why: &str) -> ! {
        tracing::error!(error = %why, "the login was refused; stopping");
        let notice = json!({"sender": "", "room": "", "text": why});
        let _ = self.api.publisher().notice("login_refused", notice).await;
        let _ = self.api.publisher().bus().flush().await;
        std::process::exit(1);
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Send { request, reply } => {
                let answer = match self.execute(&request).await {
                    Ok(created) => {
                        let first = created.first().cloned();
                        json!({
                            "ok": true,
                            "uri": first.as_ref().map(|p| p.uri.clone()),
                            "cid": first.as_ref().map(|p| p.cid.clone()),
                            "records": created,
                        })
                    }
                    Err(error) => {
                        self.api.counters.send_failures.inc();
                        tracing::info!(room = %request.room, %error, "send request failed");
                        json!({"ok": false, "error": error.to_string()})
                    }
                };
                if let Some(reply) = reply {
                    if let Err(e) = self
                        .api
                        .publisher()
                        .bus()
                        .respond_json(&reply, &answer)
                        .await
                    {
                        tracing::debug!(error = %e, "could not answer a send request");
                    }
                }
                if let Some(why) = self.refused.take() {
                    self.stop_refused(&why).await;
                }
            }
            Command::Pause(paused) => {
                self.paused = paused;
                if paused {
                    // Reconnects from the cursor on resume: nothing lost.
                    if self.socket.take().is_some() {
                        if let Some(t) = &mut self.tracker {
                            t.save();
                        }
                        if let Some(h) = &mut self.hose {
                            h.save();
                        }
                    }
                } else {
                    self.hose_stopped = false;
                    self.next_poll = Instant::now();
                    self.next_connect = Instant::now();
                }
            }
            Command::Reload(config, publisher) => self.reload(*config, publisher),
        }
    }

    fn reload(&mut self, config: BskyConfig, publisher: Publisher) {
        let relogin = self.config.needs_login(&config);
        let jetstream_changed =
            self.config.jetstream != config.jetstream || self.config.firehose != config.firehose;
        let old = std::mem::replace(&mut self.config, config);
        if relogin {
            tracing::info!(service = %self.config.service, identifier = %self.config.identifier, "account changed; logging in again");
            match Xrpc::new(&self.config.service, &self.tls, self.config.request_timeout) {
                Ok(xrpc) => {
                    let counters: Counters = self.api.counters.clone();
                    self.api =
                        Api::new(xrpc, &self.config, self.store.clone(), publisher, counters);
                }
                Err(e) => tracing::error!(error = %e, "cannot build the HTTP client"),
            }
            self.poller = None;
            self.tracker = None;
            self.drop_hose();
            self.socket = None;
            self.handles.clear();
            self.next_login = Some(Instant::now());
            return;
        }
        self.api.reconfigure(&self.config, publisher);
        if jetstream_changed || old.strategy != self.config.strategy {
            self.socket = None;
        }
        if old.polling.interval != self.config.polling.interval {
            self.next_poll = self
                .next_poll
                .min(Instant::now() + self.config.polling.interval);
        }
        if self.logged_in() {
            self.set_strategy();
        }
    }
}
