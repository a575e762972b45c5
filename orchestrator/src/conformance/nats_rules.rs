//! The rules for an operator controlled over NATS (`control = "nats"`,
//! the default): ready, heartbeats, an ack for every verb, halt and
//! resume, reload, in-place restart, shutdown by verb and by SIGTERM.
//! Each rule is judged on what the operator itself puts on the bus (the
//! kit talks to `sb.ctl.<id>` directly, as the daemon does), so a reason
//! names the field or the timing that is wrong.
//!
//! Rules and their steps return `Result<String, String>`: the pass detail
//! or the failure reason, which end as the report's text
//! ([`super::report::Verdict::from_result`]); no caller branches on them.

use std::time::{Duration, Instant};

use switchboard_bus::RawSubscription;
use switchboard_proto::{
    headers, ControlAck, Envelope, FailureCode, Heartbeat, OperatorState, Ready, Verb,
};

use super::harness::{alive, Harness};
use super::{hygiene, Verdict, HEARTBEAT};

/// How long an ack may take (the daemon's own wait for one).
const ACK_WAIT: Duration = Duration::from_secs(5);

/// A late heartbeat is one that took longer than this many intervals:
/// generous, so a loaded machine does not fail an operator that keeps
/// time, while a missing or stalled heartbeat still shows within a second.
pub(super) const LATE: u32 = 5;

/// Check every rule, in an order that leaves the operator running until
/// the two shutdown rules at the end.
pub async fn check(h: &mut Harness, probe: Option<&str>) -> Vec<Verdict> {
    let mut out = Vec::new();
    let started = Instant::now();
    let Some(pid) = h.wait_pid(Duration::from_secs(10)).await else {
        out.push(Verdict::fail(
            "ready",
            format!("the daemon could not start it: {}", start_failure(h).await),
        ));
        return out;
    };
    let ready_verdict = Verdict::from_result("ready", ready(h, pid, started).await);
    let ready_ok = ready_verdict.passed;
    out.push(ready_verdict);
    if !alive(pid) {
        // Nothing else can be judged; say why it is gone.
        let why = h.obituary().await;
        if let Some(v) = out.last_mut() {
            v.detail = format!("{}; the process is gone: {why}", v.detail);
        }
        return out;
    }
    let beats = heartbeats(h, pid).await;
    let beating = beats.is_ok();
    out.push(Verdict::from_result("heartbeat", beats));
    out.push(Verdict::from_result(
        "ack.bad-request",
        bad_request(h).await,
    ));
    out.push(Verdict::from_result(
        "ack.halt",
        verb(h, Verb::Halt, OperatorState::Halted, beating).await,
    ));
    out.push(Verdict::from_result(
        "ack.resume",
        verb(h, Verb::Resume, OperatorState::Running, beating).await,
    ));
    if let Some(probe) = probe {
        out.push(Verdict::from_result(
            "halt-holds-chat",
            halt_holds_chat(h, probe).await,
        ));
    }
    out.push(Verdict::from_result(
        "ack.reload",
        reload(h, pid, beating).await,
    ));
    out.push(Verdict::from_result(
        "ack.restart",
        restart(h, pid, ready_ok).await,
    ));
    out.push(hygiene::survives_garbage(h, pid, HEARTBEAT * LATE).await);
    out.push(hygiene::refused_subscriptions_reported(h).await);
    out.push(Verdict::from_result(
        "ack.shutdown",
        shutdown(h, pid, beating).await,
    ));
    out.push(Verdict::from_result("sigterm", sigterm(h, beating).await));
    out.push(hygiene::own_subjects(h));
    out
}

/// Why the daemon has no process for the operator.
async fn start_failure(h: &Harness) -> String {
    h.status()
        .await
        .and_then(|o| o.reason.or(o.last_exit))
        .unwrap_or_else(|| "no process after 10s".into())
}

/// `ready` within the manifest's `ready_timeout`, with its fields right.
async fn ready(h: &mut Harness, pid: u32, started: Instant) -> Result<String, String> {
    let within = h.manifest.ready_timeout;
    // Wait in short steps, so a process that died says so at once
    // instead of after the whole ready_timeout.
    let m = loop {
        let left = within.saturating_sub(started.elapsed());
        if let Some(m) = Harness::next(&mut h.ready, left.min(Duration::from_millis(100))).await {
            break m;
        }
        if !alive(pid) {
            return Err(format!(
                "no message on sb.op.{}.ready before the process ended",
                h.id()
            ));
        }
        if left.is_zero() {
            return Err(format!(
                "no message on sb.op.{}.ready within ready_timeout ({within:?})",
                h.id()
            ));
        }
    };
    let took = started.elapsed();
    let r: Ready = serde_json::from_slice(&m.payload).map_err(|e| {
        format!(
            "wrong shape: {e}; got {}",
            String::from_utf8_lossy(&m.payload)
        )
    })?;
    same_process(h, "ready", &r.id, r.pid, pid)?;
    if r.protocol != switchboard_proto::PROTOCOL_VERSION {
        return Err(format!(
            "ready.protocol is {}, this daemon speaks {}",
            r.protocol,
            switchboard_proto::PROTOCOL_VERSION
        ));
    }
    Ok(format!("in {}ms, well formed", took.as_millis()))
}

