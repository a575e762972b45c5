//! The Nostr operator, with its example manifest (so its least-privilege
//! grants) pointed at a real local relay, passes the conformance kit:
//! lifecycle, every control verb, garbage on its subjects, and nothing
//! refused by nats-server.

use switchboard_testkit::nostr::NostrRelay;

/// The example's key is a file under /run/credentials; the test's is
/// this one, written to a temporary file the daemon reads.
const SECRET: &str = "6b911fd37cdf5c81d4c0adb1ab7fa822ed253ab0ad9aa18d77257c88b29b718e";

#[test]
fn the_nostr_operator_passes_the_conformance_kit_with_its_example_manifest() {
    let relay = NostrRelay::start().expect("nostr-relay (make tools)");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/nostr.toml.example");
    let text = std::fs::read_to_string(example).expect("read the example");
    let mut manifest: toml::Table = toml::from_str(&text).expect("the example is TOML");
    let nostr = env!("CARGO_BIN_EXE_switchboard-nostr");
    manifest.insert("command".into(), nostr.into());
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("nsec");
    std::fs::write(&key, format!("{SECRET}\n")).unwrap();
    let config = manifest["config"].as_table_mut().expect("[config]");
    config.insert(
        "relays".into(),
        toml::Value::Array(vec![relay.url().into()]),
    );
    let secrets = manifest["secrets"].as_table_mut().expect("[secrets]");
    let mut file = toml::Table::new();
    file.insert("file".into(), key.display().to_string().into());
    secrets.insert("secret_key".into(), file.into());
    let path = dir.path().join("nostr.toml");
    std::fs::write(&path, toml::to_string(&manifest).unwrap()).unwrap();

    switchboard_testkit::conformance::assert_passes(&path, nostr);
}
