//! Switchboard's operator SDK: envelopes over NATS.
//!
//! This is the only crate in Switchboard that talks to NATS. It gives:
//!
//! - [`Bus`]: connect (from the launch environment or [`BusOptions`]),
//!   publish envelopes, subscribe by `*`/`#` [`Pattern`] (filtered,
//!   de-duplicated, malformed payloads counted, never returned),
//!   request/reply.
//! - [`Operator`] + [`run`]: the runtime every operator wants: ready,
//!   heartbeats, control verbs with acks, signals, clean shutdown.
//! - [`Delivery::chat`] (who said what, where) and [`Context::reply`] (answer
//!   in the same room): a command bot in a few lines.
//! - [`Triggers`]: regex rules on chat text that answer in the room,
//!   rate-limited per room, sender and network.
//! - [`authentic`]: whether an envelope's `source` owns its subject; the
//!   runtime drops forged ones before the handler.
//! - For protocol operators, the plumbing each needs: [`send`] (is this a
//!   send request for me, and its body) with [`Context::refuse`] (say
//!   why not), [`Secret`] (used, never printed), [`ConfigError::invalid`]
//!   and [`duration`] for their own config checks.
//!
//! Every error type has a `kind()` and keeps its cause as `source()`.
//!
//! An operator that answers a command:
//!
//! ```no_run
//! use switchboard_bus::{run, Context, Delivery, HandlerResult, Operator};
//!
//! struct Ping;
//!
//! impl Operator for Ping {
//!     type Config = serde_json::Value;
//!
//!     async fn start(&mut self, ctx: &mut Context, _: serde_json::Value) -> HandlerResult {
//!         ctx.subscribe("chat.#.message").await?;
//!         Ok(())
//!     }
//!
//!     async fn message(&mut self, ctx: &mut Context, d: Delivery) -> HandlerResult {
//!         if d.chat()?.text() == "!ping" {
//!             ctx.reply(&d, "pong").await?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), switchboard_bus::RunError> {
//!     run(Ping).await
//! }
//! ```
//!
//! The same with [`Triggers`]:
//!
//! ```no_run
//! use switchboard_bus::Triggers;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let bot = Triggers::new().on_chat(r"^!ping\b", |_| Some("pong".into()))?;
//!     switchboard_bus::run(bot).await?;
//!     Ok(())
//! }
//! ```

pub mod authentic;
mod client;
mod config;
mod error;
mod fanout;
mod health;
mod launch;
mod logging;
mod operator;
mod options;
mod ratelimit;
mod secret;
pub mod send;
mod stats;
pub mod stream;
mod subscription;
mod trigger;
pub mod usage;

pub use client::Bus;
pub use config::{duration, parse_config, ConfigError, ConfigErrorKind};
pub use error::{
    BoxError, ConnectError, ConnectErrorKind, PublishError, PublishErrorKind, ReplyError,
    ReplyErrorKind, RequestError, RequestErrorKind, SubscribeError, SubscribeErrorKind,
};
pub use health::HealthReport;
pub use launch::{secret, ControlMode, LaunchEnv, LaunchError, LaunchErrorKind, DEFAULT_HEARTBEAT};
pub use logging::{
    default_filter, env_filter, init_tracing, init_tracing_with, init_tracing_with_default,
    json_format,
};
pub use operator::{
    run, run_with, Context, HandlerError, HandlerErrorKind, HandlerResult, Operator, RunError,
    RunErrorKind,
};
pub use options::BusOptions;
pub use ratelimit::RateLimit;
pub use secret::Secret;
pub use stats::{Counter, Stats};
pub use subscription::{Delivery, RawMessage, RawSubscription, Subscription};
pub use trigger::{
    AnswerLimits, ChatTrigger, TriggerError, TriggerErrorKind, Triggers, TriggersConfig,
    RATE_LIMITED_COUNTER,
};

/// The contract crate, re-exported so operators need one dependency.
pub use switchboard_proto as proto;
pub use switchboard_proto::{ChatAddress, ChatEvent, ChatPattern, Envelope, Pattern};

/// The README's Rust examples, compiled by `cargo test --doc` so the front
/// page never shows code that does not build.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