/// `id` is the operator's and `pid` its process (or one in its group).
fn same_process(h: &Harness, what: &str, id: &str, got: u32, pid: u32) -> Result<(), String> {
    if id != h.id().as_str() {
        return Err(format!(
            "{what}.id is {id:?}, expected {:?}",
            h.id().as_str()
        ));
    }
    let group = |p: u32| nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(p as i32))).ok();
    // In its sandbox the operator sees its own pid namespace: its pid
    // there is the last of `NSpid` of the process the daemon reports.
    let inner = crate::sandbox::inner_pid(pid);
    if got != pid && inner != Some(got) && (group(got).is_none() || group(got) != group(pid)) {
        return Err(format!(
            "{what}.pid is {got}, but the process the daemon started is {pid}"
        ));
    }
    Ok(())
}

/// The next heartbeat, decoded; an error says what was wrong.
async fn next_beat(h: &mut Harness, pid: u32) -> Result<Heartbeat, String> {
    let within = HEARTBEAT * LATE;
    let m = Harness::next(&mut h.beats, within).await.ok_or_else(|| {
        format!(
            "none on sb.op.{}.heartbeat within {}ms (SWITCHBOARD_HEARTBEAT_MS is {})",
            h.id(),
            within.as_millis(),
            HEARTBEAT.as_millis()
        )
    })?;
    let b: Heartbeat = serde_json::from_slice(&m.payload).map_err(|e| {
        format!(
            "wrong shape: {e}; got {}",
            String::from_utf8_lossy(&m.payload)
        )
    })?;
    same_process(h, "heartbeat", &b.id, b.pid, pid)?;
    Ok(b)
}

/// Four heartbeats in a row, each on time, `seq` +1 each, `running`.
async fn heartbeats(h: &mut Harness, pid: u32) -> Result<String, String> {
    let mut last: Option<Heartbeat> = None;
    for _ in 0..4 {
        let b = next_beat(h, pid).await?;
        if b.state != OperatorState::Running {
            return Err(format!("state is {:?} while running", b.state.as_str()));
        }
        if let Some(prev) = &last {
            if b.seq != prev.seq + 1 {
                return Err(format!(
                    "seq went from {} to {}; it must grow by 1",
                    prev.seq, b.seq
                ));
            }
            if b.uptime_ms < prev.uptime_ms {
                return Err(format!(
                    "uptime_ms went back from {} to {}",
                    prev.uptime_ms, b.uptime_ms
                ));
            }
        }
        last = Some(b);
    }
    Ok(format!(
        "4 on time (every {}ms), well formed",
        HEARTBEAT.as_millis()
    ))
}

/// Send a request, decode the ack, check `id`.
async fn ack(h: &Harness, payload: &[u8]) -> Result<ControlAck, String> {
    let bytes = h.request(payload, ACK_WAIT).await?;
    let a: ControlAck = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "ack of wrong shape: {e}; got {}",
            String::from_utf8_lossy(&bytes)
        )
    })?;
    if a.id != h.id().as_str() {
        return Err(format!(
            "ack.id is {:?}, expected {:?}",
            a.id,
            h.id().as_str()
        ));
    }
    Ok(a)
}

/// An ack that carried out `verb` and left the operator `state`.
fn expect_ok(a: &ControlAck, verb: Verb, state: OperatorState) -> Result<(), String> {
    if !a.ok {
        return Err(format!("ack has ok=false: {:?}", a.error));
    }
    if a.verb != Some(verb) {
        return Err(format!(
            "ack.verb is {:?}, expected {:?}",
            a.verb.map(|v| v.as_str()),
            verb.as_str()
        ));
    }
    if a.state != state {
        return Err(format!(
            "ack.state is {:?}, expected {:?}",
            a.state.as_str(),
            state.as_str()
        ));
    }
    Ok(())
}

/// Unparseable requests get `ok: false`, `bad_request`, no `verb`.
async fn bad_request(h: &Harness) -> Result<String, String> {
    for payload in [
        &b"not json"[..],
        b"[]",
        b"{}",
        b"{\"verb\":\"pause\"}",
        b"{\"verb\":\"reload\"}",
    ] {
        let shown = String::from_utf8_lossy(payload);
        let a = ack(h, payload)
            .await
            .map_err(|e| format!("for {shown}: {e}"))?;
        let code = a.error.as_ref().map(|e| e.code);
        if a.ok || code != Some(FailureCode::BadRequest) || a.verb.is_some() {
            return Err(format!(
                "for {shown}: expected ok=false, error.code bad_request and no verb; got ok={}, code {:?}, verb {:?}",
                a.ok,
                code,
                a.verb.map(|v| v.as_str())
            ));
        }
    }
    Ok("5 malformed requests each answered bad_request".into())
}

