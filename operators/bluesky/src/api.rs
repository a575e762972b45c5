//! Authenticated calls with the waiting done right: the access token is
//! refreshed before it expires and once more when the server says it has
//! (`ExpiredToken`, 401); a 429 waits until `ratelimit-reset` (and says so
//! on the bus, `chat.bluesky.<instance>.=.ratelimit`); 5xx and network
//! errors back off a few times before the error goes to the caller.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use switchboard_bus::{Bus, Counter};

use crate::config::{BskyConfig, Retry};
use crate::inbound::Publisher;
use crate::session::{Auth, AuthCounters, AuthError, Tokens};
use crate::store::Store;
use crate::xrpc::{decode, rate_limit_wait, Call, Xrpc, XrpcError};

/// Tries of a call that fails with a 5xx or network error.
pub const MAX_TRIES: u32 = 4;
/// Longest single rate-limit wait (the server's reset may be a day away
/// for the daily limits; the operator checks again after this).
pub const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(3600);

/// The operator's counters (heartbeat names in the code map of
/// docs/PROTOCOL.md, "Bluesky operator").
#[derive(Debug, Clone)]
pub struct Counters {
    /// Notifications published.
    pub notifications: Counter,
    /// Notifications not published (reason filtered out, or malformed).
    pub skipped: Counter,
    /// Jetstream posts published.
    pub jetstream_posts: Counter,
    /// Jetstream connections made.
    pub jetstream_connects: Counter,
    /// Jetstream frames that were not Jetstream events (skipped).
    pub jetstream_malformed: Counter,
    /// Records created (posts, likes, reposts).
    pub posts_sent: Counter,
    /// Send requests refused or failed.
    pub send_failures: Counter,
    /// Session counters.
    pub auth: AuthCounters,
    /// 429 waits.
    pub rate_limit_waits: Counter,
    /// Calls tried again after a 5xx or network error.
    pub retries: Counter,
}

impl Counters {
    /// The counters of `bus`.
    pub fn new(bus: &Bus) -> Counters {
        let c = |name: &str| bus.stats().counter(name);
        Counters {
            notifications: c("bluesky_notifications_published"),
            skipped: c("bluesky_notifications_skipped"),
            jetstream_posts: c("bluesky_jetstream_published"),
            jetstream_connects: c("bluesky_jetstream_connects"),
            jetstream_malformed: c("bluesky_jetstream_malformed"),
            posts_sent: c("bluesky_records_created"),
            send_failures: c("bluesky_send_failures"),
            auth: AuthCounters {
                logins: c("bluesky_logins"),
                refreshes: c("bluesky_refreshes"),
            },
            rate_limit_waits: c("bluesky_rate_limit_waits"),
            retries: c("bluesky_retries"),
        }
    }
}

/// Why an authenticated call failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No session (refused, or the login could not be made).
    #[error(transparent)]
    Auth {
        /// Why.
        #[from]
        source: AuthError,
    },
    /// The call itself failed (after the retries it deserved).
    #[error(transparent)]
    Call {
        /// Why.
        #[from]
        source: XrpcError,
    },
}

switchboard_bus::proto::error_kinds! {
    /// Coarse classes of [`ApiError`].
    ApiError => ApiErrorKind { Auth, Call }
}

impl ApiError {
    /// The login was refused for good: nothing will work until the
    /// credentials change.
    pub fn is_refused_login(&self) -> bool {
        matches!(
            self,
            ApiError::Auth {
                source: AuthError::Refused { .. }
            }
        )
    }
}

/// The account's client: XRPC, session, retry policy, counters.
#[derive(Debug)]
pub struct Api {
    xrpc: Xrpc,
    auth: Auth,
    retry: Retry,
    publisher: Publisher,
    /// The counters.
    pub counters: Counters,
}

impl Api {
    /// A client for the account of `config`; call [`Api::login`] first.
    pub fn new(
        xrpc: Xrpc,
        config: &BskyConfig,
        store: Store,
        publisher: Publisher,
        counters: Counters,
    ) -> Api {
        Api {
            auth: Auth::new(config, store, counters.auth.clone()),
            xrpc,
            retry: config.retry.clone(),
            publisher,
            counters,
        }
    }

