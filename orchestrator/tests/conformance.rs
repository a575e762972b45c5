//! `switchboard conformance` end to end: the kit runs real operators
//! (the Rust ping bot, the Python echo operator, and a Python operator
//! with known faults) under its own temporary daemon and real
//! nats-server, and its verdicts are read from `--json`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The venv's Python with nats-py (`make tools`): fail, never skip.
fn python() -> String {
    let python = switchboard_testkit::workspace_root().join(".tools/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `make tools`",
        python.display()
    );
    python.display().to_string()
}

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/conformance")
        .join(name);
    assert!(p.is_file(), "{} is missing", p.display());
    p.display().to_string()
}

/// Run the kit; the exit code and the verdicts by rule (passed, detail).
fn conformance(
    manifest: Option<&Path>,
    command: &[&str],
) -> (i32, BTreeMap<String, (bool, String)>) {
    conformance_probe(manifest, None, command)
}

/// [`conformance`] with `--probe`: also the `halt-holds-chat` rule.
fn conformance_probe(
    manifest: Option<&Path>,
    probe: Option<&str>,
    command: &[&str],
) -> (i32, BTreeMap<String, (bool, String)>) {
    let nats = switchboard_testkit::nats_server_bin().expect("nats-server (make tools)");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.arg("conformance").arg("--json");
    if let Some(m) = manifest {
        cmd.arg("--manifest").arg(m);
    }
    if let Some(p) = probe {
        cmd.arg("--probe").arg(p);
    }
    let out = cmd
        .arg("--")
        .args(command)
        .env("SWITCHBOARD_NATS_SERVER", nats)
        .output()
        .expect("run switchboard conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let rules = report["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_owned(),
                (
                    r["passed"].as_bool().unwrap(),
                    r["detail"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(
        report["passed"].as_bool(),
        Some(out.status.code() == Some(0)),
        "exit code and report disagree: {stdout}"
    );
    (out.status.code().unwrap_or(-1), rules)
}

fn failed(rules: &BTreeMap<String, (bool, String)>) -> Vec<&str> {
    rules
        .iter()
        .filter(|(_, (passed, _))| !passed)
        .map(|(r, _)| r.as_str())
        .collect()
}

/// Every rule the kit checks for a NATS-controlled operator (plus
/// `manifest-command` with `--manifest`, `halt-holds-chat` with `--probe`).
const NATS_RULES: [&str; 12] = [
    "ready",
    "heartbeat",
    "ack.bad-request",
    "ack.halt",
    "ack.resume",
    "ack.reload",
    "ack.restart",
    "survives-garbage",
    "refused-subscriptions-reported",
    "ack.shutdown",
    "sigterm",
    "own-subjects",
];

fn assert_all_pass(rules: &BTreeMap<String, (bool, String)>, code: i32) {
    assert_all_pass_with(rules, code, &[]);
}

/// Every NATS rule and the `extra` ones checked, and all passed.
fn assert_all_pass_with(rules: &BTreeMap<String, (bool, String)>, code: i32, extra: &[&str]) {
    let names: Vec<&str> = rules.keys().map(String::as_str).collect();
    let mut want = NATS_RULES.to_vec();
    want.extend_from_slice(extra);
    want.sort();
    assert_eq!(names, want);
    assert!(failed(rules).is_empty(), "{rules:#?}");
    assert_eq!(code, 0);
}

fn manifest_file(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("op.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_rust_ping_bot_passes() {
    let (code, rules) = conformance(None, &[&common::pingbot()]);
    assert_all_pass(&rules, code);
}

/// A manifest running `script` with the venv's Python (and the Python
/// SDK on its path): its own command starts, as under the daemon.
fn python_manifest(dir: &Path, id: &str, script: &Path, rest: &str) -> PathBuf {
    manifest_file(
        dir,
        &format!(
            "id = \"{id}\"\ncommand = {:?}\nargs = [\"-u\", {:?}]\n{rest}\n[env]\nPYTHONPATH = {:?}\n",
            python(),
            script.display().to_string(),
            common::python_sdk().display().to_string(),
        )
        .replace("\n[env]", "\n\n[env]"),
    )
}

#[test]
fn the_python_wire_example_passes_and_holds_chat_while_halted() {
    let echo = switchboard_testkit::workspace_root().join("operators/python-echo/wire_echo.py");
    let dir = tempfile::tempdir().unwrap();
    let m = python_manifest(dir.path(), "py", &echo, "");
    let (code, rules) = conformance_probe(Some(&m), Some("!py hi"), &[]);
    assert_all_pass_with(&rules, code, &["halt-holds-chat"]);
}

#[test]
fn the_python_sdk_operators_pass() {
    let root = switchboard_testkit::workspace_root();
    // The dice bot with its own manifest, as committed (relative paths).
    let m = root.join("operators/py-dice/dice.toml");
    let (code, rules) = conformance_probe(Some(&m), Some("!roll 2d6"), &[]);
    assert_all_pass_with(&rules, code, &["halt-holds-chat"]);
    let dir = tempfile::tempdir().unwrap();
    let m = python_manifest(
        dir.path(),
        "py-echo",
        &root.join("operators/python-echo/echo.py"),
        "",
    );
    let (code, rules) = conformance_probe(Some(&m), Some("!py hi"), &[]);
    assert_all_pass_with(&rules, code, &["halt-holds-chat"]);
}

#[test]
fn a_manifest_whose_own_command_cannot_start_fails_manifest_command() {
    // Its own command lacks the SDK on its path (the issue of a guide's
    // `command = "python3"`); the one after `--` has it, so every other
    // rule passes.
    let root = switchboard_testkit::workspace_root();
    let dice = root.join("operators/py-dice/dice.py").display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_file(
        dir.path(),
        &format!(
            "id = \"dice\"\ncommand = {:?}\nargs = [\"-u\", {dice:?}]\n",
            python()
        ),
    );
    let (code, rules) = conformance(
        Some(&m),
        &[
            "env",
            &format!("PYTHONPATH={}", common::python_sdk().display()),
            &python(),
            "-u",
            &dice,
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(failed(&rules), ["manifest-command"], "{rules:#?}");
    let detail = &rules["manifest-command"].1;
    assert!(detail.contains("No module named 'switchboard'"), "{detail}");
}

#[test]
fn dropping_chat_while_halted_fails_halt_holds_chat() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = PathBuf::from(fixture("faulty.py"));
    let m = python_manifest(
        dir.path(),
        "faulty",
        &faulty,
        "\n[config]\nfaults = [\"drop-while-halted\"]",
    );
    let (code, rules) = conformance_probe(Some(&m), Some("!ping"), &[]);
    assert_eq!(code, 1);
    assert_eq!(failed(&rules), ["halt-holds-chat"], "{rules:#?}");
    assert!(
        rules["halt-holds-chat"]
            .1
            .contains("never answered after resume"),
        "{:?}",
        rules["halt-holds-chat"]
    );
    // Without the fault it holds, and the same rule passes.
    let m = python_manifest(dir.path(), "faulty", &faulty, "");
    let (code, rules) = conformance_probe(Some(&m), Some("!ping"), &[]);
    assert_all_pass_with(&rules, code, &["halt-holds-chat"]);
}

#[test]
fn a_deaf_operator_must_report_health_failed() {
    // Listening outside its `subscribe` grant: nats-server refuses the
    // subscription. The SDK bot says so (health failed); the wire
    // example, which has no health, does not.
    let root = switchboard_testkit::workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let deaf = "subscribe = [\"chat.irc.#\"]\npublish = [\"send.#\"]\n";
    let m = python_manifest(
        dir.path(),
        "deaf",
        &root.join("operators/py-dice/dice.py"),
        deaf,
    );
    let (code, rules) = conformance(Some(&m), &[]);
    assert_eq!(code, 1);
    assert_eq!(failed(&rules), ["own-subjects"], "{rules:#?}");
    let detail = &rules["refused-subscriptions-reported"].1;
    assert!(
        detail.contains("health failed: not allowed to subscribe to chat.*.*.*.message"),
        "{detail}"
    );
    let m = python_manifest(
        dir.path(),
        "deaf",
        &root.join("operators/python-echo/wire_echo.py"),
        deaf,
    );
    let (code, rules) = conformance(Some(&m), &[]);
    assert_eq!(code, 1);
    assert_eq!(
        failed(&rules),
        ["own-subjects", "refused-subscriptions-reported"],
        "{rules:#?}"
    );
    // The Rust SDK reports it too (the ping bot listens on chat.#.message).
    let m = manifest_file(
        dir.path(),
        &format!("id = \"deaf\"\ncommand = {:?}\n{deaf}", common::pingbot()),
    );
    let (code, rules) = conformance(Some(&m), &[]);
    assert_eq!(code, 1);
    assert_eq!(failed(&rules), ["own-subjects"], "{rules:#?}");
    let detail = &rules["refused-subscriptions-reported"].1;
    assert!(
        detail.contains("health failed: not allowed to subscribe to chat.>"),
        "{detail}"
    );
}

#[test]
fn a_broken_operator_fails_with_exactly_its_faults() {
    let dir = tempfile::tempdir().unwrap();
    let m = python_manifest(
        dir.path(),
        "faulty",
        Path::new(&fixture("faulty.py")),
        "\n[config]\nfaults = [\"bad-ready\", \"no-heartbeat\", \"no-halt-ack\"]",
    );
    let (code, rules) = conformance(Some(&m), &[]);
    assert_eq!(code, 1);
    assert_eq!(
        failed(&rules),
        ["ack.halt", "heartbeat", "ready"],
        "{rules:#?}"
    );
    assert!(
        rules["ready"].1.contains("missing field `pid`"),
        "{:?}",
        rules["ready"]
    );
    assert!(
        rules["heartbeat"]
            .1
            .contains("none on sb.op.faulty.heartbeat"),
        "{:?}",
        rules["heartbeat"]
    );
    assert!(
        rules["ack.halt"].1.contains("no answer"),
        "{:?}",
        rules["ack.halt"]
    );
}

#[test]
fn publishing_on_another_operators_subject_fails_own_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let m = python_manifest(
        dir.path(),
        "faulty",
        Path::new(&fixture("faulty.py")),
        "\n[config]\nfaults = [\"foreign-publish\"]",
    );
    let (code, rules) = conformance(Some(&m), &[]);
    assert_eq!(code, 1);
    assert_eq!(failed(&rules), ["own-subjects"], "{rules:#?}");
    assert!(
        rules["own-subjects"]
            .1
            .contains("Publish Violation - Subject \"sb.op.someone-else.heartbeat\""),
        "{:?}",
        rules["own-subjects"]
    );
}

#[test]
fn exiting_without_the_final_heartbeat_fails_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let m = python_manifest(
        dir.path(),
        "faulty",
        Path::new(&fixture("faulty.py")),
        "\n[config]\nfaults = [\"no-final-heartbeat\"]",
    );
    let (code, rules) = conformance(Some(&m), &[]);
    assert_eq!(code, 1);
    // SIGTERM too: the same fault shows on both ways to stop, and only there.
    assert_eq!(failed(&rules), ["ack.shutdown", "sigterm"], "{rules:#?}");
    assert!(
        rules["ack.shutdown"]
            .1
            .contains("without a final heartbeat"),
        "{:?}",
        rules["ack.shutdown"]
    );
}

#[test]
fn an_operator_that_exits_at_start_fails_ready_with_how_and_its_last_words() {
    let echo = switchboard_testkit::workspace_root().join("operators/python-echo/wire_echo.py");
    let dir = tempfile::tempdir().unwrap();
    let m = python_manifest(dir.path(), "py", &echo, "\n[config]\nprefx = \"!py \"");
    let (code, rules) = conformance(Some(&m), &[]);
    assert_eq!(code, 1);
    assert_eq!(rules.len(), 1, "nothing else can be judged: {rules:#?}");
    let (passed, detail) = &rules["ready"];
    assert!(!passed);
    assert!(detail.contains("before the process ended"), "{detail}");
    assert!(detail.contains("exited with code 1"), "{detail}");
    assert!(detail.contains("unknown field `prefx`"), "{detail}");
}

#[test]
fn a_manifest_without_a_command_is_refused_with_what_to_do() {
    let nats = switchboard_testkit::nats_server_bin().expect("nats-server (make tools)");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("conformance")
        .env("SWITCHBOARD_NATS_SERVER", nats)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("give one after `--`"), "{err}");
}

/// The shell operator's manifest, with the CLI it talks through.
fn shell_manifest(dir: &Path) -> PathBuf {
    let script = switchboard_testkit::workspace_root().join("operators/shell-echo/echo.sh");
    manifest_file(
        dir,
        &format!(
            "id = \"shell-echo\"\ncommand = \"bash\"\nargs = [{:?}]\ncontrol = \"signals\"\n\
             subscribe = [\"chat.*.*.*.message\"]\npublish = [\"send.*.*.*.message\"]\n\n\
             [env]\nSB_CLI = {:?}\n\n[config]\nprefix = \"!sh \"\n",
            script.display().to_string(),
            env!("CARGO_BIN_EXE_switchboard")
        ),
    )
}

#[test]
fn the_shell_operator_passes_the_signal_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (code, rules) = conformance(Some(&shell_manifest(dir.path())), &[]);
    let names: Vec<&str> = rules.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "halt-resume",
            "own-subjects",
            "sighup-reload",
            "sigterm",
            "starts",
            "survives-garbage"
        ]
    );
    assert!(failed(&rules).is_empty(), "{rules:#?}");
    assert_eq!(code, 0);
}

