//! `logs` and `replay`: what the daemon kept, from the durable stream
//! (or, for logs without it, the daemon's lines in memory).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::bail;
use futures::StreamExt;
use switchboard_bus::Pattern;
use switchboard_proto::api::{methods, LogLine, LogsReply, LogsRequest};
use switchboard_proto::log_wildcard;

use super::args::{LogsArgs, ReplayArgs};
use super::connect::{unreachable_hint, Client};
use super::output::shown;

/// `switchboard logs`: an operator's output and lifecycle lines, from the
/// stream when it is readable, else from the daemon's memory.
pub(super) async fn logs(client: &Client, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let LogsArgs {
        id,
        lines,
        since,
        follow,
    } = args;
    let since = since
        .map(|s| crate::history::parse_when(&s, switchboard_proto::Timestamp::now()))
        .transpose()?;
    let (bus, stream) = client.connect_with_stream().await?;
    if let Some(stream) = stream {
        if crate::history::logs(&bus, &stream, &id, lines, since, follow).await? {
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!(
            "(the durable stream is not readable: showing the daemon's last lines in memory)"
        );
    }
    // Subscribe before asking for history so no line falls between.
    let mut live = if follow {
        Some(bus.subscribe_raw(&log_wildcard(&id)).await?)
    } else {
        None
    };
    let reply: LogsReply = crate::api::call(
        &bus,
        methods::LOGS,
        &LogsRequest {
            id: id.into_string(),
            lines,
        },
    )
    .await
    .map_err(unreachable_hint)?;
    if let Some(e) = reply.error {
        bail!(e);
    }
    let last = reply.lines.last().map(|l| l.timestamp);
    if reply.omitted > 0 {
        eprintln!(
            "({} older line(s) left out to fit one reply; ask for fewer with -n)",
            reply.omitted
        );
    }
    for l in reply
        .lines
        .iter()
        .filter(|l| since.is_none_or(|t| l.timestamp >= t))
    {
        print_log_line(l);
    }
    if let Some(live) = live.as_mut() {
        while let Some(msg) = live.next().await {
            if let Ok(l) = serde_json::from_slice::<LogLine>(&msg.payload) {
                if last.is_some_and(|t| l.timestamp <= t) {
                    continue;
                }
                print_log_line(&l);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `switchboard replay`: print or republish what the stream kept in a
/// window.
pub(super) async fn replay(client: &Client, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let ReplayArgs {
        pattern,
        since,
        until,
        to,
        json,
    } = args;
    let pattern = Pattern::parse(&pattern)?;
    let now = switchboard_proto::Timestamp::now();
    let since = crate::history::parse_when(&since, now)?;
    let until = until
        .map(|u| crate::history::parse_when(&u, now))
        .transpose()?;
    let to = match to {
        Some(s) => crate::history::ReplayTo::Subject(s),
        None => crate::history::ReplayTo::Print { json },
    };
    let (bus, stream) = client.connect_with_stream().await?;
    let Some(stream) = stream else {
        bail!("the daemon keeps no durable stream ([stream] in switchboard.toml, JetStream on): nothing to replay");
    };
    let n = crate::history::replay(&bus, &stream, &pattern, since, until, &to).await?;
    if let crate::history::ReplayTo::Subject(s) = &to {
        eprintln!("republished {n} envelope(s) on {s}");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_log_line(l: &LogLine) {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut out = std::io::stdout().lock();
    let line = format!("{} {} {}: {}", l.timestamp, l.id, l.stream, l.line);
    let _ = writeln!(out, "{}", shown(&line, terminal));
}
