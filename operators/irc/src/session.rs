//! The connection driver: one task that owns the socket, feeds the
//! [`Client`] state machine, paces outbound lines ([`crate::flood`]),
//! keeps the connection alive (PING / timeout), publishes events and acks,
//! and reconnects with backoff.
//!
//! The operator talks to it through [`SessionHandle`] (a channel of
//! [`Request`]s), so bus handlers never wait for the network.

use std::collections::VecDeque;
use std::time::Duration;

use switchboard_bus::proto::{headers, ChatAddress, Envelope, SendResult};
use switchboard_bus::Bus;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{Client, Output};
use crate::config::IrcConfig;
use crate::flood::{self, TokenBucket, Window};
use crate::inbound::InboundEvent;
use crate::line::{Framed, LineFramer, OutLine};
use crate::outbound::{NotSent, TextKind};
use crate::transport;

/// Longest inbound line kept: 8191 bytes of IRCv3 tags plus the line.
fn max_inbound(config: &IrcConfig) -> usize {
    8191 + config.max_line_bytes.max(512)
}

/// Something the operator asks of the session.
#[derive(Debug)]
pub enum Request {
    /// Send text to a room (`#chan` or `@nick`).
    Text {
        /// message, action or notice.
        kind: TextKind,
        /// The raw room.
        room: String,
        /// The text (may hold newlines).
        text: String,
        /// Where to answer.
        reply: Option<String>,
    },
    /// Join a channel.
    Join {
        /// The channel.
        room: String,
        /// Its key.
        key: Option<String>,
        /// Where to answer.
        reply: Option<String>,
    },
    /// Leave a channel.
    Part {
        /// The channel.
        room: String,
        /// The reason.
        reason: Option<String>,
        /// Where to answer.
        reply: Option<String>,
    },
    /// Change nick.
    Nick {
        /// The new nick.
        nick: String,
        /// Where to answer.
        reply: Option<String>,
    },
    /// A raw line (checked against `allow_raw`).
    Raw {
        /// The line without CR LF.
        line: String,
        /// Where to answer.
        reply: Option<String>,
    },
    /// A new configuration (and instance).
    Reload(Box<IrcConfig>, String),
    /// Stop (true) or go on (false) publishing events.
    Pause(bool),
    /// QUIT and end the task.
    Shutdown(oneshot::Sender<()>),
}

/// The operator's end of a running session.
#[derive(Debug)]
pub struct SessionHandle {
    tx: mpsc::Sender<Request>,
    task: JoinHandle<()>,
}

impl SessionHandle {
    /// Starts a session for `config`, publishing as `instance` on `bus`.
    pub fn spawn(bus: Bus, instance: String, config: IrcConfig) -> SessionHandle {
        let (tx, rx) = mpsc::channel(1024);
        let session = Session::new(bus, instance, config, rx);
        let task = tokio::spawn(session.run());
        SessionHandle { tx, task }
    }

    /// Hands a request to the session (waits if 1024 are already queued).
    ///
    /// # Errors
    ///
    /// [`Stopped`] when the session task has ended.
    pub async fn send(&self, request: Request) -> Result<(), Stopped> {
        self.tx.send(request).await.map_err(|_| Stopped)
    }

    /// Sends QUIT and waits (at most `within`) for the session to end.
    pub async fn shutdown(self, within: Duration) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Request::Shutdown(done_tx)).await.is_ok() {
            let _ = tokio::time::timeout(within, done_rx).await;
        }
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The session task has ended: nothing can be sent any more.
#[derive(Debug, thiserror::Error)]
#[error("the IRC session has stopped")]
pub struct Stopped;

/// A request the ended session cannot take fails the handler.
impl From<Stopped> for switchboard_bus::HandlerError {
    fn from(e: Stopped) -> switchboard_bus::HandlerError {
        switchboard_bus::HandlerError::other(e)
    }
}

/// How a connection ended.
enum End {
    /// Shut down on request; signal when done.
    Shutdown(oneshot::Sender<()>),
    /// Connect again at once (new server in the config).
    ReconnectNow,
    /// Lost; connect again after the backoff.
    Lost(String),
}

