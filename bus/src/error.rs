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
    /// The server refused our credentials.
    #[error("NATS at {urls} refused the credentials: {reason}")]
    Auth {
        /// The URLs tried.
        urls: String,
        /// What the server said.
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
            RequestError::Other { .. } => RequestErrorKind::Other,
        }
    }
}
