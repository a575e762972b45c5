//! `switchboard-testop`: an operator for the end-to-end tests whose
//! failures can be switched on from outside.
//!
//! Config: `listen` (patterns; answers every chat text with `seen: <text>`)
//! and `fail_start_if_exists` (a path: `start` fails while that file
//! exists), so tests can make a reload or an in-place restart fail.

use serde::Deserialize;
use switchboard_bus::proto::{kinds, ChatAddress, ChatMessage, SendRequest};
use switchboard_bus::{run, Context, Delivery, HandlerResult, Operator, Pattern};

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
            ctx.subscribe(&Pattern::parse(p)?).await?;
        }
        Ok(())
    }

    async fn message(&mut self, ctx: &mut Context, d: Delivery) -> HandlerResult {
        let (_, address, _) = ChatAddress::parse(&d.subject)?;
        let msg: ChatMessage = serde_json::from_value(d.envelope.body.clone())?;
        let body = serde_json::to_value(SendRequest {
            text: format!("seen: {}", msg.text),
        })?;
        let reply = d.envelope.reply(ctx.bus().source(), body);
        ctx.bus()
            .publish(&address.send_subject(kinds::MESSAGE), &reply)
            .await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), switchboard_bus::RunError> {
    run(TestOp).await
}
