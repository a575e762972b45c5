//! The replay view: what the daemon's durable stream kept, read back by
//! subject patterns and a time or sequence range, like `switchboard
//! replay` (which prints; this one shows a page of it).
//!
//! Read with JetStream's message-get API (`$JS.API.STREAM.MSG.GET`), one
//! stored message per request, never with a consumer: the manifest grant
//! that allows it (`stream = ["read"]`) can then be exactly "look up
//! messages of the main stream", with nothing created on the server and
//! no way to touch another reader's consumer (a consumer grant cannot be
//! narrowed to one name per read; see
//! `switchboard_orchestrator::access::grants::StreamGrant::Read`). A get
//! takes a subject filter (NATS wildcards) and a start (a sequence or a
//! time) and answers the first stored message at or after it, so several
//! patterns are several cursors merged by sequence. A request is a
//! loopback round trip of well under a millisecond; a page is at most
//! [`MAX_LIMIT`] messages and [`MAX_SCANNED`] looked at.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use switchboard_bus::{Bus, RequestError};
use switchboard_proto::duration::parse_duration;
use switchboard_proto::{Pattern, Timestamp};

use crate::hub::MAX_TAIL_PAYLOAD;

/// Messages one page shows unless asked otherwise.
pub const DEFAULT_LIMIT: usize = 200;
/// Most messages one page shows.
pub const MAX_LIMIT: usize = 1000;
/// Most stored messages one page looks at (those a pattern with a `#` in
/// the middle reads and then filters out count too), so a sparse filter
/// over a large stream answers in bounded time and says where to go on.
pub const MAX_SCANNED: usize = 5000;
/// Most patterns at once.
pub const MAX_PATTERNS: usize = 8;
/// How long one page may take in all.
const BUDGET: Duration = Duration::from_secs(10);
/// How long one request to JetStream may take. A publish the server
/// refuses (no grant) gets no answer at all, so this is also how long a
/// missing grant takes to be reported.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// JetStream's "no message found" (err_code 10037).
const NO_MESSAGE: u32 = 10037;
/// JetStream's "stream not found".
const NO_STREAM: u32 = 10059;

/// Why a replay did not answer.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The request itself is wrong (a pattern, a bound, the limit).
    #[error("{0}")]
    Query(String),
    /// The daemon keeps no stream (`SWITCHBOARD_STREAM` was not set).
    #[error(
        "the daemon keeps no durable stream, so there is nothing to replay: turn on [stream] \
         (and JetStream) in switchboard.toml"
    )]
    NoStream,
    /// The stream does not answer this operator: no grant, or the server
    /// is away.
    #[error(
        "the stream `{stream}` did not answer: {source}; the dashboard's manifest needs \
         `stream = [\"read\"]` (then `switchboard ctl reload dashboard`), and the bus must be up"
    )]
    Unreachable {
        /// The stream.
        stream: String,
        /// The request's error.
        source: RequestError,
    },
    /// JetStream answered with an error.
    #[error("the stream `{stream}` refused the read: {description} (code {code})")]
    Server {
        /// The stream.
        stream: String,
        /// Its HTTP-like code.
        code: u16,
        /// Its description.
        description: String,
    },
}

switchboard_proto::error_kinds! {
    /// Coarse classes of [`ReplayError`].
    ReplayError => ReplayErrorKind { Query, NoStream, Unreachable, Server }
}

/// One end of the range: a stream sequence or a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// A stream sequence number.
    Seq(u64),
    /// A time.
    Time(Timestamp),
}