#[test]
fn an_operator_that_dies_of_sighup_fails_the_reload_rule() {
    // `sleep` handles no signal: SIGHUP kills it, SIGTERM too (not exit 0).
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_file(
        dir.path(),
        "id = \"sleeper\"\ncommand = \"sleep\"\nargs = [\"600\"]\ncontrol = \"signals\"\n",
    );
    let (code, rules) = conformance(Some(&m), &[]);
    assert_eq!(code, 1);
    assert_eq!(failed(&rules), ["sighup-reload"], "{rules:#?}");
    assert!(
        rules["sighup-reload"].1.contains("killed by SIGHUP"),
        "{:?}",
        rules["sighup-reload"]
    );
}

/// nats.js and tsc from `make tools`: fail, never skip.
fn ts_tools() -> PathBuf {
    let dir = switchboard_testkit::workspace_root().join(".tools/ts-echo/node_modules");
    assert!(
        dir.join("nats").is_dir() && dir.join("typescript").is_dir(),
        "{} lacks nats or typescript: run `make tools`",
        dir.display()
    );
    dir
}

#[test]
fn the_typescript_wire_example_passes() {
    let modules = ts_tools();
    let out = tempfile::tempdir().unwrap();
    let tsc = std::process::Command::new("node")
        .arg(modules.join("typescript/bin/tsc"))
        .arg("-p")
        .arg(switchboard_testkit::workspace_root().join("operators/ts-echo/tsconfig.wire.json"))
        .arg("--outDir")
        .arg(out.path())
        .output()
        .expect("run node (Node 20 or later)");
    assert!(
        tsc.status.success(),
        "tsc: {}",
        String::from_utf8_lossy(&tsc.stdout)
    );
    let js = out.path().join("wire-echo.js").display().to_string();
    let m = manifest_file(
        out.path(),
        &format!(
            "id = \"ts-echo\"\ncommand = \"node\"\nargs = [{js:?}]\n\
             subscribe = [\"chat.*.*.*.message\"]\npublish = [\"send.*.*.*.message\"]\n\n\
             [env]\nNODE_PATH = {:?}\n\n[config]\nprefix = \"!ts \"\n",
            modules.display().to_string()
        ),
    );
    let (code, rules) = conformance_probe(Some(&m), Some("!ts hi"), &[]);
    assert_all_pass_with(&rules, code, &["halt-holds-chat"]);
}

