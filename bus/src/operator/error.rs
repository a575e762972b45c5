//! [`HandlerError`]: what an [`Operator`](super::Operator) handler returns
//! when it fails.
//!
//! A struct rather than `Box<dyn Error>` so that it has a `kind()` like
//! every other error of this crate, while the handler's own error stays
//! reachable as [`source()`](std::error::Error::source) (to log, walk or
//! downcast). `From` impls for the errors handlers meet most (this crate's,
//! proto's, I/O, JSON, a message as `String`/`&str`, a boxed error) keep `?`
//! working in handlers; an operator with its own error type adds a `From`
//! impl for it, or wraps it with [`HandlerError::new`].

use std::fmt;

use crate::authentic::ForeignInstance;
use crate::config::ConfigError;
use crate::error::{
    BoxError, ConnectError, PublishError, ReplyError, RequestError, SubscribeError,
};
use crate::launch::LaunchError;
use crate::send::SendRequestError;
use crate::stream::StreamError;
use crate::trigger::TriggerError;

/// Coarse classes of [`HandlerError`], to branch on without downcasting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandlerErrorKind {
    /// Talking to the bus failed: connect, publish, subscribe, request,
    /// reply, stream or trigger.
    Bus,
    /// The configuration (or the launch environment) is not usable.
    Config,
    /// A file, socket or other I/O failed.
    Io,
    /// Data did not decode or validate: JSON, an envelope, a subject, a
    /// send request.
    Data,
    /// Anything else: the operator's own errors and plain messages.
    Other,
}

/// What a handler returns when it fails: a [`kind()`](HandlerError::kind)
/// and the handler's own error as `source()`. Its `Display` is the
/// source's, so the control ack and the logs read as the handler's error
/// did.
#[derive(Debug)]
pub struct HandlerError {
    kind: HandlerErrorKind,
    source: BoxError,
}

/// The result of a handler.
pub type HandlerResult = Result<(), HandlerError>;

impl HandlerError {
    /// Wrap `source` as an error of class `kind`.
    pub fn new(kind: HandlerErrorKind, source: impl Into<BoxError>) -> HandlerError {
        HandlerError {
            kind,
            source: source.into(),
        }
    }

    /// An operator's own error (kind [`HandlerErrorKind::Other`]); for use
    /// with `map_err` when no `From` impl fits.
    pub fn other(source: impl Into<BoxError>) -> HandlerError {
        HandlerError::new(HandlerErrorKind::Other, source)
    }

    /// Which class of failure this is.
    pub fn kind(&self) -> HandlerErrorKind {
        self.kind
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// `From<$error> for HandlerError` with the given kind, for each error.
macro_rules! from_errors {
    ($kind:ident: $($error:ty),+ $(,)?) => {
        $(
            impl From<$error> for HandlerError {
                fn from(e: $error) -> HandlerError {
                    HandlerError::new(HandlerErrorKind::$kind, e)
                }
            }
        )+
    };
}

from_errors!(Bus: ConnectError, PublishError, SubscribeError, RequestError, ReplyError, StreamError, TriggerError);
from_errors!(Config: ConfigError, LaunchError, ForeignInstance);
from_errors!(Io: std::io::Error);
from_errors!(
    Data: serde_json::Error,
    SendRequestError,
    switchboard_proto::EnvelopeError,
    switchboard_proto::ChatEventError,
    switchboard_proto::PatternError,
    switchboard_proto::SubjectError,
);

impl From<String> for HandlerError {
    fn from(message: String) -> HandlerError {
        HandlerError::other(message)
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> HandlerError {
        HandlerError::other(message)
    }
}

impl From<BoxError> for HandlerError {
    fn from(e: BoxError) -> HandlerError {
        HandlerError::other(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn question_mark_keeps_the_error_as_source_with_its_kind() {
        fn read() -> Result<(), HandlerError> {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file",
            ))?;
            Ok(())
        }
        let e = read().unwrap_err();
        assert_eq!(e.kind(), HandlerErrorKind::Io);
        assert_eq!(e.to_string(), "no such file");
        let source = e.source().expect("a source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the io::Error itself");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn messages_and_json_errors_get_their_classes() {
        let e = HandlerError::from("bad input");
        assert_eq!(
            (e.kind(), e.to_string()),
            (HandlerErrorKind::Other, "bad input".into())
        );
        let json = serde_json::from_str::<u8>("x").unwrap_err();
        assert_eq!(HandlerError::from(json).kind(), HandlerErrorKind::Data);
    }
}
