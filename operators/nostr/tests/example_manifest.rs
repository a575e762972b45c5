//! The example manifest in this crate is a valid configuration (with its
//! secret filled in as the orchestrator would).

use switchboard_nostr::NostrConfig;

#[test]
fn example_manifest_config_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/nostr.toml.example");
    let text = std::fs::read_to_string(path).expect("read the example");
    let manifest: toml::Table = toml::from_str(&text).expect("TOML");
    let mut config = serde_json::to_value(&manifest["config"]).expect("JSON");
    config["secret_key"] =
        "6b911fd37cdf5c81d4c0adb1ab7fa822ed253ab0ad9aa18d77257c88b29b718e".into();
    let config: NostrConfig = serde_json::from_value(config).expect("a valid NostrConfig");
    assert_eq!(config.relays.len(), 3);
    assert!(!config.relays[2].write);
    assert_eq!(
        config.subscriptions[0].mentions,
        vec![config.keys.public_key()]
    );
    assert_eq!(
        config.subscriptions[1].hashtags,
        vec!["switchboard".to_string()]
    );
    assert!(manifest["secrets"].get("secret_key").is_some());
}
