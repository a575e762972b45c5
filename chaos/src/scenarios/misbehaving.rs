//! An operator that sends garbage heartbeats and ignores control.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use switchboard_proto::api::SupervisedState;

use crate::misbehaving;
use crate::rig::{operator, start};
use crate::traffic::with_traffic;
use crate::{pingbot, Outcome};
use serde_json::json;

/// An operator that sends malformed heartbeats between valid ones and
/// never answers control requests, while pings flow through the ping bot.
///
/// # Errors
///
/// When the rig fails.
pub async fn misbehaving_operator() -> anyhow::Result<Outcome> {
    let rig = start(&[
        ("bot.toml".into(), pingbot("bot")),
        ("bad.toml".into(), misbehaving("bad")),
    ])
    .await?;
    rig.try_wait_for("bot", "running", |o| o.state == SupervisedState::Running)
        .await?;
    let first = rig
        .try_wait_for("bad", "running", |o| o.state == SupervisedState::Running)
        .await?;
    let mut halt = None;
    let mut status_during = None;
    let mut restarted = None;
    let tally = with_traffic(&rig, Duration::from_millis(300), || async {
        // `halt` is never answered: the daemon must time out, not hang,
        // and keep answering status meanwhile.
        let bus = rig.bus.clone();
        let ctl = tokio::spawn(async move {
            let started = Instant::now();
            let reply: Result<switchboard_proto::api::CtlReply, _> = bus
                .request_json(
                    "sb.api.ctl",
                    &json!({"verb": "halt", "target": "bad"}),
                    Duration::from_secs(30),
                )
                .await;
            (started.elapsed(), reply)
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        status_during = Some((rig.try_status().await.is_ok(), started.elapsed()));
        halt = Some(ctl.await?);
        // A restart is the daemon's own doing (signals), so it works.
        let _: switchboard_proto::api::CtlReply = rig
            .bus
            .request_json(
                "sb.api.ctl",
                &json!({"verb": "restart", "target": "bad"}),
                Duration::from_secs(30),
            )
            .await?;
        restarted = Some(
            rig.try_wait_for("bad", "a new process", |o| {
                o.state == SupervisedState::Running && o.pid != first.pid
            })
            .await,
        );
        Ok(())
    })
    .await?;
    let after = operator(&rig, "bad").await?;
    let (halt_took, halt_reply) = halt.context("halt was sent")?;
    let halt_error = match &halt_reply {
        Ok(r) => r.results.first().and_then(|o| o.error.clone()),
        Err(e) => Some(format!("request failed: {e}")),
    };
    let (status_ok, status_took) = status_during.unwrap_or((false, Duration::ZERO));
    let ok = after.malformed_lifecycle > 0
        && halt_reply
            .as_ref()
            .is_ok_and(|r| r.results.first().is_some_and(|o| !o.ok))
        && status_ok
        && status_took < Duration::from_secs(1)
        && restarted.as_ref().is_some_and(Result::is_ok);
    Ok(Outcome {
        fault: "operator sends malformed heartbeats and ignores control",
        expected: "garbage counted, it stays running on its valid heartbeats; an unanswered `halt` fails after the control timeout while status keeps answering; `restart` replaces it",
        observed: format!(
            "malformed counted: {}; halt answered in {} ms: {}; status during it in {} ms; restarted: {}",
            after.malformed_lifecycle,
            halt_took.as_millis(),
            halt_error.unwrap_or_else(|| "no error".into()),
            status_took.as_millis(),
            restarted.as_ref().is_some_and(Result::is_ok)
        ),
        ok,
        tally: Some(tally),
        at_most_once: true,
    })
}
