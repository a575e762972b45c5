//! The HTTP side: the page, `/metrics`, JSON and server-sent-event
//! endpoints, and the two state-changing requests (`POST /api/ctl`, which
//! goes to the daemon's own permission-checked API, and `POST
//! /api/publish`). Every `/api/` route but `login` needs a login
//! ([`crate::auth`]): the session cookie or `Authorization: Bearer`.
//!
//! | Route | Who | What |
//! | --- | --- | --- |
//! | `GET /`, `/favicon.svg`, `/vendor/uplot.*` | anyone | the page and its files (static, embedded) |
//! | `GET /metrics` | anyone on a loopback listener, else a login | Prometheus text format: counters and gauges, no text from operators |
//! | `POST /api/login` | anyone | `{"token"}`: sets the session cookie; `{"role"}` |
//! | `POST /api/logout` | anyone | clears it |
//! | `GET /api/me` | anyone | `{"role": null\|"viewer"\|"admin", "configured": bool}` |
//! | `GET /api/snapshot` | viewer | bus state, the daemon's status, rates (JSON) |
//! | `GET /api/events` | viewer | SSE: a `snapshot` event after every status poll |
//! | `GET /api/tail?pattern=chat.#&pattern=send.#` | viewer | SSE: `seen` events (the buffer, then live) matching any of the `*`/`#` patterns; `lagged` when some were skipped |
//! | `GET /api/history` | viewer | SSE: lifecycle events kept (the last 300), then live, as `seen` events |
//! | `GET /api/logs?id=<id>` | viewer | SSE: the operator's last 100 lines, then new ones, as `line` events |
//! | `GET /api/replay?pattern=chat.#&from=1h&to=&limit=200` | viewer | JSON: one page of the durable stream ([`crate::replay`]); `from`/`to` a sequence, a duration ago or an RFC 3339 time |
//! | `POST /api/ctl` | admin | `{"verb", "target", "in_place"?}`: the daemon's `CtlReply` |
//! | `POST /api/publish` | admin | `{"subject", "body"}`: one envelope from the dashboard (within its manifest's `publish` grants); `{"id"}` |

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use switchboard_bus::Bus;
use switchboard_bus::Envelope;
use switchboard_proto::api::{methods, CtlReply, CtlRequest, LogLine, LogsReply, LogsRequest};
use switchboard_proto::{api_subject, Pattern, Verb};
use tokio::sync::{broadcast, watch};

use crate::auth::{Auth, Role};
use crate::hub::{Hub, Seen};

/// The page, embedded: no build step, no files to install.
const PAGE: &str = include_str!("page.html");
/// The chart library (see src/vendor/README.md) and its style.
const UPLOT_JS: &str = include_str!("vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("vendor/uPlot.min.css");
/// The tab icon: a switchboard's plug and jack.
const FAVICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" fill="#1f2a44"/><circle cx="10" cy="10" r="3.5" fill="#5ec8f2"/><circle cx="22" cy="22" r="3.5" fill="#7ee2a8"/><path d="M10 10 C 10 20, 22 12, 22 22" stroke="#f4f6fb" stroke-width="2.2" fill="none"/></svg>"##;
/// Most patterns one tail may ask for.
const MAX_PATTERNS: usize = 8;

/// How long a request to the daemon's API may take.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// What handlers share.
#[derive(Clone)]
pub struct App {
    /// Live state.
    pub hub: Arc<Hub>,
    /// The operator's bus connection (its API grants).
    pub bus: Bus,
    /// The dashboard's operator id: the `source` of what it publishes.
    pub id: String,
    /// Who may do what.
    pub auth: Auth,
    /// Whether it listens on loopback (then only loopback `Host` names are served).
    pub loopback: bool,
    /// The daemon's durable stream, when it keeps one (the replay view).
    pub stream: Option<String>,
    /// Flips to true at stop: endless streams end so the server can.
    pub stop: watch::Receiver<bool>,
}

/// The routes.
pub fn router(app: App) -> Router {
    let loopback = app.loopback;
    Router::new()
        .route("/", get(page))
        .route("/favicon.svg", get(favicon))
        .route("/vendor/uplot.js", get(uplot_js))
        .route("/vendor/uplot.css", get(uplot_css))
        .route("/metrics", get(metrics))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/snapshot", get(snapshot))
        .route("/api/events", get(events))
        .route("/api/tail", get(tail))
        .route("/api/history", get(history))
        .route("/api/logs", get(logs))
        .route("/api/replay", get(replay))
        .route("/api/ctl", post(ctl))
        .route("/api/publish", post(publish))
        .with_state(app)
        .layer(axum::middleware::from_fn(same_origin))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| host_check(loopback, req, next),
        ))
}

