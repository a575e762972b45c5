//! Connection setup and its diagnostics: [`Bus::connect`], the
//! async-nats options it builds (reconnects, credentials, TLS, the
//! callbacks that record refused subscriptions), and the errors that say
//! what to do when the server cannot be reached or refuses the client.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::publish::PublishScratch;
use super::Bus;
use crate::error::ConnectError;
use crate::options::{inbox_prefix_problem, BusOptions};
use crate::stats::Stats;

/// How long an authorization refusal is retried before it is final (see
/// [`Bus::connect`]).
const AUTH_RETRY_WINDOW: Duration = Duration::from_millis(500);

impl Bus {
    /// Connect with `opts`, retrying until `opts.connect_timeout` passes so
    /// that an operator started together with its server does not fail.
    ///
    /// `source` is what envelopes made by [`Bus::send`] carry as their
    /// `source` (an operator uses its ID).
    pub async fn connect(opts: &BusOptions, source: &str) -> Result<Bus, ConnectError> {
        if opts.urls.is_empty() {
            return Err(ConnectError::NoUrl);
        }
        if let Some(prefix) = &opts.inbox_prefix {
            if let Some(reason) = inbox_prefix_problem(prefix) {
                return Err(ConnectError::BadInboxPrefix {
                    prefix: prefix.clone(),
                    reason,
                });
            }
        }
        let mut addrs = Vec::with_capacity(opts.urls.len());
        for url in &opts.urls {
            let addr: async_nats::ServerAddr =
                url.parse()
                    .map_err(|source: std::io::Error| ConnectError::BadUrl {
                        url: url.clone(),
                        source,
                    })?;
            addrs.push(addr);
        }
        let stats = Stats::new();
        let refused = Arc::new(watch::Sender::new(None));
        let refused_data = Arc::new(watch::Sender::new(Vec::new()));
        let prefix = opts.inbox_prefix.as_deref().unwrap_or("_INBOX");
        let inbox_start: Arc<str> = Arc::from(format!("{prefix}."));
        let urls = opts.urls.join(",");
        let started = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let nats_opts = build_options(
                opts,
                source,
                &stats,
                (&refused, &refused_data),
                &inbox_start,
            )
            .await?;
            match nats_opts.connect(addrs.clone()).await {
                Ok(client) => {
                    return Ok(Bus {
                        client,
                        source: Arc::from(source),
                        stats,
                        dedupe_window: opts.dedupe_window,
                        refused,
                        refused_data,
                        fanout: Arc::default(),
                        subscription_capacity: opts.subscription_capacity,
                        stream_ids: opts.stream_ids,
                        inbox_start: Arc::clone(&inbox_start),
                        scratch: Arc::new(Mutex::new(PublishScratch::new())),
                        jetstream: Arc::default(),
                    });
                }
                Err(e) => {
                    let e = match permanent_failure(e, opts, &urls) {
                        // nats-server can refuse a client whose CONNECT
                        // arrives while it reloads its users (it re-checks
                        // every client, the half-connected one too); the
                        // orchestrator reloads whenever an operator starts
                        // or stops. A real refusal is still one after a
                        // short while, so only that is final.
                        Ok(fatal @ ConnectError::Auth { .. })
                            if started.elapsed() < AUTH_RETRY_WINDOW =>
                        {
                            tracing::debug!(%urls, error = %fatal, "refused; retrying once the server settles");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        Ok(fatal) => return Err(fatal),
                        Err(e) => e,
                    };
                    if started.elapsed() + delay > opts.connect_timeout {
                        return Err(ConnectError::Unreachable {
                            urls,
                            waited: started.elapsed(),
                            source: Box::new(e),
                        });
                    }
                    tracing::debug!(%urls, error = %e, "NATS not reachable yet, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Pause before connection attempt number `attempts` (async-nats counts
/// from 1, the first connection included): none for the first, then 50,
/// 100, 200 ... ms up to `max`. A restarted local server is picked up
/// within a fraction of a second, and an operator's first connection
/// costs no sleep at all.
fn reconnect_delay(attempts: usize, max: Duration) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(10);
    Duration::from_millis(50u64 << exp).min(max)
}

/// The connect errors that waiting cannot cure (credentials the server
/// refuses, a certificate we do not trust, TLS that cannot be set up), as
/// the error `connect` returns at once (`Ok`); the ones worth another
/// attempt (server not up yet) are given back (`Err`).
fn permanent_failure(
    e: async_nats::ConnectError,
    opts: &BusOptions,
    urls: &str,
) -> Result<ConnectError, async_nats::ConnectError> {
    use async_nats::ConnectErrorKind as Kind;
    let problem = match e.kind() {
        // async-nats says "authorization violation: nats: authorization
        // violation"; once is enough.
        Kind::AuthorizationViolation => {
            return Ok(ConnectError::Auth {
                urls: urls.to_string(),
                method: credentials_offered(opts),
                reason: "authorization violation".to_string(),
                source: Box::new(e),
            })
        }
        // Raised on our side, before the server could judge them.
        Kind::Authentication => {
            return Ok(ConnectError::Auth {
                urls: urls.to_string(),
                method: credentials_offered(opts),
                reason: format!(
                    "they cannot sign the server's challenge; is the seed valid? ({e})"
                ),
                source: Box::new(e),
            })
        }
        // Raised before the handshake: the CA or client certificate files
        // do not parse, or the host is not a valid TLS server name.
        Kind::Tls => format!("cannot set up TLS: {e}"),
        // The handshake itself fails inside the socket, so async-nats
        // reports it as I/O; the rustls error underneath says what it was.
        _ => match rustls_error(&e) {
            Some(tls) => format!("TLS handshake failed: {}", handshake_problem(tls, opts)),
            None => return Err(e),
        },
    };
    Ok(ConnectError::Tls {
        urls: urls.to_string(),
        problem,
        source: Box::new(e),
    })
}

/// Which credentials `opts` offers, for messages (never their values).
fn credentials_offered(opts: &BusOptions) -> String {
    let mut offered = Vec::new();
    if let Some(user) = &opts.user {
        offered.push(format!("user `{user}` with a password"));
    }
    if opts.token.is_some() {
        offered.push("a token".to_string());
    }
    if let Some(path) = &opts.creds_file {
        offered.push(format!("credentials file {}", path.display()));
    }
    if let Some(path) = &opts.nkey_file {
        offered.push(format!("nkey seed from {}", path.display()));
    }
    if offered.is_empty() {
        "no credentials given".to_string()
    } else {
        offered.join(" and ")
    }
}

/// The rustls error somewhere in `e`'s chain. tokio-rustls wraps it in an
/// `io::Error`, whose `source()` skips it, so each level is unwrapped by
/// hand.
fn rustls_error(e: &async_nats::ConnectError) -> Option<&async_nats::rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<async_nats::rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<async_nats::rustls::Error>())
        {
            return Some(tls);
        }
        next = err.source();
    }
    None
}

/// A handshake failure in words an operator's admin can act on.
fn handshake_problem(tls: &async_nats::rustls::Error, opts: &BusOptions) -> String {
    use async_nats::rustls::{CertificateError as Cert, Error};
    match tls {
        Error::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => match &opts.tls_ca {
            Some(ca) => format!(
                "the server's certificate is not signed by the CA in {}",
                ca.display()
            ),
            None => "the server's certificate is not signed by a CA this system trusts; \
                     give its CA with SWITCHBOARD_NATS_TLS_CA (BusOptions::tls_ca)"
                .to_string(),
        },
        Error::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            format!("the server's certificate is not valid for the host in the URL ({tls})")
        }
        Error::InvalidCertificate(
            Cert::Expired
            | Cert::ExpiredContext { .. }
            | Cert::NotValidYet
            | Cert::NotValidYetContext { .. },
        ) => format!("the server's certificate is outside its validity period ({tls})"),
        // What a plain-text server's first bytes look like to rustls.
        Error::InvalidMessage(_) => {
            format!("the server did not answer in TLS; does it have TLS enabled? ({tls})")
        }
        other => other.to_string(),
    }
}

/// The subject of a server error that refuses a subscription, e.g.
/// `Permissions Violation for Subscription to "_INBOX.x.*"`.
fn refused_subscription(server_error: &str) -> Option<&str> {
    let rest = server_error
        .trim()
        .strip_prefix("Permissions Violation for Subscription to ")?;
    let rest = rest.strip_prefix('"')?;
    rest.split('"').next().filter(|s| !s.is_empty())
}

/// The two records of refused subscriptions: this client's inboxes, and
/// everything else.
type Refusals<'a> = (
    &'a Arc<watch::Sender<Option<String>>>,
    &'a Arc<watch::Sender<Vec<String>>>,
);

