//! The operator runtime: ready, heartbeats, control verbs, signals.
//!
//! An operator implements [`Operator`] and hands itself to [`run`]. The
//! runtime does the lifecycle the orchestrator expects (docs/PROTOCOL.md,
//! "Lifecycle"): it connects from the launch environment, calls `start`,
//! announces `ready` (flushed), sends heartbeats with state and counters,
//! answers every control verb with an ack, maps SIGTERM/SIGINT to
//! shutdown and SIGHUP to reload, and flushes before it returns.
//!
//! Handlers run one at a time on the caller's task, so an operator needs
//! no locks for its own state; long work belongs in a spawned task that
//! holds a clone of [`Context::bus`].

//!
//! The parts, by job: this file is the contract (the [`Operator`] trait,
//! [`run`], [`RunError`]); `context.rs` is what handlers get
//! ([`Context`]) and the bounded hold of deliveries while halted;
//! `run_loop.rs` is the loop that wakes on signals, control requests,
//! heartbeats and deliveries; `diagnosis.rs` is what the runtime itself
//! says about the operator's health (a slow consumer, a refused
//! subscription); `error.rs` is [`HandlerError`], what handlers return.

use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::config::ConfigError;
use crate::error::{BoxError, ConnectError};
use crate::launch::{LaunchEnv, LaunchError};
use crate::subscription::Delivery;

mod context;
mod diagnosis;
mod error;
mod run_loop;

pub use context::Context;

pub use error::{HandlerError, HandlerErrorKind, HandlerResult};

/// An operator's behaviour. Only `start` is required.
///
/// `async fn` in this trait is deliberate: the runtime awaits handlers on
/// the caller's own task, so their futures need not be `Send`, and an
/// operator may keep non-`Send` state.
#[allow(async_fn_in_trait)]
pub trait Operator {
    /// The operator's configuration, deserialised from the manifest's
    /// `[config]` table (JSON in `SWITCHBOARD_CONFIG`). Use
    /// `serde_json::Value` to take it as is.
    type Config: DeserializeOwned;

    /// The operator's own version, reported in `ready`.
    fn version(&self) -> Option<String> {
        None
    }

    /// Set up: subscribe with [`Context::subscribe`], open connections.
    /// `ready` is announced when this returns `Ok`.
    async fn start(&mut self, ctx: &mut Context, config: Self::Config) -> HandlerResult;

    /// One envelope from a subscription made with [`Context::subscribe`].
    /// Not called while halted (deliveries wait until `resume`).
    async fn message(&mut self, ctx: &mut Context, delivery: Delivery) -> HandlerResult {
        let _ = (ctx, delivery);
        Ok(())
    }

    /// Apply a new configuration without exiting. The default stops,
    /// drops the subscriptions and starts again with `config`; override it
    /// to apply changes more gently (keep connections open).
    async fn reload(&mut self, ctx: &mut Context, config: Self::Config) -> HandlerResult {
        self.stop(ctx).await?;
        ctx.clear_subscriptions();
        self.start(ctx, config).await
    }

    /// Pause: stop producing. Deliveries are held until `resume`.
    async fn halt(&mut self, ctx: &mut Context) -> HandlerResult {
        let _ = ctx;
        Ok(())
    }

    /// Continue after `halt`.
    async fn resume(&mut self, ctx: &mut Context) -> HandlerResult {
        let _ = ctx;
        Ok(())
    }

    /// Release resources before exit or restart. Publishes made here are
    /// flushed by the runtime.
    async fn stop(&mut self, ctx: &mut Context) -> HandlerResult {
        let _ = ctx;
        Ok(())
    }
}

/// Why [`run`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The launch environment is incomplete.
    #[error(transparent)]
    Launch {
        /// What is missing or invalid.
        #[from]
        source: LaunchError,
    },
    /// NATS could not be reached.
    #[error(transparent)]
    Connect {
        /// Why.
        #[from]
        source: ConnectError,
    },
    /// The configuration does not fit the operator's `Config` type.
    #[error("invalid configuration for operator {id}: {source}")]
    Config {
        /// The operator.
        id: String,
        /// The key path and what was wrong, never the value.
        source: ConfigError,
    },
    /// `start` failed (at launch, or in an in-place restart).
    #[error("operator {id} failed to start: {source}")]
    Start {
        /// The operator.
        id: String,
        /// The handler's error, as it returned it.
        source: HandlerError,
    },
    /// The control subject could not be subscribed, or signals installed.
    #[error("operator runtime setup failed: cannot {what}: {source}")]
    Setup {
        /// What the runtime was doing, e.g. `subscribe to sb.ctl.bot`.
        what: String,
        /// Why it failed.
        source: BoxError,
    },
}

crate::error::kinds! {
    /// Coarse classes of [`RunError`].
    RunError => RunErrorKind { Launch, Connect, Config, Start, Setup }
}

/// Run `operator` with the launch environment of this process until it is
/// told to shut down. Returns `Ok` on a clean shutdown.
///
/// ```no_run
/// use switchboard_bus::{run, Context, HandlerResult, Operator};
///
/// struct Quiet;
/// impl Operator for Quiet {
///     type Config = serde_json::Value;
///     async fn start(&mut self, _ctx: &mut Context, _cfg: serde_json::Value) -> HandlerResult {
///         Ok(())
///     }
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), switchboard_bus::RunError> {
///     run(Quiet).await
/// }
/// ```
pub async fn run<O: Operator>(operator: O) -> Result<(), RunError> {
    crate::logging::init_tracing_for(std::any::type_name::<O>());
    let launch = LaunchEnv::from_env()?;
    run_with(operator, launch).await
}

/// [`run`] with an explicit launch environment (tests, embedding).
pub async fn run_with<O: Operator>(operator: O, launch: LaunchEnv) -> Result<(), RunError> {
    let span = tracing::info_span!("operator", id = %launch.id);
    run_loop::Runtime::new(operator, launch)
        .await?
        .run()
        .instrument(span)
        .await
}
