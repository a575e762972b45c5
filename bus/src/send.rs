//! Send requests as a protocol operator receives them:
//! `send.<protocol>.<instance>.<room>.<kind>` with a JSON body, checked
//! once here instead of in every operator.
//!
//! An operator subscribes to its own send subjects, reads each delivery
//! with [`Request::parse`] (is it a send request for this protocol and
//! instance?), decodes the body its `kind` wants with [`Request::body`],
//! and answers a refusal with [`Context::refuse`](crate::Context::refuse),
//! which says why to the sender (`{"ok": false, "error": …}`).
//!
//! ```
//! use switchboard_bus::proto::ChatAddress;
//! use switchboard_bus::send::{Request, SendRequestErrorKind};
//! use switchboard_bus::{Delivery, Envelope};
//!
//! #[derive(serde::Deserialize)]
//! struct Text {
//!     text: String,
//! }
//!
//! let d = Delivery::new(
//!     ChatAddress::new("irc", "libera", "#rust").send_subject("message"),
//!     Envelope::new("bot", serde_json::json!({"text": "hi"})),
//! );
//! let r = Request::parse(&d, "irc", "libera")?;
//! assert_eq!((r.room.as_str(), r.kind.as_str()), ("#rust", "message"));
//! let t: Text = r.body(r#"{"text": "..."}"#)?;
//! assert_eq!(t.text, "hi");
//!
//! let e = Request::parse(&d, "irc", "oftc").unwrap_err();
//! assert_eq!(e.kind(), SendRequestErrorKind::NotOurs);
//! # Ok::<(), switchboard_bus::send::SendRequestError>(())
//! ```

use serde::de::DeserializeOwned;
use serde_json::Value;
use switchboard_proto::{Branch, ChatSubject, SubjectError};

use crate::subscription::Delivery;

/// A send request addressed to one operator: the room and kind from its
/// subject, the body to decode.
#[derive(Debug, Clone)]
pub struct Request<'d> {
    /// The raw room token's value (as the protocol names it: `#rust`, a
    /// thread URI, `@npub…`).
    pub room: String,
    /// The `<kind>` token: what to do (`message`, `join`, …).
    pub kind: String,
    /// The request's JSON body.
    pub body: &'d Value,
}

impl<'d> Request<'d> {
    /// The send request in `delivery`, if it is one for `protocol` and
    /// `instance`.
    ///
    /// # Errors
    ///
    /// [`SendRequestError::BadSubject`] when the subject is not a chat
    /// subject at all, [`SendRequestError::NotOurs`] when it is not a
    /// send request for this protocol and instance.
    pub fn parse(
        delivery: &'d Delivery,
        protocol: &str,
        instance: &str,
    ) -> Result<Request<'d>, SendRequestError> {
        let ChatSubject {
            branch,
            address,
            kind,
        } = ChatSubject::parse(&delivery.subject).map_err(|source| {
            SendRequestError::BadSubject {
                subject: delivery.subject.clone(),
                source,
            }
        })?;
        if branch != Branch::Send || address.protocol != protocol || address.instance != instance {
            return Err(SendRequestError::NotOurs {
                subject: delivery.subject.clone(),
                protocol: protocol.to_string(),
                instance: instance.to_string(),
            });
        }
        Ok(Request {
            room: address.room,
            kind,
            body: &delivery.envelope().body,
        })
    }

    /// The body as the `T` this request's kind wants; `null` (no body)
    /// counts as `{}`, for kinds whose fields are all optional.
    /// `expected` shows the sender what to write, e.g.
    /// `{"text": "..."}`.
    ///
    /// # Errors
    ///
    /// [`SendRequestError::BadBody`] saying what serde found wrong and
    /// what was expected.
    pub fn body<T: DeserializeOwned>(&self, expected: &'static str) -> Result<T, SendRequestError> {
        let empty = Value::Object(Default::default());
        let value = if self.body.is_null() {
            &empty
        } else {
            self.body
        };
        T::deserialize(value).map_err(|source| SendRequestError::BadBody {
            kind: self.kind.clone(),
            expected,
            source,
        })
    }

    /// The refusal for a kind this operator does not send; `sends` names
    /// the ones it does, e.g. `the IRC operator sends message, action
    /// and notice`.
    pub fn unknown_kind(&self, sends: &'static str) -> SendRequestError {
        SendRequestError::UnknownKind {
            kind: self.kind.clone(),
            sends,
        }
    }
}

