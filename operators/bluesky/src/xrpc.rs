//! One XRPC call over HTTP: `GET /xrpc/<nsid>?…` for queries, `POST` with
//! a JSON body for procedures, the bearer token when given, and the
//! server's answer sorted into what the caller must do about it
//! ([`XrpcError`]): refresh, wait for the rate limit, back off, or give up.
//!
//! The client is `reqwest` with HTTP/1.1 only and rustls on ring with the
//! system roots ([`tls_config`], shared with the Jetstream websocket).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::Secret;
use crate::lexicon::ErrorBody;

/// Why a call failed. Messages name the endpoint and the server's error,
/// never a token or password (they are only ever in headers and bodies
/// sent, which no error quotes).
#[derive(Debug, thiserror::Error)]
pub enum XrpcError {
    /// HTTP 429: wait until `reset` (Unix seconds, from `ratelimit-reset`).
    #[error("{nsid}: rate limited (HTTP 429){}", reset.map(|r| format!(", resets at {r} (Unix time)")).unwrap_or_default())]
    RateLimited {
        /// The endpoint.
        nsid: String,
        /// When the limit resets, if the server said.
        reset: Option<u64>,
    },
    /// A 4xx answer: the request or the session is wrong.
    #[error("{nsid}: {} (HTTP {status}){}", error.as_deref().unwrap_or("error"), message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Refused {
        /// The endpoint.
        nsid: String,
        /// HTTP status.
        status: u16,
        /// The XRPC error name.
        error: Option<String>,
        /// The server's detail.
        message: Option<String>,
    },
    /// A 5xx answer: try again later.
    #[error("{nsid}: server error (HTTP {status}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Server {
        /// The endpoint.
        nsid: String,
        /// HTTP status.
        status: u16,
        /// The server's detail.
        message: Option<String>,
    },
    /// No answer (connect, timeout, reset): try again later.
    #[error("{nsid}: cannot reach the server: {source}")]
    Network {
        /// The endpoint.
        nsid: String,
        /// What happened (reqwest's error, without the URL).
        source: reqwest::Error,
    },
    /// The answer is not the lexicon's shape.
    #[error("{nsid}: the answer does not fit the lexicon: {source}")]
    Decode {
        /// The endpoint.
        nsid: String,
        /// serde's reason.
        source: serde_json::Error,
    },
    /// The HTTP client could not be built (TLS roots).
    #[error("HTTP client setup failed: {reason}")]
    Setup {
        /// What happened.
        reason: String,
    },
}

/// A failed call fails the handler (at start: creating the client), kept
/// as its source.
impl From<XrpcError> for switchboard_bus::HandlerError {
    fn from(e: XrpcError) -> switchboard_bus::HandlerError {
        switchboard_bus::HandlerError::other(e)
    }
}

switchboard_bus::proto::error_kinds! {
    /// Coarse classes of [`XrpcError`].
    XrpcError => XrpcErrorKind { RateLimited, Refused, Server, Network, Decode, Setup }
}

impl XrpcError {
    /// The XRPC error name, if the server gave one.
    pub fn error_name(&self) -> Option<&str> {
        match self {
            XrpcError::Refused { error, .. } => error.as_deref(),
            _ => None,
        }
    }

    /// The access token is no longer accepted: refresh the session.
    pub fn is_expired_token(&self) -> bool {
        match self {
            XrpcError::Refused { status, error, .. } => {
                *status == 401 || matches!(error.as_deref(), Some("ExpiredToken" | "InvalidToken"))
            }
            _ => false,
        }
    }

    /// Worth trying again after a pause (server or network trouble).
    pub fn is_transient(&self) -> bool {
        matches!(self, XrpcError::Server { .. } | XrpcError::Network { .. })
    }
}

/// rustls with ring and the system's root certificates.
///
/// # Errors
///
/// [`XrpcError::Setup`] when no root certificate could be loaded.
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, XrpcError> {
    switchboard_tls::client_config(None).map_err(|e| XrpcError::Setup {
        reason: e.to_string(),
    })
}

/// One call, to be made (and perhaps made again).
#[derive(Debug, Clone)]
pub enum Call {
    /// `GET` with these query parameters (a key may repeat).
    Query(Vec<(String, String)>),
    /// `POST` with this JSON input, or none.
    Procedure(Option<serde_json::Value>),
}

/// Decodes a successful answer of `nsid`.
///
/// # Errors
///
/// [`XrpcError::Decode`] when it does not fit `T`.
pub fn decode<T: DeserializeOwned>(nsid: &str, body: &[u8]) -> Result<T, XrpcError> {
    serde_json::from_slice(body).map_err(|source| XrpcError::Decode {
        nsid: nsid.to_string(),
        source,
    })
}

