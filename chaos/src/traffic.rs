//! `!ping` traffic through the ping bot while a fault happens, and what
//! it saw: how many pings were accepted, how many answered, the longest
//! silence.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use switchboard_bus::{Bus, ChatAddress, Envelope, Pattern};
use switchboard_proto::headers;
use switchboard_testkit::daemon::Daemon;

use crate::WAIT;

/// `!ping` every few milliseconds, answers collected by id.
pub struct Traffic {
    sent: Arc<Mutex<Vec<(String, Instant)>>>,
    answered: Arc<Mutex<Vec<(String, Instant)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What a traffic run saw.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Pings published (accepted by the client).
    pub sent: usize,
    /// Pings answered (distinct ids).
    pub answered: usize,
    /// The longest time without a single answer, from the first ping.
    pub longest_gap: Duration,
}

impl Traffic {
    /// Start pinging through `bus`, one ping every `every`.
    ///
    /// # Errors
    ///
    /// When the subscription to answers fails.
    pub async fn start(bus: &Bus, every: Duration) -> anyhow::Result<Traffic> {
        // Instance `chaos`, this client's source: authentic events.
        let room = ChatAddress::new("chaos", "chaos", "room");
        let mut answers = bus.subscribe(&Pattern::parse("send.chaos.#")?).await?;
        bus.sync().await?;
        let sent: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let answered: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let a = Arc::clone(&answered);
        let listen = tokio::spawn(async move {
            while let Some(d) = answers.next().await {
                if let Some(id) = d.header(headers::IN_REPLY_TO) {
                    a.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((id.to_owned(), Instant::now()));
                }
            }
        });
        let s = Arc::clone(&sent);
        let bus = bus.clone();
        let subject = room.event_subject("message");
        let send = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let env = Envelope::new(
                    "chaos",
                    json!({"text": "!ping", "sender": "chaos", "room": "room"}),
                )
                .with_header(headers::ROOM, "room");
                let id = env.id().unwrap_or_default().to_owned();
                if bus.publish(&subject, &env).await.is_ok() {
                    s.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((id, Instant::now()));
                }
            }
        });
        Ok(Traffic {
            sent,
            answered,
            tasks: vec![listen, send],
        })
    }

    /// Stop sending, let late answers arrive, and count.
    pub async fn stop(self) -> Tally {
        if let Some(send) = self.tasks.get(1) {
            send.abort();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        for t in &self.tasks {
            t.abort();
        }
        let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let answered = self
            .answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let ids: HashSet<&str> = answered.iter().map(|(id, _)| id.as_str()).collect();
        let sent_ids: HashSet<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
        let mut times: Vec<Instant> = answered.iter().map(|(_, t)| *t).collect();
        times.sort();
        let start = sent.first().map(|(_, t)| *t);
        let end = sent.last().map(|(_, t)| *t);
        let mut longest = Duration::ZERO;
        if let (Some(start), Some(end)) = (start, end) {
            let mut last = start;
            for t in times.iter().copied().filter(|t| *t <= end) {
                longest = longest.max(t.saturating_duration_since(last));
                last = last.max(t);
            }
            longest = longest.max(end.saturating_duration_since(last));
        }
        Tally {
            sent: sent_ids.len(),
            answered: ids.intersection(&sent_ids).count(),
            longest_gap: longest,
        }
    }
}

/// Traffic flows through `bot`, then `fault` runs, then traffic goes on
/// until answers are back (or [`WAIT`]).
pub async fn with_traffic<F, Fut>(rig: &Daemon, before: Duration, fault: F) -> anyhow::Result<Tally>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let traffic = Traffic::start(&rig.bus, Duration::from_millis(5)).await?;
    tokio::time::sleep(before).await;
    fault().await?;
    // Recovery: keep pinging until answers flow again for a while.
    let answered_now = || traffic.answered.lock().map(|a| a.len()).unwrap_or(0);
    let deadline = Instant::now() + WAIT;
    let mut seen = answered_now();
    let mut steady = 0;
    while steady < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = answered_now();
        steady = if now > seen { steady + 1 } else { 0 };
        seen = now;
    }
    Ok(traffic.stop().await)
}
