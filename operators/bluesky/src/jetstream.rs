//! The Jetstream strategy: a websocket to a Jetstream `subscribe`
//! endpoint (`wantedCollections`, `wantedDids`, `cursor` in µs), picking
//! out the posts that answer, quote or mention the account.
//!
//! Nothing lost, nothing twice: the cursor (`time_us` of the newest event
//! read) is saved with the URIs of the posts published lately
//! (`jetstream.json`); a new connection resumes `overlap` before the
//! cursor, and posts already published are dropped by URI.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::config::{Jetstream, POST};
use crate::inbound::{from_jetstream, post_reason, Event};
use crate::lexicon::StrongRef;
use crate::store::{self, Account, JetstreamMark, Store};

/// URIs remembered for de-duplication.
pub const RECENT: usize = 2000;
/// Longest wait between saves of the cursor while nothing is published.
pub const SAVE_EVERY: Duration = Duration::from_secs(5);
/// How long after a keepalive ping, as a multiple of `jetstream.keepalive`,
/// a connection that gave no frame at all (not even the pong) is taken for
/// dead and replaced: a peer that vanished sends no FIN.
pub const SILENCE_FACTOR: f64 = 1.5;
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The websocket.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Microseconds since the epoch, Jetstream's cursor unit.
pub fn now_us() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
}

/// One Jetstream event (the fields read).
#[derive(Debug, Deserialize)]
pub struct Frame {
    /// The repository (author).
    pub did: String,
    /// Microseconds since the epoch: the cursor.
    pub time_us: i64,
    /// `commit`, `identity` or `account`.
    pub kind: String,
    /// For commits.
    #[serde(default)]
    pub commit: Option<Commit>,
}

/// A commit event's operation.
#[derive(Debug, Deserialize)]
pub struct Commit {
    /// `create`, `update` or `delete`.
    pub operation: String,
    /// NSID of the record.
    pub collection: String,
    /// Record key.
    pub rkey: String,
    /// The record (create and update).
    #[serde(default)]
    pub record: Option<Value>,
    /// Its CID.
    #[serde(default)]
    pub cid: Option<String>,
}

/// Why a frame was not an event to publish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON of Jetstream's shape.
    #[error("not a Jetstream event: {0}")]
    Malformed(String),
}

/// Parses one text frame.
///
/// # Errors
///
/// [`FrameError::Malformed`] when it is not a Jetstream event.
pub fn parse_frame(text: &str) -> Result<Frame, FrameError> {
    serde_json::from_str(text).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// The event to publish for `frame`, if it is a new post concerning `me`.
pub fn event_for(me: &str, frame: &Frame) -> Option<Event> {
    let commit = frame.commit.as_ref()?;
    if frame.kind != "commit" || commit.operation != "create" || commit.collection != POST {
        return None;
    }
    let record = commit.record.as_ref()?;
    let reason = post_reason(me, record)?;
    let post = StrongRef {
        uri: format!("at://{}/{}/{}", frame.did, commit.collection, commit.rkey),
        cid: commit.cid.clone().unwrap_or_default(),
    };
    Some(from_jetstream(
        reason,
        &frame.did,
        post,
        record,
        frame.time_us,
    ))
}

/// The subscribe URL with its query.
///
/// # Errors
///
/// A message when the configured URL does not parse (checked at config
/// time, so only for a bug).
pub fn subscribe_url(config: &Jetstream, cursor: Option<i64>) -> Result<String, String> {
    let mut url = reqwest::Url::parse(&config.url).map_err(|e| e.to_string())?;
    {
        let mut q = url.query_pairs_mut();
        for c in &config.wanted_collections {
            q.append_pair("wantedCollections", c);
        }
        for d in &config.wanted_dids {
            q.append_pair("wantedDids", d);
        }
        if let Some(c) = cursor {
            q.append_pair("cursor", &c.to_string());
        }
    }
    Ok(url.to_string())
}

/// Opens the websocket.
///
/// # Errors
///
/// A message saying what failed (connect, TLS, HTTP upgrade).
pub async fn connect(url: &str, tls: &Arc<rustls::ClientConfig>) -> Result<Socket, String> {
    let connector = tokio_tungstenite::Connector::Rustls(Arc::clone(tls));
    let attempt =
        tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector));
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok((socket, _))) => Ok(socket),
    }
}

/// The cursor and recent URIs, kept and saved.
#[derive(Debug)]
pub struct Tracker {
    account: Account,
    store: Store,
    cursor: Option<i64>,
    recent: VecDeque<String>,
    recent_set: HashSet<String>,
    saved_at: Instant,
    dirty: bool,
}

impl Tracker {
    /// The saved state of `account`, or a fresh one whose cursor is now,
    /// saved at once: a process that dies before reading anything still
    /// resumes from its first start, not from whenever it comes back.
    pub fn new(account: Account, store: Store) -> Tracker {
        let saved = store
            .load::<JetstreamMark>(store::JETSTREAM)
            .filter(|m| m.account.as_ref() == Some(&account));
        let fresh = saved.is_none();
        let mark = saved.unwrap_or_else(|| JetstreamMark {
            account: Some(account.clone()),
            cursor: Some(now_us()),
            recent: Vec::new(),
        });
        let mut tracker = Tracker {
            account,
            store,
            cursor: mark.cursor,
            recent_set: mark.recent.iter().cloned().collect(),
            recent: mark.recent.into(),
            saved_at: Instant::now(),
            dirty: false,
        };
        if fresh {
            tracker.save();
        }
        tracker
    }

