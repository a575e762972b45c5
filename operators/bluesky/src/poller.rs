//! The polling strategy: every `polling.interval`, read
//! `listNotifications` page by page (newest first) back to the last one
//! handled, publish what is new oldest first, and `updateSeen`.
//!
//! Exactly once across restarts: the high-water mark (`poll.json`) is the
//! newest `indexedAt` handled plus the URIs handled at that very instant
//! (several notifications can share one), saved after each notification
//! is on the bus. A notification older than the mark, or at the mark and
//! already listed, is not published again.

use std::collections::{HashMap, HashSet};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::api::{Api, ApiError};
use crate::config::BskyConfig;
use crate::inbound::{from_notification, thread_root};
use crate::lexicon::{
    nsid, GetPostsOutput, ListNotificationsOutput, Notification, UpdateSeenInput,
};
use crate::store::{self, Account, PollMark, Store};

/// Most pages read back to the mark in one poll. Every page down to the
/// mark must be read before anything is published (the oldest goes
/// first), so this only bounds memory after a very long absence: beyond
/// it (100 000 notifications at 100 a page) the older ones are skipped,
/// with a warning.
pub const MAX_PAGES: usize = 1000;
/// `getPosts` takes at most this many URIs.
const GET_POSTS_MAX: usize = 25;

/// The poller's memory.
#[derive(Debug)]
pub struct Poller {
    account: Account,
    store: Store,
    mark: PollMark,
    at: OffsetDateTime,
}

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

impl Poller {
    /// The saved mark of `account`, else one at `process_from` (default:
    /// now), saved at once so that a restart does not move "now" past
    /// notifications that arrived in between.
    pub fn new(account: Account, store: Store, process_from: Option<OffsetDateTime>) -> Poller {
        let saved = store
            .load::<PollMark>(store::POLL)
            .filter(|m| m.account.as_ref() == Some(&account))
            .and_then(|m| parse_time(&m.indexed_at).map(|at| (m, at)));
        let (mark, at) = match saved {
            Some(found) => found,
            None => {
                let at = process_from.unwrap_or_else(OffsetDateTime::now_utc);
                let mark = PollMark {
                    account: Some(account.clone()),
                    indexed_at: at.format(&Rfc3339).unwrap_or_default(),
                    uris: Vec::new(),
                };
                if let Err(e) = store.save(store::POLL, &mark) {
                    tracing::warn!(error = %e, "cannot save the polling mark");
                }
                (mark, at)
            }
        };
        Poller {
            account,
            store,
            mark,
            at,
        }
    }

    /// The account it polls for.
    pub fn account(&self) -> &Account {
        &self.account
    }

    fn is_new(&self, n: &Notification, at: OffsetDateTime) -> bool {
        at > self.at || (at == self.at && !self.mark.uris.contains(&n.uri))
    }

