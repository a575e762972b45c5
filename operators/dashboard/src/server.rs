//! The HTTP side: the page, `/metrics`, JSON and server-sent-event
//! endpoints, and the one state-changing request (`POST /api/ctl`), which
//! needs the token and goes to the daemon's own permission-checked API.
//!
//! | Route | What |
//! | --- | --- |
//! | `GET /` | the page (static, embedded) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /api/snapshot` | bus state, the daemon's status, rates (JSON) |
//! | `GET /api/events` | SSE: a `snapshot` event after every status poll |
//! | `GET /api/tail?pattern=chat.#` | SSE: `seen` events (the buffer, then live) matching a `*`/`#` pattern; `lagged` when some were skipped |
//! | `GET /api/logs?id=<id>` | SSE: the operator's last 100 lines, then new ones, as `line` events |
//! | `POST /api/ctl` | `{"verb", "target"}` with `Authorization: Bearer <token>`: the daemon's `CtlReply` |

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
use switchboard_proto::api::{methods, CtlReply, CtlRequest, LogLine, LogsReply, LogsRequest};
use switchboard_proto::{api_subject, Pattern, Verb};
use tokio::sync::{broadcast, watch};

use crate::config::Secret;
use crate::hub::{Hub, Seen};

/// The page, embedded: no build step, no files to install.
const PAGE: &str = include_str!("page.html");

/// How long a request to the daemon's API may take.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// What handlers share.
#[derive(Clone)]
pub struct App {
    /// Live state.
    pub hub: Arc<Hub>,
    /// The operator's bus connection (its API grants).
    pub bus: Bus,
    /// The token, if any.
    pub token: Option<Secret>,
    /// Whether it listens on loopback (then only loopback `Host` names are served).
    pub loopback: bool,
    /// Flips to true at stop: endless streams end so the server can.
    pub stop: watch::Receiver<bool>,
}

/// The routes.
pub fn router(app: App) -> Router {
    let loopback = app.loopback;
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/api/snapshot", get(snapshot))
        .route("/api/events", get(events))
        .route("/api/tail", get(tail))
        .route("/api/logs", get(logs))
        .route("/api/ctl", post(ctl))
        .with_state(app)
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| host_check(loopback, req, next),
        ))
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

async fn metrics(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        app.hub.metrics(),
    )
        .into_response()
}

async fn snapshot(State(app): State<App>) -> Response {
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

async fn events(State(app): State<App>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = app.hub.updates.subscribe();
    let hub = Arc::clone(&app.hub);
    let s = stream::unfold((rx, hub, true), |(mut rx, hub, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        rx.borrow_and_update();
        let ev = json_event("snapshot", &hub.snapshot());
        Some((Ok(ev), (rx, hub, false)))
    });
    Sse::new(until_stop(s, app.stop.clone())).keep_alive(KeepAlive::default())
}

#[derive(Deserialize)]
struct TailQuery {
    #[serde(default)]
    pattern: Option<String>,
}

async fn tail(State(app): State<App>, Query(q): Query<TailQuery>) -> Response {
    let text = q
        .pattern
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "#".into());
    let pattern = match Pattern::parse(text.trim()) {
        Ok(p) => p,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("`{text}` is not a pattern: {e} (tokens separated by `.`, `*` for one token, `#` for any number)"),
            )
                .into_response()
        }
    };
    // Subscribe before reading the buffer: a message in between shows
    // twice at worst, never not at all.
    let rx = app.hub.seen.subscribe();
    let buffered: Vec<Arc<Seen>> = app.hub.tail();
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

async fn logs(State(app): State<App>, Query(q): Query<LogsQuery>) -> Response {
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
}

async fn ctl(State(app): State<App>, headers: HeaderMap, body: String) -> Response {
    let Some(token) = &app.token else {
        app.hub.counters.unauthorized.inc();
        return (
            StatusCode::FORBIDDEN,
            "this dashboard has no token, so it changes nothing: set `token` in its manifest \
             ([secrets] token = { file = \"...\" }) to enable the buttons",
        )
            .into_response();
    };
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !offered.is_some_and(|o| token.matches(o)) {
        app.hub.counters.unauthorized.inc();
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a missing or wrong token: send `Authorization: Bearer <token>` (the page asks for it)",
        )
            .into_response();
    }
    let body: CtlBody = match serde_json::from_str(&body) {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected {{\"verb\": \"halt|resume|reload|restart|shutdown\", \"target\": \"<id or glob>\"}}: {e}"),
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

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

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
