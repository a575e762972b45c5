//! `tail`, `pub` and `chat`: the bus live, from a terminal.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use futures::StreamExt;
use serde::Deserialize as _;
use switchboard_bus::{Bus, Envelope, Pattern};
use switchboard_proto::{headers, kinds, ChatAddress, ChatMessage, ChatPattern, SendRequest};

use super::args::{ChatArgs, PubArgs, TailArgs};
use super::connect::Client;
use super::output::{shown, tail_line};

/// `switchboard tail`: envelopes as they cross the bus, until the reader
/// goes away.
pub(super) async fn tail(client: &Client, args: TailArgs) -> anyhow::Result<ExitCode> {
    let TailArgs {
        pattern: text,
        json,
        raw,
        internal,
    } = args;
    let pattern = Pattern::parse(&text)?;
    let internal = internal || names_internal(&text);
    let bus = client.connect().await?;
    // Raw subscriptions and our own decoding: lifecycle and control
    // payloads (`sb.…`) are plain JSON, not envelopes, and are shown
    // as what they are rather than reported as malformed.
    let plan = pattern.nats_plan();
    let mut subs = Vec::new();
    for subject in &plan.subjects {
        subs.push(bus.subscribe_raw(subject).await?);
    }
    let mut all = futures::stream::select_all(subs);
    eprintln!(
        "tailing {pattern}{}{} (Ctrl-C to stop)",
        if raw { " (raw)" } else { "" },
        if internal {
            ""
        } else {
            "; internal subjects hidden, --internal shows them"
        }
    );
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    while let Some(m) = all.next().await {
        if plan.needs_filter && !pattern.matches(&m.subject) {
            continue;
        }
        if !internal && is_internal(&m.subject) {
            continue;
        }
        let line = tail_line(&m.subject, &m.payload, raw, json);
        let mut out = std::io::stdout().lock();
        // A reader that went away (`| head`) ends the tail.
        if writeln!(out, "{}", shown(&line, terminal)).is_err() {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `switchboard pub`: one envelope.
pub(super) async fn publish(client: &Client, args: PubArgs) -> anyhow::Result<ExitCode> {
    let subject = args.subject.as_str();
    let body: serde_json::Value = serde_json::from_str(&args.body)
        .context("the body must be JSON; quote text as '\"hi\"' or send '{\"text\":\"hi\"}'")?;
    let bus = client.connect().await?;
    // The CLI may publish anything (the administrator's client):
    // on a chat subject it speaks as the subject's owner.
    let source = args.source.clone().unwrap_or_else(|| {
        switchboard_bus::authentic::subject_owner(subject)
            .unwrap_or("cli")
            .to_owned()
    });
    let env = Envelope::new(source, body);
    bus.publish(subject, &env).await?;
    bus.flush().await?;
    println!("published {} on {subject}", env.id().unwrap_or(""));
    Ok(ExitCode::SUCCESS)
}

/// `switchboard chat`: checks the instance, then [`chat`].
pub(super) async fn chat_command(client: &Client, args: ChatArgs) -> anyhow::Result<ExitCode> {
    // The instance is the source of what is said: it must be an id
    // for receivers to take the messages as authentic.
    switchboard_proto::OperatorId::new(args.instance.as_str())
        .context("--instance is the messages' source")?;
    let bus = client.connect().await?;
    chat(&bus, &args.instance, &args.room, &args.nick).await?;
    Ok(ExitCode::SUCCESS)
}

/// Subjects that carry no envelopes: the control plane (`sb.…`), NATS's
/// own (`$JS.…`, `$SYS.…`, any `$…`) and request replies (`_INBOX.…`).
/// `tail` leaves them out unless asked.
pub fn is_internal(subject: &str) -> bool {
    let first = subject.split('.').next().unwrap_or("");
    first == "sb" || first.starts_with('$') || first.starts_with("_INBOX")
}

/// Whether a pattern's first token names internal subjects literally
/// (`sb.event.#`, `$JS.#`): then the person asked for them.
pub fn names_internal(pattern: &str) -> bool {
    let first = pattern.split('.').next().unwrap_or("");
    first != "*" && first != "#" && is_internal(first)
}

/// `switchboard chat`: lines typed become chat messages in a `console`
/// room; requests to send into that room are printed.
async fn chat(bus: &Bus, instance: &str, room: &str, nick: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt as _;
    let address = ChatAddress::new("console", instance, room);
    let mut inbox = bus
        .subscribe(&ChatPattern::send().address(&address))
        .await?;
    bus.sync().await?;
    println!("chatting in {room} as {nick} (try !ping; Ctrl-D to quit)");
    let subject = address.event_subject(kinds::MESSAGE);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let prompt = || {
        print!("> ");
        let _ = std::io::stdout().flush();
    };
    prompt();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let text = line.trim_end().to_string();
                if !text.is_empty() {
                    let body = ChatMessage {
                        text,
                        sender: nick.to_string(),
                        room: room.to_string(),
                        private: false,
                        extra: Default::default(),
                    };
                    // The console instance is this terminal's: its
                    // events are authentic with the instance as source.
                    let env = Envelope::new(instance, serde_json::to_value(body)?)
                        .with_header(headers::ROOM, room);
                    bus.publish(&subject, &env).await?;
                    bus.flush().await?;
                }
                prompt();
            }
            Some(d) = inbox.next() => {
                let text = SendRequest::deserialize(&d.envelope().body)
                    .map(|r| r.text)
                    .unwrap_or_else(|_| d.envelope().body.to_string());
                println!("\r<{}> {}", d.envelope().source, text);
                prompt();
            }
        }
    }
    bus.close().await;
    Ok(())
}