struct Queued {
    line: OutLine,
    ack: Option<String>,
}

struct WriteItem {
    line: OutLine,
    ack: Option<String>,
}

struct Session {
    bus: Bus,
    instance: String,
    client: Client,
    rx: mpsc::Receiver<Request>,
    paused: bool,
    bucket: TokenBucket,
    window: Window,
    queue: VecDeque<Queued>,
    backoff: Duration,
}

impl Session {
    fn new(bus: Bus, instance: String, config: IrcConfig, rx: mpsc::Receiver<Request>) -> Session {
        let now = std::time::Instant::now();
        Session {
            bucket: TokenBucket::new(config.flood.burst, config.flood.per_second, now),
            window: Window::new(config.flood.window_bytes),
            backoff: config.reconnect.initial,
            client: Client::new(config, now),
            bus,
            instance,
            rx,
            paused: false,
            queue: VecDeque::new(),
        }
    }

    fn config(&self) -> &IrcConfig {
        self.client.config()
    }

    async fn run(mut self) {
        loop {
            let address = self.config().address();
            tracing::info!(server = %address, tls = self.config().tls, "connecting");
            let end = match self.connect().await {
                Ok(Some(stream)) => self.connected(stream).await,
                Ok(None) => End::ReconnectNow,
                Err(end) => end,
            };
            let reason = match &end {
                End::Shutdown(_) => "shutting down".to_string(),
                End::ReconnectNow => "reconnecting for a new configuration".to_string(),
                End::Lost(r) => r.clone(),
            };
            let outs = self.client.on_disconnect(&reason);
            self.dispatch(outs, None).await;
            for q in std::mem::take(&mut self.queue) {
                if let Some(reply) = q.ack {
                    self.respond(&reply, SendResult::failed(format!("not sent: {reason}")))
                        .await;
                }
            }
            self.window.reset();
            match end {
                End::Shutdown(done) => {
                    let _ = self.bus.flush().await;
                    let _ = done.send(());
                    return;
                }
                End::ReconnectNow => {}
                End::Lost(reason) => {
                    let wait = self.next_backoff();
                    tracing::warn!(server = %address, %reason, retry_in_ms = wait.as_millis() as u64, "disconnected");
                    if let Some(done) = self.idle(wait).await {
                        let _ = self.bus.flush().await;
                        let _ = done.send(());
                        return;
                    }
                }
            }
        }
    }

    fn next_backoff(&mut self) -> Duration {
        let r = &self.config().reconnect;
        let current = self.backoff;
        self.backoff = current.mul_f64(r.multiplier).min(r.max);
        current.mul_f64(0.8 + 0.4 * fastrand::f64())
    }

    /// Opens the stream while still answering requests. `Ok(None)`: a
    /// reload asked to start over with a new config.
    async fn connect(&mut self) -> Result<Option<Box<dyn transport::Stream>>, End> {
        let config = self.config().clone();
        let connecting = transport::connect(&config);
        tokio::pin!(connecting);
        loop {
            tokio::select! {
                res = &mut connecting => {
                    return res.map(Some).map_err(|e| End::Lost(e.to_string()));
                }
                req = self.rx.recv() => match req {
                    None => return Err(End::Lost("operator gone".into())),
                    Some(Request::Shutdown(done)) => return Err(End::Shutdown(done)),
                    Some(req) => {
                        if self.offline_request(req).await {
                            return Ok(None);
                        }
                    }
                },
            }
        }
    }