/// A manifest in `dir` running `<project>/<stem>.js` with node.
fn node_manifest(dir: &Path, project: &Path, id: &str, stem: &str, config: &str) -> PathBuf {
    manifest_file(
        dir,
        &format!(
            "id = \"{id}\"\ncommand = \"node\"\nargs = [{:?}]\n\
             subscribe = [\"chat.*.*.*.message\"]\npublish = [\"send.*.*.*.message\"]\n\n\
             [config]\n{config}",
            project.join(format!("{stem}.js")).display().to_string()
        ),
    )
}

#[test]
fn the_typescript_sdk_operators_pass() {
    let root = switchboard_testkit::workspace_root();
    let dice = common::ts_project(&root.join("operators/ts-dice/dice.ts"));
    let dir = tempfile::tempdir().unwrap();
    let m = node_manifest(dir.path(), &dice, "ts-dice", "dice", "");
    // The command after `--` and the manifest's own: both start.
    let js = dice.join("dice.js").display().to_string();
    let (code, rules) = conformance_probe(Some(&m), Some("!roll 1d20"), &["node", &js]);
    assert_all_pass_with(&rules, code, &["halt-holds-chat", "manifest-command"]);
    let echo = common::ts_project(&root.join("operators/ts-echo/echo.ts"));
    let dir = tempfile::tempdir().unwrap();
    let m = node_manifest(dir.path(), &echo, "ts-echo", "echo", "prefix = \"!ts \"\n");
    let (code, rules) = conformance_probe(Some(&m), Some("!ts hi"), &[]);
    assert_all_pass_with(&rules, code, &["halt-holds-chat"]);
}
