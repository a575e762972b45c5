//! `switchboard-bluesky`: one Bluesky account on the Switchboard bus.
//!
//! The operator logs in with an app password (keeping the session in its
//! state directory), reads the account's notifications by polling
//! `listNotifications`, posts that concern it from a Jetstream
//! websocket, or commits that concern it from the firehose
//! (`subscribeRepos`, signatures checked), and publishes each once, oldest first, on
//! `chat.bluesky.<instance>.<thread root>.<reason>`. It posts replies,
//! top-level posts, likes and reposts asked on
//! `send.bluesky.<instance>.<room>.<kind>` and answers each request with
//! the new record's URI and CID or the server's error. The contract is in
//! `docs/PROTOCOL.md` ("Bluesky operator").
//!
//! Code map:
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | the typed `[config]` table (every key and default) |
//! | [`lexicon`] | request/response bodies of the XRPC endpoints used |
//! | [`xrpc`] | one HTTP call and its error classes; TLS setup |
//! | [`session`] | createSession / refreshSession / getSession, refused logins |
//! | [`api`] | authenticated calls: refresh, rate-limit waits, retries; counters |
//! | [`store`] | state files (session, marks), 0600, written whole |
//! | [`inbound`] | event subjects and bodies, the publisher |
//! | [`poller`] | the polling strategy and its high-water mark |
//! | [`jetstream`] | the Jetstream strategy: frames, cursor, de-duplication |
//! | [`firehose`] | the firehose strategy: frames, CAR blocks, signatures, DID keys, cursor |
//! | [`richtext`] | graphemes, splitting, mention and link facets |
//! | [`outbound`] | send requests and the records they create |
//! | [`worker`] | the account's task that runs all of the above (`stream`: inbound, `send`: outbound) |
//! | [`operator`] | the bus side ([`BskyOperator`]) |
//!
//! Invariants, stated as absences: no token or password is logged,
//! published or put in an error (`Secret` prints `***`; errors quote the
//! endpoint and the server's error name); no server input panics the
//! operator (bodies that do not fit a lexicon are errors, frames that are
//! not Jetstream events or firehose frames are skipped and counted; a
//! firehose commit that does not verify is dropped and counted).

#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod firehose;
pub mod inbound;
pub mod jetstream;
pub mod lexicon;
pub mod operator;
pub mod outbound;
pub mod poller;
pub mod richtext;
pub mod session;
pub mod store;
pub mod worker;
pub mod xrpc;

pub use config::BskyConfig;
pub use operator::BskyOperator;