/// A POST whose `Origin` names another site is refused: the cookie is
/// `SameSite=Strict` already; this also covers a browser that ignores it.
async fn same_origin(req: Request, next: Next) -> Response {
    if req.method() == axum::http::Method::POST {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|h| h.to_str().ok());
        if let (Some(origin), Some(host)) = (origin, host) {
            let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
            if origin_host != host {
                return (
                    StatusCode::FORBIDDEN,
                    "a request from another site's page: refused",
                )
                    .into_response();
            }
        }
    }
    next.run(req).await
}

/// `None` when the request's sender may do what needs `need`, else the
/// answer that says how to: 401 (log in), 403 (a viewer asking for more,
/// or no token set).
fn refused(app: &App, headers: &HeaderMap, need: Role) -> Option<Response> {
    if !app.auth.configured() {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "this dashboard has no token, so it shows nothing: set `token` (and optionally \
             `viewer_token`) in its manifest, [secrets] token = { file = \"...\" }, and reload it",
            )
                .into_response(),
        );
    }
    match app.auth.role(headers) {
        Some(role) if role >= need => None,
        Some(_) => {
            app.hub.counters.unauthorized.inc();
            Some((
                StatusCode::FORBIDDEN,
                "logged in to look only (the viewer token): log in with the token to change things",
            )
                .into_response())
        }
        None => {
            if headers.contains_key(header::AUTHORIZATION) || need == Role::Admin {
                app.hub.counters.unauthorized.inc();
            }
            Some(
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "not logged in: log in on the page with the dashboard's token, or send \
                 `Authorization: Bearer <token>`",
                )
                    .into_response(),
            )
        }
    }
}

async fn favicon() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], FAVICON).into_response()
}

async fn uplot_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        UPLOT_JS,
    )
        .into_response()
}

async fn uplot_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        UPLOT_CSS,
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    token: String,
}

async fn login(State(app): State<App>, body: String) -> Response {
    let Ok(LoginBody { token }) = serde_json::from_str(&body) else {
        return (StatusCode::BAD_REQUEST, "expected {\"token\": \"...\"}").into_response();
    };
    if !app.auth.configured() {
        return refused(&app, &HeaderMap::new(), Role::Viewer)
            .unwrap_or_else(|| StatusCode::FORBIDDEN.into_response());
    }
    let Some(role) = app.auth.login(token.trim()) else {
        app.hub.counters.unauthorized.inc();
        return (
            StatusCode::UNAUTHORIZED,
            "not the dashboard's token (nor its viewer token)",
        )
            .into_response();
    };
    let Some(cookie) = app.auth.session_cookie(role) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    tracing::info!(?role, "a browser logged in");
    (
        [(header::SET_COOKIE, cookie)],
        Json(serde_json::json!({ "role": role })),
    )
        .into_response()
}

async fn logout(State(app): State<App>) -> Response {
    (
        [(header::SET_COOKIE, app.auth.logout_cookie())],
        Json(serde_json::json!({ "role": null })),
    )
        .into_response()
}

async fn me(State(app): State<App>, headers: HeaderMap) -> Response {
    Json(serde_json::json!({
        "role": app.auth.role(&headers),
        "configured": app.auth.configured(),
    }))
    .into_response()
}

