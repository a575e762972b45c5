//! What the operator is asked to do, on
//! `send.bluesky.<instance>.<room>.<kind>`:
//!
//! | kind | body | does |
//! | --- | --- | --- |
//! | `message` | `{"text", "parent"?, "split"?, "langs"?}` | a reply in the thread (`room` = its root URI) to `parent`, else to the post the request's `in-reply-to` envelope was about, else to the root |
//! | `post` | `{"text", "split"?, "langs"?}` | a new top-level post (any room, e.g. `=` the empty one) |
//! | `like`, `repost` | `{"uri"?}` | like or repost `uri`, else the `in-reply-to` post, else the room's root |
//!
//! The reply refs are read from the parent post itself (`getPosts`): its
//! own `reply.root`, or the parent when it starts the thread, so a reply
//! is always in the right thread whatever room it was sent to.

use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_bus::proto::headers;
use switchboard_bus::send::{self, SendRequestError};
use switchboard_bus::Delivery;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::inbound::PROTOCOL;
use crate::lexicon::StrongRef;

/// The kinds of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A reply in the room's thread.
    Message,
    /// A new top-level post.
    Post,
    /// A like.
    Like,
    /// A repost.
    Repost,
}

/// One request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// What to do.
    pub kind: Kind,
    /// The raw room (thread root URI, or anything for `post`).
    pub room: String,
    /// The text (message and post).
    pub text: String,
    /// The post to answer, like or repost, when the body names it.
    pub target: Option<String>,
    /// The `in-reply-to` envelope id, to find the post it was about.
    pub in_reply_to: Option<String>,
    /// Split long text into a thread instead of refusing it.
    pub split: bool,
    /// Langs for this post (else the config's).
    pub langs: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TextBody {
    text: String,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    split: bool,
    #[serde(default)]
    langs: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct TargetBody {
    #[serde(default)]
    uri: Option<String>,
}

/// Why a send request is refused. The message is the sentence the sender
/// gets back (`{"ok": false, "error": …}`).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Not a send request this operator can act on (subject, body,
    /// kind, or what the body asks).
    #[error(transparent)]
    Request(#[from] SendRequestError),
    /// Not logged in: why (a refused login says what to fix).
    #[error("{reason}")]
    NotRunning {
        /// Why the operator cannot send now.
        reason: String,
    },
    /// The session task has ended.
    #[error("the Bluesky session task has ended")]
    Ended,
}

/// A command the session task refused (it has ended) fails the handler.
impl From<Refusal> for switchboard_bus::HandlerError {
    fn from(e: Refusal) -> switchboard_bus::HandlerError {
        switchboard_bus::HandlerError::other(e)
    }
}

switchboard_bus::proto::error_kinds! {
    /// Coarse classes of [`Refusal`].
    Refusal => RefusalKind { Request, NotRunning, Ended }
}

/// A request that decoded but cannot be posted: empty text, a `parent`
/// on a `post`, a target that is not a post URI, too many langs.
fn invalid(reason: impl Into<String>) -> Refusal {
    SendRequestError::invalid(reason).into()
}

/// The request in `delivery`, or why it is refused.
///
/// # Errors
///
/// A [`Refusal`] saying what is wrong with the subject or body.
pub fn request_for(delivery: &Delivery, instance: &str) -> Result<Request, Refusal> {
    let asked = send::Request::parse(delivery, PROTOCOL, instance)?;
    let kind = asked.kind.as_str();
    let env = delivery.envelope();
    let in_reply_to = env.header(headers::IN_REPLY_TO).map(str::to_string);
    let text_expected = r#"{"text": "...", "split": false}"#;
    let (kind_, text, target, split, langs) = match kind {
        "message" | "post" => {
            let b: TextBody = asked.body(text_expected)?;
            if b.text.trim().is_empty() {
                return Err(invalid(format!(
                    "`{kind}` with empty text: nothing to post"
                )));
            }
            if kind == "post" && b.parent.is_some() {
                return Err(invalid(
                    "a `post` starts a thread and has no `parent`; send a `message` to reply",
                ));
            }
            let k = if kind == "post" {
                Kind::Post
            } else {
                Kind::Message
            };
            (k, b.text, b.parent, b.split, b.langs)
        }
        "like" | "repost" => {
            let b: TargetBody = asked.body(r#"{} or {"uri": "at://..."}"#)?;
            let k = if kind == "like" {
                Kind::Like
            } else {
                Kind::Repost
            };
            (k, String::new(), b.uri, false, None)
        }
        _ => {
            return Err(asked
                .unknown_kind("the Bluesky operator sends message (a reply), post, like and repost")
                .into())
        }
    };
    if let Some(t) = &target {
        if !is_post_uri(t) {
            return Err(invalid(format!(
                "`{t}` is not a post URI (at://<did>/app.bsky.feed.post/<rkey>)"
            )));
        }
    }
    if let Some(langs) = &langs {
        if langs.len() > 3 {
            return Err(invalid("a post carries at most 3 `langs`"));
        }
    }
    Ok(Request {
        kind: kind_,
        room: asked.room,
        text,
        target,
        in_reply_to,
        split,
        langs,
    })
}

/// Whether `uri` names a post.
pub fn is_post_uri(uri: &str) -> bool {
    let Some(rest) = uri.strip_prefix("at://") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && parts[1] == crate::lexicon::collection::POST
        && !parts[2].is_empty()
}

/// A record key in the TID format (base32-sortable microseconds and a
/// random clock id), made by the operator so that a retried
/// `createRecord` names the same record and cannot create a second one.
pub fn tid() -> String {
    const ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";
    let micros =
        u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000).unwrap_or(0);
    let value = ((micros & 0x1F_FFFF_FFFF_FFFF) << 10) | u64::from(fastrand::u16(..1024));
    (0..13)
        .rev()
        .map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// Now, as the lexicons write datetimes.
pub fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// A post record.
pub fn post_record(
    text: &str,
    langs: &[String],
    reply: Option<(&StrongRef, &StrongRef)>,
    facets: Vec<Value>,
) -> Value {
    let mut record = json!({
        "$type": crate::lexicon::collection::POST,
        "text": text,
        "createdAt": now(),
    });
    if !langs.is_empty() {
        record["langs"] = json!(langs);
    }
    if let Some((root, parent)) = reply {
        record["reply"] = json!({"root": root, "parent": parent});
    }
    if !facets.is_empty() {
        record["facets"] = Value::Array(facets);
    }
    record
}

/// A like or repost record of `subject`.
pub fn subject_record(collection: &str, subject: &StrongRef) -> Value {
    json!({"$type": collection, "subject": subject, "createdAt": now()})
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_bus::proto::{ChatAddress, Envelope};

    const ROOT: &str = "at://did:plc:alice/app.bsky.feed.post/3k";

    fn delivery(room: &str, kind: &str, body: Value) -> Delivery {
        Delivery::new(
            ChatAddress::new("bluesky", "bot", room).send_subject(kind),
            Envelope::new("test", body).with_header(headers::IN_REPLY_TO, "env1"),
        )
        .with_reply("_INBOX.x")
    }

    #[test]
    fn maps_each_kind() {
        let r = request_for(&delivery(ROOT, "message", json!({"text": "hi"})), "bot").unwrap();
        assert_eq!(
            (r.kind, r.room.as_str(), r.text.as_str()),
            (Kind::Message, ROOT, "hi")
        );
        assert_eq!(r.in_reply_to.as_deref(), Some("env1"));
        let r = request_for(
            &delivery("", "post", json!({"text": "x", "split": true})),
            "bot",
        )
        .unwrap();
        assert!(r.kind == Kind::Post && r.split);
        let r = request_for(&delivery(ROOT, "like", Value::Null), "bot").unwrap();
        assert_eq!((r.kind, r.target), (Kind::Like, None));
        let r = request_for(&delivery(ROOT, "repost", json!({"uri": ROOT})), "bot").unwrap();
        assert_eq!(r.target.as_deref(), Some(ROOT));
    }

    #[test]
    fn refuses_with_reasons() {
        let e = |room, kind, body| {
            request_for(&delivery(room, kind, body), "bot")
                .unwrap_err()
                .to_string()
        };
        assert!(e(ROOT, "message", json!({"txt": "x"})).contains("bad body"));
        assert!(e(ROOT, "message", json!({"text": "  "})).contains("empty text"));
        assert!(e(ROOT, "wave", json!({})).contains("unknown kind"));
        assert!(e(ROOT, "like", json!({"uri": "https://bsky.app/x"})).contains("not a post URI"));
        assert!(e("", "post", json!({"text": "x", "parent": ROOT})).contains("no `parent`"));
        let other = request_for(&delivery(ROOT, "message", json!({"text": "x"})), "other");
        assert!(other
            .unwrap_err()
            .to_string()
            .contains("not a send request"));
    }

    #[test]
    fn tids_are_13_sortable_chars() {
        let a = tid();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = tid();
        assert_eq!(a.len(), 13);
        assert!(a < b, "{a} {b}");
        assert!(a
            .bytes()
            .all(|c| b"234567abcdefghijklmnopqrstuvwxyz".contains(&c)));
    }

    #[test]
    fn post_records_have_the_lexicon_shape() {
        let root = StrongRef {
            uri: ROOT.into(),
            cid: "c1".into(),
        };
        let r = post_record("hi", &["en".into()], Some((&root, &root)), vec![]);
        assert_eq!(r["$type"], "app.bsky.feed.post");
        assert_eq!(r["reply"]["parent"]["cid"], "c1");
        assert!(r.get("facets").is_none());
        assert!(OffsetDateTime::parse(r["createdAt"].as_str().unwrap(), &Rfc3339).is_ok());
    }
}
