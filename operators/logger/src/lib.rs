//! `switchboard-logger`: what the bus carried, kept in files.
//!
//! A durable consumer of the daemon's JetStream stream (chat, send
//! requests, operators' output, lifecycle events) that appends each
//! message to a file chosen by its network, room and day
//! ([`layout`]), as JSON lines or irssi-like text, rotated by size and day
//! and gzipped when closed. A batch is acknowledged only after it is
//! written (and synced, per `fsync`), and an undo journal makes a crash at
//! any point leave every message in the files exactly once ([`writer`]).
//! When it cannot write (no permission, full disk) it says so in its
//! health, keeps the messages in the stream and catches up once it can.

pub mod config;
pub mod layout;
pub mod operator;
pub mod read;
pub mod writer;

pub use config::LoggerConfig;
pub use operator::Logger;