    /// Waits `wait` before reconnecting, answering requests meanwhile.
    /// Returns the shutdown signal if asked to stop.
    async fn idle(&mut self, wait: Duration) -> Option<oneshot::Sender<()>> {
        let until = Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return None,
                req = self.rx.recv() => match req {
                    None => {
                        // The operator is gone: nothing left to do.
                        let (tx, _rx) = oneshot::channel();
                        return Some(tx);
                    }
                    Some(Request::Shutdown(done)) => return Some(done),
                    Some(req) => {
                        if self.offline_request(req).await {
                            return None;
                        }
                    }
                },
            }
        }
    }

    /// A request while not connected. Returns true when the config changed
    /// so that connecting again right away is wanted.
    async fn offline_request(&mut self, req: Request) -> bool {
        let now = std::time::Instant::now();
        match req {
            Request::Text { reply, .. } | Request::Raw { reply, .. } => {
                if let Some(reply) = reply {
                    let msg = format!(
                        "not connected to {} (reconnecting)",
                        self.config().address()
                    );
                    self.respond(&reply, SendResult::failed(msg)).await;
                }
                false
            }
            Request::Join { room, key, reply } => {
                let Some(reply) = self.room_in_queue(reply).await else {
                    return false;
                };
                let outs = self.client.join(&room, key, reply, now);
                self.dispatch(outs, None).await;
                false
            }
            Request::Part {
                room,
                reason,
                reply,
            } => {
                let Some(reply) = self.room_in_queue(reply).await else {
                    return false;
                };
                let outs = self.client.part(&room, reason, reply, now);
                self.dispatch(outs, None).await;
                false
            }
            Request::Nick { nick, reply } => {
                let Some(reply) = self.room_in_queue(reply).await else {
                    return false;
                };
                let outs = self.client.change_nick(&nick, reply, now);
                self.dispatch(outs, None).await;
                false
            }
            Request::Reload(config, instance) => {
                let reconnect = self.config().needs_reconnect(&config);
                self.apply_settings(&config, instance);
                let _ = self.client.apply_config(*config);
                if reconnect {
                    self.backoff = self.config().reconnect.initial;
                }
                reconnect
            }
            Request::Pause(p) => {
                self.paused = p;
                false
            }
            Request::Shutdown(_) => false, // handled by the callers
        }
    }

    fn apply_settings(&mut self, config: &IrcConfig, instance: String) {
        let now = std::time::Instant::now();
        self.bucket
            .reconfigure(config.flood.burst, config.flood.per_second, now);
        self.window.set_limit(config.flood.window_bytes);
        if instance != self.instance {
            tracing::info!(%instance, "instance changed");
            self.instance = instance;
        }
    }

    async fn connected(&mut self, stream: Box<dyn transport::Stream>) -> End {
        let (mut rd, wr) = tokio::io::split(stream);
        let (wtx, wrx) = mpsc::unbounded_channel::<WriteItem>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let mut writer = tokio::spawn(writer_task(wr, wrx, self.bus.clone(), stop_rx));
        let connected_at = Instant::now();
        let mut last_rx = connected_at;
        let mut keepalive_sent: Option<Instant> = None;
        let mut framer = LineFramer::new(max_inbound(self.config()));
        let mut buf = vec![0u8; 16 * 1024];
        let mut lines = Vec::new();
        let mut registered = false;
        let mut writer_finished = false;
        // Reported in heartbeats next to the bus's own counters.
        let received = self.bus.stats().counter("irc_lines_received");
        self.bus.stats().counter("irc_connects").inc();
        tracing::info!(server = %self.config().address(), "connected");

        let outs = self.client.on_connect(std::time::Instant::now());
        self.dispatch(outs, Some(&wtx)).await;

        let end = loop {
            self.pump(&wtx);
            let wake = self.next_wake(last_rx, keepalive_sent, connected_at, registered);
            tokio::select! {
                read = rd.read(&mut buf) => {
                    let n = match read {
                        Ok(0) => break End::Lost("the server closed the connection".into()),
                        Ok(n) => n,
                        Err(e) => break End::Lost(format!("read error: {e}")),
                    };
                    last_rx = Instant::now();
                    keepalive_sent = None;
                    framer.push(&buf[..n], &mut lines);
                    for framed in lines.drain(..) {
                        match framed {
                            Framed::Line(line) => {
                                tracing::trace!(%line, "<-");
                                received.inc();
                                let outs = self.client.handle_line(&line, std::time::Instant::now());
                                if outs.contains(&Output::Registered) {
                                    registered = true;
                                }
                                self.dispatch(outs, Some(&wtx)).await;
                            }
                            Framed::TooLong(len) => {
                                tracing::warn!(bytes = len, "skipping an over-long line from the server");
                            }
                        }
                    }
                }
                req = self.rx.recv() => {
                    let Some(req) = req else {
                        break End::Lost("operator gone".into());
                    };
                    if let Some(end) = self.online_request(req, &wtx).await {
                        break end;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    let cfg = self.config();
                    let (interval, timeout) = (cfg.ping_interval, cfg.ping_timeout);
                    match keepalive_sent {
                        None if now >= last_rx + interval => {
                            if let Some(l) = OutLine::new("PING :sbkeepalive") {
                                write_now(&wtx, l);
                            }
                            keepalive_sent = Some(now);
                        }
                        Some(t) if now >= t + timeout => {
                            break End::Lost(format!(
                                "ping timeout: the server was silent for {} s",
                                (interval + timeout).as_secs()
                            ));
                        }
                        _ => {}
                    }
                    if !registered && now >= connected_at + interval + timeout {
                        break End::Lost("registration did not complete in time".into());
                    }
                    if let Some(t) = self.window.oldest_unanswered() {
                        if now >= Instant::from_std(t) + interval + timeout {
                            break End::Lost("the server stopped answering flow-control PINGs".into());
                        }
                    }
                    let outs = self.client.tick(std::time::Instant::now());
                    self.dispatch(outs, Some(&wtx)).await;
                }
                res = &mut writer => {
                    writer_finished = true;
                    let reason = match res {
                        Ok(Err(e)) => format!("write error: {e}"),
                        _ => "the writer stopped".to_string(),
                    };
                    break End::Lost(reason);
                }
            }
        };

        // Say goodbye when we are the ones leaving, and give the writer a
        // moment to send it (and what was queued before it).
        let farewell = match &end {
            End::Shutdown(_) => Some((
                format!("QUIT :{}", self.config().quit_message),
                Duration::from_secs(2),
            )),
            End::ReconnectNow => Some(("QUIT :Reconnecting".to_string(), Duration::from_secs(1))),
            End::Lost(_) => None,
        };
        match farewell {
            Some((quit, grace)) => {
                if let Some(l) = OutLine::new(quit) {
                    write_now(&wtx, l);
                }
                drop(wtx);
                if tokio::time::timeout(grace, &mut writer).await.is_err() {
                    let _ = stop_tx.send(());
                    let _ = writer.await;
                }
            }
            None => {
                drop(wtx);
                let _ = stop_tx.send(());
                if !writer_finished {
                    let _ = writer.await;
                }
            }
        }
        end
    }

    /// A request while connected; `Some` ends the connection.
    async fn online_request(
        &mut self,
        req: Request,
        wtx: &mpsc::UnboundedSender<WriteItem>,
    ) -> Option<End> {
        let now = std::time::Instant::now();
        match req {
            Request::Text {
                kind,
                room,
                text,
                reply,
            } => match self.client.text_lines(kind, &room, &text) {
                Err(e) => self.fail(reply, e).await,
                Ok(lines) => self.enqueue(lines, reply).await,
            },
            Request::Raw { line, reply } => match self.client.raw_line(&line) {
                Err(e) => self.fail(reply, e).await,
                Ok(l) => self.enqueue(vec![l], reply).await,
            },
            Request::Join { room, key, reply } => {
                // Refused (queue full, already acked): nothing more to do.
                let reply = self.room_in_queue(reply).await?;
                let outs = self.client.join(&room, key, reply, now);
                self.dispatch(outs, Some(wtx)).await;
            }
            Request::Part {
                room,
                reason,
                reply,
            } => {
                // Refused (queue full, already acked): nothing more to do.
                let reply = self.room_in_queue(reply).await?;
                let outs = self.client.part(&room, reason, reply, now);
                self.dispatch(outs, Some(wtx)).await;
            }
            Request::Nick { nick, reply } => {
                // Refused (queue full, already acked): nothing more to do.
                let reply = self.room_in_queue(reply).await?;
                let outs = self.client.change_nick(&nick, reply, now);
                self.dispatch(outs, Some(wtx)).await;
            }
            Request::Reload(config, instance) => {
                let reconnect = self.config().needs_reconnect(&config);
                self.apply_settings(&config, instance);
                let outs = self.client.apply_config(*config);
                if reconnect {
                    tracing::info!(server = %self.config().address(), "server settings changed; reconnecting");
                    self.backoff = self.config().reconnect.initial;
                    return Some(End::ReconnectNow);
                }
                self.dispatch(outs, Some(wtx)).await;
            }
            Request::Pause(p) => self.paused = p,
            Request::Shutdown(done) => return Some(End::Shutdown(done)),
        }
        None
    }

    async fn fail(&self, reply: Option<String>, error: NotSent) {
        tracing::debug!(%error, "send request refused");
        if let Some(reply) = reply {
            self.respond(&reply, SendResult::failed(error.to_string()))
                .await;
        }
    }

    /// Whether the send queue has room for one more line (join, part and
    /// nick requests go through it like messages, so they are bounded by
    /// `max_queue` too). When it has not, the request is refused (acked
    /// with the reason) and `None` comes back. The returned value is the
    /// request's reply subject, handed on.
    async fn room_in_queue(&mut self, reply: Option<String>) -> Option<Option<String>> {
        let max = self.config().flood.max_queue;
        if self.queue.len() >= max {
            let waiting = self.queue.len();
            self.fail(reply, NotSent::QueueFull { waiting, max }).await;
            return None;
        }
        Some(reply)
    }

    /// Queues the lines of one request; the ack rides on the last line.
    async fn enqueue(&mut self, lines: Vec<OutLine>, reply: Option<String>) {
        let max = self.config().flood.max_queue;
        if self.queue.len() + lines.len() > max {
            let waiting = self.queue.len();
            self.fail(reply, NotSent::QueueFull { waiting, max }).await;
            return;
        }
        let n = lines.len();
        for (i, line) in lines.into_iter().enumerate() {
            let ack = if i + 1 == n { reply.clone() } else { None };
            self.queue.push_back(Queued { line, ack });
        }
    }

    /// Moves queued lines to the writer as flood control allows.
    fn pump(&mut self, wtx: &mpsc::UnboundedSender<WriteItem>) {
        let now = std::time::Instant::now();
        while let Some(front) = self.queue.front() {
            let len = front.line.wire_len();
            if !self.window.allows(len) {
                if let Some(id) = self.window.marker_if_blocked(len, now) {
                    send_marker(wtx, id);
                }
                break;
            }
            if !self.bucket.try_take(now) {
                break;
            }
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            tracing::trace!(line = %q.line.loggable(), "->");
            let _ = wtx.send(WriteItem {
                line: q.line,
                ack: q.ack,
            });
            if let Some(id) = self.window.sent(len, now) {
                send_marker(wtx, id);
            }
        }
    }

    fn next_wake(
        &self,
        last_rx: Instant,
        keepalive_sent: Option<Instant>,
        connected_at: Instant,
        registered: bool,
    ) -> Instant {
        let cfg = self.config();
        let mut wake = match keepalive_sent {
            None => last_rx + cfg.ping_interval,
            Some(t) => t + cfg.ping_timeout,
        };
        if !registered {
            wake = wake.min(connected_at + cfg.ping_interval + cfg.ping_timeout);
        }
        if let Some(front) = self.queue.front() {
            if self.window.allows(front.line.wire_len()) {
                let now = std::time::Instant::now();
                wake = wake.min(Instant::from_std(self.bucket.next_ready(now)));
            }
        }
        if let Some(t) = self.window.oldest_unanswered() {
            wake = wake.min(Instant::from_std(t) + cfg.ping_interval + cfg.ping_timeout);
        }
        if let Some(t) = self.client.next_deadline() {
            wake = wake.min(Instant::from_std(t));
        }
        wake
    }

    async fn dispatch(
        &mut self,
        outs: Vec<Output>,
        wtx: Option<&mpsc::UnboundedSender<WriteItem>>,
    ) {
        for out in outs {
            match out {
                Output::Send(line) => self.queue.push_back(Queued { line, ack: None }),
                Output::SendNow(line) => {
                    if let Some(wtx) = wtx {
                        tracing::trace!(line = %line.loggable(), "->");
                        write_now(wtx, line);
                    }
                }
                Output::Event(ev) => self.publish(ev).await,
                Output::Ack { reply, result } => self.respond(&reply, result).await,
                Output::Pong(token) => {
                    if let Some(id) = flood::parse_marker(&token) {
                        self.window.acked(id);
                    }
                }
                Output::Registered => {
                    self.backoff = self.config().reconnect.initial;
                }
            }
        }
    }

    async fn publish(&self, ev: InboundEvent) {
        if self.paused {
            // Halted: the event is dropped by design, and counted.
            let dropped = self.bus.stats().counter("irc_events_dropped_halted");
            dropped.inc();
            tracing::debug!(room = %ev.room, kind = ev.kind, "halted: event not published");
            return;
        }
        let subject = ChatAddress::new("irc", &self.instance, &ev.room).event_subject(ev.kind);
        let mut env =
            Envelope::new(self.bus.source(), ev.body).with_header(headers::ROOM, &ev.room);
        if let Some(ts) = ev.timestamp {
            env.timestamp = ts;
        }
        if let Err(e) = self.bus.publish(&subject, &env).await {
            tracing::warn!(%subject, error = %e, "could not publish an event");
        }
    }

    async fn respond(&self, reply: &str, result: SendResult) {
        if let Err(e) = self.bus.respond_json(reply, &result).await {
            tracing::warn!(error = %e, "could not answer a send request");
        }
    }
}

