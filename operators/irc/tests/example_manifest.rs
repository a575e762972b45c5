//! The example manifest in this crate is a valid configuration (with its
//! secret filled in as the orchestrator would).

use switchboard_irc::IrcConfig;

#[test]
fn example_manifest_config_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/irc.toml.example");
    let text = std::fs::read_to_string(path).expect("read the example");
    let manifest: toml::Table = toml::from_str(&text).expect("TOML");
    let mut config = serde_json::to_value(&manifest["config"]).expect("JSON");
    config["sasl"]["password"] = "from-secrets".into();
    let config: IrcConfig = serde_json::from_value(config).expect("a valid IrcConfig");
    assert_eq!(config.server, "irc.libera.chat");
    assert!(config.tls);
    assert_eq!(config.channels.len(), 2);
    assert_eq!(config.flood.per_second, 4.0);
}
