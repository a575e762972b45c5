//! The example manifest (and the one `make run` uses) are valid: the
//! daemon accepts their grants, and their configs parse.

use switchboard_dashboard::DashboardConfig;

fn check(path: &str) -> toml::Table {
    let text = std::fs::read_to_string(path).expect("read the manifest");
    let manifest: toml::Table = toml::from_str(&text).expect("TOML");
    let mut config = serde_json::to_value(&manifest["config"]).expect("JSON");
    // A resolved secret arrives as a plain string at its key.
    if manifest.contains_key("secrets") {
        config["token"] = serde_json::json!("resolved");
    }
    let config: DashboardConfig =
        switchboard_bus::parse_config(&config).expect("a valid DashboardConfig");
    assert!(config.listen.ip().is_loopback());
    // Least privilege: the publish box's console rooms only, read-only
    // subscriptions.
    assert_eq!(
        manifest["publish"].as_array().cloned().unwrap_or_default(),
        vec![toml::Value::from("chat.console.dashboard.#")]
    );
    // The replay view reads the stream; nothing else of it.
    assert_eq!(
        manifest["stream"].as_array().cloned().unwrap_or_default(),
        vec![toml::Value::from("read")]
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("dashboard.toml"), &text).expect("copy");
    let out = std::process::Command::new(switchboard_testkit::bin_path("switchboard"))
        .arg("validate")
        .arg(dir.path())
        .output()
        .expect("switchboard validate");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    manifest
}

#[test]
fn the_example_manifest_is_valid_and_least_privilege() {
    let m = check(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dashboard.toml.example"
    ));
    assert!(
        !m.contains_key("secrets"),
        "the example names no real secret file"
    );
}

#[test]
fn the_make_run_manifest_is_valid() {
    let m = check(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/dev/operators.d/dashboard.toml"
    ));
    assert!(m["secrets"].get("token").is_some());
}
