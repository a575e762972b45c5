//! The bridge as an operator: subscribes to the rooms its gateways read,
//! turns each event into relayed envelopes ([`crate::relay`]) and queues
//! them per gateway ([`crate::queue`]).

use switchboard_bus::{Context, Delivery, HandlerResult, Operator};

use crate::config::{BridgeConfig, Gateway};
use crate::echo::Echoes;
use crate::queue::GatewayQueue;
use crate::relay::{self, Skip};

/// Heartbeat counter: events not relayed because they were copies made
/// by a bridge (the `bridge-origin` header), the bridge's own, or the
/// echo of a line it sent ([`crate::echo`]).
pub const LOOPS_STOPPED: &str = "bridge_loops_stopped";

/// The bridge operator.
#[derive(Debug, Default)]
pub struct Bridge {
    gateways: Vec<(Gateway, GatewayQueue)>,
    echoes: Echoes,
}

impl Operator for Bridge {
    type Config = BridgeConfig;

    fn version(&self) -> Option<String> {
        Some(env!("CARGO_PKG_VERSION").to_owned())
    }

    async fn start(&mut self, ctx: &mut Context, config: BridgeConfig) -> HandlerResult {
        config.check()?;
        for (_, queue) in self.gateways.drain(..) {
            queue.close();
        }
        for g in config.gateways {
            for room in relay::read_rooms(&g) {
                for kind in relay::kinds_for(&g) {
                    ctx.subscribe(room.event_subject(kind).as_str()).await?;
                }
            }
            let queue = GatewayQueue::spawn(&g.name, &g.rate, ctx.bus().clone());
            tracing::info!(gateway = %g.name, members = g.members.len(), "gateway up");
            self.gateways.push((g, queue));
        }
        Ok(())
    }

    async fn message(&mut self, ctx: &mut Context, d: Delivery) -> HandlerResult {
        let chat = d.chat()?;
        if self.echoes.is_echo(&chat.address(), chat.text()) {
            ctx.bus().stats().counter(LOOPS_STOPPED).add(1);
            tracing::debug!(subject = %d.subject, "not relayed: the echo of a line the bridge sent");
            return Ok(());
        }
        let source = ctx.id().as_str();
        for (gateway, queue) in &self.gateways {
            match relay::relay(gateway, &chat, source) {
                Ok(out) => {
                    for o in out {
                        self.echoes.sent(&o.to, o.text());
                        queue.push(o);
                    }
                }
                Err(Skip::Own | Skip::Relayed) => {
                    ctx.bus().stats().counter(LOOPS_STOPPED).add(1);
                }
                Err(reason) => {
                    tracing::trace!(gateway = %gateway.name, ?reason, subject = %d.subject, "not relayed");
                }
            }
        }
        Ok(())
    }

    /// What is queued is discarded and counted (`bridge_discarded`): a
    /// stopped bridge sends nothing more.
    async fn stop(&mut self, _ctx: &mut Context) -> HandlerResult {
        for (_, queue) in self.gateways.drain(..) {
            queue.close();
        }
        Ok(())
    }

    /// Hold the queues: nothing more is sent until `resume` (new events
    /// are held by the runtime meanwhile).
    async fn halt(&mut self, _ctx: &mut Context) -> HandlerResult {
        self.gateways.iter().for_each(|(_, q)| q.pause(true));
        Ok(())
    }

    async fn resume(&mut self, _ctx: &mut Context) -> HandlerResult {
        self.gateways.iter().for_each(|(_, q)| q.pause(false));
        Ok(())
    }
}
