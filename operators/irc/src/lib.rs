//! `switchboard-irc`: one IRC network on the Switchboard bus.
//!
//! The operator connects to one server (plain or TLS, server password,
//! SASL PLAIN or NickServ), joins its channels and publishes what it sees
//! as envelopes on `chat.irc.<instance>.<room>.<kind>`; it sends what it is
//! asked on `send.irc.<instance>.<room>.<kind>` and answers every request
//! that has a reply subject with a `SendResult`. It reconnects with
//! backoff, rejoins, and keeps under the server's flood limits. The
//! contract is in `docs/PROTOCOL.md` ("IRC operator").
//!
//! Code map (each module has its own tests):
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | the typed `[config]` table (every key and default) |
//! | [`names`] | nick/channel validation and case mapping |
//! | [`line`] | framing bytes into lines, parsing with `irc-proto`, [`line::OutLine`] (no CR/LF/NUL by construction) |
//! | [`client`] | the IRC state machine, no I/O |
//! | [`inbound`] | event bodies, CTCP, formatting codes, tags |
//! | [`outbound`] | sanitising and splitting text to fit 512 bytes |
//! | [`flood`] | token bucket and unprocessed-bytes window |
//! | [`transport`] | TCP and TLS (rustls) |
//! | [`session`] | the connection task: I/O, timers, reconnect |
//! | [`operator`] | the bus side ([`IrcOperator`]) |
//!
//! Invariants, stated as absences: no bus input reaches the socket
//! without passing [`line::OutLine`] (so CR, LF and NUL never split a
//! line); no server input panics the operator (malformed lines are logged
//! and skipped); no secret is logged (`Secret` and `OutLine::secret`
//! print redacted).

#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod flood;
pub mod inbound;
pub mod line;
pub mod names;
pub mod operator;
pub mod outbound;
pub mod session;
pub mod transport;

pub use config::IrcConfig;
pub use operator::IrcOperator;
