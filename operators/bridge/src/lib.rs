//! The bridge operator: config-driven gateways (like Matterbridge) that
//! relay chat between rooms on different instances and protocols.
//!
//! A gateway lists members (`protocol`, `instance`, `room`, `direction`
//! `in`/`out`/`inout`). What is said in an `in`/`inout` member is sent to
//! every other `out`/`inout` member as `<{nick}@{protocol}> text` (the
//! gateway's `format`), through the protocol operators' ordinary
//! `send.….message` requests.
//!
//! Echoes and duplicates (Matterbridge's most reported bugs) are prevented
//! in [`relay`]: a relayed envelope carries the [`relay::ORIGIN_HEADER`]
//! and is never relayed again, nothing goes back into the room it came
//! from, the bridge ignores its own envelopes, and the id of a relayed
//! envelope is derived from (original id, target room), so two bridges on
//! the same rooms publish the same id and the receiving operator's
//! dedupe keeps one; and a protocol that shows the bot its own posts
//! cannot loop them back ([`echo`]). Each gateway sends through one ordered, rate-limited,
//! bounded queue ([`queue`]).

pub mod config;
pub mod echo;
pub mod operator;
pub mod queue;
pub mod relay;

pub use config::{BridgeConfig, ConfigError};
pub use operator::Bridge;