fn write_now(wtx: &mpsc::UnboundedSender<WriteItem>, line: OutLine) {
    let _ = wtx.send(WriteItem { line, ack: None });
}

fn send_marker(wtx: &mpsc::UnboundedSender<WriteItem>, id: u64) {
    if let Some(l) = OutLine::new(format!("PING :{}", flood::marker_token(id))) {
        write_now(wtx, l);
    }
}

/// Writes lines in order; acks each request once its last line is out.
/// On a write error or a stop signal, everything not written is refused.
/// The error is the write error's message: it only becomes the reason the
/// connection was lost (logged and in the status), nothing branches on it.
async fn writer_task<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<WriteItem>,
    bus: Bus,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), String> {
    let refuse = |bus: Bus, reply: String, why: String| async move {
        let _ = bus.respond_json(&reply, &SendResult::failed(why)).await;
    };
    let sent = bus.stats().counter("irc_lines_sent");
    let mut failure: Option<String> = None;
    loop {
        let item = tokio::select! {
            biased;
            _ = &mut stop => { failure = Some("connection closed".into()); break; }
            item = rx.recv() => match item {
                Some(item) => item,
                None => break,
            },
        };
        let wire = item.line.to_wire();
        let written = tokio::select! {
            biased;
            _ = &mut stop => Err("connection closed".to_string()),
            r = async {
                wr.write_all(&wire).await?;
                wr.flush().await
            } => r.map_err(|e| e.to_string()),
        };
        match written {
            Ok(()) => {
                sent.inc();
                if let Some(reply) = item.ack {
                    let _ = bus.respond_json(&reply, &SendResult::sent()).await;
                }
            }
            Err(e) => {
                if let Some(reply) = item.ack {
                    refuse(bus.clone(), reply, format!("not sent: {e}")).await;
                }
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(why) = &failure {
        rx.close();
        while let Ok(item) = rx.try_recv() {
            if let Some(reply) = item.ack {
                refuse(bus.clone(), reply, format!("not sent: {why}")).await;
            }
        }
        return Err(why.clone());
    }
    let _ = wr.shutdown().await;
    Ok(())
}
