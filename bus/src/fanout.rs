//! One NATS subscription per subject for many patterns of one client.
//!
//! nats-server sends a client one copy of a message per matching
//! subscription. A client holding hundreds of patterns whose plans overlap
//! (`#.a` and `#.b` are both `>` filtered locally) would get hundreds of
//! copies of every message; a burst then fills the server's pending buffer
//! for the client (64 MiB by default) and the server cuts it off as a slow
//! consumer (issue 21: half of a 3,000-envelope burst lost).
//!
//! So the first subscription to a NATS subject reads it directly (the usual
//! case: no extra hop, nothing shared), and every further subscription to
//! the same subject shares one NATS subscription whose messages a small
//! task hands to each of them. A subject is then sent to the client at most
//! twice, however many patterns need it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt as _};
use tokio::sync::mpsc;

use crate::stats::Stats;

/// Where one NATS subject's messages come from for one subscription.
pub(crate) enum Source {
    /// Its own NATS subscription.
    Direct(async_nats::Subscriber),
    /// Its share of a NATS subscription read by a fan-out task.
    Shared(mpsc::Receiver<async_nats::Message>),
}

impl Stream for Source {
    type Item = async_nats::Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Source::Direct(s) => s.poll_next_unpin(cx),
            Source::Shared(r) => r.poll_recv(cx),
        }
    }
}

/// The NATS subjects a client's subscriptions read, and who reads them.
#[derive(Debug, Default)]
pub(crate) struct Fanout {
    subjects: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug, Default)]
struct Entry {
    /// Subscriptions reading this subject directly (0 or 1 after the
    /// first; more only while a shared one is being set up).
    direct: usize,
    shared: Option<Shared>,
}

#[derive(Debug)]
struct Shared {
    routes: Arc<Mutex<Vec<Route>>>,
    task: tokio::task::AbortHandle,
}

#[derive(Debug)]
struct Route {
    id: u64,
    tx: mpsc::Sender<async_nats::Message>,
}

/// What a subscription took from the [`Fanout`]; given back on drop.
#[derive(Debug)]
pub(crate) struct Lease {
    fanout: Option<Arc<Fanout>>,
    direct: Vec<String>,
    routes: Vec<(String, u64)>,
}

/// The answer of [`Fanout::claim`].
pub(crate) enum Claim {
    /// Nobody reads the subject yet: subscribe to it directly.
    Direct,
    /// A share of the existing fan-out.
    Shared(mpsc::Receiver<async_nats::Message>, u64),
    /// Someone reads it directly: make a shared subscription
    /// ([`Fanout::share`]).
    NeedsShared,
}

static NEXT_ROUTE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Fanout {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.subjects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How `subject` can be read by one more subscription.
    pub(crate) fn claim(&self, subject: &str, capacity: usize) -> Claim {
        let mut subjects = self.lock();
        let entry = subjects.entry(subject.to_owned()).or_default();
        if let Some(shared) = &entry.shared {
            let (tx, rx) = mpsc::channel(capacity);
            let id = NEXT_ROUTE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            shared
                .routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Route { id, tx });
            return Claim::Shared(rx, id);
        }
        if entry.direct == 0 {
            entry.direct = 1;
            return Claim::Direct;
        }
        Claim::NeedsShared
    }

    /// A direct claim whose NATS subscription failed.
    pub(crate) fn unclaim_direct(&self, subject: &str) {
        self.release(subject, None);
    }

    /// Start fanning out `sub` (a fresh NATS subscription to `subject`),
    /// unless another subscription did meanwhile; either way, a share of
    /// it.
    pub(crate) fn share(
        &self,
        subject: &str,
        sub: async_nats::Subscriber,
        capacity: usize,
        stats: &Arc<Stats>,
    ) -> (mpsc::Receiver<async_nats::Message>, u64) {
        let mut subjects = self.lock();
        let entry = subjects.entry(subject.to_owned()).or_default();
        let (tx, rx) = mpsc::channel(capacity);
        let id = NEXT_ROUTE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let route = Route { id, tx };
        match &entry.shared {
            // Lost a race: `sub` is dropped (unsubscribed).
            Some(shared) => shared
                .routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(route),
            None => {
                let routes = Arc::new(Mutex::new(vec![route]));
                let task = tokio::spawn(pump(
                    subject.to_owned(),
                    sub,
                    Arc::clone(&routes),
                    Arc::clone(stats),
                ))
                .abort_handle();
                entry.shared = Some(Shared { routes, task });
            }
        }
        (rx, id)
    }

    /// Give back a direct read (`route` None) or a share of `subject`.
    fn release(&self, subject: &str, route: Option<u64>) {
        let mut subjects = self.lock();
        let Some(entry) = subjects.get_mut(subject) else {
            return;
        };
        match route {
            None => entry.direct = entry.direct.saturating_sub(1),
            Some(id) => {
                if let Some(shared) = &entry.shared {
                    let mut routes = shared.routes.lock().unwrap_or_else(|p| p.into_inner());
                    routes.retain(|r| r.id != id);
                    if routes.is_empty() {
                        drop(routes);
                        // Dropping the task's subscriber unsubscribes.
                        shared.task.abort();
                        entry.shared = None;
                    }
                }
            }
        }
        if entry.direct == 0 && entry.shared.is_none() {
            subjects.remove(subject);
        }
    }
}

impl Lease {
    pub(crate) fn new(fanout: &Arc<Fanout>) -> Lease {
        Lease {
            fanout: Some(Arc::clone(fanout)),
            direct: Vec::new(),
            routes: Vec::new(),
        }
    }

    pub(crate) fn add_direct(&mut self, subject: &str) {
        self.direct.push(subject.to_owned());
    }

    pub(crate) fn add_route(&mut self, subject: &str, id: u64) {
        self.routes.push((subject.to_owned(), id));
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(fanout) = &self.fanout else { return };
        for subject in &self.direct {
            fanout.release(subject, None);
        }
        for (subject, id) in &self.routes {
            fanout.release(subject, Some(*id));
        }
    }
}

/// Hands each message of a shared NATS subscription to every subscription
/// sharing it. Never waits for a slow one: a full queue drops that copy
/// (counted in `dropped`, warned once per burst), as async-nats does for a
/// direct subscription.
async fn pump(
    subject: String,
    mut sub: async_nats::Subscriber,
    routes: Arc<Mutex<Vec<Route>>>,
    stats: Arc<Stats>,
) {
    while let Some(msg) = sub.next().await {
        let routes = routes.lock().unwrap_or_else(|p| p.into_inner());
        for route in routes.iter() {
            if let Err(mpsc::error::TrySendError::Full(_)) = route.tx.try_send(msg.clone()) {
                stats.slow_consumer(&subject);
            }
        }
    }
}
