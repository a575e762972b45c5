//! A small XRPC server standing in for a Bluesky PDS + AppView (the real
//! network cannot be reached from the tests): exactly the endpoints the
//! operator calls, with the lexicons' request and response shapes and the
//! error bodies and status codes the reference PDS sends
//! (`{"error": "ExpiredToken", "message": "Token has expired"}` with 400,
//! `AuthenticationRequired` with 401, `RateLimitExceeded` with 429 and
//! `ratelimit-*` headers, `InvalidRequest` with 400).
//!
//! Tokens are JWT-shaped (the operator reads their `exp`), and every one
//! contains [`TOKEN_MARK`], so tests can look for it in logs and acks.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// In every token the server hands out.
pub const TOKEN_MARK: &str = "tokSECRETmark";
/// The bot account.
pub const BOT_DID: &str = "did:plc:bot";
/// Its handle.
pub const BOT_HANDLE: &str = "bot.test";
/// Its app password.
pub const PASSWORD: &str = "hunter2-app-pass-Zq8x";

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct Call {
    /// The NSID.
    pub nsid: String,
    /// When it arrived (Unix seconds, fractional).
    pub at: f64,
    /// The HTTP status answered.
    pub status: u16,
    /// The query string.
    pub query: String,
}

#[derive(Default)]
pub struct State {
    pub password: String,
    pub handles: HashMap<String, String>,
    access: HashMap<String, bool>,
    refresh: HashSet<String>,
    next_token: u64,
    pub access_ttl: Duration,
    pub calls: Vec<Call>,
    /// Newest first.
    notifications: Vec<Value>,
    pub seen_at: Option<String>,
    posts: HashMap<String, Value>,
    /// `createRecord` inputs, in order.
    pub created: Vec<Value>,
    rate_limited_until: HashMap<String, u64>,
    fail_next: HashMap<String, VecDeque<u16>>,
    lose_answer: HashSet<String>,
    next_cid: u64,
    /// DID documents served at `/<did>`, as a PLC directory does.
    pub did_docs: HashMap<String, Value>,
}

pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

