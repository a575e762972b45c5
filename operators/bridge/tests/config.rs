//! The example manifest is valid and grants exactly what its gateways
//! use; bad configs are refused with what to fix.

use std::collections::BTreeSet;

use serde_json::json;
use switchboard_bridge::config::ConfigErrorKind;
use switchboard_bridge::relay;
use switchboard_bridge::BridgeConfig;

fn strings(v: &toml::Value) -> BTreeSet<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

#[test]
fn the_example_manifest_is_valid_and_least_privilege() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/bridge.toml.example");
    let text = std::fs::read_to_string(path).expect("read the example");
    let manifest: toml::Table = toml::from_str(&text).expect("TOML");
    let config = serde_json::to_value(&manifest["config"]).expect("JSON");
    let config: BridgeConfig = switchboard_bus::parse_config(&config).expect("a BridgeConfig");
    config.check().expect("checks pass");
    let mut subscribe = BTreeSet::new();
    let mut publish = BTreeSet::new();
    for g in &config.gateways {
        for room in relay::read_rooms(g) {
            for kind in relay::kinds_for(g) {
                subscribe.insert(room.event_subject(kind));
            }
        }
        for m in g.members.iter().filter(|m| m.direction.writes()) {
            publish.insert(m.address().send_subject("message"));
        }
    }
    assert_eq!(strings(&manifest["subscribe"]), subscribe);
    assert_eq!(strings(&manifest["publish"]), publish);
}

fn refused(config: serde_json::Value) -> (ConfigErrorKind, String) {
    let c: BridgeConfig = switchboard_bus::parse_config(&config).expect("parses");
    let e = c.check().expect_err("refused");
    (e.kind(), e.to_string())
}

#[test]
fn bad_configs_say_what_to_fix() {
    let a = json!({"protocol": "irc", "instance": "a", "room": "#a"});
    let b = json!({"protocol": "irc", "instance": "b", "room": "#b"});
    let gw = |extra: serde_json::Value| {
        let mut g = json!({"name": "g", "members": [a, b]});
        if let (Some(g), Some(e)) = (g.as_object_mut(), extra.as_object()) {
            g.extend(e.clone());
        }
        json!({"gateways": [g]})
    };
    assert_eq!(
        refused(json!({"gateways": []})).0,
        ConfigErrorKind::NoGateways
    );
    let (kind, msg) = refused(gw(json!({"members": [a]})));
    assert_eq!(kind, ConfigErrorKind::Members);
    assert!(msg.contains("nothing to relay"), "{msg}");
    let (_, msg) = refused(gw(json!({"members": [a, a]})));
    assert!(msg.contains("listed twice"), "{msg}");
    let out_only = json!({"protocol": "irc", "instance": "b", "room": "#b", "direction": "out"});
    let in_only = json!({"protocol": "irc", "instance": "a", "room": "#a", "direction": "in"});
    let out_too = json!({"protocol": "irc", "instance": "c", "room": "#c", "direction": "out"});
    let (_, msg) = refused(gw(json!({"members": [out_only, out_too]})));
    assert!(msg.contains("nothing to relay"), "{msg}");
    // An `in` member and an `out` member relay one way: accepted.
    let c: BridgeConfig =
        serde_json::from_value(gw(json!({"members": [in_only, out_only]}))).unwrap();
    c.check().expect("one-way gateway");
    let (kind, msg) = refused(gw(json!({"format": "<{nick}>"})));
    assert_eq!(kind, ConfigErrorKind::Format);
    assert!(msg.contains("no {text}"), "{msg}");
    let (_, msg) = refused(gw(json!({"format": "<{user}> {text}"})));
    assert!(msg.contains("unknown placeholder"), "{msg}");
    let (kind, _) = refused(gw(json!({"rate": {"per_second": 0.0}})));
    assert_eq!(kind, ConfigErrorKind::Rate);
    refused(gw(json!({"rate": {"burst": 0}})));
    refused(gw(json!({"rate": {"max_queue": 0}})));
    let two = json!({"gateways": [gw(json!({}))["gateways"][0], gw(json!({}))["gateways"][0]]});
    assert_eq!(refused(two).0, ConfigErrorKind::Name);
    // Unknown keys are refused by name (a typo never silently does nothing).
    let e = switchboard_bus::parse_config::<BridgeConfig>(&gw(json!({"relay_join": true})))
        .expect_err("unknown key");
    assert!(e.to_string().contains("relay_join"), "{e}");
    let e = switchboard_bus::parse_config::<BridgeConfig>(&json!({"gateways": [{"name": "g",
        "members": [{"protocol": "irc", "instance": "a", "room": "#a", "direction": "both"}]}]}))
    .expect_err("bad direction");
    assert!(e.to_string().contains("direction"), "{e}");
}
