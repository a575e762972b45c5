//! The request and response bodies of exactly the XRPC endpoints the
//! operator calls, named after their lexicons (`com.atproto.*`,
//! `app.bsky.*`). Fields the operator does not read are left out of
//! responses (serde ignores them); records are kept as raw JSON where the
//! operator passes them through.
//!
//! Why not the `atrium-api` crate: it generates every lexicon (hundreds of
//! types, a long compile on two cores) for the eight calls used here.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Secret;

/// NSIDs of the calls.
pub mod nsid {
    /// `com.atproto.server.createSession`
    pub const CREATE_SESSION: &str = "com.atproto.server.createSession";
    /// `com.atproto.server.refreshSession`
    pub const REFRESH_SESSION: &str = "com.atproto.server.refreshSession";
    /// `com.atproto.server.getSession`
    pub const GET_SESSION: &str = "com.atproto.server.getSession";
    /// `com.atproto.repo.createRecord`
    pub const CREATE_RECORD: &str = "com.atproto.repo.createRecord";
    /// `com.atproto.identity.resolveHandle`
    pub const RESOLVE_HANDLE: &str = "com.atproto.identity.resolveHandle";
    /// `app.bsky.notification.listNotifications`
    pub const LIST_NOTIFICATIONS: &str = "app.bsky.notification.listNotifications";
    /// `app.bsky.notification.updateSeen`
    pub const UPDATE_SEEN: &str = "app.bsky.notification.updateSeen";
    /// `app.bsky.feed.getPosts`
    pub const GET_POSTS: &str = "app.bsky.feed.getPosts";
}

/// Record collections the operator writes.
pub mod collection {
    /// A post.
    pub const POST: &str = "app.bsky.feed.post";
    /// A like.
    pub const LIKE: &str = "app.bsky.feed.like";
    /// A repost.
    pub const REPOST: &str = "app.bsky.feed.repost";
}

/// `com.atproto.server.createSession` input.
#[derive(Serialize)]
pub struct CreateSessionInput<'a> {
    /// Handle, DID or e-mail.
    pub identifier: &'a str,
    /// The (app) password.
    pub password: &'a str,
}

/// The output of `createSession` and `refreshSession`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionOutput {
    /// Access token (short-lived).
    pub access_jwt: Secret,
    /// Refresh token (long-lived).
    pub refresh_jwt: Secret,
    /// The account's handle.
    pub handle: String,
    /// The account's DID.
    pub did: String,
}

/// `com.atproto.server.getSession` output (the part read).
#[derive(Debug, Clone, Deserialize)]
pub struct GetSessionOutput {
    /// The account's handle.
    pub handle: String,
    /// The account's DID.
    pub did: String,
}

/// A strong reference to a record (`com.atproto.repo.strongRef`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrongRef {
    /// `at://` URI.
    pub uri: String,
    /// Content id of the version referred to.
    pub cid: String,
}

/// `app.bsky.feed.post#replyRef`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyRef {
    /// The thread's first post.
    pub root: StrongRef,
    /// The post answered.
    pub parent: StrongRef,
}

/// `app.bsky.actor.defs#profileViewBasic` (the part read).
#[derive(Debug, Clone, Deserialize)]
pub struct Author {
    /// DID.
    pub did: String,
    /// Handle.
    pub handle: String,
}

/// `app.bsky.notification.listNotifications#notification`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// The record that caused it (the post, like, follow…).
    pub uri: String,
    /// Its CID.
    pub cid: String,
    /// Who.
    pub author: Author,
    /// `mention`, `reply`, `quote`, `like`, `repost`, `follow`, or newer
    /// ones the lexicon's open enum allows.
    pub reason: String,
    /// For likes and reposts: the post liked or reposted.
    #[serde(default)]
    pub reason_subject: Option<String>,
    /// The record itself.
    pub record: Value,
    /// When the AppView indexed it (RFC 3339).
    pub indexed_at: String,
}

