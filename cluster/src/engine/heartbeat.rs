//! The heartbeat and the fence: this host's incarnation registered and
//! renewed by compare-and-set, and the stop of everything when a renewal
//! is too old.

use crate::buckets::{host_key, HostRecord, HostState, REQUEST_TIMEOUT};
use crate::lease::{Seen, Validity, RENEW_INTERVAL};
use async_nats::jetstream::kv;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::time::{sleep, sleep_until, timeout};

use super::*;

/// Register an incarnation, then renew it until a peer declares it gone;
/// then again with a new epoch.
pub(super) async fn heartbeat(kv: kv::Store, options: EngineOptions, shared: Arc<Mutex<Shared>>) {
    let key = host_key(&options.host);
    let mut beat = 0u64;
    loop {
        let epoch = nuid::next().to_string();
        let mut rev = register(&kv, &key, &options, &epoch, &shared).await;
        let mut next = Instant::now() + RENEW_INTERVAL;
        loop {
            sleep_until(next.into()).await;
            let sent = Instant::now();
            next = sent + RENEW_INTERVAL;
            beat += 1;
            let record = HostRecord {
                state: HostState::Alive,
                epoch: epoch.clone(),
                labels: options.labels.clone(),
                beat,
                gone_by: None,
            };
            match timeout(RENEW_INTERVAL, kv.update(&key, encode(&record), rev)).await {
                Ok(Ok(r)) => {
                    rev = r;
                    let mut s = lock(&shared);
                    s.host_rev = r;
                    s.validity.acknowledged(sent);
                    s.streak_since.get_or_insert(sent);
                    if s.fenced && s.validity.valid(Instant::now()) {
                        tracing::info!("cluster: heartbeat renewed again, resuming");
                        s.fenced = false;
                    }
                }
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    lock(&shared).streak_since = None;
                    // Either an earlier renewal landed after its answer
                    // was lost (the record is still ours: adopt its
                    // revision, without extending validity), or a peer
                    // declared us gone.
                    match timeout(REQUEST_TIMEOUT, kv.entry(&key)).await {
                        Ok(Ok(Some(e))) if is_alive_epoch(&e, &epoch) => rev = e.revision,
                        Ok(Ok(_)) => {
                            tracing::warn!(
                                "cluster: this host was declared gone by a peer; \
                                 stopping everything and registering again"
                            );
                            let mut s = lock(&shared);
                            s.registered = false;
                            s.fence(Instant::now());
                            break;
                        }
                        _ => {}
                    }
                }
                // Timed out or failed: the fence task watches the clock.
                _ => lock(&shared).streak_since = None,
            }
        }
    }
}

pub(super) fn is_alive_epoch(e: &kv::Entry, epoch: &str) -> bool {
    e.operation == kv::Operation::Put
        && serde_json::from_slice::<HostRecord>(&e.value)
            .is_ok_and(|r| r.state == HostState::Alive && r.epoch == epoch)
}

/// Write our heartbeat for `epoch`: at once if the key is free or marked
/// gone, else after the previous incarnation's heartbeat stood still for
/// the TTL (a crash that left it behind). Returns its revision.
pub(super) async fn register(
    kv: &kv::Store,
    key: &str,
    options: &EngineOptions,
    epoch: &str,
    shared: &Mutex<Shared>,
) -> u64 {
    let record = encode(&HostRecord {
        state: HostState::Alive,
        epoch: epoch.to_owned(),
        labels: options.labels.clone(),
        beat: 0,
        gone_by: None,
    });
    let mut seen: Option<Seen> = None;
    loop {
        let sent = Instant::now();
        let written = match timeout(REQUEST_TIMEOUT, kv.entry(key)).await {
            Ok(Ok(Some(e))) if e.operation == kv::Operation::Put => {
                let alive = serde_json::from_slice::<HostRecord>(&e.value)
                    .is_ok_and(|r| r.state == HostState::Alive);
                let s = Seen::observe(seen, e.revision, sent);
                seen = Some(s);
                if !alive || s.expired(sent) {
                    timeout(REQUEST_TIMEOUT, kv.update(key, record.clone(), e.revision))
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    None
                }
            }
            Ok(Ok(_)) => timeout(REQUEST_TIMEOUT, kv.create(key, record.clone()))
                .await
                .ok()
                .and_then(Result::ok),
            _ => None,
        };
        if let Some(rev) = written {
            let mut s = lock(shared);
            s.epoch = epoch.to_owned();
            s.registered = true;
            s.host_rev = rev;
            s.validity = Validity::default();
            s.validity.acknowledged(sent);
            s.streak_since = Some(sent);
            s.fenced = false;
            tracing::info!(host = %options.host, %epoch, "cluster: host registered");
            return rev;
        }
        sleep(RENEW_INTERVAL).await;
    }
}

/// Fence when the last acknowledged renewal is too old.
pub(super) async fn fence(shared: Arc<Mutex<Shared>>) {
    loop {
        sleep(FENCE_CHECK).await;
        let now = Instant::now();
        let mut s = lock(&shared);
        if !s.fenced && !s.validity.valid(now) {
            s.fence(now);
        }
    }
}