/// The HTTP client every Bluesky call uses (XRPC, and DID documents for
/// the firehose): our TLS config, `timeout` per request, connecting
/// within at most 15 s, and a user agent naming this operator.
///
/// # Errors
///
/// reqwest's error when the client cannot be built.
pub fn http_client(
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .use_preconfigured_tls((**tls).clone())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(15)))
        .user_agent(concat!("switchboard-bluesky/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// An XRPC client for one service.
#[derive(Debug, Clone)]
pub struct Xrpc {
    http: reqwest::Client,
    service: String,
}

impl Xrpc {
    /// A client for `service` (`https://host[:port]`, no trailing slash).
    ///
    /// # Errors
    ///
    /// [`XrpcError::Setup`] when the HTTP client cannot be built.
    pub fn new(
        service: &str,
        tls: &Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Xrpc, XrpcError> {
        let http = http_client(tls, timeout).map_err(|e| XrpcError::Setup {
            reason: e.to_string(),
        })?;
        Ok(Xrpc {
            http,
            service: service.to_string(),
        })
    }

    /// The service URL.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// A query (`GET`): `params` may repeat a key (`uris=a&uris=b`).
    ///
    /// # Errors
    ///
    /// [`XrpcError`] as the server answered.
    pub async fn query<T: DeserializeOwned>(
        &self,
        nsid: &str,
        params: &[(&str, &str)],
        token: Option<&Secret>,
    ) -> Result<T, XrpcError> {
        let request = self.http.get(self.url(nsid)).query(params);
        let body = self.send(nsid, request, token).await?;
        decode(nsid, &body)
    }

    /// A procedure (`POST`) with a JSON `input` (or none), decoding the
    /// output as `T`.
    ///
    /// # Errors
    ///
    /// [`XrpcError`] as the server answered.
    pub async fn procedure<I: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        nsid: &str,
        input: Option<&I>,
        token: Option<&Secret>,
    ) -> Result<T, XrpcError> {
        let body = self.post(nsid, input, token).await?;
        decode(nsid, &body)
    }

    /// A procedure whose output is not read (`updateSeen` has none).
    ///
    /// # Errors
    ///
    /// [`XrpcError`] as the server answered.
    pub async fn procedure_no_output<I: Serialize + ?Sized>(
        &self,
        nsid: &str,
        input: Option<&I>,
        token: Option<&Secret>,
    ) -> Result<(), XrpcError> {
        self.post(nsid, input, token).await.map(drop)
    }

    /// A call described as data (what [`crate::api::Api`] retries).
    ///
    /// # Errors
    ///
    /// [`XrpcError`] as the server answered.
    pub async fn call(
        &self,
        nsid: &str,
        call: &Call,
        token: Option<&Secret>,
    ) -> Result<bytes::Bytes, XrpcError> {
        match call {
            Call::Query(params) => {
                let request = self.http.get(self.url(nsid)).query(params);
                self.send(nsid, request, token).await
            }
            Call::Procedure(input) => self.post(nsid, input.as_ref(), token).await,
        }
    }

    async fn post<I: Serialize + ?Sized>(
        &self,
        nsid: &str,
        input: Option<&I>,
        token: Option<&Secret>,
    ) -> Result<bytes::Bytes, XrpcError> {
        let mut request = self.http.post(self.url(nsid));
        if let Some(input) = input {
            request = request.json(input);
        }
        self.send(nsid, request, token).await
    }

    fn url(&self, nsid: &str) -> String {
        format!("{}/xrpc/{nsid}", self.service)
    }

    async fn send(
        &self,
        nsid: &str,
        mut request: reqwest::RequestBuilder,
        token: Option<&Secret>,
    ) -> Result<bytes::Bytes, XrpcError> {
        if let Some(token) = token {
            request = request.bearer_auth(token.expose());
        }
        let network = |source: reqwest::Error| XrpcError::Network {
            nsid: nsid.to_string(),
            source: source.without_url(),
        };
        let response = request.send().await.map_err(network)?;
        let status = response.status().as_u16();
        let reset = response
            .headers()
            .get("ratelimit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = response.bytes().await.map_err(network)?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let detail: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        let nsid = nsid.to_string();
        Err(match status {
            429 => XrpcError::RateLimited { nsid, reset },
            500..=599 => XrpcError::Server {
                nsid,
                status,
                message: detail.message,
            },
            _ => XrpcError::Refused {
                nsid,
                status,
                error: detail.error,
                message: detail.message,
            },
        })
    }
}

/// How long to wait for a rate limit that resets at `reset` (Unix
/// seconds): until then (plus a little, since the reset is whole seconds),
/// or `fallback` when the server gave no reset; never more than `max`.
pub fn rate_limit_wait(reset: Option<u64>, fallback: Duration, max: Duration) -> Duration {
    let Some(reset) = reset else {
        return fallback.min(max);
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let at = Duration::from_secs(reset);
    at.saturating_sub(now)
        .saturating_add(Duration::from_millis(50))
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_tokens_are_recognised() {
        let refused = |status, error: Option<&str>| XrpcError::Refused {
            nsid: "x".into(),
            status,
            error: error.map(str::to_string),
            message: None,
        };
        assert!(refused(400, Some("ExpiredToken")).is_expired_token());
        assert!(refused(401, None).is_expired_token());
        assert!(!refused(400, Some("InvalidRequest")).is_expired_token());
        assert_eq!(
            refused(400, Some("InvalidRequest")).kind(),
            XrpcErrorKind::Refused
        );
    }

    #[test]
    fn rate_limit_waits_until_the_reset() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let max = Duration::from_secs(3600);
        let w = rate_limit_wait(Some(now + 10), Duration::from_secs(1), max);
        assert!(
            w > Duration::from_secs(8) && w <= Duration::from_secs(11),
            "{w:?}"
        );
        assert_eq!(
            rate_limit_wait(None, Duration::from_secs(2), max),
            Duration::from_secs(2)
        );
        assert!(
            rate_limit_wait(Some(now - 100), Duration::from_secs(1), max) < Duration::from_secs(1)
        );
        assert_eq!(
            rate_limit_wait(Some(now + 99_999), Duration::from_secs(1), max),
            max
        );
    }
}
