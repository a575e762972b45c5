//! [`Context`]: what an operator's handlers get (the bus, its identity
//! and directories, its subscriptions), and the deliveries held while it
//! is halted.

use std::collections::VecDeque;
use std::path::Path;

use futures::stream::{SelectAll, StreamExt};
use futures::FutureExt;
use switchboard_proto::{ChatAddress, OperatorId, OperatorState, SendResult, ToPattern};

use crate::client::Bus;
use crate::error::{PublishError, ReplyError, SubscribeError};
use crate::launch::LaunchEnv;
use crate::subscription::{Dedupe, Delivery, Subscription};

/// What handlers get: the bus, the operator's identity and directories,
/// and its subscriptions.
pub struct Context {
    pub(super) bus: Bus,
    pub(super) id: OperatorId,
    pub(super) launch: LaunchEnv,
    pub(super) inbox: SelectAll<Subscription>,
    /// Each subscription drops its own repeats; this catches an envelope
    /// that two overlapping subscriptions both delivered.
    pub(super) dedupe: Dedupe,
    pub(super) state: OperatorState,
    pub(super) shutdown_requested: bool,
    pub(super) health: crate::HealthReport,
    /// Deliveries that arrived while halted, handed over at `resume`.
    pub(super) held: Held,
    pub(super) links: std::collections::BTreeMap<String, String>,
}

impl Context {
    /// Say in `ready` (and so in `switchboard status`) what this operator
    /// serves for people: a name and a URL (a dashboard, a web hook).
    /// Call it in [`Operator::start`](super::Operator::start), before ready goes out.
    pub fn advertise(&mut self, name: impl Into<String>, url: impl Into<String>) {
        self.links.insert(name.into(), url.into());
    }

    /// The health this operator reports in heartbeats: set it when its
    /// work cannot go on (`ctx.health().set(Health::Degraded, "...")`),
    /// and back to ok when it can. Clone it into tasks.
    pub fn health(&self) -> &crate::HealthReport {
        &self.health
    }

    /// The connection, to publish and request. Clone it into tasks.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// This operator's unique ID.
    pub fn id(&self) -> &OperatorId {
        &self.id
    }

    /// The launch environment it was started with.
    pub fn launch(&self) -> &LaunchEnv {
        &self.launch
    }

    /// Persistent directory (survives restarts), if the launcher gave one.
    pub fn state_dir(&self) -> Option<&Path> {
        self.launch.state_dir.as_deref()
    }

    /// Scratch directory (wiped when the operator stops), if given.
    pub fn scratch_dir(&self) -> Option<&Path> {
        self.launch.scratch_dir.as_deref()
    }

    /// The state the runtime reports in heartbeats.
    pub fn state(&self) -> OperatorState {
        self.state
    }

    /// Route envelopes matching `pattern` to [`Operator::message`](super::Operator::message):
    /// a [`Pattern`](switchboard_proto::Pattern), its text
    /// (`ctx.subscribe("chat.#.message")`) or a
    /// [`ChatPattern`](switchboard_proto::ChatPattern).
    pub async fn subscribe<P: ToPattern + ?Sized>(
        &mut self,
        pattern: &P,
    ) -> Result<(), SubscribeError> {
        let sub = self.bus.subscribe(pattern).await?;
        tracing::debug!(pattern = %sub.pattern(), "subscribed");
        self.inbox.push(sub);
        Ok(())
    }

    /// Answer the chat event `to` with `text`, in the room it came from
    /// (`send.<protocol>.<instance>.<room>.message`), with this operator
    /// as `source`, a fresh id, `in-reply-to` the event's id and the raw
    /// `room` header. See [`Bus::reply`].
    ///
    /// ```no_run
    /// # use switchboard_bus::{Context, Delivery, HandlerResult};
    /// # async fn message(ctx: &mut Context, d: Delivery) -> HandlerResult {
    /// if d.chat()?.text() == "!ping" {
    ///     ctx.reply(&d, "pong").await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ReplyError`]: `to` is not a chat event, or publishing failed.
    pub async fn reply(&self, to: &Delivery, text: impl Into<String>) -> Result<(), ReplyError> {
        self.bus.reply(to, text).await
    }

