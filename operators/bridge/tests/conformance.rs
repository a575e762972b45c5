//! The bridge, with its example manifest (and so its least-privilege
//! grants), passes the conformance kit: lifecycle, every control verb,
//! garbage on its subjects, and nothing refused by nats-server.

#[test]
fn the_bridge_passes_the_conformance_kit_with_its_example_manifest() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/bridge.toml.example");
    let text = std::fs::read_to_string(example).expect("read the example");
    let bridge = env!("CARGO_BIN_EXE_switchboard-bridge");
    let text = text.replace(
        "command = \"switchboard-bridge\"",
        &format!("command = {bridge:?}"),
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("bridge.toml");
    std::fs::write(&manifest, text).unwrap();
    switchboard_testkit::conformance::assert_passes(&manifest, bridge);
}
