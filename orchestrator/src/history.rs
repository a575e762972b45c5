//! What the durable stream kept, for the CLI: `switchboard logs` (an
//! operator's output and lifecycle events, across daemon restarts) and
//! `switchboard replay` (stored envelopes in a time window, printed or
//! republished).
//!
//! Both read with an ordered consumer (no state left on the server), so
//! they never disturb the logger's durable consumer.

use std::collections::VecDeque;
use std::io::Write as _;

use anyhow::{bail, Context as _};
use switchboard_bus::stream::{
    OperatorStreams, Reader, StartAt, Stored, StreamError, StreamErrorKind,
};
use switchboard_bus::{Bus, Envelope, Pattern};
use switchboard_proto::api::{LogLine, OperatorEvent};
use switchboard_proto::{event_subject, log_wildcard, OperatorId, Timestamp};

/// A point in time given on the command line: a duration ago (`10m`,
/// `2h`, `1d`) or an RFC 3339 time.
///
/// ```
/// use switchboard_orchestrator::history::parse_when;
/// let now = switchboard_proto::Timestamp::parse("2026-12-01T12:00:00Z").unwrap();
/// assert_eq!(parse_when("10m", now).unwrap().to_string(), "2026-12-01T11:50:00.000000Z");
/// assert_eq!(parse_when("2026-12-01T08:00:00Z", now).unwrap().to_string(), "2026-12-01T08:00:00.000000Z");
/// assert!(parse_when("yesterday", now).is_err());
/// ```
pub fn parse_when(text: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if let Ok(ago) = switchboard_proto::duration::parse_duration(text) {
        let nanos = now.unix_nanos() - i128::try_from(ago.as_nanos()).unwrap_or(i128::MAX);
        return Timestamp::from_unix_nanos(nanos)
            .map_err(|e| anyhow::anyhow!("`{text}` reaches too far back: {e}"));
    }
    Timestamp::parse(text).map_err(|_| {
        anyhow::anyhow!(
            "`{text}` is neither a duration ago (`10m`, `2h`, `1d`) nor an RFC 3339 time \
             (`2026-12-01T08:00:00Z`)"
        )
    })
}

/// Why a history command fell back or failed: no stream to read.
fn no_stream(e: &StreamError) -> bool {
    matches!(
        e.kind(),
        StreamErrorKind::NoStream | StreamErrorKind::Unavailable
    )
}

/// One line of `logs`: an output line, or a lifecycle event.
fn log_entry(payload: &[u8]) -> Option<String> {
    if let Ok(l) = serde_json::from_slice::<LogLine>(payload) {
        return Some(format!("{} {} {}: {}", l.timestamp, l.id, l.stream, l.line));
    }
    let e: OperatorEvent = serde_json::from_slice(payload).ok()?;
    Some(event_line(&e))
}

/// `time id event: previous -> state (reason)`; a first start (no
/// restarts yet, from `exited`) without the `exited ->`, which would read
/// like a crash.
pub fn event_line(e: &OperatorEvent) -> String {
    let reason = e
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let first = e.restarts == 0
        && e.previous == switchboard_proto::api::SupervisedState::Exited
        && matches!(
            e.state,
            switchboard_proto::api::SupervisedState::Starting
                | switchboard_proto::api::SupervisedState::Running
        );
    if first {
        return format!(
            "{} {} event: {}{reason}",
            e.timestamp,
            e.id,
            e.state.as_str()
        );
    }
    format!(
        "{} {} event: {} -> {}{reason}",
        e.timestamp,
        e.id,
        e.previous.as_str(),
        e.state.as_str()
    )
}

fn print(line: &str) {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", crate::cli::shown(line, terminal));
}

