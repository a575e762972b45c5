//! One module per fault the suite injects; each returns its [`Outcome`]
//! (an error only when the rig itself breaks).
//!
//! [`Outcome`]: crate::Outcome

mod daemon_sigkill;
mod flood;
mod full_state_dir;
mod hang_at_start;
mod hang_on_shutdown;
mod irc;
mod logger;
mod many_manifests;
mod misbehaving;
mod nats_sigkill;
mod nostr;
mod operator_signal;

pub use daemon_sigkill::daemon_sigkill;
pub use flood::flood_of_output;
pub use full_state_dir::full_state_dir;
pub use hang_at_start::hang_at_start;
pub use hang_on_shutdown::hang_on_shutdown;
pub use irc::irc_server_restart;
pub use logger::logger_under_faults;
pub use many_manifests::many_manifests;
pub use misbehaving::misbehaving_operator;
pub use nats_sigkill::nats_sigkill;
pub use nostr::nostr_relay_restart;
pub use operator_signal::{operator_sigkill, operator_sigstop};
