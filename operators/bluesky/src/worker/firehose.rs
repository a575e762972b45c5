//! The firehose half of the inbound work: the connection to
//! `subscribeRepos` and what each frame does (the decoding, selection and
//! checks are in [`crate::firehose`]).

use std::collections::HashMap;

use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::Worker;
use crate::api::jitter;
use crate::firehose::frame::{self, Commit, Frame};
use crate::firehose::{self as hose, Candidate, CommitErrorKind, Counters, Firehose};
use crate::jetstream;
use crate::store::Account;

impl Worker {
    /// The firehose state for `account` and the current settings (kept
    /// when neither changed; else saved and made again from the file).
    pub(super) fn set_hose(&mut self, account: Account) {
        if self
            .hose
            .as_ref()
            .is_some_and(|h| *h.account() == account && *h.settings() == self.config.firehose)
        {
            return;
        }
        self.drop_hose();
        let counters = Counters::new(self.api.publisher().bus());
        match Firehose::new(
            account,
            self.config.firehose.clone(),
            self.store.clone(),
            &self.tls,
            self.config.request_timeout,
            counters,
        ) {
            Ok(h) => self.hose = Some(h),
            Err(e) => tracing::error!(error = %e, "cannot build the HTTP client for DID documents"),
        }
    }

    /// Saves and drops the firehose state.
    pub(super) fn drop_hose(&mut self) {
        if let Some(mut h) = self.hose.take() {
            h.save();
        }
    }

    pub(super) async fn connect_firehose(&mut self) {
        let Some(h) = &self.hose else { return };
        let relay = h.settings().relay_uri.clone();
        let cursor = h.cursor();
        let url = hose::subscribe_url(&relay, cursor);
        match jetstream::connect(&url, &self.tls).await {
            Ok(socket) => {
                tracing::info!(relay = %relay, cursor = ?cursor, "firehose connected");
                h.counters.connects.inc();
                self.socket = Some(socket);
                self.last_frame = Instant::now();
                self.pinged = false;
            }
            Err(e) => {
                let wait = jitter(self.connect_delay);
                tracing::warn!(relay = %relay, error = %e, wait_ms = wait.as_millis() as u64, "cannot connect to the firehose; trying again");
                self.next_connect = Instant::now() + wait;
                self.connect_delay = (self.connect_delay * 2).min(self.config.retry.max);
            }
        }
    }

    pub(super) async fn firehose_frame(
        &mut self,
        message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) {
        let bytes = match message {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Close(_))) | None => {
                self.disconnected("closed by the server".into());
                return;
            }
            Some(Ok(Message::Text(_))) => {
                // subscribeRepos sends binary frames only.
                if let Some(h) = &self.hose {
                    h.counters.malformed.inc();
                }
                return;
            }
            Some(Ok(_)) => return, // ping/pong
            Some(Err(e)) => {
                self.disconnected(e.to_string());
                return;
            }
        };
        let Some(me) = self.api.tokens().map(|t| t.did.clone()) else {
            return;
        };
        let Some(h) = &mut self.hose else { return };
        let frame = match frame::decode(&bytes) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "firehose frame dropped");
                h.counters.malformed.inc();
                return;
            }
        };
        if frame.seq().is_some_and(|seq| h.seen(seq)) {
            return;
        }
        self.connect_delay = self.config.retry.initial;
        match frame {
            Frame::Commit(commit) => {
                if self.commit(&me, &commit).await {
                    if let Some(h) = &mut self.hose {
                        h.read(commit.seq);
                    }
                }
            }
            Frame::Identity { seq, did } => {
                h.identity_changed(&did);
                h.read(seq);
            }
            Frame::Account { seq, did, active } => {
                tracing::debug!(%did, active, "firehose: account status");
                h.read(seq);
            }
            Frame::Other { kind, seq } => {
                tracing::debug!(%kind, "firehose: message type not used");
                if let Some(seq) = seq {
                    h.read(seq);
                }
            }
            Frame::Info { name, message } => {
                if name == "OutdatedCursor" {
                    h.counters.outdated_cursor.inc();
                    tracing::warn!(cursor = ?h.cursor(), "firehose: the cursor is older than the server keeps; events in between are lost");
                } else {
                    tracing::info!(%name, message = ?message, "firehose: server info");
                }
                let notice = json!({"sender": "", "room": "", "name": name, "text": message.unwrap_or_default()});
                let _ = self.api.publisher().notice("firehose", notice).await;
            }
            Frame::Error { error, message } => {
                h.counters.server_errors.inc();
                if error == "FutureCursor" {
                    tracing::warn!(cursor = ?h.cursor(), "firehose: the server is behind the saved cursor (reset, or another server); resuming live");
                    h.reset_cursor();
                } else {
                    tracing::warn!(%error, message = ?message, "firehose: the server sent an error");
                }
                let notice = json!({"sender": "", "room": "", "name": error, "text": message.unwrap_or_default()});
                let _ = self.api.publisher().notice("firehose", notice).await;
                // The server closes after an error frame; do not wait for it.
                self.disconnected(format!("server error {error}"));
            }
        }
    }

    /// Handles a commit; false when the cursor must not move past it (a
    /// publish failed and the connection is made again to read it anew).
    async fn commit(&mut self, me: &str, commit: &Commit) -> bool {
        let Some(h) = &mut self.hose else {
            return false;
        };
        let found = match h.check(me, commit).await {
            Ok(found) => found,
            Err(e) => {
                match e.kind() {
                    CommitErrorKind::Car => h.counters.malformed.inc(),
                    _ => h.counters.unverified.inc(),
                }
                tracing::info!(repo = %commit.repo, seq = commit.seq, error = %e, "firehose commit dropped");
                return true;
            }
        };
        let mut found: Vec<Candidate> = found
            .into_iter()
            .filter(|c| self.config.publishes(c.reason))
            .collect();
        if found.is_empty() {
            return true;
        }
        let roots = self.subject_roots(&found).await;
        for c in found.drain(..) {
            let root = c.subject.as_ref().and_then(|s| roots.get(s));
            let event = hose::event(commit, &c, root.map(String::as_str));
            if let Err(e) = self.api.publisher().event(&event).await {
                tracing::warn!(error = %e, "cannot publish a firehose event; reconnecting to read it again");
                self.disconnected("publish failed".into());
                return false;
            }
            tracing::debug!(uri = %event.post.uri, seq = commit.seq, kind = %event.kind, "firehose event published");
            if let Some(h) = &mut self.hose {
                h.counters.published.inc();
            }
        }
        if let Some(h) = &mut self.hose {
            h.read(commit.seq);
            h.save();
        }
        true
    }

    /// The thread roots of the posts liked or reposted; a failed lookup
    /// leaves the room at the post itself, as for polling.
    async fn subject_roots(&mut self, found: &[Candidate]) -> HashMap<String, String> {
        let subjects = found.iter().filter_map(|c| c.subject.as_deref());
        crate::poller::thread_roots(&mut self.api, subjects).await
    }
}
