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
//! - [`Triggers`]: regex rules on chat text that answer in the room.
//!
//! A whole bot:
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

mod client;
mod config;
mod error;
mod launch;
mod logging;
mod operator;
mod options;
mod stats;
mod subscription;
mod trigger;

pub use client::Bus;
pub use config::{parse_config, ConfigError};
pub use error::{ConnectError, PublishError, RequestError, RequestErrorKind, SubscribeError};
pub use launch::{ControlMode, LaunchEnv, LaunchError, DEFAULT_HEARTBEAT};
pub use logging::{init_tracing, init_tracing_with_default};
pub use operator::{run, run_with, Context, HandlerError, HandlerResult, Operator, RunError};
pub use options::BusOptions;
pub use stats::{Counter, Stats};
pub use subscription::{Delivery, RawMessage, RawSubscription, Subscription};
pub use trigger::{ChatTrigger, TriggerError, Triggers, TriggersConfig};

/// The contract crate, re-exported so operators need one dependency.
pub use switchboard_proto as proto;
pub use switchboard_proto::{Envelope, Pattern};

/// The README's Rust examples, compiled by `cargo test --doc` so the front
/// page never shows code that does not build.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
