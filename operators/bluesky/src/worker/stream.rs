//! The inbound half of the task: a poll, and the Jetstream connection
//! (connect, frames, keepalive, loss).

use futures::SinkExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::Worker;
use crate::api::jitter;
use crate::jetstream;

impl Worker {
    pub(super) async fn poll(&mut self) {
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

    pub(super) async fn connect(&mut self) {
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

    pub(super) async fn frame(
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
    pub(super) async fn quiet(&mut self) {
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

    pub(super) fn disconnected(&mut self, why: String) {
        self.socket = None;
        if let Some(t) = &mut self.tracker {
            t.save();
        }
        if let Some(h) = &mut self.hose {
            h.save();
            if !h.settings().auto_reconnect {
                tracing::error!(reason = %why, "firehose connection lost; not reconnecting (firehose.auto_reconnect = false) until a reload or a resume");
                self.hose_stopped = true;
                return;
            }
            tracing::warn!(reason = %why, "firehose connection lost; resuming from the cursor");
        } else {
            tracing::warn!(reason = %why, "Jetstream connection lost; resuming from the cursor");
        }
        let wait = jitter(self.connect_delay);
        self.next_connect = Instant::now() + wait;
        self.connect_delay = (self.connect_delay * 2).min(self.config.retry.max);
    }
}