    /// The account it tracks for.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// Where a new connection starts: `overlap` before the cursor.
    pub fn resume_from(&self, overlap: Duration) -> Option<i64> {
        let overlap = i64::try_from(overlap.as_micros()).unwrap_or(i64::MAX);
        self.cursor.map(|c| c.saturating_sub(overlap).max(0))
    }

    /// Whether `uri` was published lately.
    pub fn seen(&self, uri: &str) -> bool {
        self.recent_set.contains(uri)
    }

    /// A frame was read (saved now and then).
    pub fn read(&mut self, time_us: i64) {
        if self.cursor.is_none_or(|c| time_us > c) {
            self.cursor = Some(time_us);
            self.dirty = true;
        }
        if self.dirty && self.saved_at.elapsed() >= SAVE_EVERY {
            self.save();
        }
    }

    /// A post was published: remember it and save at once.
    pub fn published(&mut self, uri: &str) {
        if self.recent_set.insert(uri.to_string()) {
            self.recent.push_back(uri.to_string());
            while self.recent.len() > RECENT {
                if let Some(old) = self.recent.pop_front() {
                    self.recent_set.remove(&old);
                }
            }
        }
        self.save();
    }

    /// Write `jetstream.json` if anything changed.
    pub fn save(&mut self) {
        let mark = JetstreamMark {
            account: Some(self.account.clone()),
            cursor: self.cursor,
            recent: self.recent.iter().cloned().collect(),
        };
        if let Err(e) = self.store.save(store::JETSTREAM, &mark) {
            tracing::warn!(error = %e, "cannot save the Jetstream cursor");
        }
        self.saved_at = Instant::now();
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(did: &str, text: &str, facets: Value) -> String {
        json!({"did": did, "time_us": 1_725_911_162_329_308i64, "kind": "commit",
            "commit": {"rev": "3l3qo2vutsw2b", "operation": "create", "collection": POST,
                "rkey": "3l3qo2vuowo2b", "cid": "bafyreidwaivazkwu67xztlmuobx35hs2lnfh3kolmgfmucldvhd3sgzcqi",
                "record": {"$type": POST, "createdAt": "2024-09-09T19:46:02.102Z", "langs": ["en"],
                    "text": text, "facets": facets}}})
        .to_string()
    }

    #[test]
    fn picks_out_mentions_of_the_account() {
        let me = "did:plc:bot";
        let facets = json!([{"index": {"byteStart": 3, "byteEnd": 12},
            "features": [{"$type": "app.bsky.richtext.facet#mention", "did": me}]}]);
        let f = parse_frame(&frame("did:plc:alice", "hi @bot.test", facets)).unwrap();
        let e = event_for(me, &f).unwrap();
        assert_eq!(e.kind, "mention");
        assert_eq!(
            e.post.uri,
            "at://did:plc:alice/app.bsky.feed.post/3l3qo2vuowo2b"
        );
        assert_eq!(e.room, e.post.uri);
        assert_eq!(e.body["sender"], "did:plc:alice");
        assert_eq!(e.body["time_us"], 1_725_911_162_329_308i64);
        let f = parse_frame(&frame("did:plc:alice", "hi", json!([]))).unwrap();
        assert!(event_for(me, &f).is_none());
        let identity = r#"{"did":"did:plc:a","time_us":1,"kind":"identity","identity":{"did":"did:plc:a","handle":"a.test","seq":1,"time":"2024-09-09T19:46:02.102Z"}}"#;
        assert!(event_for(me, &parse_frame(identity).unwrap()).is_none());
        assert!(parse_frame("{\"kind\":\"commit\"}").is_err());
        assert!(parse_frame("not json").is_err());
    }

    #[test]
    fn url_carries_the_filters_and_cursor() {
        let config = Jetstream {
            url: "ws://127.0.0.1:1/subscribe".into(),
            wanted_collections: vec![POST.into()],
            wanted_dids: vec!["did:plc:a".into(), "did:plc:b".into()],
            overlap: Duration::from_secs(1),
            keepalive: Duration::from_secs(30),
        };
        let url = subscribe_url(&config, Some(42)).unwrap();
        assert_eq!(
            url,
            "ws://127.0.0.1:1/subscribe?wantedCollections=app.bsky.feed.post&wantedDids=did%3Aplc%3Aa&wantedDids=did%3Aplc%3Ab&cursor=42"
        );
    }

    #[test]
    fn tracker_resumes_before_the_cursor_and_remembers_uris() {
        let dir = tempfile::tempdir().unwrap();
        let account = Account {
            service: "s".into(),
            identifier: "i".into(),
        };
        let before = now_us();
        let mut t = Tracker::new(account.clone(), Store::new(Some(dir.path())));
        let first = t.resume_from(Duration::from_secs(1)).unwrap();
        assert!(first >= before - 1_000_000 && first <= now_us() - 1_000_000);
        let t2 = Tracker::new(account.clone(), Store::new(Some(dir.path())));
        assert_eq!(
            t2.resume_from(Duration::ZERO),
            Some(first + 1_000_000),
            "saved at once"
        );
        t.cursor = Some(3_000_000);
        t.read(5_000_000);
        t.read(4_000_000);
        t.published("at://x");
        let t = Tracker::new(account, Store::new(Some(dir.path())));
        assert_eq!(t.resume_from(Duration::from_secs(1)), Some(4_000_000));
        assert!(t.seen("at://x") && !t.seen("at://y"));
    }
}
