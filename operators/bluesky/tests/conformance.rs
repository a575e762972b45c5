//! The Bluesky operator, with its example manifest (so its least-privilege
//! grants) pointed at the local XRPC server, passes the conformance kit:
//! lifecycle, every control verb, garbage on its subjects, and nothing
//! refused by nats-server.

mod common;

use common::{Pds, BOT_HANDLE, PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bluesky_operator_passes_the_conformance_kit_with_its_example_manifest() {
    let pds = Pds::start().await;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/bluesky.toml.example");
    let text = std::fs::read_to_string(example).expect("read the example");
    let mut manifest: toml::Table = toml::from_str(&text).expect("the example is TOML");
    let bluesky = env!("CARGO_BIN_EXE_switchboard-bluesky");
    manifest.insert("command".into(), bluesky.into());
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    let config = manifest["config"].as_table_mut().expect("[config]");
    config.insert("service".into(), pds.url.clone().into());
    config.insert("identifier".into(), BOT_HANDLE.into());
    let secrets = manifest["secrets"].as_table_mut().expect("[secrets]");
    let mut file = toml::Table::new();
    file.insert("file".into(), password.display().to_string().into());
    secrets.insert("password".into(), file.into());
    let path = dir.path().join("bluesky.toml");
    std::fs::write(&path, toml::to_string(&manifest).unwrap()).unwrap();

    // The kit blocks: off the runtime the local XRPC server answers on.
    tokio::task::spawn_blocking(move || {
        switchboard_testkit::conformance::assert_passes(&path, bluesky);
    })
    .await
    .expect("the conformance kit's run");
    drop(dir);
}
