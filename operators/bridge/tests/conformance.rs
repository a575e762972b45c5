//! The bridge, with its example manifest (and so its least-privilege
//! grants), passes the conformance kit: lifecycle, every control verb,
//! garbage on its subjects, and nothing refused by nats-server.

use switchboard_testkit::{bin_path, nats_server_bin};

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
    let out = std::process::Command::new(bin_path("switchboard"))
        .args(["conformance", "--json", "--manifest"])
        .arg(&manifest)
        .arg("--")
        .arg(bridge)
        .env(
            "SWITCHBOARD_NATS_SERVER",
            nats_server_bin().expect("nats-server (make tools)"),
        )
        .output()
        .expect("run switchboard conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let rules = report["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 13, "{report:#}");
    assert!(rules.iter().all(|r| r["passed"] == true), "{report:#}");
    assert_eq!(report["passed"], true);
    assert!(out.status.success());
}
