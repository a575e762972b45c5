//! A small Jetstream server: a websocket at `/subscribe` sending events in
//! Jetstream's JSON format (`did`, `time_us`, `kind: "commit"`,
//! `commit: {rev, operation, collection, rkey, record, cid}`), honouring
//! `wantedCollections`, `wantedDids` and `cursor` (µs: replay from that
//! time; without it, live events only), as the real one does.
//!
//! [`Jetstream::cut_after`] drops the connection without a close frame
//! after a number of events, as a network cut would.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use futures::SinkExt;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

use super::pds::url_params;

#[derive(Default)]
struct State {
    /// Every event, oldest first: (time_us, did, collection, json).
    events: Vec<(i64, String, String, String)>,
    /// The query string of each connection, in order.
    connections: Vec<String>,
    /// Drop the current connection after sending this many more events.
    cut_after: Option<usize>,
}

#[derive(Clone)]
pub struct Jetstream {
    pub url: String,
    state: Arc<Mutex<State>>,
    more: Arc<Notify>,
}

impl Jetstream {
    pub async fn start() -> Jetstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/subscribe", listener.local_addr().unwrap());
        let js = Jetstream {
            url,
            state: Arc::default(),
            more: Arc::new(Notify::new()),
        };
        let server = js.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let server = server.clone();
                tokio::spawn(async move { server.serve(stream).await });
            }
        });
        js
    }

    /// Query strings of the connections so far.
    pub fn connections(&self) -> Vec<String> {
        self.state.lock().unwrap().connections.clone()
    }

    /// The current connection is dropped after `n` more events.
    pub fn cut_after(&self, n: usize) {
        self.state.lock().unwrap().cut_after = Some(n);
    }

    /// A commit event creating `record` in `collection` by `did`, at
    /// `time_us`.
    pub fn commit(&self, did: &str, collection: &str, rkey: &str, time_us: i64, record: Value) {
        let event = json!({"did": did, "time_us": time_us, "kind": "commit",
            "commit": {"rev": format!("rev{time_us}"), "operation": "create", "collection": collection,
                "rkey": rkey, "record": record, "cid": format!("bafyjs{rkey}")}});
        self.push(time_us, did, collection, event);
    }

    /// Any event (identity, account, or a malformed one).
    pub fn push(&self, time_us: i64, did: &str, collection: &str, event: Value) {
        self.push_raw(time_us, did, collection, event.to_string());
    }

    pub fn push_raw(&self, time_us: i64, did: &str, collection: &str, text: String) {
        self.state
            .lock()
            .unwrap()
            .events
            .push((time_us, did.into(), collection.into(), text));
        self.more.notify_waiters();
    }

    // The handshake callback's error type is tungstenite's, not ours.
    #[allow(clippy::result_large_err)]
    async fn serve(&self, stream: tokio::net::TcpStream) {
        let mut query = String::new();
        let callback = |req: &Request, resp: Response| {
            query = req.uri().query().unwrap_or("").to_string();
            Ok(resp)
        };
        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
            return;
        };
        let params = url_params(&query);
        let collections: Vec<String> = params
            .iter()
            .filter(|(k, _)| k == "wantedCollections")
            .map(|(_, v)| v.clone())
            .collect();
        let dids: Vec<String> = params
            .iter()
            .filter(|(k, _)| k == "wantedDids")
            .map(|(_, v)| v.clone())
            .collect();
        let cursor: Option<i64> = params
            .iter()
            .find(|(k, _)| k == "cursor")
            .and_then(|(_, v)| v.parse().ok());
        let mut next = {
            let mut s = self.state.lock().unwrap();
            s.connections.push(query.clone());
            match cursor {
                Some(c) => s
                    .events
                    .iter()
                    .position(|e| e.0 >= c)
                    .unwrap_or(s.events.len()),
                None => s.events.len(),
            }
        };
        loop {
            let notified = self.more.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            loop {
                let item = {
                    let mut s = self.state.lock().unwrap();
                    let Some(e) = s.events.get(next).cloned() else {
                        break;
                    };
                    next += 1;
                    let wanted = (collections.is_empty() || collections.contains(&e.2))
                        && (dids.is_empty() || dids.contains(&e.1));
                    if !wanted {
                        continue;
                    }
                    match s.cut_after {
                        Some(0) => {
                            s.cut_after = None;
                            return; // dropped: no close frame
                        }
                        Some(n) => s.cut_after = Some(n - 1),
                        None => {}
                    }
                    e.3
                };
                if ws.send(Message::text(item)).await.is_err() {
                    return;
                }
            }
            notified.await;
        }
    }
}