    /// Say `text` in `room` (`send.<protocol>.<instance>.<room>.message`),
    /// e.g. an address kept from an earlier
    /// [`ChatEvent::address`](switchboard_proto::ChatEvent::address). See
    /// [`Bus::send_text`].
    ///
    /// # Errors
    ///
    /// [`PublishError`] when publishing fails.
    pub async fn send(
        &self,
        room: &ChatAddress,
        text: impl Into<String>,
    ) -> Result<(), PublishError> {
        self.bus.send_text(room, text).await
    }

    /// Drop every subscription made with [`Context::subscribe`].
    /// Deliveries that had already arrived and were not handled (held
    /// while halted, or queued behind a slow handler) go with them: they
    /// are counted in the heartbeat's `discarded` counter and said once,
    /// never lost silently.
    pub fn clear_subscriptions(&mut self) {
        let mut discarded = self.held.clear();
        while let Some(Some(_)) = self.inbox.next().now_or_never() {
            discarded += 1;
        }
        if discarded > 0 {
            self.bus.stats().counter(DISCARDED).add(discarded);
            tracing::info!(
                discarded,
                "deliveries that arrived but were not handled were discarded with the subscriptions"
            );
        }
        self.inbox = SelectAll::new();
        self.bus.forget_refused_subscriptions();
    }

    /// Ask the runtime to shut down after the current handler returns.
    pub fn request_shutdown(&mut self) {
        self.shutdown_requested = true;
    }

    /// Refuse the send request `delivery`: tell its sender why
    /// (`{"ok": false, "error": "<error>"}`, a
    /// [`SendResult`](switchboard_proto::SendResult)) when it asked for an
    /// answer, and log it at debug level (a refusal is the sender's
    /// mistake, not the operator's). `error` is a sentence for the sender:
    /// it must not hold a secret.
    ///
    /// ```no_run
    /// # use switchboard_bus::{Context, Delivery, HandlerResult};
    /// # use switchboard_bus::send::Request;
    /// # async fn message(ctx: &mut Context, d: Delivery) -> HandlerResult {
    /// match Request::parse(&d, "irc", "libera") {
    ///     Ok(request) => { /* hand it to the connection */ }
    ///     Err(e) => ctx.refuse(&d, &e).await?,
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`PublishError`] when the answer cannot be published.
    pub async fn refuse(
        &self,
        delivery: &Delivery,
        error: &(impl std::fmt::Display + ?Sized),
    ) -> Result<(), PublishError> {
        tracing::debug!(subject = %delivery.subject, %error, "send request refused");
        match &delivery.reply {
            Some(reply) => {
                self.bus
                    .respond_json(reply, &SendResult::failed(error.to_string()))
                    .await
            }
            None => Ok(()),
        }
    }
}

/// The heartbeat counter of deliveries dropped with the subscriptions
/// (shutdown while halted, reload, restart in place).
pub const DISCARDED: &str = "discarded";

/// The heartbeat counter of deliveries shed while halted because the held
/// ones were over [`HELD_BYTES`] (the oldest go first).
pub const HELD_SHED: &str = "held_shed";

/// How many bytes of envelopes a halted operator holds for `resume`.
/// Without a bound, each subscription's queue (65,536 messages of up to
/// 1 MiB) could hold gigabytes.
pub const HELD_BYTES: usize = 64 << 20;

