//! `switchboard-dashboard`: see the bus, don't just read it.
//!
//! An operator (so a crash of the web server cannot take the daemon down,
//! and its rights are only what its manifest grants: the daemon's
//! read-only API, `ctl` through the daemon's own checks, and read-only
//! subscriptions) that serves one page with live updates over
//! server-sent events and `/metrics` for Prometheus ([`server`]). It
//! listens on loopback by default; every view needs a login and anything
//! that changes state the full token ([`auth`], [`config`]).

pub mod auth;
pub mod config;
pub mod hub;
pub mod metrics;
pub mod operator;
pub mod process;
pub mod rates;
pub mod replay;
pub mod server;

pub use config::DashboardConfig;
pub use operator::Dashboard;
