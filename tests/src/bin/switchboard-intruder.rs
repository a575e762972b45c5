//! `switchboard-intruder`: an operator that tries, with its own
//! credentials, everything an operator must not be able to do on the bus,
//! and reports what it saw; the least-privilege tests run it under a real
//! daemon and check that the server refused every attempt.
//!
//! Config: `victim` (another operator's id), `forbidden` (a data subject
//! outside this operator's grants), `allowed` (one inside them: a
//! positive control, so a test can tell "refused" from "not tried").
//!
//! Every 100 ms it tries again: a `shutdown` of everything through
//! `sb.api.ctl`; a `shutdown` straight to `sb.ctl.<victim>`; a forged
//! heartbeat on `sb.op.<victim>.heartbeat`; a publish on `forbidden` and
//! on `allowed`. It holds subscriptions to `sb.ctl.>`, `sb.ctl.<victim>`
//! and `sb.api.>`, and reports how many messages each delivered, with the
//! outcome of the API request, on `sb.op.<id>.probe`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use switchboard_bus::proto::api::methods;
use switchboard_bus::proto::{
    api_subject, control_subject, heartbeat_subject, OperatorId, SbSubject,
};
use switchboard_bus::{run, Bus, Context, HandlerResult, Operator};
use tokio::sync::Mutex;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    victim: OperatorId,
    forbidden: String,
    allowed: String,
}

struct Intruder {
    probe: Option<tokio::task::JoinHandle<()>>,
}

impl Operator for Intruder {
    type Config = Config;

    async fn start(&mut self, ctx: &mut Context, config: Config) -> HandlerResult {
        let bus = ctx.bus().clone();
        let id = ctx.id().clone();
        self.probe = Some(tokio::spawn(probe(bus, id, config)));
        Ok(())
    }
}

async fn probe(bus: Bus, id: OperatorId, config: Config) {
    let seen: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let victim_ctl = control_subject(&config.victim);
    for subject in ["sb.ctl.>", victim_ctl.as_str(), "sb.api.>"] {
        seen.lock().await.insert(subject.to_owned(), 0);
        match bus.subscribe_raw(subject).await {
            Ok(mut sub) => {
                let seen = Arc::clone(&seen);
                let subject = subject.to_owned();
                tokio::spawn(async move {
                    while sub.next().await.is_some() {
                        *seen.lock().await.entry(subject.clone()).or_default() += 1;
                    }
                });
            }
            Err(e) => eprintln!("subscribe {subject}: {e}"),
        }
    }
    let forged_heartbeat = serde_json::json!({
        "id": config.victim, "pid": std::process::id(), "seq": 1, "state": "running",
        "uptime_ms": 1, "counters": {}, "timestamp": "2026-01-01T00:00:00Z"
    });
    let api_ctl = api_subject(methods::CTL);
    let victim_heartbeat = heartbeat_subject(&config.victim);
    let probe = SbSubject::Op {
        id,
        rest: "probe".into(),
    }
    .to_string();
    let mut round = 0u64;
    loop {
        round += 1;
        let api = match bus
            .request_bytes(
                &api_ctl,
                br#"{"verb":"shutdown","target":"*"}"#.to_vec().into(),
                Duration::from_millis(300),
            )
            .await
        {
            Ok(reply) => format!("reply: {}", String::from_utf8_lossy(&reply)),
            Err(e) => format!("error: {e}"),
        };
        let _ = bus
            .publish_bytes(&victim_ctl, br#"{"verb":"shutdown"}"#.to_vec().into())
            .await;
        let _ = bus.publish_json(&victim_heartbeat, &forged_heartbeat).await;
        let _ = bus
            .publish_bytes(&config.forbidden, b"{}".to_vec().into())
            .await;
        let _ = bus
            .publish_bytes(&config.allowed, b"{}".to_vec().into())
            .await;
        let report = serde_json::json!({
            "round": round,
            "seen": *seen.lock().await,
            "api_ctl": api,
        });
        let _ = bus.publish_json(&probe, &report).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), switchboard_bus::RunError> {
    run(Intruder { probe: None }).await
}