/// `text` as a bound: a sequence number (`1234`), a duration ago (`10m`,
/// `2h`, `1d`, as `switchboard replay --since`) or an RFC 3339 time.
///
/// ```
/// use switchboard_dashboard::replay::{parse_bound, Bound};
/// use switchboard_proto::Timestamp;
/// let now = Timestamp::parse("2026-12-01T12:00:00Z").unwrap();
/// assert_eq!(parse_bound("42", now).unwrap(), Bound::Seq(42));
/// assert_eq!(parse_bound("10m", now).unwrap(), Bound::Time(Timestamp::parse("2026-12-01T11:50:00Z").unwrap()));
/// assert!(parse_bound("yesterday", now).is_err());
/// ```
///
/// # Errors
///
/// [`ReplayError::Query`] for anything else.
pub fn parse_bound(text: &str, now: Timestamp) -> Result<Bound, ReplayError> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Bound::Seq(n)),
            _ => Err(ReplayError::Query(format!(
                "`{text}`: stream sequence numbers start at 1"
            ))),
        };
    }
    if let Ok(ago) = parse_duration(text) {
        let nanos = now.unix_nanos() - i128::try_from(ago.as_nanos()).unwrap_or(i128::MAX);
        return Timestamp::from_unix_nanos(nanos)
            .map(Bound::Time)
            .map_err(|_| ReplayError::Query(format!("`{text}` reaches too far back")));
    }
    Timestamp::parse(text).map(Bound::Time).map_err(|_| {
        ReplayError::Query(format!(
            "`{text}` is neither a stream sequence number (`1234`), a duration ago (`10m`, \
             `2h`, `1d`) nor an RFC 3339 time (`2026-12-01T08:00:00Z`)"
        ))
    })
}

/// What to read.
#[derive(Debug, Clone)]
pub struct Query {
    /// Shown when any one matches.
    pub patterns: Vec<Pattern>,
    /// Where to start.
    pub from: Bound,
    /// Where to stop (inclusive), if anywhere.
    pub to: Option<Bound>,
    /// Most messages to return.
    pub limit: usize,
}

impl Query {
    /// A query from the page's parameters (`pattern` repeated, `from`,
    /// `to`, `limit`), all text as typed. No pattern means `#`; no `from`
    /// the last hour.
    ///
    /// # Errors
    ///
    /// [`ReplayError::Query`] naming what is wrong.
    pub fn parse(
        patterns: &[String],
        from: Option<&str>,
        to: Option<&str>,
        limit: Option<&str>,
        now: Timestamp,
    ) -> Result<Query, ReplayError> {
        if patterns.len() > MAX_PATTERNS {
            return Err(ReplayError::Query(format!(
                "at most {MAX_PATTERNS} patterns at once"
            )));
        }
        let mut parsed = Vec::new();
        for text in patterns {
            parsed.push(Pattern::parse(text).map_err(|e| {
                ReplayError::Query(format!(
                    "`{text}` is not a pattern: {e} (tokens separated by `.`, `*` for one token, \
                     `#` for any number)"
                ))
            })?);
        }
        if parsed.is_empty() {
            parsed.push(Pattern::parse("#").map_err(|e| ReplayError::Query(e.to_string()))?);
        }
        fn non_empty(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|v| !v.is_empty())
        }
        let from = match non_empty(from) {
            Some(t) => parse_bound(t, now)?,
            None => parse_bound("1h", now)?,
        };
        let to = non_empty(to).map(|t| parse_bound(t, now)).transpose()?;
        let limit = match non_empty(limit) {
            None => DEFAULT_LIMIT,
            Some(t) => match t.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ReplayError::Query(format!(
                        "`limit` must be a number from 1 to {MAX_LIMIT}"
                    )))
                }
            },
        };
        Ok(Query {
            patterns: parsed,
            from,
            to,
            limit,
        })
    }

    /// The NATS subject filters to read, one cursor each: every pattern's
    /// tightest subjects, or `>` alone when one of them is everything.
    fn filters(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.patterns {
            for s in p.nats_plan().subjects {
                if s == ">" {
                    return vec![s];
                }
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out
    }

    fn matches(&self, subject: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(subject))
    }

    fn past_end(&self, m: &Message) -> bool {
        match self.to {
            None => false,
            Some(Bound::Seq(s)) => m.seq > s,
            Some(Bound::Time(t)) => m.stored_at > t,
        }
    }
}

/// One stored message, for the page (the tail's shape plus its sequence).
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    /// Its stream sequence number.
    pub seq: u64,
    /// Its subject.
    pub subject: String,
    /// When the stream stored it, milliseconds since the epoch.
    pub at_ms: u64,
    /// The payload as text (lossy UTF-8), at most [`MAX_TAIL_PAYLOAD`]
    /// bytes.
    pub payload: String,
    /// Whether `payload` was cut.
    pub truncated: bool,
}

