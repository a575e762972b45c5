//! Helpers shared by the end-to-end tests: spawn real operator processes
//! with the launch environment and watch their lifecycle on the bus.

use std::time::Duration;

use futures::StreamExt;
use switchboard_bus::proto::{control_subject, launch, ControlAck, OperatorId};
use switchboard_bus::{Bus, RawSubscription};

pub use switchboard_testkit::TestOperator;

/// Spawn the workspace binary `bin` as operator `id` against `nats_url`
/// with a 100 ms heartbeat, no config, and `extra` environment variables
/// (which win over those two).
pub fn spawn_operator(bin: &str, id: &str, nats_url: &str, extra: &[(&str, &str)]) -> TestOperator {
    let path = switchboard_testkit::bin_path(bin);
    let mut env = vec![(launch::HEARTBEAT_MS, "100"), ("SWITCHBOARD_LOG", "info")];
    env.extend_from_slice(extra);
    TestOperator::spawn(&path, id, nats_url, None, &env)
}

/// The next message on `sub` parsed as JSON, failing the test after
/// `within`.
pub async fn next_json(sub: &mut RawSubscription, within: Duration) -> serde_json::Value {
    let msg = tokio::time::timeout(within, sub.next())
        .await
        .unwrap_or_else(|_| panic!("nothing arrived within {within:?}"))
        .expect("subscription open");
    serde_json::from_slice(&msg.payload).expect("lifecycle payloads are JSON")
}

/// Send a control request to operator `id` and return its ack.
pub async fn control(bus: &Bus, id: &str, request: serde_json::Value) -> ControlAck {
    let subject = control_subject(&OperatorId::new(id).expect("a valid operator id"));
    bus.request_json(&subject, &request, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("control {request} to {id}: {e}"))
}
