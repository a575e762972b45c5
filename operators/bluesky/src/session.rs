//! The login: `createSession` once, `refreshSession` before the access
//! token expires and whenever the server says it has, a new login only
//! when the refresh token itself is refused. The tokens are kept in the
//! state directory so a restart reuses them (`createSession` has a tight
//! rate limit: 30 per 5 minutes, 300 per day).
//!
//! A login the server refuses for good (bad password,
//! `AuthFactorTokenRequired`, `AccountTakedown`) is an [`AuthError::Refused`]
//! with a sentence saying what to do; it is remembered with a fingerprint
//! of the password (`refused.json`), so the restarts that follow fail at
//! once without asking the server again until the password changes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use switchboard_bus::Counter;

use crate::config::{BskyConfig, Secret};
use crate::lexicon::{nsid, CreateSessionInput, GetSessionOutput, SessionOutput};
use crate::store::{self, Account, Refusal, SavedSession, Store};
use crate::xrpc::{Xrpc, XrpcError};

/// Refresh this long before the access token's `exp`.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Why there is no session.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The server refused the credentials for good; retrying cannot help.
    #[error("login to {service} as {identifier} refused: {reason}")]
    Refused {
        /// The service.
        service: String,
        /// The identifier.
        identifier: String,
        /// What the server said, and what to do.
        reason: String,
    },
    /// The call failed in a way that may pass (network, 5xx, 429).
    #[error(transparent)]
    Call {
        /// The failed call.
        #[from]
        source: XrpcError,
    },
}

switchboard_bus::proto::error_kinds! {
    /// Coarse classes of [`AuthError`].
    AuthError => AuthErrorKind { Refused, Call }
}

/// A live session.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The account's DID.
    pub did: String,
    /// The account's handle.
    pub handle: String,
    access: Secret,
    refresh: Secret,
    expires: Option<SystemTime>,
}

impl Tokens {
    fn from_output(out: SessionOutput) -> Tokens {
        let expires = jwt_expiry(&out.access_jwt);
        Tokens {
            did: out.did,
            handle: out.handle,
            access: out.access_jwt,
            refresh: out.refresh_jwt,
            expires,
        }
    }

    /// The access token (never to be logged).
    pub fn access(&self) -> &Secret {
        &self.access
    }
}

/// The `exp` claim of a JWT, if it has one. The token is not verified:
/// the server does that; this only says when to refresh.
pub fn jwt_expiry(token: &Secret) -> Option<SystemTime> {
    let payload = token.expose().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    Some(UNIX_EPOCH + Duration::from_secs(exp))
}

/// Counters of the session's own work.
#[derive(Debug, Clone)]
pub struct AuthCounters {
    /// `createSession` calls.
    pub logins: Counter,
    /// `refreshSession` calls.
    pub refreshes: Counter,
}

/// The session manager of one account.
#[derive(Debug)]
pub struct Auth {
    account: Account,
    password: Secret,
    store: Store,
    tokens: Option<Tokens>,
    counters: AuthCounters,
}

/// Whether a refused login can pass by itself (it cannot).
fn permanent_reason(e: &XrpcError) -> Option<String> {
    let XrpcError::Refused {
        status,
        error,
        message,
        ..
    } = e
    else {
        return None;
    };
    let said = message.as_deref().unwrap_or("");
    Some(match error.as_deref() {
        Some("AuthFactorTokenRequired") => "the account asks for a second factor (an e-mailed code); \
             use an app password (Settings > Privacy and security > App passwords), which needs none"
            .to_string(),
        Some("AccountTakedown") => format!(
            "the account has been taken down by its service ({said}); it cannot log in"
        ),
        Some("AccountDeactivated") => format!(
            "the account is deactivated ({said}); reactivate it, then restart the operator"
        ),
        Some("AuthenticationRequired") | None if *status == 401 => format!(
            "wrong identifier or password ({said}); check `identifier` and the password secret \
             (an app password), then restart the operator"
        ),
        Some("InvalidRequest") if *status == 400 => format!(
            "the server refused the login request ({said}); check `identifier`"
        ),
        _ => return None,
    })
}