/// `halt` / `resume`: the ack, and (when it heartbeats at all, judged by
/// the heartbeat rule) the next heartbeat in the new state.
async fn verb(
    h: &mut Harness,
    verb: Verb,
    state: OperatorState,
    beating: bool,
) -> Result<String, String> {
    let request = format!("{{\"verb\":\"{}\"}}", verb.as_str());
    let a = ack(h, request.as_bytes()).await?;
    expect_ok(&a, verb, state)?;
    if !beating {
        return Ok(format!("acked, state {}", state.as_str()));
    }
    h.drain_beats().await;
    let pid = h.status().await.and_then(|o| o.pid).unwrap_or_default();
    let b = next_beat(h, pid).await?;
    if b.state != state {
        return Err(format!(
            "acked, but the next heartbeat says state {:?}, expected {:?}",
            b.state.as_str(),
            state.as_str()
        ));
    }
    Ok(format!("acked and heartbeats say {}", state.as_str()))
}

/// When an answer to envelope `id` arrives on `replies` within `within`.
async fn answer_to(replies: &mut RawSubscription, id: &str, within: Duration) -> Option<Instant> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = Harness::next(replies, left).await?;
        if Envelope::from_slice(&m.payload)
            .is_ok_and(|e| e.header(headers::IN_REPLY_TO) == Some(id))
        {
            return Some(Instant::now());
        }
    }
}

/// How long a held probe must stay unanswered while halted.
const HELD: Duration = Duration::from_secs(1);

/// `halt-holds-chat`: the probe is answered while running; sent while
/// halted it is not answered then, and is answered after `resume`
/// (docs/PROTOCOL.md, Control requests: halted deliveries are held, not
/// dropped). A bot that drops chat while halted loses what people said
/// during a maintenance pause.
async fn halt_holds_chat(h: &mut Harness, probe: &str) -> Result<String, String> {
    let subject = hygiene::chat_subject(h);
    let mut replies = h
        .bus
        .subscribe_raw("send.>")
        .await
        .map_err(|e| format!("the kit cannot subscribe to send.>: {e}"))?;
    h.bus.sync().await.map_err(|e| format!("bus: {e}"))?;
    let say = |text: &str| {
        Envelope::new(
            "conformance",
            serde_json::json!({"text": text, "sender": "conformance", "room": "conformance", "private": false}),
        )
        .with_header(headers::ROOM, "conformance")
    };
    let publish = |env: Envelope| {
        let bus = h.bus.clone();
        let subject = subject.clone();
        async move {
            bus.publish(&subject, &env)
                .await
                .map_err(|e| format!("the kit cannot publish on {subject}: {e}"))
        }
    };
    let first = say(probe);
    let first_id = first.id().unwrap_or_default().to_owned();
    publish(first).await?;
    if answer_to(&mut replies, &first_id, ACK_WAIT).await.is_none() {
        return Err(format!(
            "no answer to the probe {probe:?} on {subject} within {ACK_WAIT:?} while running \
             (an answer is a send.… envelope with in-reply-to set to the probe's id)"
        ));
    }
    let a = ack(h, b"{\"verb\":\"halt\"}").await?;
    expect_ok(&a, Verb::Halt, OperatorState::Halted)?;
    let held = say(probe);
    let held_id = held.id().unwrap_or_default().to_owned();
    publish(held).await?;
    if answer_to(&mut replies, &held_id, HELD).await.is_some() {
        let _ = ack(h, b"{\"verb\":\"resume\"}").await;
        return Err(
            "answered the probe while halted; halted deliveries must wait for resume".into(),
        );
    }
    let a = ack(h, b"{\"verb\":\"resume\"}").await?;
    expect_ok(&a, Verb::Resume, OperatorState::Running)?;
    let resumed = Instant::now();
    match answer_to(&mut replies, &held_id, ACK_WAIT).await {
        Some(at) => Ok(format!(
            "a probe sent while halted was held {}ms and answered {}ms after resume",
            HELD.as_millis(),
            at.duration_since(resumed).as_millis()
        )),
        None => Err(format!(
            "the probe sent while halted was never answered after resume (within {ACK_WAIT:?}): \
             it was dropped; hold chat deliveries while halted and hand them over on resume"
        )),
    }
}