/// `app.bsky.notification.listNotifications` output.
#[derive(Debug, Clone, Deserialize)]
pub struct ListNotificationsOutput {
    /// Newest first.
    pub notifications: Vec<Notification>,
    /// The next (older) page, if any.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `app.bsky.notification.updateSeen` input.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateSeenInput<'a> {
    /// RFC 3339 time.
    pub seen_at: &'a str,
}

/// `com.atproto.repo.createRecord` input.
#[derive(Serialize)]
pub struct CreateRecordInput<'a> {
    /// The account's DID.
    pub repo: &'a str,
    /// NSID of the record type.
    pub collection: &'a str,
    /// The record key (a TID made by the operator, see
    /// [`crate::outbound::tid`]).
    pub rkey: &'a str,
    /// The record.
    pub record: &'a Value,
}

/// `com.atproto.repo.createRecord` output.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateRecordOutput {
    /// The new record's URI.
    pub uri: String,
    /// Its CID.
    pub cid: String,
}

/// `com.atproto.identity.resolveHandle` output.
#[derive(Debug, Clone, Deserialize)]
pub struct ResolveHandleOutput {
    /// The handle's DID.
    pub did: String,
}

/// `app.bsky.feed.defs#postView` (the part read).
#[derive(Debug, Clone, Deserialize)]
pub struct PostView {
    /// URI.
    pub uri: String,
    /// CID.
    pub cid: String,
    /// Author.
    pub author: Author,
    /// The post record.
    pub record: Value,
}

/// `app.bsky.feed.getPosts` output.
#[derive(Debug, Clone, Deserialize)]
pub struct GetPostsOutput {
    /// The posts found (missing ones are left out).
    pub posts: Vec<PostView>,
}

/// The XRPC error body every endpoint returns on failure.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    /// The error name (`ExpiredToken`, `InvalidRequest`…).
    #[serde(default)]
    pub error: Option<String>,
    /// Human-readable detail.
    #[serde(default)]
    pub message: Option<String>,
}

/// The `reply` of a post record, if it is a reply.
pub fn reply_of(record: &Value) -> Option<ReplyRef> {
    serde_json::from_value(record.get("reply")?.clone()).ok()
}

/// The DID part of an `at://did/collection/rkey` URI.
pub fn uri_did(uri: &str) -> Option<&str> {
    uri.strip_prefix("at://")?.split('/').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notification_keeps_unknown_reasons_and_records() {
        let n: Notification = serde_json::from_value(json!({
            "uri": "at://did:plc:a/app.bsky.graph.starterpack/1", "cid": "bafy",
            "author": {"did": "did:plc:a", "handle": "a.test", "displayName": "A"},
            "reason": "starterpack-joined", "record": {"x": 1}, "isRead": false,
            "indexedAt": "2026-01-01T00:00:00.000Z", "labels": []
        }))
        .unwrap();
        assert_eq!(n.reason, "starterpack-joined");
        assert_eq!(n.record["x"], 1);
    }

    #[test]
    fn reply_refs_and_uri_parts() {
        let r = json!({"text": "x", "reply": {
            "root": {"uri": "at://did:plc:r/app.bsky.feed.post/1", "cid": "c1"},
            "parent": {"uri": "at://did:plc:p/app.bsky.feed.post/2", "cid": "c2"}}});
        let reply = reply_of(&r).unwrap();
        assert_eq!(reply.root.cid, "c1");
        assert_eq!(uri_did(&reply.parent.uri), Some("did:plc:p"));
        assert!(reply_of(&json!({"text": "x"})).is_none());
        assert_eq!(uri_did("https://x"), None);
    }

    #[test]
    fn session_tokens_are_not_printed() {
        let s: SessionOutput = serde_json::from_value(json!({
            "accessJwt": "acc-secret", "refreshJwt": "ref-secret", "handle": "h", "did": "d"
        }))
        .unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
    }
}