impl Context {
    /// Keep `d` for `resume`, shedding the oldest held ones past
    /// [`HELD_BYTES`] (counted in [`HELD_SHED`], said once).
    pub(super) fn hold(&mut self, d: Delivery) {
        let shed = self.held.push(d, HELD_BYTES);
        if shed > 0 {
            if self.bus.stats().counter(HELD_SHED).get() == 0 {
                tracing::warn!(
                    limit_bytes = HELD_BYTES,
                    "halted too long: the oldest held deliveries are shed (counted in held_shed)"
                );
            }
            self.bus.stats().counter(HELD_SHED).add(shed);
        }
    }
}

/// Deliveries held while halted, oldest first, bounded by the bytes of
/// their payloads.
#[derive(Default)]
pub(super) struct Held {
    queue: VecDeque<Delivery>,
    bytes: usize,
}

impl Held {
    /// Keep `d`, first dropping the oldest ones until it fits in `limit`
    /// bytes; returns how many were dropped. One delivery over the limit
    /// on its own is still kept (the limit bounds what piles up, not one
    /// message the server already accepted).
    pub(super) fn push(&mut self, d: Delivery, limit: usize) -> u64 {
        let size = d.wire().payload().len();
        let mut shed = 0u64;
        while self.bytes + size > limit {
            let Some(old) = self.queue.pop_front() else {
                break;
            };
            self.bytes -= old.wire().payload().len();
            shed += 1;
        }
        self.bytes += size;
        self.queue.push_back(d);
        shed
    }

    /// The oldest held delivery.
    pub(super) fn pop(&mut self) -> Option<Delivery> {
        let d = self.queue.pop_front()?;
        self.bytes -= d.wire().payload().len();
        Some(d)
    }

    /// Whether nothing is held.
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Drop everything held; returns how many there were.
    pub(super) fn clear(&mut self) -> u64 {
        let n = self.queue.len() as u64;
        self.queue.clear();
        self.bytes = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::Envelope;

    fn delivery(n: usize, bytes: usize) -> Delivery {
        Delivery::new(
            format!("chat.irc.net.r{n}.message"),
            Envelope::new("t", serde_json::Value::String("x".repeat(bytes))),
        )
    }

    fn size(d: &Delivery) -> usize {
        d.wire().payload().len()
    }

    #[test]
    fn held_in_order_within_the_limit() {
        let mut held = Held::default();
        let one = size(&delivery(1, 100));
        assert_eq!(held.push(delivery(1, 100), 3 * one), 0);
        assert_eq!(held.push(delivery(2, 100), 3 * one), 0);
        assert_eq!(
            held.pop().map(|d| d.subject),
            Some("chat.irc.net.r1.message".into())
        );
        assert_eq!(
            held.pop().map(|d| d.subject),
            Some("chat.irc.net.r2.message".into())
        );
        assert!(held.pop().is_none() && held.is_empty());
        assert_eq!(held.bytes, 0);
    }

    #[test]
    fn the_oldest_are_shed_past_the_limit() {
        let mut held = Held::default();
        let one = size(&delivery(1, 100));
        for n in 0..3 {
            assert_eq!(held.push(delivery(n, 100), 3 * one), 0);
        }
        // The fourth needs room for one more: the oldest goes.
        assert_eq!(held.push(delivery(3, 100), 3 * one), 1);
        // A big one pushes out all but what still fits beside it.
        assert_eq!(held.push(delivery(4, 200), 3 * one), 2);
        let left: Vec<String> = std::iter::from_fn(|| held.pop())
            .map(|d| d.subject)
            .collect();
        assert_eq!(left, ["chat.irc.net.r3.message", "chat.irc.net.r4.message"]);
    }

    #[test]
    fn one_over_the_limit_is_still_kept() {
        let mut held = Held::default();
        assert_eq!(held.push(delivery(1, 10), 1_000), 0);
        assert_eq!(held.push(delivery(2, 5_000), 1_000), 1);
        assert!(!held.is_empty());
        assert_eq!(held.clear(), 1);
        assert!(held.is_empty() && held.bytes == 0);
    }
}
