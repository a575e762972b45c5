//! `switchboard-pingbot`: the smallest useful operator.
//!
//! Answers `!ping` with `pong` and `!echo <text>` with the text, in the
//! room the command came from, on any chat protocol. It exists to show a
//! working bus in a minute and to be the example people copy.

use switchboard_bus::Triggers;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bot = Triggers::new()
        .on_chat(r"^!ping\b", |_| Some("pong".to_string()))?
        .on_chat(r"^!echo\s+(?P<text>.+)", |t| {
            t.get("text").map(str::to_string)
        })?;
    switchboard_bus::run(bot).await?;
    Ok(())
}
