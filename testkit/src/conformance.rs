//! The conformance kit run on an operator, the way a user runs it
//! (`switchboard conformance --json --manifest <file> -- <program>`), for
//! the operators' own tests: each checks that its example manifest (and
//! so its least-privilege grants) passes every rule.

use std::path::Path;

use crate::{bin_path, nats_server_bin};

/// How many rules the kit checks of an operator that answers on NATS.
pub const NATS_RULES: usize = 13;

/// Run the kit on `manifest` with `program` and return its JSON report.
///
/// # Panics
///
/// When the kit cannot run or does not print a JSON report (the panic
/// shows what it printed instead).
pub fn run(manifest: &Path, program: &str) -> serde_json::Value {
    let out = std::process::Command::new(bin_path("switchboard"))
        .args(["conformance", "--json", "--manifest"])
        .arg(manifest)
        .arg("--")
        .arg(program)
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
    assert_eq!(
        report["passed"] == true,
        out.status.success(),
        "the exit status says what the report says: {report:#}"
    );
    report
}

/// Run the kit and assert every one of the [`NATS_RULES`] passed.
///
/// # Panics
///
/// When a rule failed or is missing: the panic shows the whole report.
pub fn assert_passes(manifest: &Path, program: &str) {
    let report = run(manifest, program);
    let rules = report["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), NATS_RULES, "{report:#}");
    assert!(rules.iter().all(|r| r["passed"] == true), "{report:#}");
    assert_eq!(report["passed"], true, "{report:#}");
}