/// One page of the replay.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The stream read.
    pub stream: String,
    /// The messages, in stream order.
    pub messages: Vec<Replayed>,
    /// Stored messages looked at (matching or not).
    pub scanned: usize,
    /// Whether more match after this page (within `to`).
    pub more: bool,
    /// The sequence to continue from (`from` of the next page).
    pub next: u64,
    /// The stream's first sequence when the read began (0 when empty).
    pub first_seq: u64,
    /// Its last sequence: when the read began, or the last message read
    /// if one was stored meanwhile (the page never shows a message past
    /// the stream's end it reports).
    pub last_seq: u64,
}

/// A stored message as JetStream's message-get answers it.
#[derive(Debug, Clone)]
struct Message {
    seq: u64,
    subject: String,
    stored_at: Timestamp,
    data: Vec<u8>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    err_code: u32,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct GetReply {
    message: Option<RawMessage>,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct RawMessage {
    subject: String,
    seq: u64,
    #[serde(default)]
    data: Option<String>,
    time: String,
}

#[derive(Deserialize)]
struct InfoReply {
    state: Option<InfoState>,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct InfoState {
    #[serde(default)]
    first_seq: u64,
    #[serde(default)]
    last_seq: u64,
    #[serde(default)]
    messages: u64,
}

/// Where one get starts.
#[derive(Debug, Clone, Copy)]
enum At {
    Seq(u64),
    Time(Timestamp),
}

/// The stream, through the dashboard's bus connection.
struct Stream<'a> {
    bus: &'a Bus,
    name: &'a str,
}

impl Stream<'_> {
    fn unreachable(&self, source: RequestError) -> ReplayError {
        ReplayError::Unreachable {
            stream: self.name.to_owned(),
            source,
        }
    }

    fn server(&self, e: ApiError) -> ReplayError {
        if e.err_code == NO_STREAM {
            return ReplayError::NoStream;
        }
        ReplayError::Server {
            stream: self.name.to_owned(),
            code: e.code,
            description: e.description,
        }
    }

    async fn request<R: for<'de> Deserialize<'de>>(
        &self,
        api: &str,
        body: &serde_json::Value,
    ) -> Result<R, ReplayError> {
        let subject = format!("$JS.API.{api}.{}", self.name);
        self.bus
            .request_json(&subject, body, REQUEST_TIMEOUT)
            .await
            .map_err(|e| self.unreachable(e))
    }

    /// First and last sequence (0, 0 when empty).
    async fn bounds(&self) -> Result<(u64, u64), ReplayError> {
        let r: InfoReply = self.request("STREAM.INFO", &serde_json::json!({})).await?;
        if let Some(e) = r.error {
            return Err(self.server(e));
        }
        let s = r.state.ok_or_else(|| ReplayError::Server {
            stream: self.name.to_owned(),
            code: 0,
            description: "the stream info has no state".into(),
        })?;
        Ok(if s.messages == 0 {
            (0, 0)
        } else {
            (s.first_seq, s.last_seq)
        })
    }

    /// The first stored message on `filter` at or after `at`.
    async fn next(&self, filter: &str, at: At) -> Result<Option<Message>, ReplayError> {
        let body = match at {
            At::Seq(seq) => serde_json::json!({ "seq": seq.max(1), "next_by_subj": filter }),
            At::Time(t) => {
                serde_json::json!({ "start_time": t.to_string(), "next_by_subj": filter })
            }
        };
        let r: GetReply = self.request("STREAM.MSG.GET", &body).await?;
        if let Some(e) = r.error {
            if e.err_code == NO_MESSAGE {
                return Ok(None);
            }
            return Err(self.server(e));
        }
        let Some(m) = r.message else {
            return Ok(None);
        };
        let bad = |what: &str| ReplayError::Server {
            stream: self.name.to_owned(),
            code: 0,
            description: format!("message {} has {what}", m.seq),
        };
        let data = match &m.data {
            None => Vec::new(),
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| bad("a payload that is not base64"))?,
        };
        let stored_at = Timestamp::parse(&m.time).map_err(|_| bad("an unreadable time"))?;
        Ok(Some(Message {
            seq: m.seq,
            subject: m.subject,
            stored_at,
            data,
        }))
    }
}

