//! The fault suite: a real `switchboard run` (embedded nats-server) with
//! real operators, `!ping` traffic flowing through the ping bot, and one
//! fault injected at a time. Each scenario says what is expected, what was
//! observed, how many pings were accepted (published) and answered (by
//! envelope id, through `in-reply-to`), and how long the answers stopped.
//!
//! Core NATS is at-most-once: a ping published while no ping bot is
//! subscribed is lost by design. Those losses are *counted* here (and
//! listed as such); a path documented as lossless must show 0.
//!
//! The daemon is the testkit's ([`switchboard_testkit::daemon`]);
//! [`rig`] adds what the scenarios ask of it, [`templates`] the manifests,
//! [`traffic`] the pings and their tally, [`outcome`] the report's rows,
//! and [`scenarios`] one module per fault.

pub mod outcome;
pub mod rig;
pub mod scenarios;
pub mod templates;
pub mod traffic;

use std::path::PathBuf;

pub use outcome::Outcome;
pub use rig::WAIT;
pub use scenarios::{
    daemon_sigkill, flood_of_output, full_state_dir, hang_at_start, hang_on_shutdown,
    irc_server_restart, logger_under_faults, many_manifests, misbehaving_operator, nats_sigkill,
    nostr_relay_restart, operator_sigkill, operator_sigstop,
};
pub use templates::{logger, misbehaving, pingbot};
pub use traffic::{Tally, Traffic};

/// Where the report goes by default.
pub fn default_report() -> PathBuf {
    switchboard_testkit::workspace_root().join("docs/reliability.md")
}
