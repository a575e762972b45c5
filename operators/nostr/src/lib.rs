//! `switchboard-nostr`: a multi-relay Nostr client on the Switchboard bus.
//!
//! The operator keeps a websocket to every configured relay (reconnecting
//! on GenNostr's schedule), subscribes with NIP-01 filters, verifies every
//! event's id and signature, publishes each event once on
//! `chat.nostr.<instance>.<room>.<kind>` however many relays carry it
//! (their URLs in the `nostr-relays` header), and resumes each
//! subscription after a reconnect or restart from where it stopped, so
//! nothing is missed and nothing repeats. It publishes replies, notes,
//! reactions and pre-signed events to the write relays on request and
//! answers with every relay's `OK`. Relays and filters change on reload
//! without a restart. The contract is in `docs/PROTOCOL.md` ("Nostr
//! operator").
//!
//! What comes from the `nostr` crate: events, keys, Schnorr signing and
//! verification, NIP-19, NIP-42 auth events, filters and the relay/client
//! message types. What is ours, and why not `nostr-sdk`'s relay pool: the
//! pool verifies and deduplicates internally and hands each event over
//! once without the list of relays that carried it, does not count what
//! it drops, reconnects on its own interval rather than a schedule, and
//! has no per-relay resume point; those are the requirements here, so the
//! connection ([`relay`]), dedupe ([`inbound`]) and resume ([`resume`])
//! are written on tokio-tungstenite, about as much code as wrapping the
//! pool would take, and a much smaller build.
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | the typed `[config]` table (every key and default) |
//! | [`frame`] | parsing one relay frame (the fuzz target) |
//! | [`relay`] | one relay: connect, reconnect schedule, REQ/resume, NIP-42, OK results, status |
//! | [`inbound`] | dedupe, collecting relay URLs, rooms (NIP-10), bodies |
//! | [`outbound`] | send requests to signed events |
//! | [`resume`] | per-subscription, per-relay marks and published ids in the state dir |
//! | [`stats`] | heartbeat counters |
//! | [`operator`] | the bus side ([`NostrOperator`]) |
//!
//! Invariants, stated as absences: no unverified event reaches the bus;
//! no relay input panics the operator (bad frames are counted, logged
//! once per burst and skipped); the secret key is never printed.

#![forbid(unsafe_code)]

pub mod config;
pub mod frame;
pub mod inbound;
pub mod operator;
pub mod outbound;
pub mod relay;
pub mod resume;
pub mod stats;

pub use config::NostrConfig;
pub use operator::NostrOperator;
