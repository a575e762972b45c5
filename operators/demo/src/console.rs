//! `switchboard-console`: chat on the bus from a terminal.
//!
//! Each line typed becomes a chat message from you in a room of the
//! `console` protocol (`chat.console.<instance>.<room>.message`), and every
//! request to send into that room (`send.console.<instance>.<room>.#`) is
//! printed, so a person can talk to bots without any chat network.

use std::io::Write as _;

use clap::Parser;
use futures::StreamExt;
use switchboard_bus::proto::{headers, kinds, ChatAddress, ChatMessage, SendRequest};
use switchboard_bus::{Bus, BusOptions, Pattern};
use tokio::io::AsyncBufReadExt;

/// Talk to bots on a Switchboard bus from the terminal.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long,
        env = "SWITCHBOARD_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    url: String,
    /// The console instance name (the third subject token).
    #[arg(long, default_value = "local")]
    instance: String,
    /// The room to talk in.
    #[arg(long, default_value = "lobby")]
    room: String,
    /// Your name in the room.
    #[arg(long, env = "USER", default_value = "you")]
    nick: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_bus::init_tracing();
    let args = Args::parse();
    let bus = Bus::connect(&BusOptions::new(&args.url), "console").await?;
    let address = ChatAddress::new("console", &args.instance, &args.room);
    let replies = Pattern::parse(&format!(
        "send.console.{}.{}.#",
        switchboard_bus::proto::escape_token(&args.instance),
        switchboard_bus::proto::escape_token(&args.room)
    ))?;
    let mut inbox = bus.subscribe(&replies).await?;
    println!(
        "connected to {} as {} in {} (type !ping; Ctrl-D to quit)",
        args.url, args.nick, args.room
    );
    let subject = address.event_subject(kinds::MESSAGE);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    prompt();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let text = line.trim_end().to_string();
                if !text.is_empty() {
                    let body = ChatMessage {
                        text,
                        sender: args.nick.clone(),
                        room: args.room.clone(),
                        private: false,
                        extra: Default::default(),
                    };
                    let env = switchboard_bus::Envelope::new("console", serde_json::to_value(body)?)
                        .with_header(headers::ROOM, &args.room);
                    bus.publish(&subject, &env).await?;
                    bus.flush().await?;
                }
                prompt();
            }
            Some(d) = inbox.next() => {
                let text = serde_json::from_value::<SendRequest>(d.envelope.body.clone())
                    .map(|r| r.text)
                    .unwrap_or_else(|_| d.envelope.body.to_string());
                println!("\r<{}> {}", d.envelope.source, text);
                prompt();
            }
        }
    }
    bus.close().await;
    Ok(())
}

fn prompt() {
    print!("> ");
    let _ = std::io::stdout().flush();
}