impl Auth {
    /// A manager for the account in `config`; nothing is called yet.
    pub fn new(config: &BskyConfig, store: Store, counters: AuthCounters) -> Auth {
        Auth {
            account: Account {
                service: config.service.clone(),
                identifier: config.identifier.clone(),
            },
            password: config.password.clone(),
            store,
            tokens: None,
            counters,
        }
    }

    /// The session, once [`Auth::start`] succeeded.
    pub fn tokens(&self) -> Option<&Tokens> {
        self.tokens.as_ref()
    }

    /// Get a session: the saved one (checked with `getSession`, refreshed
    /// if expired), else a login.
    ///
    /// # Errors
    ///
    /// [`AuthError::Refused`] for credentials refused now or before with
    /// the same password; [`AuthError::Call`] when the server could not be
    /// asked.
    pub async fn start(&mut self, xrpc: &Xrpc) -> Result<&Tokens, AuthError> {
        if let Some(refusal) = self.store.load::<Refusal>(store::REFUSED) {
            if refusal.account == self.account
                && refusal.fingerprint == store::fingerprint(&refusal.salt, &self.password)
            {
                return Err(AuthError::Refused {
                    service: self.account.service.clone(),
                    identifier: self.account.identifier.clone(),
                    reason: format!(
                        "{} (refused at an earlier start with this same password; \
                         not tried again: change the password secret or delete {} in the state directory)",
                        refusal.reason,
                        store::REFUSED
                    ),
                });
            }
            self.store.remove(store::REFUSED);
        }
        let saved = self
            .store
            .load::<SavedSession>(store::SESSION)
            .filter(|s| s.account == self.account);
        if let Some(saved) = saved {
            self.tokens = Some(Tokens {
                did: saved.did,
                handle: saved.handle,
                expires: jwt_expiry(&saved.access_jwt),
                access: saved.access_jwt,
                refresh: saved.refresh_jwt,
            });
            let check: Result<GetSessionOutput, XrpcError> = xrpc
                .query(nsid::GET_SESSION, &[], Some(&self.access()))
                .await;
            match check {
                Ok(out) => {
                    if let Some(t) = &mut self.tokens {
                        t.handle = out.handle;
                        t.did = out.did;
                    }
                    tracing::info!("reusing the saved session");
                }
                Err(e) if e.is_expired_token() => self.refresh(xrpc).await?,
                Err(e) => return Err(e.into()),
            }
        } else {
            self.login(xrpc).await?;
        }
        self.tokens.as_ref().ok_or_else(|| AuthError::Call {
            source: XrpcError::Setup {
                reason: "no session after login".into(),
            },
        })
    }

    fn access(&self) -> Secret {
        self.tokens
            .as_ref()
            .map(|t| t.access.clone())
            .unwrap_or_else(|| Secret::new(""))
    }

    /// `createSession`.
    ///
    /// # Errors
    ///
    /// See [`Auth::start`].
    pub async fn login(&mut self, xrpc: &Xrpc) -> Result<(), AuthError> {
        self.counters.logins.inc();
        tracing::info!(identifier = %self.account.identifier, service = %self.account.service, "logging in (createSession)");
        let input = CreateSessionInput {
            identifier: &self.account.identifier,
            password: self.password.expose(),
        };
        match xrpc
            .procedure::<_, SessionOutput>(nsid::CREATE_SESSION, Some(&input), None)
            .await
        {
            Ok(out) => {
                self.set(Tokens::from_output(out));
                Ok(())
            }
            Err(e) => match permanent_reason(&e) {
                Some(reason) => {
                    let salt = store::salt();
                    let refusal = Refusal {
                        account: self.account.clone(),
                        fingerprint: store::fingerprint(&salt, &self.password),
                        salt,
                        reason: reason.clone(),
                    };
                    if let Err(e) = self.store.save(store::REFUSED, &refusal) {
                        tracing::warn!(error = %e, "cannot remember the refused login");
                    }
                    self.store.remove(store::SESSION);
                    self.tokens = None;
                    Err(AuthError::Refused {
                        service: self.account.service.clone(),
                        identifier: self.account.identifier.clone(),
                        reason,
                    })
                }
                None => Err(e.into()),
            },
        }
    }

