//! `switchboard-bluesky`: the Bluesky operator binary. Everything is in
//! the library; this only hands the operator to the runtime, which reads
//! the launch environment (docs/PROTOCOL.md, "Launch environment").

#[tokio::main]
async fn main() -> Result<(), switchboard_bus::RunError> {
    switchboard_bus::run(switchboard_bluesky::BskyOperator::new()).await
}