/// Read one page of `query` from stream `name`.
///
/// # Errors
///
/// [`ReplayError`]: no stream, no grant or no answer, or JetStream's own
/// error.
pub async fn read(bus: &Bus, name: &str, query: &Query) -> Result<Page, ReplayError> {
    let stream = Stream { bus, name };
    let (first_seq, last_seq) = stream.bounds().await?;
    let start = match query.from {
        Bound::Seq(s) => At::Seq(s),
        Bound::Time(t) => At::Time(t),
    };
    let mut page = Page {
        stream: name.to_owned(),
        messages: Vec::new(),
        scanned: 0,
        more: false,
        next: match start {
            At::Seq(s) => s,
            At::Time(_) => last_seq + 1,
        },
        first_seq,
        last_seq,
    };
    // One cursor per filter, each holding the next stored message on it.
    let mut cursors: Vec<(String, Option<Message>)> = Vec::new();
    for f in query.filters() {
        let head = stream.next(&f, start).await?;
        cursors.push((f, head));
    }
    let deadline = Instant::now() + BUDGET;
    loop {
        let Some(m) = cursors
            .iter()
            .filter_map(|(_, h)| h.as_ref())
            .min_by_key(|m| m.seq)
            .cloned()
        else {
            // Read to the end of the stream: go on from after its last.
            page.next = page.next.max(last_seq + 1);
            break;
        };
        if query.past_end(&m) {
            page.next = m.seq;
            break;
        }
        if page.messages.len() == query.limit
            || page.scanned == MAX_SCANNED
            || Instant::now() > deadline
        {
            page.more = true;
            page.next = m.seq;
            break;
        }
        page.scanned += 1;
        page.last_seq = page.last_seq.max(m.seq);
        if query.matches(&m.subject) {
            let cut = m.data.len() > MAX_TAIL_PAYLOAD;
            page.messages.push(Replayed {
                seq: m.seq,
                subject: m.subject.clone(),
                at_ms: u64::try_from(m.stored_at.unix_nanos() / 1_000_000).unwrap_or(0),
                payload: String::from_utf8_lossy(&m.data[..m.data.len().min(MAX_TAIL_PAYLOAD)])
                    .into_owned(),
                truncated: cut,
            });
        }
        page.next = m.seq + 1;
        for (filter, head) in &mut cursors {
            if head.as_ref().is_some_and(|h| h.seq == m.seq) {
                *head = stream.next(filter, At::Seq(m.seq + 1)).await?;
            }
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::parse("2026-12-01T12:00:00Z").expect("time")
    }

    fn query(patterns: &[&str]) -> Query {
        let p: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        Query::parse(&p, None, None, None, now()).expect("query")
    }

    #[test]
    fn bounds_parse_and_say_what_they_take() {
        assert_eq!(parse_bound(" 7 ", now()).ok(), Some(Bound::Seq(7)));
        assert_eq!(
            parse_bound("2026-12-01T08:00:00Z", now()).ok(),
            Some(Bound::Time(
                Timestamp::parse("2026-12-01T08:00:00Z").expect("t")
            ))
        );
        let e = parse_bound("0", now()).expect_err("0");
        assert_eq!(e.kind(), ReplayErrorKind::Query);
        let e = parse_bound("soon", now()).expect_err("soon");
        assert!(e.to_string().contains("RFC 3339"), "{e}");
    }

    #[test]
    fn queries_default_and_refuse_what_cannot_work() {
        let q = query(&[]);
        assert_eq!(q.filters(), [">"]);
        assert_eq!(q.limit, DEFAULT_LIMIT);
        let hour_ago = Timestamp::parse("2026-12-01T11:00:00Z").expect("t");
        assert_eq!(q.from, Bound::Time(hour_ago));
        let q = query(&["chat.#", "send.irc.#", "chat.irc.#"]);
        assert_eq!(
            q.filters(),
            [
                "chat",
                "chat.>",
                "send.irc",
                "send.irc.>",
                "chat.irc",
                "chat.irc.>"
            ]
        );
        assert_eq!(query(&["chat.#", "#"]).filters(), [">"]);
        let q = query(&["chat.#.message"]);
        assert!(q.matches("chat.irc.x.room.message"));
        assert!(!q.matches("chat.irc.x.room.join"));
        for (patterns, from, limit) in [
            (vec!["chat..x".to_string()], None, None),
            (vec!["a".to_string(); MAX_PATTERNS + 1], None, None),
            (vec![], Some("later"), None),
            (vec![], None, Some("0")),
            (vec![], None, Some("1001")),
        ] {
            let e = Query::parse(&patterns, from, None, limit, now()).expect_err("bad query");
            assert_eq!(e.kind(), ReplayErrorKind::Query, "{e}");
        }
    }
}
