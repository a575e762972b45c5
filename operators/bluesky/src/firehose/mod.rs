//! The firehose strategy: `com.atproto.sync.subscribeRepos` on a relay or
//! the account's PDS (`firehose.relay_uri`), every repository's commits
//! as binary frames ([`frame`]), each carrying its blocks as a CAR file
//! ([`car`]). The operator picks out what concerns the account, the same
//! events notifications bring: posts that mention it, answer or quote its
//! posts; likes and reposts of its posts; follows of it. It checks that
//! each such commit was signed by its repository's key ([`verify`], keys
//! from DID documents: [`did`]) and publishes it as the other strategies
//! do (`via: "firehose"`).
//!
//! Only commits that would be published are verified: a relay sends the
//! whole network's commits, and fetching every author's DID document to
//! check commits that are dropped anyway would cost a lookup per account
//! on the network for nothing. A commit that fails (bad signature, a
//! record not in the signed tree, no key to be had) is dropped and
//! counted (`bluesky_firehose_unverified`); frames that do not decode (bad
//! CBOR, a cut CAR, a block not matching its CID) are dropped and counted
//! (`bluesky_firehose_malformed`). The account's own commits are skipped
//! (notifications do not show one's own actions either).
//!
//! Nothing lost, nothing twice: every frame carries `seq`, increasing per
//! server. The last `seq` handled is saved (`firehose.json`, with the
//! relay it belongs to) after each event published and every 5 s, and a
//! connection resumes with `cursor` = that `seq`: the server replays what
//! came after it. Frames at or below the cursor are dropped, should a
//! server replay the cursor's own. `OutdatedCursor` (the server no longer
//! has events that old) is logged, counted and published as a notice:
//! events in between are gone. `FutureCursor` (the server is behind the
//! cursor: it was reset, or it is another server) drops the cursor and
//! resumes live, with a notice.
//!
//! Crates, chosen for upkeep and for compile time on 2 cores:
//! `serde_ipld_dagcbor` (the IPLD project's DAG-CBOR codec for serde,
//! strict canonical encoding, which re-encoding the unsigned commit
//! needs) with `ipld-core` for its data model; `iroh-car` (n0's CAR v1
//! reader, a few hundred lines on that same codec and tokio); RustCrypto's
//! `p256` 0.13 (on the sha2 0.10 already built) and `secp256k1` (the
//! libsecp256k1 binding the Nostr operator already builds) for the two
//! key types. atrium's repo crate would do all of this but brings the
//! whole generated lexicon API (hundreds of thousands of lines) for a few
//! hundred of ours; the MST lookup is 40 lines over the decoded nodes.
//! The websocket is tokio-tungstenite, as for Jetstream.

pub mod car;
pub mod did;
pub mod frame;
pub mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ipld_core::cid::Cid;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use switchboard_bus::{Bus, Counter};

use crate::config::Firehose as Settings;
use crate::inbound::{from_firehose, post_reason, thread_root, Event};
use crate::lexicon::{collection, uri_did, StrongRef};
use crate::store::{self, Account, Store};
use car::Blocks;
use did::{Resolver, REFETCH_AFTER};
use frame::Commit;
use verify::{mst_get, SignedCommit, VerifyError};

/// Longest wait between saves of the cursor while nothing is published.
pub const SAVE_EVERY: Duration = Duration::from_secs(5);

/// The firehose counters (heartbeat names).
#[derive(Debug, Clone)]
pub struct Counters {
    /// Events published.
    pub published: Counter,
    /// Connections made.
    pub connects: Counter,
    /// Frames dropped because they do not decode.
    pub malformed: Counter,
    /// Commits concerning the account dropped because their signature or
    /// tree proof failed, or no key could be had.
    pub unverified: Counter,
    /// Commits whose signature was checked and held.
    pub verified: Counter,
    /// Error frames from the server (`FutureCursor`, `ConsumerTooSlow`, …).
    pub server_errors: Counter,
    /// `OutdatedCursor` notices: events lost on the server's side.
    pub outdated_cursor: Counter,
    /// DID documents fetched.
    pub did_fetches: Counter,
}

impl Counters {
    /// The counters of `bus`.
    pub fn new(bus: &Bus) -> Counters {
        let c = |name: &str| bus.stats().counter(name);
        Counters {
            published: c("bluesky_firehose_published"),
            connects: c("bluesky_firehose_connects"),
            malformed: c("bluesky_firehose_malformed"),
            unverified: c("bluesky_firehose_unverified"),
            verified: c("bluesky_firehose_verified"),
            server_errors: c("bluesky_firehose_server_errors"),
            outdated_cursor: c("bluesky_firehose_outdated_cursor"),
            did_fetches: c("bluesky_firehose_did_fetches"),
        }
    }
}

