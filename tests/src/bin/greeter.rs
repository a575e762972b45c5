//! `greeter`: the README's "minimal operator in Rust", line for line, plus
//! one log line. Built as a binary whose crate name is not `switchboard…`,
//! so the end-to-end test (tests/tests/greeter.rs) also shows that an
//! operator's own `info!` reaches the log by default. Keep it in step with
//! the README (that test compares them).

use switchboard_bus::{run, Context, Delivery, HandlerResult, Operator};

/// Says hello to everyone who says hello.
struct Greeter;

impl Operator for Greeter {
    type Config = serde_json::Value; // the manifest's [config] table

    async fn start(&mut self, ctx: &mut Context, _config: serde_json::Value) -> HandlerResult {
        tracing::info!("greeting everyone who says hello");
        ctx.subscribe("chat.#.message").await?; // `*`: one token, `#`: any number
        Ok(())
    }

    async fn message(&mut self, ctx: &mut Context, d: Delivery) -> HandlerResult {
        let chat = d.chat()?; // protocol, instance, room, kind, sender, text
        if chat.text().starts_with("hello") {
            ctx.reply(&d, format!("hello, {}", chat.sender())).await?; // same room
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), switchboard_bus::RunError> {
    run(Greeter).await // ready, heartbeats, control verbs, signals, logs: all handled
}