impl State {
    fn token(&mut self, kind: &str, ttl: Duration) -> String {
        self.next_token += 1;
        let exp = now_secs() as u64 + ttl.as_secs();
        format!(
            "{}.{}.{TOKEN_MARK}{}",
            b64(r#"{"typ":"at+jwt","alg":"ES256K"}"#),
            b64(&format!(
                r#"{{"scope":"{kind}","sub":"{BOT_DID}","exp":{exp},"jti":"{}"}}"#,
                self.next_token
            )),
            self.next_token
        )
    }

    fn session(&mut self) -> Value {
        let access = self.token("com.atproto.appPass", self.access_ttl);
        let refresh = self.token("com.atproto.refresh", Duration::from_secs(90 * 86400));
        self.access.insert(access.clone(), false);
        self.refresh.insert(refresh.clone());
        json!({"accessJwt": access, "refreshJwt": refresh, "handle": BOT_HANDLE, "did": BOT_DID,
               "email": "bot@example.test", "emailConfirmed": true, "active": true})
    }

    fn cid(&mut self) -> String {
        self.next_cid += 1;
        format!("bafyreifake{:020}", self.next_cid)
    }
}

/// The server. Dropping it stops nothing (the task ends with the test's
/// runtime).
#[derive(Clone)]
pub struct Pds {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

type Answer = (StatusCode, Vec<(&'static str, String)>, Value);

fn error(status: u16, name: &str, message: &str) -> Answer {
    (
        StatusCode::from_u16(status).unwrap(),
        vec![],
        json!({"error": name, "message": message}),
    )
}

fn ok(body: Value) -> Answer {
    (StatusCode::OK, vec![], body)
}

impl Pds {
    pub async fn start() -> Pds {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut state = State {
            password: PASSWORD.to_string(),
            access_ttl: Duration::from_secs(7200),
            ..State::default()
        };
        state.handles.insert(BOT_HANDLE.into(), BOT_DID.into());
        state
            .handles
            .insert("alice.test".into(), "did:plc:alice".into());
        let pds = Pds {
            url,
            state: Arc::new(Mutex::new(state)),
        };
        let server = pds.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        pds
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Calls of `nsid` so far.
    pub fn calls(&self, nsid: &str) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.nsid == nsid)
            .cloned()
            .collect()
    }

    /// Every access token handed out so far stops working
    /// (`ExpiredToken`), as when its `exp` passes.
    pub fn expire_access_tokens(&self) {
        for v in self.lock().access.values_mut() {
            *v = true;
        }
    }

    /// Refresh tokens stop working too (revoked session).
    pub fn revoke_refresh_tokens(&self) {
        self.lock().refresh.clear();
    }

    /// The next call of `nsid` answers 429; so does every call of it until
    /// `secs` seconds from now (the `ratelimit-reset`).
    pub fn rate_limit(&self, nsid: &str, secs: u64) -> u64 {
        let reset = now_secs().ceil() as u64 + secs;
        self.lock().rate_limited_until.insert(nsid.into(), reset);
        reset
    }

    /// The next calls of `nsid` answer these statuses (5xx).
    pub fn fail_next(&self, nsid: &str, statuses: &[u16]) {
        self.lock()
            .fail_next
            .entry(nsid.into())
            .or_default()
            .extend(statuses);
    }

    /// The next call of `nsid` is carried out, but answered 502, as when
    /// the answer is lost on the way back.
    pub fn lose_next_answer(&self, nsid: &str) {
        self.lock().lose_answer.insert(nsid.into());
    }

    /// A post by `did` stored for `getPosts`; its URI and CID.
    pub fn add_post(&self, did: &str, handle: &str, rkey: &str, record: Value) -> (String, String) {
        let mut s = self.lock();
        let uri = format!("at://{did}/app.bsky.feed.post/{rkey}");
        let cid = s.cid();
        s.posts.insert(
            uri.clone(),
            json!({"uri": uri, "cid": cid, "author": {"did": did, "handle": handle},
                   "record": record, "indexedAt": "2026-01-01T00:00:00.000Z",
                   "likeCount": 0, "replyCount": 0, "repostCount": 0}),
        );
        (uri, cid)
    }

    /// A notification (newest so far) about `record` at `uri`: the
    /// lexicon's fields as arguments, in its order.
    #[allow(clippy::too_many_arguments)]
    pub fn notify(
        &self,
        reason: &str,
        uri: &str,
        cid: &str,
        author: (&str, &str),
        record: Value,
        indexed_at: &str,
        subject: Option<&str>,
    ) {
        let n = json!({"uri": uri, "cid": cid,
            "author": {"did": author.0, "handle": author.1, "displayName": "Someone", "labels": []},
            "reason": reason, "reasonSubject": subject, "record": record, "isRead": false,
            "indexedAt": indexed_at, "labels": []});
        let mut s = self.lock();
        s.notifications.insert(0, n);
    }

    /// `did`'s DID document, served at `/<did>` (PLC directory style).
    pub fn set_did_doc(&self, did: &str, doc: Value) {
        self.lock().did_docs.insert(did.into(), doc);
    }

    /// A stored post view.
    pub fn post(&self, uri: &str) -> Option<Value> {
        self.lock().posts.get(uri).cloned()
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let nsid = path.strip_prefix("/xrpc/").unwrap_or(&path).to_string();
        let params: Vec<(String, String)> = url_params(&query);
        let (mut status, mut headers, mut body) =
            self.answer(&method, &nsid, &params, bearer, input);
        if status == StatusCode::OK && self.lock().lose_answer.remove(&nsid) {
            (status, headers, body) = error(502, "InternalServerError", "Bad Gateway");
        }
        self.lock().calls.push(Call {
            nsid,
            at: now_secs(),
            status: status.as_u16(),
            query,
        });
        let mut response = Response::builder()
            .status(status)
            .header("content-type", "application/json; charset=utf-8");
        for (k, v) in headers {
            response = response.header(k, v);
        }
        response
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    }

    fn answer(
        &self,
        method: &Method,
        nsid: &str,
        params: &[(String, String)],
        bearer: Option<String>,
        input: Value,
    ) -> Answer {
        let mut s = self.lock();
        if let Some(did) = nsid.strip_prefix('/').filter(|d| d.starts_with("did:")) {
            // This server is also the PLC directory: GET /<did>.
            return match s.did_docs.get(did) {
                Some(doc) => ok(doc.clone()),
                None => error(404, "NotFound", "DID not registered"),
            };
        }
        if let Some(&until) = s.rate_limited_until.get(nsid) {
            if now_secs() < until as f64 {
                let left = until.saturating_sub(now_secs() as u64);
                let mut a = error(429, "RateLimitExceeded", "Rate Limit Exceeded");
                a.1 = vec![
                    ("ratelimit-limit", "30".into()),
                    ("ratelimit-remaining", "0".into()),
                    ("ratelimit-reset", until.to_string()),
                    ("ratelimit-policy", "30;w=300".into()),
                    ("retry-after", left.to_string()),
                ];
                return a;
            }
        }
        if let Some(status) = s.fail_next.get_mut(nsid).and_then(VecDeque::pop_front) {
            return error(status, "InternalServerError", "Internal Server Error");
        }
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let authed = |s: &mut State| -> Result<(), Answer> {
            match bearer.as_deref().map(|t| s.access.get(t).copied()) {
                None => Err(error(
                    401,
                    "AuthenticationRequired",
                    "Authentication Required",
                )),
                Some(None) => Err(error(400, "InvalidToken", "Token could not be verified")),
                Some(Some(true)) => Err(error(400, "ExpiredToken", "Token has expired")),
                Some(Some(false)) => Ok(()),
            }
        };
        let procedure = *method == Method::POST;
        match nsid {
            "com.atproto.server.createSession" if procedure => {
                let id = input["identifier"].as_str().unwrap_or("");
                let pw = input["password"].as_str().unwrap_or("");
                if (id == BOT_HANDLE || id == BOT_DID) && pw == s.password {
                    ok(s.session())
                } else {
                    error(
                        401,
                        "AuthenticationRequired",
                        "Invalid identifier or password",
                    )
                }
            }
            "com.atproto.server.refreshSession" if procedure => match bearer {
                Some(t) if s.refresh.remove(&t) => ok(s.session()),
                Some(t) if t.contains(TOKEN_MARK) => {
                    error(400, "ExpiredToken", "Token has been revoked")
                }
                _ => error(400, "InvalidToken", "Token could not be verified"),
            },
            "com.atproto.server.getSession" => match authed(&mut s) {
                Err(e) => e,
                Ok(()) => ok(json!({"handle": BOT_HANDLE, "did": BOT_DID, "active": true})),
            },
            "com.atproto.identity.resolveHandle" => {
                match param("handle").and_then(|h| s.handles.get(&h).cloned()) {
                    Some(did) => ok(json!({"did": did})),
                    None => error(400, "InvalidRequest", "Unable to resolve handle"),
                }
            }
            "app.bsky.notification.listNotifications" => {
                if let Err(e) = authed(&mut s) {
                    return e;
                }
                let limit: usize = match param("limit").map(|l| l.parse::<usize>()) {
                    None => 50,
                    Some(Ok(l)) if (1..=100).contains(&l) => l,
                    Some(_) => {
                        return error(400, "InvalidRequest", "limit must be between 1 and 100")
                    }
                };
                let key = |n: &Value| {
                    format!(
                        "{}|{}",
                        n["indexedAt"].as_str().unwrap_or(""),
                        n["uri"].as_str().unwrap_or("")
                    )
                };
                let mut all = s.notifications.clone();
                all.sort_by_key(|n| std::cmp::Reverse(key(n)));
                let start = match param("cursor") {
                    None => 0,
                    Some(c) => all.iter().position(|n| key(n) < c).unwrap_or(all.len()),
                };
                let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
                let more = start + page.len() < all.len();
                let mut out =
                    json!({"notifications": page, "priority": false, "seenAt": s.seen_at});
                if more {
                    out["cursor"] = json!(key(page.last().unwrap()));
                }
                ok(out)
            }
            "app.bsky.notification.updateSeen" if procedure => {
                if let Err(e) = authed(&mut s) {
                    return e;
                }
                match input["seenAt"].as_str() {
                    Some(t) => {
                        s.seen_at = Some(t.to_string());
                        (StatusCode::OK, vec![], Value::Null)
                    }
                    None => error(
                        400,
                        "InvalidRequest",
                        "Input must have the property \"seenAt\"",
                    ),
                }
            }
            "app.bsky.feed.getPosts" => {
                if let Err(e) = authed(&mut s) {
                    return e;
                }
                let uris: Vec<&String> = params
                    .iter()
                    .filter(|(k, _)| k == "uris")
                    .map(|(_, v)| v)
                    .collect();
                if uris.len() > 25 {
                    return error(
                        400,
                        "InvalidRequest",
                        "uris must not have more than 25 elements",
                    );
                }
                let posts: Vec<Value> = uris
                    .iter()
                    .filter_map(|u| s.posts.get(*u).cloned())
                    .collect();
                ok(json!({"posts": posts}))
            }
            "com.atproto.repo.createRecord" if procedure => {
                if let Err(e) = authed(&mut s) {
                    return e;
                }
                if input["repo"] != BOT_DID {
                    return error(400, "InvalidRequest", "Could not find repo");
                }
                let collection = input["collection"].as_str().unwrap_or("").to_string();
                let rkey = input["rkey"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("auto{}", s.next_cid));
                let uri = format!("at://{BOT_DID}/{collection}/{rkey}");
                if s.created.iter().any(|c| c["uri"] == uri) {
                    return error(400, "InvalidRequest", "Record already exists");
                }
                let cid = s.cid();
                let record = input["record"].clone();
                if collection == "app.bsky.feed.post" {
                    s.posts.insert(
                        uri.clone(),
                        json!({"uri": uri, "cid": cid,
                        "author": {"did": BOT_DID, "handle": BOT_HANDLE}, "record": record,
                        "indexedAt": "2026-01-01T00:00:00.000Z"}),
                    );
                }
                let mut stored = input.clone();
                stored["uri"] = json!(uri);
                stored["cid"] = json!(cid);
                s.created.push(stored);
                ok(
                    json!({"uri": uri, "cid": cid, "commit": {"cid": "bafycommit", "rev": "3l3qo2vutsw2b"}, "validationStatus": "valid"}),
                )
            }
            _ => error(501, "MethodNotImplemented", "Method Not Implemented"),
        }
    }
}

/// Query pairs, percent-decoded (a key may repeat).
pub fn url_params(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}