/// Why a delivery is not a send request this operator can read. Each
/// message is a sentence for the sender, who gets it in the refusal.
#[derive(Debug, thiserror::Error)]
pub enum SendRequestError {
    /// The subject is not a chat subject.
    #[error("{source}")]
    BadSubject {
        /// The subject.
        subject: String,
        /// What is wrong with it.
        source: SubjectError,
    },
    /// A chat subject, but not a send request for this operator (another
    /// protocol or instance, or an event).
    #[error("subject {subject} is not a send request for {protocol} instance {instance}")]
    NotOurs {
        /// The subject.
        subject: String,
        /// This operator's protocol.
        protocol: String,
        /// This operator's instance.
        instance: String,
    },
    /// The body does not fit the kind.
    #[error("bad body for a `{kind}` request ({source}); expected {expected}")]
    BadBody {
        /// The request's kind.
        kind: String,
        /// What a body of this kind looks like.
        expected: &'static str,
        /// serde's error.
        source: serde_json::Error,
    },
    /// A kind this operator does not send.
    #[error("unknown kind `{kind}`: {sends}")]
    UnknownKind {
        /// The kind asked for.
        kind: String,
        /// The kinds it does send, as a sentence.
        sends: &'static str,
    },
    /// Well formed, but asking for what cannot be: an id that is not
    /// one, empty text, a room of the wrong shape. The operator's own
    /// check, after the body decoded.
    #[error("{reason}")]
    Invalid {
        /// What is wrong and what to send instead.
        reason: String,
    },
}

crate::error::kinds! {
    /// Coarse classes of [`SendRequestError`].
    SendRequestError => SendRequestErrorKind { BadSubject, NotOurs, BadBody, UnknownKind, Invalid }
}

impl SendRequestError {
    /// The operator's own check refused the request: `reason` says what
    /// is wrong and what to send instead (never a secret).
    pub fn invalid(reason: impl Into<String>) -> SendRequestError {
        SendRequestError::Invalid {
            reason: reason.into(),
        }
    }

    /// The same refusal with what to do next appended, e.g. `"give
    /// `event_id` in the body"`.
    #[must_use]
    pub fn hint(self, next: &str) -> SendRequestError {
        SendRequestError::invalid(format!("{self}; {next}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchboard_proto::{ChatAddress, Envelope};

    fn delivery(subject: impl Into<String>, body: Value) -> Delivery {
        Delivery::new(subject, Envelope::new("test", body))
    }

    #[derive(serde::Deserialize, Debug, Default)]
    struct Optional {
        #[serde(default)]
        key: Option<String>,
    }

    #[test]
    fn reads_room_kind_and_body() {
        let d = delivery(
            ChatAddress::new("irc", "net", "#a").send_subject("join"),
            Value::Null,
        );
        let r = Request::parse(&d, "irc", "net").expect("ours");
        assert_eq!((r.room.as_str(), r.kind.as_str()), ("#a", "join"));
        let b: Optional = r.body("{}").expect("null is {}");
        assert_eq!(b.key, None);
    }

    #[test]
    fn refuses_what_is_not_ours() {
        let send = ChatAddress::new("irc", "net", "#a").send_subject("message");
        let d = delivery(send.clone(), json!({}));
        for (protocol, instance) in [("irc", "other"), ("nostr", "net")] {
            let e = Request::parse(&d, protocol, instance).unwrap_err();
            assert_eq!(e.kind(), SendRequestErrorKind::NotOurs);
            assert_eq!(
                e.to_string(),
                format!("subject {send} is not a send request for {protocol} instance {instance}")
            );
        }
        let event = ChatAddress::new("irc", "net", "#a").event_subject("message");
        let d = delivery(event, json!({}));
        let e = Request::parse(&d, "irc", "net").unwrap_err();
        assert_eq!(e.kind(), SendRequestErrorKind::NotOurs);
        let d = delivery("sb.op.x.ready", json!({}));
        let e = Request::parse(&d, "irc", "net").unwrap_err();
        assert_eq!(e.kind(), SendRequestErrorKind::BadSubject);
    }

    #[test]
    fn bad_bodies_and_kinds_say_what_was_expected() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Text {
            text: String,
        }
        let d = delivery(
            ChatAddress::new("irc", "net", "#a").send_subject("message"),
            json!({"txt": "x"}),
        );
        let r = Request::parse(&d, "irc", "net").expect("ours");
        let e = r.body::<Text>(r#"{"text": "..."}"#).unwrap_err();
        assert_eq!(e.kind(), SendRequestErrorKind::BadBody);
        let text = e.to_string();
        assert!(
            text.starts_with("bad body for a `message` request (")
                && text.ends_with(r#"; expected {"text": "..."}"#),
            "{text}"
        );
        assert!(std::error::Error::source(&e).is_some());
        let e = r.unknown_kind("it sends message only");
        assert_eq!(
            e.to_string(),
            "unknown kind `message`: it sends message only"
        );
    }
}
