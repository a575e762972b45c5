//! The account's task: one loop that polls (or reads Jetstream), carries
//! out send requests and applies reloads, one thing at a time, so the
//! session and the marks need no locks. The bus side
//! ([`crate::operator`]) talks to it through a channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::api::{jitter, Api, ApiError, Counters, MAX_RATE_LIMIT_WAIT};
use crate::config::{BskyConfig, Strategy};
use crate::inbound::Publisher;
use crate::jetstream::{self, Socket, Tracker};
use crate::lexicon::{
    collection, nsid, reply_of, CreateRecordInput, CreateRecordOutput, GetPostsOutput,
    ResolveHandleOutput, StrongRef,
};
use crate::outbound::{self, is_post_uri, Kind, Request};
use crate::poller::Poller;
use crate::richtext;
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
    /// A message when the task has ended.
    pub async fn send(&self, command: Command) -> Result<(), String> {
        self.tx
            .send(command)
            .await
            .map_err(|_| "the Bluesky session task has ended".to_string())
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
            socket: None,
            next_poll: now,
            poll_delay: config.polling.interval,
            next_connect: now,
            connect_delay: config.retry.initial,
            next_login: (!logged_in).then_some(now + login_in),
            last_frame: now,
            pinged: false,
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
                if self
                    .tracker
                    .as_ref()
                    .is_none_or(|t| *t.account() != account)
                {
                    self.tracker = Some(Tracker::new(account, self.store.clone()));
                }
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
            let connecting =
                self.tracker.is_some() && self.socket.is_none() && !self.paused && self.logged_in();
            let login_at = self.next_login;
            let connected = self.socket.is_some();
            let keepalive = self.config.jetstream.keepalive;
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
                _ = tokio::time::sleep_until(self.next_connect), if connecting => self.connect().await,
                frame = next_frame(&mut self.socket) => {
                    self.last_frame = Instant::now();
                    self.pinged = false;
                    self.frame(frame).await;
                }
                _ = tokio::time::sleep_until(quiet_until), if connected => self.quiet().await,
            }
        }
        if let Some(t) = &mut self.tracker {
            t.save();
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
    /// so and exit non-zero, so the supervisor restarts the operator,
    /// which then fails at once (the refusal is remembered) until the
    /// password is changed, and marks it failed.
    async fn fatal_if_refused(&self, e: &ApiError) {
        if !e.is_refused_login() {
            return;
        }
        tracing::error!(error = %e, "the login was refused; stopping");
        let notice = json!({"sender": "", "room": "", "text": e.to_string()});
        let _ = self.api.publisher().notice("login_refused", notice).await;
        let _ = self.api.publisher().bus().flush().await;
        std::process::exit(1);
    }

    async fn poll(&mut self) {
        let Some(poller) = &mut self.poller else {
            return;
        };
        match poller.poll(&mut self.api, &self.config).await {
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(published = n, "notifications published");
                }
                self.poll_delay = self.config.polling.interval;
                self.next_poll = Instant::now() + self.config.polling.interval;
            }
            Err(e) => {
                self.fatal_if_refused(&e).await;
                self.poll_delay = (self.poll_delay * 2)
                    .min(self.config.retry.max.max(self.config.polling.interval));
                let wait = jitter(self.poll_delay);
                tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "poll failed; trying again");
                self.next_poll = Instant::now() + wait;
            }
        }
    }

    async fn connect(&mut self) {
        let Some(tracker) = &self.tracker else { return };
        let from = tracker.resume_from(self.config.jetstream.overlap);
        let url = match jetstream::subscribe_url(&self.config.jetstream, from) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "bad Jetstream URL");
                self.next_connect = Instant::now() + self.config.retry.max;
                return;
            }
        };
        match jetstream::connect(&url, &self.tls).await {
            Ok(socket) => {
                tracing::info!(url = %self.config.jetstream.url, cursor = ?from, "Jetstream connected");
                self.api.counters.jetstream_connects.inc();
                self.socket = Some(socket);
                self.last_frame = Instant::now();
                self.pinged = false;
            }
            Err(e) => {
                let wait = jitter(self.connect_delay);
                tracing::warn!(url = %self.config.jetstream.url, error = %e, wait_ms = wait.as_millis() as u64, "cannot connect to Jetstream; trying again");
                self.next_connect = Instant::now() + wait;
                self.connect_delay = (self.connect_delay * 2).min(self.config.retry.max);
            }
        }
    }

    async fn frame(
        &mut self,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) {
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => {
                self.disconnected("closed by the server".into());
                return;
            }
            Some(Ok(_)) => return, // ping/pong/binary
            Some(Err(e)) => {
                self.disconnected(e.to_string());
                return;
            }
        };
        let Some(me) = self.api.tokens().map(|t| t.did.clone()) else {
            return;
        };
        let frame = match jetstream::parse_frame(text.as_str()) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "Jetstream frame skipped");
                self.api.counters.jetstream_malformed.inc();
                return;
            }
        };
        self.connect_delay = self.config.retry.initial;
        let Some(tracker) = &mut self.tracker else {
            return;
        };
        if let Some(event) = jetstream::event_for(&me, &frame) {
            if !tracker.seen(&event.post.uri) {
                if let Err(e) = self.api.publisher().event(&event).await {
                    // Not marked: the reconnect resumes before it.
                    tracing::warn!(error = %e, "cannot publish a Jetstream post; reconnecting to read it again");
                    self.disconnected("publish failed".into());
                    return;
                }
                self.api.counters.jetstream_posts.inc();
                tracing::debug!(uri = %event.post.uri, time_us = frame.time_us, "Jetstream post published");
                tracker.published(&event.post.uri);
            }
        }
        tracker.read(frame.time_us);
    }

    /// The socket has been quiet: ping it, or give it up after the pong
    /// never came.
    async fn quiet(&mut self) {
        if self.pinged {
            self.disconnected("no frame, not even the answer to a ping".into());
            return;
        }
        self.pinged = true;
        if let Some(socket) = &mut self.socket {
            if let Err(e) = socket.send(Message::Ping(Default::default())).await {
                self.disconnected(e.to_string());
            }
        }
    }

    fn disconnected(&mut self, why: String) {
        tracing::warn!(reason = %why, "Jetstream connection lost; resuming from the cursor");
        self.socket = None;
        if let Some(t) = &mut self.tracker {
            t.save();
        }
        let wait = jitter(self.connect_delay);
        self.next_connect = Instant::now() + wait;
        self.connect_delay = (self.connect_delay * 2).min(self.config.retry.max);
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
                        json!({"ok": false, "error": error})
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
            }
            Command::Pause(paused) => {
                self.paused = paused;
                if paused {
                    // Reconnects from the cursor on resume: nothing lost.
                    if self.socket.take().is_some() {
                        if let Some(t) = &mut self.tracker {
                            t.save();
                        }
                    }
                } else {
                    self.next_poll = Instant::now();
                    self.next_connect = Instant::now();
                }
            }
            Command::Reload(config, publisher) => self.reload(*config, publisher),
        }
    }

    fn reload(&mut self, config: BskyConfig, publisher: Publisher) {
        let relogin = self.config.needs_login(&config);
        let jetstream_changed = self.config.jetstream != config.jetstream;
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

    /// Carries out `request`; the records created, first first.
    async fn execute(&mut self, request: &Request) -> Result<Vec<StrongRef>, String> {
        if !self.logged_in() {
            return Err("not logged in to Bluesky yet (the login is being retried)".into());
        }
        match request.kind {
            Kind::Message => {
                let target = self.target(request)?;
                let parent = self.post(&target).await?;
                let root = reply_of(&parent.1).map_or_else(|| parent.0.clone(), |r| r.root);
                self.thread(request, Some((root, parent.0))).await
            }
            Kind::Post => self.thread(request, None).await,
            Kind::Like | Kind::Repost => {
                let target = self.target(request)?;
                let (subject, _) = self.post(&target).await?;
                let collection = if request.kind == Kind::Like {
                    collection::LIKE
                } else {
                    collection::REPOST
                };
                let record = outbound::subject_record(collection, &subject);
                self.create(collection, &record).await.map(|r| vec![r])
            }
        }
    }

    /// The post a request is about: the body's, the `in-reply-to` event's,
    /// or the room's root.
    fn target(&self, request: &Request) -> Result<String, String> {
        if let Some(t) = &request.target {
            return Ok(t.clone());
        }
        if let Some(post) = request
            .in_reply_to
            .as_deref()
            .and_then(|id| self.api.publisher().post_for(id))
        {
            if is_post_uri(&post.uri) {
                return Ok(post.uri);
            }
        }
        if is_post_uri(&request.room) {
            return Ok(request.room.clone());
        }
        Err(format!(
            "room `{}` is not a post thread: send to a room that is a thread's root post URI \
             (as events arrive), or name the post in the body",
            request.room
        ))
    }

    /// A post's strong ref and record (`getPosts`).
    async fn post(&mut self, uri: &str) -> Result<(StrongRef, Value), String> {
        let out: GetPostsOutput = self
            .api
            .query(nsid::GET_POSTS, &[("uris", uri)])
            .await
            .map_err(|e| self.failed(e))?;
        let found = out
            .posts
            .into_iter()
            .find(|p| p.uri == uri)
            .ok_or_else(|| {
                format!("post {uri} not found (deleted, or not visible to the account)")
            })?;
        Ok((
            StrongRef {
                uri: found.uri,
                cid: found.cid,
            },
            found.record,
        ))
    }

    fn failed(&self, e: ApiError) -> String {
        if e.is_refused_login() {
            // Said here; the next poll or call exits (see fatal_if_refused).
            tracing::error!(error = %e, "the login was refused");
        }
        e.to_string()
    }

    /// Posts `request.text` (split when asked), the first part answering
    /// `reply` (root, parent) if given, each further part the one before.
    async fn thread(
        &mut self,
        request: &Request,
        mut reply: Option<(StrongRef, StrongRef)>,
    ) -> Result<Vec<StrongRef>, String> {
        let parts = if richtext::fits(&request.text) {
            vec![request.text.clone()]
        } else if request.split {
            richtext::split(&request.text)
        } else {
            return Err(format!(
                "the text is {} graphemes ({} bytes); a post holds {} graphemes and {} bytes: \
                 shorten it, or send {{\"split\": true}} to post it as a thread",
                richtext::graphemes(&request.text),
                request.text.len(),
                richtext::MAX_GRAPHEMES,
                richtext::MAX_BYTES
            ));
        };
        let langs = request
            .langs
            .clone()
            .unwrap_or_else(|| self.config.langs.clone());
        let mut created: Vec<StrongRef> = Vec::new();
        for part in parts {
            let facets = self.facets(&part).await;
            let refs = reply.as_ref().map(|(root, parent)| (root, parent));
            let record = outbound::post_record(&part, &langs, refs, facets);
            let made = match self.create(collection::POST, &record).await {
                Ok(made) => made,
                Err(e) if !created.is_empty() => {
                    return Err(format!(
                        "{e} (after {} of the thread's parts were posted, the first at {})",
                        created.len(),
                        created[0].uri
                    ))
                }
                Err(e) => return Err(e),
            };
            let root = reply.map_or_else(|| made.clone(), |(root, _)| root);
            reply = Some((root, made.clone()));
            created.push(made);
        }
        Ok(created)
    }

    /// Facets for the mentions (resolved to DIDs) and links in `text`.
    async fn facets(&mut self, text: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for span in richtext::spans(text) {
            let did = match &span {
                richtext::Span::Mention { handle, .. } => self.resolve(handle).await,
                richtext::Span::Link { .. } => None,
            };
            if let Some(f) = richtext::facet(&span, did.as_deref()) {
                out.push(f);
            }
        }
        out
    }

    async fn resolve(&mut self, handle: &str) -> Option<String> {
        if let Some(did) = self.handles.get(handle) {
            return Some(did.clone());
        }
        match self
            .api
            .query::<ResolveHandleOutput>(nsid::RESOLVE_HANDLE, &[("handle", handle)])
            .await
        {
            Ok(out) => {
                if self.handles.len() >= HANDLE_CACHE {
                    self.handles.clear();
                }
                self.handles.insert(handle.to_string(), out.did.clone());
                Some(out.did)
            }
            Err(e) => {
                tracing::info!(%handle, error = %e, "handle not resolved; the mention stays plain text");
                None
            }
        }
    }

    /// `createRecord` with a record key made here, so a retry after a lost
    /// answer names the same record: if the server says it exists, the
    /// first try worked, and it is looked up instead of created twice.
    async fn create(&mut self, collection: &str, record: &Value) -> Result<StrongRef, String> {
        let Some(did) = self.api.tokens().map(|t| t.did.clone()) else {
            return Err("not logged in".into());
        };
        let rkey = outbound::tid();
        let input = serde_json::to_value(CreateRecordInput {
            repo: &did,
            collection,
            rkey: &rkey,
            record,
        })
        .map_err(|e| e.to_string())?;
        let retries_before = self.api.counters.retries.get();
        match self
            .api
            .procedure::<CreateRecordOutput>(nsid::CREATE_RECORD, input)
            .await
        {
            Ok(out) => {
                self.api.counters.posts_sent.inc();
                Ok(StrongRef {
                    uri: out.uri,
                    cid: out.cid,
                })
            }
            Err(ApiError::Call {
                source: e @ XrpcError::Refused { .. },
            }) if collection == collection::POST
                && self.api.counters.retries.get() > retries_before =>
            {
                let uri = format!("at://{did}/{collection}/{rkey}");
                match self.post(&uri).await {
                    Ok((made, _)) => {
                        self.api.counters.posts_sent.inc();
                        Ok(made)
                    }
                    Err(_) => Err(e.to_string()),
                }
            }
            Err(e) => Err(self.failed(e)),
        }
    }
}