/// `firehose.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FirehoseMark {
    /// Whose.
    pub account: Option<Account>,
    /// The endpoint whose sequence `cursor` counts (another server's
    /// numbers mean nothing).
    pub relay: String,
    /// `seq` of the newest frame handled.
    pub cursor: Option<i64>,
}

/// The subscribe URL with its cursor.
pub fn subscribe_url(relay_uri: &str, cursor: Option<i64>) -> String {
    match cursor {
        Some(c) => format!("{relay_uri}?cursor={c}"),
        None => relay_uri.to_string(),
    }
}

/// A record of a commit that concerns the account, before checking.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// `mention`, `reply`, `quote`, `like`, `repost` or `follow`.
    pub reason: &'static str,
    /// `<collection>/<rkey>`.
    pub path: String,
    /// The record's CID, as the op names it.
    pub cid: Cid,
    /// The record (JSON form).
    pub record: Value,
    /// Likes and reposts: the post liked or reposted.
    pub subject: Option<String>,
}

/// Why a commit was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// Its blocks do not read.
    #[error(transparent)]
    Car {
        /// Why.
        #[from]
        source: car::CarError,
    },
    /// It does not verify.
    #[error(transparent)]
    Verify {
        /// Why.
        #[from]
        source: VerifyError,
    },
    /// No key for its repository.
    #[error(transparent)]
    Key {
        /// Why.
        #[from]
        source: did::DidError,
    },
}

switchboard_bus::proto::error_kinds! {
    /// Coarse classes of [`CommitError`]: `Car` counts as malformed, the
    /// others as unverified.
    CommitError => CommitErrorKind { Car, Verify, Key }
}

/// The collections whose creations can concern the account.
const WATCHED: [&str; 4] = [
    collection::POST,
    collection::LIKE,
    collection::REPOST,
    "app.bsky.graph.follow",
];

/// Whether any op of `commit` could concern `me` (read before the CAR:
/// most of the firehose is dropped here without decoding blocks).
pub fn may_concern(me: &str, commit: &Commit) -> bool {
    commit.repo != me
        && !commit.too_big
        && commit.ops.iter().any(|op| {
            op.action == "create"
                && op.cid.is_some()
                && op
                    .path
                    .split_once('/')
                    .is_some_and(|(c, _)| WATCHED.contains(&c))
        })
}

/// Why `record` (created in `collection`) concerns `me`, and the post it
/// is about for likes and reposts.
pub fn reason(
    me: &str,
    collection: &str,
    record: &Value,
) -> Option<(&'static str, Option<String>)> {
    let subject_uri = || {
        record
            .get("subject")
            .and_then(|s| s.get("uri"))
            .and_then(Value::as_str)
            .filter(|uri| uri_did(uri) == Some(me))
            .map(str::to_string)
    };
    match collection {
        c if c == collection::POST => post_reason(me, record).map(|r| (r, None)),
        c if c == collection::LIKE => subject_uri().map(|s| ("like", Some(s))),
        c if c == collection::REPOST => subject_uri().map(|s| ("repost", Some(s))),
        "app.bsky.graph.follow" => {
            (record.get("subject").and_then(Value::as_str) == Some(me)).then_some(("follow", None))
        }
        _ => None,
    }
}

/// The records of `commit` that concern `me`.
///
/// # Errors
///
/// [`car::CarError`] when a created record's block is missing or not
/// DAG-CBOR.
pub fn candidates(
    me: &str,
    commit: &Commit,
    blocks: &Blocks,
) -> Result<Vec<Candidate>, car::CarError> {
    let mut out = Vec::new();
    for op in &commit.ops {
        let (Some(cid), true) = (op.cid, op.action == "create") else {
            continue;
        };
        let Some((collection, _)) = op.path.split_once('/') else {
            continue;
        };
        if !WATCHED.contains(&collection) {
            continue;
        }
        let record = car::to_json(&blocks.ipld(&cid)?);
        if let Some((reason, subject)) = reason(me, collection, &record) {
            out.push(Candidate {
                reason,
                path: op.path.clone(),
                cid,
                record,
                subject,
            });
        }
    }
    Ok(out)
}

/// The firehose state of one account: cursor, keys, counters.
#[derive(Debug)]
pub struct Firehose {
    account: Account,
    settings: Settings,
    store: Store,
    cursor: Option<i64>,
    saved_at: Instant,
    dirty: bool,
    resolver: Resolver,
    /// The counters.
    pub counters: Counters,
}