async fn build_options(
    opts: &BusOptions,
    source: &str,
    stats: &Arc<Stats>,
    (refused, refused_data): Refusals<'_>,
    inbox_start: &Arc<str>,
) -> Result<async_nats::ConnectOptions, ConnectError> {
    let mut o = async_nats::ConnectOptions::new()
        .name(opts.name.clone().unwrap_or_else(|| source.to_string()))
        .client_capacity(opts.publish_buffer)
        .subscription_capacity(opts.subscription_capacity)
        .connection_timeout(opts.connect_timeout)
        .max_reconnects(None::<usize>)
        .require_tls(opts.require_tls);
    if let Some(prefix) = &opts.inbox_prefix {
        o = o.custom_inbox_prefix(prefix);
    }
    let max_delay = opts.max_reconnect_delay;
    o = o.reconnect_delay_callback(move |attempts| reconnect_delay(attempts, max_delay));
    if let (Some(user), Some(pass)) = (&opts.user, &opts.password) {
        o = o.user_and_password(user.clone(), pass.clone());
    }
    if let Some(token) = &opts.token {
        o = o.token(token.clone());
    }
    if let Some(path) = &opts.creds_file {
        o = o
            .credentials_file(path)
            .await
            .map_err(|source| ConnectError::File {
                what: "NATS credentials",
                path: path.display().to_string(),
                source,
            })?;
    }
    if let Some(path) = &opts.nkey_file {
        let seed = std::fs::read_to_string(path).map_err(|source| ConnectError::File {
            what: "nkey seed",
            path: path.display().to_string(),
            source,
        })?;
        o = o.nkey(seed.trim().to_string());
    }
    // async-nats reads these files only during the handshake and reports
    // a missing one as a TLS error; checked here, the message names the
    // file and says what it is for.
    let readable = |what: &'static str, path: &std::path::Path| {
        std::fs::File::open(path)
            .map(drop)
            .map_err(|source| ConnectError::File {
                what,
                path: path.display().to_string(),
                source,
            })
    };
    if let Some(ca) = &opts.tls_ca {
        readable("TLS CA", ca)?;
        o = o.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &opts.tls_client {
        readable("TLS client certificate", cert)?;
        readable("TLS client key", key)?;
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    let stats = Arc::clone(stats);
    let refused = Arc::clone(refused);
    let refused_data = Arc::clone(refused_data);
    let inbox_start = Arc::clone(inbox_start);
    let was_down = Arc::new(AtomicBool::new(false));
    o = o.event_callback(move |event| {
        let stats = Arc::clone(&stats);
        let refused = Arc::clone(&refused);
        let refused_data = Arc::clone(&refused_data);
        let inbox_start = Arc::clone(&inbox_start);
        let was_down = Arc::clone(&was_down);
        async move {
            match event {
                async_nats::Event::Disconnected => {
                    was_down.store(true, Ordering::Relaxed);
                    Stats::add(&stats.disconnects, 1);
                    if stats.closing.load(Ordering::Relaxed) {
                        tracing::debug!("NATS connection closed");
                    } else {
                        tracing::warn!(
                            "lost the NATS connection; queueing publishes and reconnecting"
                        );
                    }
                }
                async_nats::Event::Connected => {
                    if was_down.swap(false, Ordering::Relaxed) {
                        refused.send_replace(None);
                        refused_data.send_replace(Vec::new());
                        Stats::add(&stats.reconnects, 1);
                        tracing::info!("reconnected to NATS");
                    }
                }
                async_nats::Event::SlowConsumer(sid) => {
                    // One event per message the client had to drop.
                    stats.slow_consumer(&format_args!("subscription {sid}"));
                }
                async_nats::Event::ServerError(e) => {
                    if let async_nats::ServerError::Other(text) = &e {
                        // Only inboxes: other refused subscriptions are the
                        // caller's (logged below), not every request's.
                        match refused_subscription(text) {
                            Some(s) if s.starts_with(inbox_start.as_ref()) => {
                                refused.send_replace(Some(s.to_string()));
                            }
                            Some(s) => {
                                refused_data.send_if_modified(|all| {
                                    let new = !all.iter().any(|a| a == s);
                                    if new {
                                        all.push(s.to_string());
                                    }
                                    new
                                });
                            }
                            None => {}
                        }
                    }
                    tracing::warn!(error = %e, "NATS server error");
                }
                async_nats::Event::ClientError(e) => {
                    if stats.closing.load(Ordering::Relaxed) {
                        tracing::debug!(error = %e, "NATS client error while closing");
                    } else {
                        tracing::warn!(error = %e, "NATS client error");
                    }
                }
                async_nats::Event::LameDuckMode => {
                    tracing::info!("NATS server is entering lame duck mode");
                }
                async_nats::Event::Draining | async_nats::Event::Closed => {}
            }
        }
    });
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays() {
        let max = Duration::from_secs(2);
        let d: Vec<u128> = (1..=8)
            .map(|a| reconnect_delay(a, max).as_millis())
            .collect();
        assert_eq!(d, vec![0, 50, 100, 200, 400, 800, 1600, 2000]);
        assert_eq!(reconnect_delay(usize::MAX, max), max);
    }

    #[test]
    fn refused_subscriptions_are_recognised() {
        assert_eq!(
            refused_subscription(r#"Permissions Violation for Subscription to "_INBOX.abc.*""#),
            Some("_INBOX.abc.*")
        );
        assert_eq!(
            refused_subscription(
                r#"Permissions Violation for Subscription to "a.b" using queue "q""#
            ),
            Some("a.b")
        );
        assert_eq!(
            refused_subscription(r#"Permissions Violation for Publish to "a.b""#),
            None
        );
        assert_eq!(refused_subscription("Authorization Violation"), None);
    }

    #[test]
    fn credentials_are_named_not_shown() {
        let opts = BusOptions::new("nats://x:1")
            .token("s3cret-token")
            .nkey_file("/run/sb/seed");
        let said = credentials_offered(&opts);
        assert_eq!(said, "a token and nkey seed from /run/sb/seed");
        assert_eq!(
            credentials_offered(&BusOptions::new("nats://x:1").user_password("bot", "hunter2")),
            "user `bot` with a password"
        );
        assert_eq!(
            credentials_offered(&BusOptions::new("nats://x:1")),
            "no credentials given"
        );
    }
}