    /// `refreshSession`; a new login when the refresh token is refused.
    ///
    /// # Errors
    ///
    /// See [`Auth::start`].
    pub async fn refresh(&mut self, xrpc: &Xrpc) -> Result<(), AuthError> {
        let Some(refresh) = self.tokens.as_ref().map(|t| t.refresh.clone()) else {
            return self.login(xrpc).await;
        };
        self.counters.refreshes.inc();
        tracing::debug!("refreshing the session (refreshSession)");
        match xrpc
            .procedure::<(), SessionOutput>(nsid::REFRESH_SESSION, None, Some(&refresh))
            .await
        {
            Ok(out) => {
                self.set(Tokens::from_output(out));
                Ok(())
            }
            Err(e) if e.is_expired_token() => {
                tracing::info!(error = %e, "the refresh token was refused; logging in again");
                self.login(xrpc).await
            }
            Err(e) => match e.error_name() {
                Some("AccountTakedown") => Err(AuthError::Refused {
                    service: self.account.service.clone(),
                    identifier: self.account.identifier.clone(),
                    reason: "the account has been taken down by its service".into(),
                }),
                _ => Err(e.into()),
            },
        }
    }

    /// Refresh now if the access token expires within [`REFRESH_MARGIN`].
    ///
    /// # Errors
    ///
    /// See [`Auth::refresh`].
    pub async fn refresh_if_due(&mut self, xrpc: &Xrpc) -> Result<(), AuthError> {
        let due = self
            .tokens
            .as_ref()
            .and_then(|t| t.expires)
            .is_some_and(|exp| SystemTime::now() + REFRESH_MARGIN >= exp);
        if due {
            self.refresh(xrpc).await?;
        }
        Ok(())
    }

    fn set(&mut self, tokens: Tokens) {
        let saved = SavedSession {
            account: self.account.clone(),
            did: tokens.did.clone(),
            handle: tokens.handle.clone(),
            access_jwt: tokens.access.clone(),
            refresh_jwt: tokens.refresh.clone(),
        };
        if let Err(e) = self.store.save(store::SESSION, &saved) {
            tracing::warn!(error = %e, "cannot save the session; a restart will log in again");
        }
        self.tokens = Some(tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> Secret {
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        Secret::new(format!("{}.{}.sig", e(r#"{"alg":"ES256K"}"#), e(claims)))
    }

    #[test]
    fn expiry_comes_from_the_exp_claim() {
        let t = jwt(r#"{"scope":"com.atproto.appPass","exp":2000000000}"#);
        assert_eq!(
            jwt_expiry(&t),
            Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
        assert_eq!(jwt_expiry(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(jwt_expiry(&Secret::new("not a jwt")), None);
        assert_eq!(jwt_expiry(&Secret::new("a.!!!.c")), None);
    }

    #[test]
    fn permanent_refusals_say_what_to_do() {
        let refused = |status, error: &str| XrpcError::Refused {
            nsid: nsid::CREATE_SESSION.into(),
            status,
            error: Some(error.into()),
            message: Some("Invalid identifier or password".into()),
        };
        let r = permanent_reason(&refused(401, "AuthenticationRequired")).unwrap();
        assert!(r.contains("wrong identifier or password"), "{r}");
        let r = permanent_reason(&refused(401, "AuthFactorTokenRequired")).unwrap();
        assert!(r.contains("app password"), "{r}");
        assert!(permanent_reason(&refused(400, "AccountTakedown")).is_some());
        assert!(permanent_reason(&XrpcError::RateLimited {
            nsid: "x".into(),
            reset: None
        })
        .is_none());
    }
}
