//! `switchboard-flooder`: an operator that publishes, as fast as it can,
//! what a hostile operator would: chat envelopes claiming any `source`,
//! on any subjects, padded to any size. The trust tests run it under a
//! real daemon with default grants and check that nothing it does
//! reaches others: forged envelopes are refused (by nats-server or by the
//! receiving SDK), a `!ping` flood gets a bounded number of answers, and
//! a flood of large messages evicts only its own history.
//!
//! Config: `subjects` (published on in turn), `source` (default: its own
//! id), `text`, `count` (envelopes in all), `pad` (bytes of padding in
//! each body, default 0), `senders` (distinct sender names cycled
//! through, default 1). When done it publishes `{"published": n}` on
//! `sb.op.<id>.done`, and does it again every second (a test may look
//! late).

use std::time::Duration;

use serde::Deserialize;
use switchboard_bus::proto::{Envelope, SbSubject};
use switchboard_bus::{run, Context, HandlerResult, Operator};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    subjects: Vec<String>,
    #[serde(default)]
    source: Option<String>,
    text: String,
    count: u64,
    #[serde(default)]
    pad: usize,
    #[serde(default = "one")]
    senders: u64,
}

fn one() -> u64 {
    1
}

struct Flooder {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Operator for Flooder {
    type Config = Config;

    async fn start(&mut self, ctx: &mut Context, config: Config) -> HandlerResult {
        let bus = ctx.bus().clone();
        let id = ctx.id().clone();
        self.task = Some(tokio::spawn(async move {
            let source = config.source.unwrap_or_else(|| id.to_string());
            // The padding is spliced into the encoded envelope rather than
            // encoded with it each time: a 1 MiB string through serde in a
            // debug build takes long enough to starve the heartbeats.
            let empty_pad = r#""pad":"""#;
            let pad = format!(r#""pad":"{}""#, "x".repeat(config.pad));
            let mut published = 0u64;
            for i in 0..config.count {
                let Some(subject) = config
                    .subjects
                    .get(usize::try_from(i).unwrap_or(0) % config.subjects.len().max(1))
                else {
                    break;
                };
                let body = serde_json::json!({
                    "text": config.text,
                    "sender": format!("mallory{}", i % config.senders.max(1)),
                    "room": "r",
                    "pad": "",
                });
                let encoded = Envelope::new(source.as_str(), body).to_vec();
                let Ok(text) = String::from_utf8(encoded) else {
                    break;
                };
                let payload = text.replacen(empty_pad, &pad, 1);
                if bus
                    .publish_bytes(subject, payload.into_bytes().into())
                    .await
                    .is_ok()
                {
                    published += 1;
                }
                if i % 64 == 63 {
                    // Let the runtime's heartbeats through.
                    tokio::task::yield_now().await;
                }
            }
            let _ = bus.flush().await;
            let done = SbSubject::Op {
                id,
                rest: "done".into(),
            }
            .to_string();
            loop {
                let _ = bus
                    .publish_json(&done, &serde_json::json!({ "published": published }))
                    .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
        Ok(())
    }

    async fn stop(&mut self, _ctx: &mut Context) -> HandlerResult {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), switchboard_bus::RunError> {
    run(Flooder { task: None }).await
}