/// `switchboard logs` from the stream: the last `lines` output lines and
/// lifecycle events of `id` (since `since`, when given; `lines` 0 = all),
/// then, with `follow`, new ones as they come. `Ok(false)` when there is
/// no stream to read (the caller falls back to the daemon's memory).
pub async fn logs(
    bus: &Bus,
    stream: &str,
    id: &OperatorId,
    lines: usize,
    since: Option<Timestamp>,
    follow: bool,
) -> anyhow::Result<bool> {
    let filters = vec![log_wildcard(id), event_subject(id)];
    let start = since.map_or(StartAt::First, StartAt::Time);
    let own = OperatorStreams::name(stream, id.as_str());
    let mut reader = match Merged::open(bus, stream, Some(&own), &filters, start, follow).await {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(true),
        Err(e) if no_stream(&e) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let mut kept: VecDeque<String> = VecDeque::new();
    let mut live = false;
    while let Some(m) = reader.next().await {
        let m = m?;
        let Some(line) = log_entry(&m.payload) else {
            continue;
        };
        if live {
            print(&line);
            continue;
        }
        kept.push_back(line);
        if lines > 0 && kept.len() > lines {
            kept.pop_front();
        }
        if m.pending == 0 {
            kept.drain(..).for_each(|l| print(&l));
            live = true;
        }
    }
    kept.drain(..).for_each(|l| print(&l));
    Ok(true)
}

/// The operator stream that holds everything `pattern` matches, when it
/// names one chat instance (`chat.<protocol or *>.<id>.…`): that
/// operator's own stream ([`OperatorStreams`]).
fn own_stream(main: &str, pattern: &Pattern) -> Option<String> {
    use switchboard_proto::PatternToken as T;
    match pattern.tokens() {
        [T::Literal(root), T::Literal(_) | T::Star, T::Literal(instance), ..]
            if root == "chat" && OperatorId::is_valid(instance) =>
        {
            Some(OperatorStreams::name(main, instance))
        }
        _ => None,
    }
}

/// One reading of the history: what an operator's own stream kept from
/// before the shared stream's oldest message (which a flood by someone
/// else evicted there), then the shared stream, which is never behind
/// (the own stream is a copy, a few milliseconds late).
struct Merged {
    before: VecDeque<Stored>,
    peeked: Option<Stored>,
    shared: Option<Reader>,
}

impl Merged {
    /// `Ok(None)` when neither stream has anything on `filters`. The own
    /// stream's messages (a copy, so the same payloads) are kept up to the
    /// copy of the shared stream's oldest one; when the own stream no
    /// longer has that copy (its own quota evicted it), those stored
    /// before it.
    async fn open(
        bus: &Bus,
        shared: &str,
        own: Option<&str>,
        filters: &[String],
        start: StartAt,
        follow: bool,
    ) -> Result<Option<Merged>, StreamError> {
        let mut shared_reader = bus.read_stored(shared, filters, start, follow).await?;
        let peeked = match shared_reader.as_mut() {
            Some(r) if r.backlog() > 0 => r.next().await.transpose()?,
            _ => None,
        };
        let mut copies = Vec::new();
        if let Some(own) = own {
            match bus.read_stored(own, filters, start, false).await {
                Ok(Some(mut r)) => {
                    while let Some(m) = r.next().await {
                        copies.push(m?);
                    }
                }
                Ok(None) => {}
                Err(e) if no_stream(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let mut before = before_first(copies, peeked.as_ref());
        if shared_reader.is_none() && before.is_empty() {
            return Ok(None);
        }
        // `pending` says where the backlog ends: after the last copy
        // unless the shared stream has a backlog of its own.
        let n = before.len();
        for (i, m) in before.iter_mut().enumerate() {
            m.pending = u64::from(i + 1 < n || peeked.is_some());
        }
        Ok(Some(Merged {
            before,
            peeked,
            shared: shared_reader,
        }))
    }

    async fn next(&mut self) -> Option<Result<Stored, StreamError>> {
        if let Some(m) = self.before.pop_front() {
            return Some(Ok(m));
        }
        if let Some(m) = self.peeked.take() {
            return Some(Ok(m));
        }
        self.shared.as_mut()?.next().await
    }
}

/// The copies (from an operator's own stream) of what the shared stream
/// no longer has: those copied from before `first`, the shared stream's
/// oldest, in the shared stream's order. The own stream copies by several
/// filters and interleaves them as they arrive, so its order is not the
/// shared one: the copies are placed by the sequence number each copy
/// carries (`Nats-Stream-Source`); by store time where one carries none.
fn before_first(mut copies: Vec<Stored>, first: Option<&Stored>) -> VecDeque<Stored> {
    copies.sort_by_key(|m| m.source_seq.unwrap_or(u64::MAX));
    match first {
        // The shared stream has none left: all of them.
        None => copies.into(),
        Some(first) => copies
            .into_iter()
            .filter(|m| match m.source_seq {
                Some(seq) => seq < first.seq,
                None => m.stored_at < first.stored_at,
            })
            .collect(),
    }
}

/// What `replay` does with each stored envelope.
#[derive(Debug, Clone)]
pub enum ReplayTo {
    /// Print `time subject [source] body` (or JSON lines).
    Print {
        /// One JSON envelope per line.
        json: bool,
    },
    /// Publish again on this subject, with the same id.
    Subject(String),
}

/// `switchboard replay`: the stored envelopes on subjects matching
/// `pattern` stored in `[since, until]`, oldest first. Returns how many.
pub async fn replay(
    bus: &Bus,
    stream: &str,
    pattern: &Pattern,
    since: Timestamp,
    until: Option<Timestamp>,
    to: &ReplayTo,
) -> anyhow::Result<u64> {
    let plan = pattern.nats_plan();
    // One operator's chat (`chat.<protocol>.<id>.…`) is all in its own
    // stream too, where no other operator's flood evicts it.
    let own = own_stream(stream, pattern);
    let mut reader = match Merged::open(
        bus,
        stream,
        own.as_deref(),
        &plan.subjects,
        StartAt::Time(since),
        false,
    )
    .await
    {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(0),
        Err(e) if no_stream(&e) => bail!(
            "{e}; replay needs the durable stream ([stream] in switchboard.toml, JetStream on)"
        ),
        Err(e) => return Err(e.into()),
    };
    let mut count = 0;
    let mut skipped = 0u64;
    while let Some(m) = reader.next().await {
        let m = m?;
        if until.is_some_and(|u| m.stored_at > u) {
            break;
        }
        if plan.needs_filter && !pattern.matches(&m.subject) {
            continue;
        }
        match to {
            ReplayTo::Print { json } => {
                print(&crate::cli::tail_line(&m.subject, &m.payload, false, *json));
            }
            ReplayTo::Subject(subject) => match Envelope::from_slice(&m.payload) {
                Ok(env) => bus
                    .publish(subject, &env)
                    .await
                    .with_context(|| format!("cannot republish on {subject}"))?,
                Err(_) => {
                    skipped += 1;
                    continue;
                }
            },
        }
        count += 1;
    }
    if skipped > 0 {
        eprintln!("({skipped} stored message(s) were not envelopes and were not republished)");
    }
    bus.flush().await?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy in the own stream (sequence `own`) of shared message `src`.
    fn copy(own: u64, src: u64) -> Stored {
        let mut m = Stored::new(
            "sb.log.a.stdout",
            format!("{{\"n\":{src}}}"),
            own,
            Timestamp::now(),
            None,
        );
        m.source_seq = Some(src);
        m
    }

    #[test]
    fn copies_before_the_shared_streams_oldest_come_once_in_its_order() {
        // The own stream copied by two filters (log lines, events) and
        // interleaved them out of the shared order: 3, 6, 5, 4. The shared
        // stream still has 5 on: only 3 and 4 come from the copies, in
        // that order (taking the copies up to the copy of 5 gave 3 and 6,
        // then 5 and 6 again from the shared stream).
        let copies = || vec![copy(1, 3), copy(2, 6), copy(3, 5), copy(4, 4)];
        let first = Stored::new("sb.log.a.stdout", "{\"n\":5}", 5, Timestamp::now(), None);
        let before: Vec<u64> = before_first(copies(), Some(&first))
            .iter()
            .filter_map(|m| m.source_seq)
            .collect();
        assert_eq!(before, [3, 4]);
        // Nothing left in the shared stream: every copy, in its order.
        let all: Vec<u64> = before_first(copies(), None)
            .iter()
            .filter_map(|m| m.source_seq)
            .collect();
        assert_eq!(all, [3, 4, 5, 6]);
    }

    #[test]
    fn one_operators_chat_is_read_from_its_own_stream() {
        let own = |p: &str| own_stream("SB", &Pattern::parse(p).expect("pattern"));
        assert_eq!(own("chat.irc.bot.#").as_deref(), Some("SB_bot"));
        assert_eq!(own("chat.*.bot.*.message").as_deref(), Some("SB_bot"));
        for shared in [
            "chat.#",
            "chat.irc.*.#",
            "chat.#.bot.#",
            "send.irc.bot.#",
            "chat.irc.=23x.#",
        ] {
            assert_eq!(own(shared), None, "{shared}");
        }
    }
}
