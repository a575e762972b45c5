//! `switchboard-testop`: an operator for the end-to-end tests whose
//! failures can be switched on from outside.
//!
//! Config: `listen` (patterns; answers every chat text with `seen: <text>`)
//! and `fail_start_if_exists` (a path: `start` fails while that file
//! exists), so tests can make a reload or an in-place restart fail.

use serde::Deserialize;
use switchboard_bus::{run, Context, Delivery, HandlerResult, Operator};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    fail_start_if_exists: Option<std::path::PathBuf>,
}

struct TestOp;

impl Operator for TestOp {
    type Config = Config;

    async fn start(&mut self, ctx: &mut Context, config: Config) -> HandlerResult {
        if let Some(path) = &config.fail_start_if_exists {
            if path.exists() {
                return Err(format!("refusing to start: {} exists", path.display()).into());
            }
        }
        for p in &config.listen {
            ctx.subscribe(p).await?;
        }
        Ok(())
    }

    async fn message(&mut self, ctx: &mut Context, d: Delivery) -> HandlerResult {
        let text = format!("seen: {}", d.chat()?.text());
        ctx.reply(&d, text).await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), switchboard_bus::RunError> {
    run(TestOp).await
}