/// `reload` with the manifest's config, its secrets resolved as the
/// daemon's own reload sends it (without them, an operator that requires
/// a secret refuses the config, rightly): acked, state unchanged, the
/// same process still alive and (when it heartbeats) still heartbeating.
async fn reload(h: &mut Harness, pid: u32, beating: bool) -> Result<String, String> {
    let config = h
        .manifest
        .resolve_secrets(|name| std::env::var(name).ok())
        .map_err(|e| format!("the manifest's secrets cannot be read for the reload: {e}"))?;
    let request = serde_json::json!({"verb": "reload", "config": config});
    let a = ack(h, request.to_string().as_bytes()).await?;
    expect_ok(&a, Verb::Reload, OperatorState::Running)?;
    if !alive(pid) {
        return Err(format!("process {pid} exited after acking reload"));
    }
    if beating {
        h.drain_beats().await;
        next_beat(h, pid)
            .await
            .map_err(|e| format!("after reload: {e}"))?;
    }
    Ok("acked, same process, still running".into())
}

/// `restart`: in place, ready again from the same process, acked running.
/// A ready of the wrong shape is the `ready` rule's failure when that one
/// already failed, not a second one here.
async fn restart(h: &mut Harness, pid: u32, ready_ok: bool) -> Result<String, String> {
    let a = ack(h, b"{\"verb\":\"restart\"}").await?;
    expect_ok(&a, Verb::Restart, OperatorState::Running)?;
    let m = Harness::next(&mut h.ready, h.manifest.ready_timeout)
        .await
        .ok_or("acked, but no ready again after the in-place restart")?;
    let r: Ready = match serde_json::from_slice(&m.payload) {
        Ok(r) => r,
        Err(_) if !ready_ok => return Ok("acked, ready again (its shape: see `ready`)".into()),
        Err(e) => return Err(format!("the ready after restart has the wrong shape: {e}")),
    };
    same_process(h, "ready", &r.id, r.pid, pid)
        .map_err(|e| format!("{e} (restart is in place: the process stays)"))?;
    Ok("acked, ready again from the same process".into())
}

/// `shutdown`: acked `stopping`, then exit 0 within `stop_timeout`.
/// When it heartbeats at all, a final heartbeat says `stopping`.
async fn shutdown(h: &mut Harness, pid: u32, beating: bool) -> Result<String, String> {
    h.drain_beats().await;
    let a = ack(h, b"{\"verb\":\"shutdown\"}").await?;
    expect_ok(&a, Verb::Shutdown, OperatorState::Stopping)?;
    let exited = clean_exit(h, pid, "after the shutdown ack").await?;
    if beating {
        final_beat(h).await?;
    }
    Ok(exited)
}

/// A heartbeat with state `stopping` among those that arrived before
/// the process ended (docs/PROTOCOL.md, Shutdown, step 4).
async fn final_beat(h: &mut Harness) -> Result<(), String> {
    while let Some(m) = Harness::next(&mut h.beats, Duration::from_millis(200)).await {
        if serde_json::from_slice::<Heartbeat>(&m.payload)
            .is_ok_and(|b| b.state == OperatorState::Stopping)
        {
            return Ok(());
        }
    }
    Err("exited without a final heartbeat in state `stopping`".into())
}

/// SIGTERM to a fresh process (started through the daemon): exit 0
/// within `stop_timeout`, with a final heartbeat when it heartbeats.
async fn sigterm(h: &mut Harness, beating: bool) -> Result<String, String> {
    h.ctl(Verb::Restart, None).await?;
    let Some(m) = Harness::next(&mut h.ready, h.manifest.ready_timeout).await else {
        return Err("started again for the SIGTERM check, but it never sent ready".into());
    };
    // The pid status shows (the host's numbering: in a sandbox, the one
    // in ready is its own namespace's).
    let _ = serde_json::from_slice::<Ready>(&m.payload);
    let pid = h
        .status()
        .await
        .and_then(|o| o.pid)
        .ok_or("no process to signal")?;
    h.drain_beats().await;
    super::harness::terminate(pid)?;
    let exited = clean_exit(h, pid, "after SIGTERM").await?;
    if beating {
        final_beat(h).await?;
    }
    Ok(exited)
}

/// Exit code 0 within the manifest's `stop_timeout`.
pub(super) async fn clean_exit(h: &mut Harness, pid: u32, after: &str) -> Result<String, String> {
    let limit = h.manifest.stop_timeout;
    let t = Instant::now();
    let how = h
        .wait_exit(pid, limit)
        .await
        .map_err(|e| format!("{after}: {e} (stop_timeout is {limit:?})"))?;
    let took = t.elapsed();
    if how != "exited with code 0" {
        return Err(format!("{after}: {how}; a clean stop exits 0"));
    }
    Ok(format!("exited 0 in {}ms {after}", took.as_millis()))
}
