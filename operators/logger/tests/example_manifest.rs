//! The example manifest in this crate is a valid configuration.

use switchboard_bus::ConfigErrorKind;
use switchboard_logger::config::{Format, Fsync};
use switchboard_logger::LoggerConfig;

#[test]
fn example_manifest_config_parses_and_checks() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/logger.toml.example");
    let text = std::fs::read_to_string(path).expect("read the example");
    let manifest: toml::Table = toml::from_str(&text).expect("TOML");
    assert_eq!(manifest["stream"].as_array().map(Vec::len), Some(1));
    let config = serde_json::to_value(&manifest["config"]).expect("JSON");
    let config: LoggerConfig = serde_json::from_value(config).expect("a valid LoggerConfig");
    config.check().expect("checks pass");
    assert_eq!(config.format, Format::Json);
    assert_eq!(config.fsync, Fsync::Batch);
    assert_eq!(config.batch, 500);
}

#[test]
fn bad_configs_say_what_to_fix() {
    let bad = |json: serde_json::Value| {
        let c: LoggerConfig = serde_json::from_value(json).expect("parses");
        c.check().expect_err("refused").to_string()
    };
    assert!(bad(serde_json::json!({"dir": "/l", "layout": "{network}/{room}"})).contains("{date}"));
    assert!(
        bad(serde_json::json!({"dir": "/l", "layout": "{date}/{nick}"}))
            .contains("unknown placeholder")
    );
    assert!(bad(serde_json::json!({"dir": "/l", "layout": "../{date}"})).contains("under `dir`"));
    assert!(bad(serde_json::json!({"dir": "/l", "batch": 0})).contains("between 1 and 10000"));
    assert!(
        bad(serde_json::json!({"dir": "/l", "subjects": ["chat.#", "a..b"]}))
            .contains("not a pattern")
    );
    // The SDK's error: the key as `path`, a kind to branch on.
    let c: LoggerConfig =
        serde_json::from_value(serde_json::json!({"dir": "/l", "subjects": ["chat.#", "a..b"]}))
            .expect("parses");
    let e = c.check().expect_err("refused");
    assert_eq!(
        (e.path.as_str(), e.kind()),
        ("subjects[1]", ConfigErrorKind::InvalidValue)
    );
    assert!(
        e.to_string().starts_with("config key `subjects[1]`: "),
        "{e}"
    );
    let unknown = switchboard_bus::parse_config::<LoggerConfig>(
        &serde_json::json!({"dir": "/l", "fsnyc": "never"}),
    )
    .expect_err("unknown key");
    assert!(unknown.to_string().contains("fsnyc"), "{unknown}");
}
