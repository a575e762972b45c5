//! The example manifest in this crate is a valid configuration (with its
//! secret filled in as the orchestrator would) and grants only its own
//! instance's subjects.

use switchboard_bluesky::config::Strategy;
use switchboard_bluesky::BskyConfig;

#[test]
fn example_manifest_config_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/bluesky.toml.example");
    let text = std::fs::read_to_string(path).expect("read the example");
    let manifest: toml::Table = toml::from_str(&text).expect("TOML");
    let mut config = serde_json::to_value(&manifest["config"]).expect("JSON");
    config["password"] = "from-secrets".into();
    let config: BskyConfig = switchboard_bus::parse_config(&config).expect("a valid BskyConfig");
    assert_eq!(config.service, "https://bsky.social");
    assert_eq!(config.strategy, Strategy::Polling);
    assert_eq!(config.langs, vec!["en"]);
    let id = manifest["id"].as_str().unwrap();
    assert_eq!(
        manifest["publish"].as_array().unwrap()[0].as_str(),
        Some(format!("chat.bluesky.{id}.#").as_str())
    );
    assert_eq!(
        manifest["subscribe"].as_array().unwrap()[0].as_str(),
        Some(format!("send.bluesky.{id}.#").as_str())
    );
}
