//! `switchboard-nostr`: a multi-relay Nostr client on the Switchboard bus.
//!
//! The operator keeps a websocket to every configured relay (reconnecting
//! on GenNostr's schedule), subscribes with NIP-01 filters, verifies every
//! event's id and signature, publishes each event once on
//! `chat.nostr.<instance>.<room>.<kind>` however many relays carry it
//! (their URLs in the `nostr-relays` header), and resumes each
//! subscription after a reconnect or restart from where it stopped, so
//! nothing is missed and nothing repeats. Direct messages (NIP-17, and
//! NIP-04 from older clients) arrive decrypted on the sender's private
//! room and are answered privately. It publishes replies, notes,
//! reactions and pre-signed events to the write relays on request and
//! answers with every relay's `OK`. Relays and filters change on reload
//! without a restart, and relays can be added, removed, listed and
//! addressed one by one over the bus, which also hears each relay's
//! connects, disconnects, notices and refusals. The contract is in `docs/PROTOCOL.md` ("Nostr
//! operator").
//!
//! What comes from the `nostr` crate (0.45, stable): events, keys,
//! Schnorr signing and verification, NIP-19, NIP-42 auth events, filters
//! and filter matching, and the relay/client message types. What is ours,
//! and why not `nostr-sdk`'s relay pool (read in 0.45.0-alpha.8, the
//! current release, a pre-release): it verifies an event and stores its id
//! on first sight, then notifies only that first copy, so the relays that
//! also carried it are not reported; a bad signature is an error it logs,
//! not a count we can read; it reconnects after `retry_interval` (10 s)
//! times a multiplier that grows with failures, ±3 s of jitter, capped at
//! 60 s, not on a given schedule; and a reconnect resends the original
//! filters, with no resume point per relay. Its NIP-42 authenticator would
//! fit, but alone it is not worth the pool. So the connection ([`relay`]),
//! dedupe ([`inbound`]) and resume ([`resume`]) are written on
//! tokio-tungstenite, and the build is smaller (no pool, database or
//! transport abstractions).
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | the typed `[config]` table (every key and default) |
//! | [`frame`] | parsing one relay frame (the fuzz target) |
//! | [`relay`] | one relay: connect, reconnect schedule, REQ/resume, NIP-42, OK results, status |
//! | [`inbound`] | dedupe, collecting relay URLs, rooms (NIP-10), bodies |
//! | [`outbound`] | send requests to signed events |
//! | [`dm`] | direct messages: NIP-17 (NIP-44, NIP-59 gift wraps) and NIP-04, in and out |
//! | [`control`] | relays added and removed over the bus, and relay events published on it |
//! | [`resume`] | per-subscription, per-relay marks and published ids in the state dir |
//! | [`stats`] | heartbeat counters |
//! | [`operator`] | the bus side ([`NostrOperator`]) |
//!
//! Invariants, stated as absences: no unverified event reaches the bus;
//! no relay input panics the operator (bad frames are counted, logged
//! once per burst and skipped); the secret key is never printed.

#![forbid(unsafe_code)]

pub mod config;
pub mod control;
pub mod dm;
pub mod frame;
pub mod inbound;
pub mod operator;
pub mod outbound;
pub mod relay;
pub mod resume;
pub mod stats;

pub use config::NostrConfig;
pub use operator::NostrOperator;
