//! Test support for Switchboard: real peers, started per test.
//!
//! Tests in this project talk to a real `nats-server`, never to a mock, so
//! that what passes here is what users get. [`NatsServer`] starts one on a
//! free loopback port with JetStream on and a temporary store, kills it on
//! drop, and can be stopped and started again *on the same port* so fault
//! tests can cut the bus under a running client.
//!
//! The binary is looked up in this order: `$SWITCHBOARD_NATS_SERVER`, the
//! project-local install made by `make tools` (`.tools/venv/bin/nats-server`),
//! then `$PATH`.
//!
//! For least-privilege tests the server can require TLS (with a throwaway
//! [`TestCa`] made by the `openssl` command), a token, a user/password,
//! [`NkeyUser`]s, and take any extra config text (users with
//! `permissions`): see [`NatsServerOptions`]. For JWT auth (operator
//! mode, `.creds` files), [`JwtOperator`] makes the operator, account and
//! user JWTs and the server config that trusts them.
//!
//! With the `daemon` feature, [`daemon`] runs a real `switchboard run` in
//! a temporary directory ([`daemon::DaemonConfig`], [`daemon::Daemon`]);
//! with `bus`, [`OperatorHarness`] runs one operator process against a
//! test server. [`RawIrcClient`] plays a person on IRC.
//!
//! ```no_run
//! let server = switchboard_testkit::NatsServer::start().expect("nats-server");
//! println!("connect to {}", server.url());
//! ```

pub mod cluster;
pub mod conformance;
#[cfg(feature = "daemon")]
pub mod daemon;
mod irc;
mod irc_client;
mod jwt;
mod nats;
mod nkey;
pub mod nostr;
mod operator;
#[cfg(feature = "bus")]
mod operator_harness;
mod tls;

pub use irc::{InspIrcd, IrcServerError, NgIrcd, NgIrcdOptions};
pub use irc_client::{privmsg_text, RawIrcClient};
pub use jwt::{write_creds_file, JwtError, JwtOperator, JwtUser};
pub use nats::{nats_server_bin, HarnessError, NatsServer, NatsServerOptions};
pub use nkey::NkeyUser;
pub use operator::TestOperator;
#[cfg(feature = "bus")]
pub use operator_harness::{OperatorHarness, OPERATOR_WAIT};
pub use tls::{TestCa, TlsError};

/// Path of the workspace root, so tests can find project-local tools and
/// built binaries no matter which crate they run from.
pub fn workspace_root() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| here.to_path_buf())
}

/// Path of a binary built from this workspace (`cargo test --workspace`
/// builds every package's binaries before running tests).
///
/// Panics with what to run when the binary is missing: a test that cannot
/// find its peer must fail loudly, not skip.
pub fn bin_path(name: &str) -> std::path::PathBuf {
    // Test executables live in target/<profile>/deps/; binaries one up.
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --workspace --bins`",
        path.display()
    );
    path
}