/// On a loopback listener, only requests addressed to a loopback name: a
/// web page elsewhere that rebinds its own host name to 127.0.0.1 (DNS
/// rebinding) must not read the operators' logs through the browser.
async fn host_check(loopback: bool, req: Request, next: Next) -> Response {
    if loopback {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !is_loopback_host(host) {
            return (
                StatusCode::FORBIDDEN,
                "this dashboard listens on loopback: open it as http://127.0.0.1:<port>/ \
                 or http://localhost:<port>/",
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// Whether a `Host` header names this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    // Prometheus scrapes loopback without credentials; beyond loopback
    // the counters are nobody else's business.
    if !app.loopback {
        if let Some(no) = refused(&app, &headers, Role::Viewer) {
            return no;
        }
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        app.hub.metrics(),
    )
        .into_response()
}

async fn snapshot(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(no) = refused(&app, &headers, Role::Viewer) {
        return no;
    }
    Json(app.hub.snapshot()).into_response()
}

fn json_event(name: &str, value: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
}

/// Ends a stream when the operator stops.
fn until_stop<S: Stream + Send + 'static>(
    s: S,
    mut stop: watch::Receiver<bool>,
) -> impl Stream<Item = S::Item> + Send {
    s.take_until(async move {
        let _ = stop.wait_for(|s| *s).await;
    })
}

async fn events(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(no) = refused(&app, &headers, Role::Viewer) {
        return no;
    }
    let rx = app.hub.updates.subscribe();
    let hub = Arc::clone(&app.hub);
    let s = stream::unfold((rx, hub, true), |(mut rx, hub, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        rx.borrow_and_update();
        let ev = json_event("snapshot", &hub.snapshot());
        Some((Ok::<_, Infallible>(ev), (rx, hub, false)))
    });
    Sse::new(until_stop(s, app.stop.clone()))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Patterns a tail shows: any one matching is enough.
#[derive(Clone)]
struct Patterns(Vec<Pattern>);

impl Patterns {
    fn matches(&self, subject: &str) -> bool {
        self.0.iter().any(|p| p.matches(subject))
    }
}

async fn tail(State(app): State<App>, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    if let Some(no) = refused(&app, &headers, Role::Viewer) {
        return no;
    }
    // `?pattern=a&pattern=b`: axum's Query keeps only one of a repeated key.
    let texts: Vec<String> = uri
        .query()
        .map(|q| {
            url_pairs(q)
                .filter(|(k, v)| k == "pattern" && !v.trim().is_empty())
                .map(|(_, v)| v.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let texts = if texts.is_empty() {
        vec!["#".to_owned()]
    } else {
        texts
    };
    if texts.len() > MAX_PATTERNS {
        return (
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_PATTERNS} patterns at once"),
        )
            .into_response();
    }
    let mut patterns = Vec::new();
    for text in &texts {
        match Pattern::parse(text) {
            Ok(p) => patterns.push(p),
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("`{text}` is not a pattern: {e} (tokens separated by `.`, `*` for one token, `#` for any number)"),
                )
                    .into_response()
            }
        }
    }
    seen_stream(&app, |hub| hub.tail(), Patterns(patterns))
}

/// One page of the durable stream.
async fn replay(State(app): State<App>, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    use crate::replay::{Query as ReplayQuery, ReplayErrorKind};
    if let Some(no) = refused(&app, &headers, Role::Viewer) {
        return no;
    }
    let pairs: Vec<(String, String)> = uri
        .query()
        .map(|q| url_pairs(q).collect())
        .unwrap_or_default();
    let one = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let patterns: Vec<String> = pairs
        .iter()
        .filter(|(k, v)| k == "pattern" && !v.trim().is_empty())
        .map(|(_, v)| v.trim().to_owned())
        .collect();
    let result = match ReplayQuery::parse(
        &patterns,
        one("from"),
        one("to"),
        one("limit"),
        switchboard_proto::Timestamp::now(),
    ) {
        Err(e) => Err(e),
        Ok(q) => match &app.stream {
            None => Err(crate::replay::ReplayError::NoStream),
            Some(name) => crate::replay::read(&app.bus, name, &q).await,
        },
    };
    match result {
        Ok(page) => Json(page).into_response(),
        Err(e) => {
            let code = match e.kind() {
                ReplayErrorKind::Query => StatusCode::BAD_REQUEST,
                ReplayErrorKind::NoStream => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_GATEWAY,
            };
            (code, e.to_string()).into_response()
        }
    }
}

/// The lifecycle events kept, then live ones.
async fn history(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(no) = refused(&app, &headers, Role::Viewer) {
        return no;
    }
    let events = Pattern::parse("sb.event.*").map(|p| Patterns(vec![p]));
    match events {
        Ok(p) => seen_stream(&app, |hub| hub.events(), p),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `key=value` pairs of a query string, percent-decoded (`+` is a space).
fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        Some((decode(k)?, decode(v)?))
    })
}

fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// SSE of `seen` events: what `buffered` reads from the hub (those
/// matching), then live ones.
fn seen_stream(
    app: &App,
    buffered: impl FnOnce(&Hub) -> Vec<Arc<Seen>>,
    pattern: Patterns,
) -> Response {
    // Subscribe first, then read the buffer: a message in between shows
    // twice at worst, never not at all.
    let rx = app.hub.seen.subscribe();
    let buffered = buffered(&app.hub);
    let p = pattern.clone();
    let first = stream::iter(
        buffered
            .into_iter()
            .filter(move |s| p.matches(&s.subject))
            .map(|s| Ok::<_, Infallible>(json_event("seen", &*s))),
    );
    let hub = Arc::clone(&app.hub);
    let live = stream::unfold((rx, pattern, hub), |(mut rx, pattern, hub)| async move {
        loop {
            match rx.recv().await {
                Ok(s) if pattern.matches(&s.subject) => {
                    return Some((Ok(json_event("seen", &*s)), (rx, pattern, hub)))
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    hub.counters.tail_dropped.add(n);
                    let ev = Event::default().event("lagged").data(n.to_string());
                    return Some((Ok(ev), (rx, pattern, hub)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(until_stop(first.chain(live), app.stop.clone()))
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Deserialize)]
struct LogsQuery {
    id: String,
}

async fn logs(State(app): State<App>, headers: HeaderMap, Query(q): Query<LogsQuery>) -> Response {
    if let Some(no) = refused(&app, &headers, Role::Viewer) {
        return no;
    }
    let rx = app.hub.seen.subscribe();
    let req = LogsRequest {
        id: q.id.clone(),
        lines: 100,
    };
    let reply: LogsReply = match app
        .bus
        .request_json(&api_subject(methods::LOGS), &req, API_TIMEOUT)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("the daemon did not give the logs: {e}"),
            )
                .into_response()
        }
    };
    if let Some(e) = reply.error {
        return (StatusCode::NOT_FOUND, e).into_response();
    }
    let first = stream::iter(
        reply
            .lines
            .into_iter()
            .map(|l| Ok::<_, Infallible>(json_event("line", &l))),
    );
    let prefix = "sb.log.";
    let id = q.id;
    let dropped = app.hub.counters.tail_dropped.clone();
    let live = stream::unfold((rx, id), move |(mut rx, id)| {
        let dropped = dropped.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(s) if s.subject.starts_with(prefix) => {
                        if let Ok(line) = serde_json::from_str::<LogLine>(&s.payload) {
                            if line.id == id {
                                return Some((Ok(json_event("line", &line)), (rx, id)));
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        dropped.add(n);
                        let ev = Event::default().event("lagged").data(n.to_string());
                        return Some((Ok(ev), (rx, id)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    Sse::new(until_stop(first.chain(live), app.stop.clone()))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The body of `POST /api/ctl`: no `config` (a reload re-reads the
/// manifest), so the page cannot push configuration.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CtlBody {
    verb: Verb,
    target: String,
    /// For `restart`: in place (the default from the page) or, false, a
    /// new process.
    #[serde(default)]
    in_place: bool,
}

async fn ctl(State(app): State<App>, headers: HeaderMap, body: String) -> Response {
    if let Some(no) = refused(&app, &headers, Role::Admin) {
        return no;
    }
    let body: CtlBody = match serde_json::from_str(&body) {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected {{\"verb\": \"halt|resume|reload|restart|shutdown\", \"target\": \"<id or glob>\", \"in_place\": true|false}}: {e}"),
            )
                .into_response()
        }
    };
    app.hub.counters.ctl_requests.inc();
    tracing::info!(verb = %body.verb, target = %body.target, "control request from the page");
    let req = CtlRequest {
        verb: body.verb,
        target: body.target,
        config: None,
        in_place: body.in_place,
    };
    match app
        .bus
        .request_json::<_, CtlReply>(&api_subject(methods::CTL), &req, API_TIMEOUT)
        .await
    {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("the daemon did not answer: {e}"),
        )
            .into_response(),
    }
}

/// The body of `POST /api/publish`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    subject: String,
    body: serde_json::Value,
}

async fn publish(State(app): State<App>, headers: HeaderMap, body: String) -> Response {
    if let Some(no) = refused(&app, &headers, Role::Admin) {
        return no;
    }
    let body: PublishBody = match serde_json::from_str(&body) {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected {{\"subject\": \"chat....\", \"body\": <JSON>}}: {e}"),
            )
                .into_response()
        }
    };
    let subject = body.subject.trim();
    if subject.is_empty()
        || subject
            .split('.')
            .any(|t| t.is_empty() || t == "*" || t == ">" || t == "#")
        || subject.chars().any(char::is_whitespace)
    {
        return (
            StatusCode::BAD_REQUEST,
            "the subject must be a full NATS subject (tokens separated by `.`, no wildcards), \
             e.g. chat.console.dashboard.lobby.message",
        )
            .into_response();
    }
    let room = body
        .body
        .get("room")
        .and_then(|r| r.as_str())
        .map(str::to_owned);
    let mut env = Envelope::new(app.id.clone(), body.body);
    if let Some(room) = room {
        env = env.with_header(switchboard_proto::headers::ROOM, room);
    }
    let sent = async {
        app.bus.publish(subject, &env).await?;
        app.bus.flush().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    match tokio::time::timeout(API_TIMEOUT, sent).await {
        Ok(Ok(())) => {
            app.hub.counters.published.inc();
            tracing::info!(%subject, "published from the page");
            Json(serde_json::json!({ "id": env.id(), "subject": subject })).into_response()
        }
        Ok(Err(e)) => (
            StatusCode::BAD_GATEWAY,
            format!("not published: {e} (the dashboard may publish only where its manifest's `publish` allows)"),
        )
            .into_response(),
        Err(_) => (StatusCode::GATEWAY_TIMEOUT, "the bus did not take it in time").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::{decode, is_loopback_host};

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(decode("chat.%2A.x.%23").as_deref(), Some("chat.*.x.#"));
        assert_eq!(decode("a+b").as_deref(), Some("a b"));
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%2"), None);
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:8477",
            "localhost:1",
            "LOCALHOST",
            "[::1]:80",
            "127.1.2.3:9",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example:8477",
            "",
            "10.0.0.1:80",
            "[::2]:80",
            "localhost.evil.example:1",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
