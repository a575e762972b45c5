//! One error type per operation, each with a `kind()`, as async-nats does.
//!
//! Every error here:
//!
//! - says the whole story on one line in its `Display` (operators log
//!   errors with `%e`; the line names what failed and why), and
//! - keeps the error that caused it as its [`source()`](std::error::Error::source)
//!   (an `io::Error`, a `serde_json::Error`, the NATS client's error, …),
//!   so code can walk the chain or downcast it, and
//! - has a `kind()`: a small `Copy` enum to branch on without matching
//!   fields.
//!
//! NATS client errors are kept behind `dyn Error` ([`BoxError`]): no
//! async-nats type is part of this crate's API.

use std::time::Duration;

use switchboard_proto::{ChatEventError, PatternError};

/// A cause kept as a [`source()`](std::error::Error::source) without
/// naming its type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `kind()` for each error: the same macro as proto's errors.
pub(crate) use switchboard_proto::error_kinds as kinds;

/// Why [`crate::Bus::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A URL in the list does not parse.
    #[error("bad NATS URL `{url}`: {source} (expected e.g. nats://127.0.0.1:4222)")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What the parser said.
        source: std::io::Error,
    },
    /// No URL given at all.
    #[error("no NATS URL given: set SWITCHBOARD_NATS_URL or pass BusOptions::new(url)")]
    NoUrl,
    /// A credentials, nkey or TLS file could not be read.
    #[error("cannot read {what} file {path}: {source}")]
    File {
        /// Which kind of file.
        what: &'static str,
        /// Its path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server could not be reached within the connect timeout.
    #[error(
        "cannot reach NATS at {urls} within {waited:?}: {source}; \
         is nats-server running (or `switchboard run`)?"
    )]
    Unreachable {
        /// The URLs tried.
        urls: String,
        /// How long we kept trying.
        waited: Duration,
        /// The last attempt's error.
        source: BoxError,
    },
    /// The server refused our credentials (or an nkey seed could not
    /// sign its challenge). Not retried: credentials do not get better by
    /// waiting, and the caller should hear it at once.
    #[error("NATS at {urls} refused the credentials ({method}): {reason}")]
    Auth {
        /// Which credentials were offered, never their value: e.g.
        /// `a token`, `nkey seed from /run/sb/nkey`, `no credentials given`.
        method: String,
        /// The URLs tried.
        urls: String,
        /// What went wrong (`authorization violation` when the server
        /// said no).
        reason: String,
        /// The NATS client's error.
        source: BoxError,
    },
    /// TLS could not be set up, or the handshake failed (most often: the
    /// server's certificate is not signed by a CA we trust). Not retried,
    /// for the same reason as [`ConnectError::Auth`].
    #[error("NATS at {urls}: {problem}")]
    Tls {
        /// The URLs tried.
        urls: String,
        /// What went wrong, naming the CA file when one was given.
        problem: String,
        /// The NATS client's error (the TLS library's is further down).
        source: BoxError,
    },
    /// The inbox prefix is not a literal subject prefix.
    #[error("bad NATS inbox prefix `{prefix}`: {reason} (expected literal tokens such as _INBOX_my-operator)")]
    BadInboxPrefix {
        /// The prefix as given.
        prefix: String,
        /// What is wrong with it.
        reason: String,
    },
}

kinds! {
    /// Coarse classes of [`ConnectError`].
    ConnectError => ConnectErrorKind { BadUrl, NoUrl, File, Unreachable, Auth, Tls, BadInboxPrefix }
}

