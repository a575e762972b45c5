//! One `com.atproto.sync.subscribeRepos` frame: a binary websocket
//! message holding two DAG-CBOR objects back to back, a header
//! `{"op": 1, "t": "#commit"}` (or `{"op": -1}` for an error) and the body
//! the header names. Bodies are decoded into the fields the operator reads;
//! fields it does not know are ignored (the lexicon grows), message types
//! it does not know keep their `seq` so the cursor still moves past them.

use std::io::Cursor;

use ipld_core::cid::Cid;
use serde::Deserialize;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `#commit`: records created, updated or deleted in one repository.
    Commit(Commit),
    /// `#identity`: the DID document or handle of `did` may have changed
    /// (its signing key among them).
    Identity {
        /// Sequence number.
        seq: i64,
        /// The account.
        did: String,
    },
    /// `#account`: the hosting status of `did` changed.
    Account {
        /// Sequence number.
        seq: i64,
        /// The account.
        did: String,
        /// Whether the account is active.
        active: bool,
    },
    /// `#info`: a notice from the server, e.g. `OutdatedCursor` (the
    /// cursor asked for is older than what the server keeps: events in
    /// between are lost).
    Info {
        /// `OutdatedCursor` or another name.
        name: String,
        /// Human text.
        message: Option<String>,
    },
    /// An error frame (`op: -1`), after which the server closes the
    /// connection: `FutureCursor` (the cursor is ahead of the server's
    /// sequence), `ConsumerTooSlow`, ….
    Error {
        /// The error name.
        error: String,
        /// Human text.
        message: Option<String>,
    },
    /// Any other message type (`#sync`, the retired `#handle`, …): only
    /// its sequence number is used.
    Other {
        /// The `t` of the header.
        kind: String,
        /// Its `seq`, when it has one.
        seq: Option<i64>,
    },
}

impl Frame {
    /// The frame's sequence number, when it has one (info and error
    /// frames have none).
    pub fn seq(&self) -> Option<i64> {
        match self {
            Frame::Commit(c) => Some(c.seq),
            Frame::Identity { seq, .. } | Frame::Account { seq, .. } => Some(*seq),
            Frame::Other { seq, .. } => *seq,
            Frame::Info { .. } | Frame::Error { .. } => None,
        }
    }
}

/// A `#commit` body (the fields read).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Commit {
    /// Sequence number: the cursor.
    pub seq: i64,
    /// The repository's DID.
    pub repo: String,
    /// CID of the signed commit object, one of `blocks`.
    pub commit: Cid,
    /// The repository revision (TID).
    pub rev: String,
    /// Old servers set this instead of sending the blocks.
    #[serde(default, rename = "tooBig")]
    pub too_big: bool,
    /// A CAR file with the commit, the changed records and the MST nodes
    /// leading to them.
    pub blocks: serde_bytes::ByteBuf,
    /// What changed.
    pub ops: Vec<Op>,
    /// When the server saw it (RFC 3339).
    pub time: String,
}

/// One change in a commit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Op {
    /// `create`, `update` or `delete`.
    pub action: String,
    /// `<collection>/<rkey>`.
    pub path: String,
    /// The new record's CID (`null` for a delete).
    #[serde(default)]
    pub cid: Option<Cid>,
}

#[derive(Deserialize)]
struct Header {
    op: i64,
    #[serde(default)]
    t: Option<String>,
}

#[derive(Deserialize)]
struct SeqDid {
    seq: i64,
    did: String,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct InfoBody {
    name: String,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct SeqOnly {
    #[serde(default)]
    seq: Option<i64>,
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header is not DAG-CBOR `{op, t}`.
    #[error("the frame header is not DAG-CBOR {{op, t}}: {reason}")]
    Header {
        /// The decoder's words.
        reason: String,
    },
    /// The body does not fit the type the header names.
    #[error("the {kind} body does not decode: {reason}")]
    Body {
        /// `#commit`, `error`, ….
        kind: String,
        /// The decoder's words.
        reason: String,
    },
    /// An `op` other than 1 (message) or -1 (error).
    #[error("unknown frame op {op}")]
    Op {
        /// The op.
        op: i64,
    },
}

switchboard_bus::proto::error_kinds! {
    /// Coarse classes of [`FrameError`].
    FrameError => FrameErrorKind { Header, Body, Op }
}

fn body<T: for<'de> Deserialize<'de>>(kind: &str, bytes: &[u8]) -> Result<T, FrameError> {
    serde_ipld_dagcbor::from_slice(bytes).map_err(|e| FrameError::Body {
        kind: kind.to_string(),
        reason: e.to_string(),
    })
}

/// Decodes one binary websocket message.
///
/// # Errors
///
/// [`FrameError`] when it is not a subscribeRepos frame (bad CBOR, a body
/// of the wrong shape, an unknown op).
pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
    let mut cursor = Cursor::new(bytes);
    let header: Header =
        serde_ipld_dagcbor::de::from_reader_once(&mut cursor).map_err(|e| FrameError::Header {
            reason: e.to_string(),
        })?;
    let rest = usize::try_from(cursor.position())
        .ok()
        .and_then(|at| bytes.get(at..))
        .unwrap_or_default();
    match (header.op, header.t.as_deref()) {
        (-1, _) => {
            let e: ErrorBody = body("error", rest)?;
            Ok(Frame::Error {
                error: e.error,
                message: e.message,
            })
        }
        (1, Some("#commit")) => Ok(Frame::Commit(body("#commit", rest)?)),
        (1, Some("#identity")) => {
            let b: SeqDid = body("#identity", rest)?;
            Ok(Frame::Identity {
                seq: b.seq,
                did: b.did,
            })
        }
        (1, Some("#account")) => {
            let b: SeqDid = body("#account", rest)?;
            Ok(Frame::Account {
                seq: b.seq,
                did: b.did,
                active: b.active,
            })
        }
        (1, Some("#info")) => {
            let b: InfoBody = body("#info", rest)?;
            Ok(Frame::Info {
                name: b.name,
                message: b.message,
            })
        }
        (1, Some(kind)) => {
            let b: SeqOnly = body(kind, rest)?;
            Ok(Frame::Other {
                kind: kind.to_string(),
                seq: b.seq,
            })
        }
        (1, None) => Err(FrameError::Header {
            reason: "a message frame without `t`".into(),
        }),
        (op, _) => Err(FrameError::Op { op }),
    }
}
