//! One error type per operation, each with a `kind()`, as async-nats does.

use std::time::Duration;

/// Why [`crate::Bus::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A URL in the list does not parse.
    #[error("bad NATS URL `{url}`: {reason} (expected e.g. nats://127.0.0.1:4222)")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What the parser said.
        reason: String,
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
        "cannot reach NATS at {urls} within {waited:?}: {reason}; \
         is nats-server running (or `switchboard run`)?"
    )]
    Unreachable {
        /// The URLs tried.
        urls: String,
        /// How long we kept trying.
        waited: Duration,
        /// The last error.
        reason: String,
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

/// Why a publish failed.
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
    /// Bigger than the server's max_payload.
    #[error("message to `{subject}` is {size} bytes, over the server's max_payload")]
    TooLarge {
        /// The subject.
        subject: String,
        /// Payload size.
        size: usize,
    },
    /// The client is closed (drained or dropped).
    #[error("the NATS client is closed: {0}")]
    Closed(String),
    /// The server refused a subscription this operation needs (its
    /// permissions do not allow the subject).
    #[error("the NATS server refused the subscription to `{subject}`: {reason}")]
    Denied {
        /// The subject that was refused.
        subject: String,
        /// What to check.
        reason: String,
    },
}

/// Why a subscribe failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The pattern's NATS subject was refused.
    #[error("cannot subscribe to `{subject}`: {reason}")]
    BadSubject {
        /// The subject.
        subject: String,
        /// Why.
        reason: String,
    },
    /// The client is closed.
    #[error("the NATS client is closed: {0}")]
    Closed(String),
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
    #[error("bad answer on `{subject}`: {reason}")]
    BadReply {
        /// The subject.
        subject: String,
        /// What was wrong.
        reason: String,
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
    /// Sending the request failed.
    #[error("request to `{subject}` failed: {reason}")]
    Other {
        /// The subject.
        subject: String,
        /// Why.
        reason: String,
    },
}

/// Coarse classes of [`RequestError`], for callers that branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestErrorKind {
    /// See [`RequestError::NoResponders`].
    NoResponders,
    /// See [`RequestError::TimedOut`].
    TimedOut,
    /// See [`RequestError::BadReply`].
    BadReply,
    /// See [`RequestError::ReplyDenied`].
    ReplyDenied,
    /// See [`RequestError::Other`].
    Other,
}

impl RequestError {
    /// Which class of failure this is.
    pub fn kind(&self) -> RequestErrorKind {
        match self {
            RequestError::NoResponders { .. } => RequestErrorKind::NoResponders,
            RequestError::TimedOut { .. } => RequestErrorKind::TimedOut,
            RequestError::BadReply { .. } => RequestErrorKind::BadReply,
            RequestError::ReplyDenied { .. } => RequestErrorKind::ReplyDenied,
            RequestError::Other { .. } => RequestErrorKind::Other,
        }
    }
}