    /// One poll. Returns how many notifications were published.
    ///
    /// # Errors
    ///
    /// [`ApiError`] when a call failed after its retries; what was
    /// published before stays published and marked.
    pub async fn poll(&mut self, api: &mut Api, config: &BskyConfig) -> Result<usize, ApiError> {
        let limit = config.polling.page_size.to_string();
        let mut fresh: Vec<(Notification, OffsetDateTime)> = Vec::new();
        let mut seen = HashSet::new();
        let mut cursor: Option<String> = None;
        for page_number in 1..=MAX_PAGES {
            let mut params = vec![("limit", limit.as_str())];
            if let Some(c) = &cursor {
                params.push(("cursor", c.as_str()));
            }
            let page: ListNotificationsOutput =
                api.query(nsid::LIST_NOTIFICATIONS, &params).await?;
            let mut reached_old = false;
            for n in page.notifications {
                let Some(at) = parse_time(&n.indexed_at) else {
                    api.counters.skipped.inc();
                    tracing::warn!(uri = %n.uri, "notification with an unreadable indexedAt; skipped");
                    continue;
                };
                if !self.is_new(&n, at) {
                    reached_old = true;
                    continue;
                }
                if seen.insert(n.uri.clone()) {
                    fresh.push((n, at));
                }
            }
            match page.cursor {
                Some(next) if !reached_old && Some(&next) != cursor.as_ref() => {
                    if page_number == MAX_PAGES {
                        tracing::warn!(pages = MAX_PAGES, "more unread notifications than one poll reads; the older ones are skipped");
                    }
                    cursor = Some(next);
                }
                _ => break,
            }
        }
        // Oldest first; notifications at one instant keep the server's
        // order reversed (it lists newest first).
        fresh.reverse();
        fresh.sort_by_key(|(_, at)| *at);
        let roots = subject_roots(api, &fresh).await;
        let mut published = 0;
        let mut newest: Option<String> = None;
        for (n, at) in &fresh {
            if config.publishes(&n.reason) {
                let root = n.reason_subject.as_ref().and_then(|s| roots.get(s));
                let event = from_notification(n, root.map(String::as_str));
                if let Err(e) = api.publisher().event(&event).await {
                    // Not marked: published at the next poll.
                    tracing::warn!(error = %e, "cannot publish a notification; will try at the next poll");
                    break;
                }
                api.counters.notifications.inc();
                published += 1;
            } else {
                api.counters.skipped.inc();
            }
            self.advance(&n.uri, *at, &n.indexed_at);
            newest = Some(n.indexed_at.clone());
        }
        if let Some(seen_at) = newest {
            let input = serde_json::to_value(UpdateSeenInput { seen_at: &seen_at })
                .unwrap_or(serde_json::Value::Null);
            if let Err(e) = api.procedure_no_output(nsid::UPDATE_SEEN, input).await {
                tracing::info!(error = %e, "updateSeen failed (notifications stay unread in apps)");
            }
        }
        Ok(published)
    }

    fn advance(&mut self, uri: &str, at: OffsetDateTime, text: &str) {
        if at > self.at {
            self.at = at;
            self.mark.indexed_at = text.to_string();
            self.mark.uris.clear();
        }
        self.mark.uris.push(uri.to_string());
        if let Err(e) = self.store.save(store::POLL, &self.mark) {
            tracing::warn!(error = %e, "cannot save the polling mark; a restart may publish again");
        }
    }
}

/// The thread roots of the posts liked or reposted, by URI.
async fn subject_roots(
    api: &mut Api,
    fresh: &[(Notification, OffsetDateTime)],
) -> HashMap<String, String> {
    let subjects = fresh
        .iter()
        .filter_map(|(n, _)| n.reason_subject.as_deref());
    thread_roots(api, subjects).await
}

/// The thread roots of the posts among `uris` (others are skipped), by
/// URI: `getPosts`, 25 at a time. A failed lookup leaves them out: the
/// event's room is then the post itself. Polling and the firehose both
/// route likes and reposts with it.
pub(crate) async fn thread_roots<'a>(
    api: &mut Api,
    uris: impl IntoIterator<Item = &'a str>,
) -> HashMap<String, String> {
    let wanted: Vec<&str> = uris
        .into_iter()
        .filter(|s| s.starts_with("at://") && s.contains("/app.bsky.feed.post/"))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut roots = HashMap::new();
    for chunk in wanted.chunks(GET_POSTS_MAX) {
        let params: Vec<(&str, &str)> = chunk.iter().map(|u| ("uris", *u)).collect();
        match api.query::<GetPostsOutput>(nsid::GET_POSTS, &params).await {
            Ok(out) => {
                for p in out.posts {
                    roots.insert(p.uri.clone(), thread_root(&p.uri, &p.record));
                }
            }
            Err(e) => {
                tracing::info!(error = %e, "getPosts failed; likes and reposts go to the post's own room")
            }
        }
    }
    roots
}
