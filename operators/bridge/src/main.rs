//! `switchboard-bridge`: the bridge operator binary. Everything is in the
//! library; this only hands the operator to the runtime.

#[tokio::main]
async fn main() -> Result<(), switchboard_bus::RunError> {
    switchboard_bus::run(switchboard_bridge::Bridge::default()).await
}
