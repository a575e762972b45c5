//! The Switchboard orchestrator: the daemon behind `switchboard run`, and
//! the client side of its CLI.
//!
//! Bird's-eye view: [`config`] reads `switchboard.toml`; [`manifest`]
//! reads one TOML file per operator; [`nats_server`] runs the embedded
//! nats-server when no external URL is configured; [`supervisor`] spawns
//! operators, watches their ready/heartbeats, restarts them with backoff,
//! and applies control verbs; [`manifest::Manifest::diff`] turns old + new
//! manifests into what must change ([`supervisor::Supervisor::apply`], for
//! start-up and SIGHUP alike); [`api`] is the NATS request/reply
//! API the CLI talks to; [`access`] gives each operator its own NATS user
//! and server-enforced permissions; [`sandbox`] gives each operator's
//! process its own bubblewrap sandbox; [`cluster`] (cluster mode) runs
//! what the cluster engine gives this host instead of its manifests
//! directory.

pub mod access;
pub mod api;
pub mod backoff;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod conformance;
pub mod daemon;
pub mod discovery;
pub mod files;
pub mod history;
pub mod journal;
pub mod leftovers;
pub mod logging;
pub mod manifest;
pub mod manpages;
pub mod nats_server;
pub mod outbox;
pub mod process;
pub mod relaunch;
pub mod sandbox;
pub mod structured;
pub mod supervisor;
pub mod systemd;
pub mod warden;