impl Firehose {
    /// The saved state of `account` on `settings.relay_uri`, else a start
    /// at `settings.cursor` (or live).
    ///
    /// # Errors
    ///
    /// A message when the HTTP client for DID documents cannot be built.
    pub fn new(
        account: Account,
        settings: Settings,
        store: Store,
        tls: &Arc<rustls::ClientConfig>,
        timeout: Duration,
        counters: Counters,
    ) -> Result<Firehose, String> {
        let saved = store
            .load::<FirehoseMark>(store::FIREHOSE)
            .filter(|m| m.account.as_ref() == Some(&account) && m.relay == settings.relay_uri);
        let cursor = saved.and_then(|m| m.cursor).or(settings.cursor);
        Ok(Firehose {
            resolver: Resolver::new(&settings.plc_url, tls, timeout)?,
            account,
            settings,
            store,
            cursor,
            saved_at: Instant::now(),
            dirty: false,
            counters,
        })
    }

    /// The account it reads for.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The `seq` of the newest frame handled.
    pub fn cursor(&self) -> Option<i64> {
        self.cursor
    }

    /// Whether a frame with `seq` was handled already.
    pub fn seen(&self, seq: i64) -> bool {
        self.cursor.is_some_and(|c| seq <= c)
    }

    /// A frame was handled: move the cursor (saved at once the first time,
    /// so a live start resumes from its first frame; else now and then).
    pub fn read(&mut self, seq: i64) {
        if self.cursor.is_none_or(|c| seq > c) {
            let first = self.cursor.is_none();
            self.cursor = Some(seq);
            self.dirty = true;
            if first {
                self.save();
            }
        }
        if self.dirty && self.saved_at.elapsed() >= SAVE_EVERY {
            self.save();
        }
    }

    /// Forget the cursor (the server is behind it): the next connection
    /// is live.
    pub fn reset_cursor(&mut self) {
        self.cursor = None;
        self.save();
    }

    /// Write `firehose.json`.
    pub fn save(&mut self) {
        let mark = FirehoseMark {
            account: Some(self.account.clone()),
            relay: self.settings.relay_uri.clone(),
            cursor: self.cursor,
        };
        if let Err(e) = self.store.save(store::FIREHOSE, &mark) {
            tracing::warn!(error = %e, "cannot save the firehose cursor");
        }
        self.saved_at = Instant::now();
        self.dirty = false;
    }

    /// `did`'s identity changed: its key is fetched again when needed.
    pub fn identity_changed(&mut self, did: &str) {
        self.resolver.forget(did);
    }

    /// The records of `commit` concerning `me`, checked against the
    /// repository's signature and tree. Empty when none concerns `me`.
    ///
    /// # Errors
    ///
    /// [`CommitError`] when the blocks do not read or the commit does not
    /// verify (the caller counts and drops it).
    pub async fn check(
        &mut self,
        me: &str,
        commit: &Commit,
    ) -> Result<Vec<Candidate>, CommitError> {
        if !may_concern(me, commit) {
            return Ok(Vec::new());
        }
        let blocks = Blocks::read(&commit.blocks).await?;
        let found = candidates(me, commit, &blocks)?;
        if found.is_empty() {
            return Ok(found);
        }
        let signed = SignedCommit::read(&blocks, &commit.commit, &commit.repo)?;
        for c in &found {
            if mst_get(&blocks, &signed.data, &c.path)? != Some(c.cid) {
                return Err(VerifyError::NotInTree {
                    path: c.path.clone(),
                }
                .into());
            }
        }
        let checked = match self.resolver.cached(&commit.repo) {
            Some((key, age)) => match signed.check(&key) {
                Err(e) if age >= REFETCH_AFTER => {
                    tracing::debug!(did = %commit.repo, "signature failed with a cached key; fetching it again");
                    self.counters.did_fetches.inc();
                    let key = self.resolver.fetch(&commit.repo).await?;
                    signed.check(&key).map_err(|_| e)
                }
                other => other,
            },
            None => {
                self.counters.did_fetches.inc();
                let key = self.resolver.fetch(&commit.repo).await?;
                signed.check(&key)
            }
        };
        checked?;
        self.counters.verified.inc();
        Ok(found)
    }
}

/// The event of a checked record; `subject_root` is the thread root of
/// the post liked or reposted, when it was looked up.
pub fn event(commit: &Commit, c: &Candidate, subject_root: Option<&str>) -> Event {
    let uri = format!("at://{}/{}", commit.repo, c.path);
    let room = match (&c.subject, c.reason) {
        (Some(subject), _) => subject_root.unwrap_or(subject).to_string(),
        (None, "follow") => commit.repo.clone(),
        (None, _) => thread_root(&uri, &c.record),
    };
    let mut extra = Map::new();
    extra.insert("seq".into(), Value::from(commit.seq));
    extra.insert("time".into(), Value::String(commit.time.clone()));
    if let Some(s) = &c.subject {
        extra.insert("subject".into(), Value::String(s.clone()));
    }
    let post = StrongRef {
        uri,
        cid: c.cid.to_string(),
    };
    from_firehose(c.reason, &commit.repo, post, &c.record, room, extra)
}