    /// Takes the settings of `config` that apply without a new login.
    pub fn reconfigure(&mut self, config: &BskyConfig, publisher: Publisher) {
        self.retry = config.retry.clone();
        self.publisher = publisher;
    }

    /// The session (saved or new).
    ///
    /// # Errors
    ///
    /// [`AuthError`]: refused, or the server could not be asked.
    pub async fn login(&mut self) -> Result<Tokens, AuthError> {
        self.auth.start(&self.xrpc).await.cloned()
    }

    /// The session, if logged in.
    pub fn tokens(&self) -> Option<&Tokens> {
        self.auth.tokens()
    }

    /// The publisher of events and notices.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// A query, decoded.
    ///
    /// # Errors
    ///
    /// [`ApiError`] after refreshes, rate-limit waits and retries.
    pub async fn query<T: DeserializeOwned>(
        &mut self,
        nsid: &str,
        params: &[(&str, &str)],
    ) -> Result<T, ApiError> {
        let params = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let body = self.call(nsid, &Call::Query(params)).await?;
        Ok(decode(nsid, &body)?)
    }

    /// A procedure with `input`, decoded.
    ///
    /// # Errors
    ///
    /// As [`Api::query`].
    pub async fn procedure<T: DeserializeOwned>(
        &mut self,
        nsid: &str,
        input: Value,
    ) -> Result<T, ApiError> {
        let body = self.call(nsid, &Call::Procedure(Some(input))).await?;
        Ok(decode(nsid, &body)?)
    }

    /// A procedure whose output is not read.
    ///
    /// # Errors
    ///
    /// As [`Api::query`].
    pub async fn procedure_no_output(&mut self, nsid: &str, input: Value) -> Result<(), ApiError> {
        self.call(nsid, &Call::Procedure(Some(input)))
            .await
            .map(drop)
    }

    async fn call(&mut self, nsid: &str, call: &Call) -> Result<bytes::Bytes, ApiError> {
        let mut refreshed = false;
        let mut tries = 0;
        let mut delay = self.retry.initial;
        loop {
            if self.auth.tokens().is_none() {
                self.auth.start(&self.xrpc).await?;
            }
            self.auth.refresh_if_due(&self.xrpc).await?;
            let token = self.auth.tokens().map(|t| t.access().clone());
            let error = match self.xrpc.call(nsid, call, token.as_ref()).await {
                Ok(body) => return Ok(body),
                Err(e) => e,
            };
            match error {
                e if e.is_expired_token() && !refreshed => {
                    tracing::debug!(%nsid, error = %e, "access token refused; refreshing");
                    refreshed = true;
                    self.auth.refresh(&self.xrpc).await?;
                }
                XrpcError::RateLimited { reset, .. } => {
                    let wait = rate_limit_wait(reset, self.retry.initial, MAX_RATE_LIMIT_WAIT);
                    self.counters.rate_limit_waits.inc();
                    tracing::warn!(%nsid, wait_ms = wait.as_millis() as u64, "rate limited; waiting for ratelimit-reset");
                    let notice = json!({
                        "sender": self.auth.tokens().map(|t| t.handle.as_str()).unwrap_or(""),
                        "room": "",
                        "text": format!("rate limited on {nsid}; waiting {:.1} s", wait.as_secs_f64()),
                        "endpoint": nsid,
                        "reset": reset,
                        "wait_ms": wait.as_millis() as u64,
                    });
                    if let Err(e) = self.publisher.notice("ratelimit", notice).await {
                        tracing::debug!(error = %e, "could not publish the rate-limit notice");
                    }
                    tokio::time::sleep(wait).await;
                }
                e if e.is_transient() && tries + 1 < MAX_TRIES => {
                    tries += 1;
                    self.counters.retries.inc();
                    let wait = jitter(delay);
                    tracing::info!(%nsid, error = %e, wait_ms = wait.as_millis() as u64, "call failed; trying again");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(self.retry.max);
                }
                e => return Err(e.into()),
            }
        }
    }
}

/// `d` spread by ±20 % so many operators do not retry in step.
pub fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + fastrand::f64() * 0.4)
}