/// Why a publish (or a flush) failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The subject is empty, has an empty token, whitespace or a wildcard.
    #[error("cannot publish to `{subject}`: {reason}")]
    BadSubject {
        /// The subject.
        subject: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The value to publish does not serialise to JSON (a map with
    /// non-string keys, a failing `Serialize` impl).
    #[error("cannot publish to `{subject}`: the payload does not serialise to JSON: {source}")]
    Serialize {
        /// The subject.
        subject: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// Bigger than the server's max_payload.
    #[error("message to `{subject}` is {size} bytes, over the server's max_payload")]
    TooLarge {
        /// The subject.
        subject: String,
        /// Payload size.
        size: usize,
    },
    /// The client is closed (drained or dropped), or lost the connection
    /// for good.
    #[error("the NATS client is closed: {source}")]
    Closed {
        /// The NATS client's error.
        source: BoxError,
    },
    /// The server refused a subscription this operation needs (its
    /// permissions do not allow the subject).
    #[error("the NATS server refused the subscription to `{subject}`: {reason}")]
    Denied {
        /// The subject that was refused.
        subject: String,
        /// What to check.
        reason: String,
    },
    /// A round trip through the server ([`crate::Bus::sync`]) did not come
    /// back in time.
    #[error("no round trip through the NATS server within {waited:?}")]
    TimedOut {
        /// How long we waited.
        waited: Duration,
    },
    /// [`crate::Bus::publish_stored`] got no confirmation that the stream
    /// stored the message (no stream captures the subject, JetStream is
    /// down or full): it may or may not be stored; publishing it again is
    /// safe, the stream dedupes on the envelope id.
    #[error("the stream did not confirm the message to `{subject}`: {source}")]
    NotStored {
        /// The subject.
        subject: String,
        /// The client's error.
        source: BoxError,
    },
}

kinds! {
    /// Coarse classes of [`PublishError`].
    PublishError => PublishErrorKind { BadSubject, Serialize, TooLarge, Closed, Denied, TimedOut, NotStored }
}

/// Why a subscribe failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// A text pattern does not parse.
    #[error("cannot subscribe: {source}")]
    BadPattern {
        /// Why.
        source: PatternError,
    },
    /// The pattern's NATS subject was refused by the client.
    #[error("cannot subscribe to `{subject}`: {source}")]
    BadSubject {
        /// The subject.
        subject: String,
        /// The NATS client's error.
        source: BoxError,
    },
    /// The client is closed.
    #[error("the NATS client is closed: {source}")]
    Closed {
        /// The NATS client's error.
        source: BoxError,
    },
}

kinds! {
    /// Coarse classes of [`SubscribeError`].
    SubscribeError => SubscribeErrorKind { BadPattern, BadSubject, Closed }
}

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Nobody subscribes to the subject.
    #[error("no one answers on `{subject}`: is the operator or orchestrator running?")]
    NoResponders {
        /// The subject.
        subject: String,
    },
    /// Somebody listens but did not answer in time.
    #[error("no answer on `{subject}` within {timeout:?}")]
    TimedOut {
        /// The subject.
        subject: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The answer was not what the protocol says.
    #[error("bad answer on `{subject}`: {source}")]
    BadReply {
        /// The subject.
        subject: String,
        /// Why it does not decode (a `serde_json::Error` or an
        /// [`EnvelopeError`](switchboard_proto::EnvelopeError)).
        source: BoxError,
    },
    /// The server refused the subscription to our reply inbox, so no
    /// answer could ever arrive. Reported as soon as the server says so,
    /// instead of after the timeout.
    #[error(
        "request to `{subject}` cannot get an answer: the NATS server refused the \
         subscription to the reply inbox `{inbox}` (permissions violation); \
         if this user may only subscribe to its own inbox prefix, set \
         SWITCHBOARD_NATS_INBOX_PREFIX (BusOptions::inbox_prefix) to it"
    )]
    ReplyDenied {
        /// The request subject.
        subject: String,
        /// The reply subscription the server refused.
        inbox: String,
    },
    /// The request does not serialise to JSON.
    #[error("request to `{subject}` does not serialise to JSON: {source}")]
    Serialize {
        /// The subject.
        subject: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// Sending the request failed.
    #[error("request to `{subject}` failed: {source}")]
    Other {
        /// The subject.
        subject: String,
        /// The NATS client's error.
        source: BoxError,
    },
}

kinds! {
    /// Coarse classes of [`RequestError`], for callers that branch on them.
    RequestError => RequestErrorKind { NoResponders, TimedOut, BadReply, ReplyDenied, Serialize, Other }
}

/// Why [`Context::reply`](crate::Context::reply) (or
/// [`crate::Bus::reply`]) could not answer a delivery.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The delivery is not a chat event, so there is no room to answer in.
    #[error("cannot reply: {source}")]
    NotChat {
        /// Why it is not one.
        source: ChatEventError,
    },
    /// The answer could not be published.
    #[error("cannot reply: {source}")]
    Publish {
        /// Why.
        source: PublishError,
    },
}

kinds! {
    /// Coarse classes of [`ReplyError`].
    ReplyError => ReplyErrorKind { NotChat, Publish }
}

impl From<ChatEventError> for ReplyError {
    fn from(source: ChatEventError) -> Self {
        ReplyError::NotChat { source }
    }
}

impl From<PublishError> for ReplyError {
    fn from(source: PublishError) -> Self {
        ReplyError::Publish { source }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn kinds_match_variants() {
        let e = RequestError::TimedOut {
            subject: "x".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(e.kind(), RequestErrorKind::TimedOut);
        let e = PublishError::TimedOut {
            waited: Duration::from_secs(1),
        };
        assert_eq!(e.kind(), PublishErrorKind::TimedOut);
        assert_eq!(ConnectError::NoUrl.kind(), ConnectErrorKind::NoUrl);
    }

    #[test]
    fn serialisation_failures_are_not_bad_subjects() {
        // A map with non-string keys cannot be JSON.
        let value = std::collections::BTreeMap::from([((1, 2), 3)]);
        let source = serde_json::to_vec(&value).expect_err("not JSON");
        let e = PublishError::Serialize {
            subject: "sb.op.x.ready".into(),
            source,
        };
        assert_eq!(e.kind(), PublishErrorKind::Serialize);
        assert!(e.to_string().contains("does not serialise to JSON"), "{e}");
        let cause = e.source().expect("keeps the cause");
        assert!(cause.downcast_ref::<serde_json::Error>().is_some());
    }

    #[test]
    fn causes_are_kept() {
        let e = SubscribeError::BadPattern {
            source: switchboard_proto::Pattern::parse("a.>").expect_err("`>`"),
        };
        assert_eq!(e.kind(), SubscribeErrorKind::BadPattern);
        assert!(e
            .source()
            .and_then(|s| s.downcast_ref::<PatternError>())
            .is_some());
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = ConnectError::File {
            what: "nkey seed",
            path: "/x".into(),
            source: io,
        };
        assert_eq!(e.kind(), ConnectErrorKind::File);
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(std::io::Error::kind),
            Some(std::io::ErrorKind::NotFound)
        );
    }
}
