//! Manifest and config validation through the library API: every kind of
//! broken manifest gives exactly the expected problems, at the right file
//! and line; good files give the expected structs; secrets, diffs and the
//! daemon config behave as documented; the shipped examples in deploy/
//! load cleanly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use switchboard_orchestrator::config::{Config, ConfigError, LogFormat};
use switchboard_orchestrator::manifest::{
    load_dir, load_file, parse_manifest, ApiGrant, Backoff, Change, Control, CrashLoop, Manifest,
    Problem, RestartPolicy, SandboxKind, SecretError, SecretRef, StreamGrant,
};
use switchboard_proto::OperatorId;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn id(s: &str) -> OperatorId {
    OperatorId::new(s).expect("valid test id")
}

/// One expected problem: its line (`None` for whole-file problems) and
/// substrings its message must contain.
type Expect = (Option<usize>, &'static [&'static str]);

fn check(file: &str, expected: &[Expect]) {
    let path = fixtures().join("broken").join(file);
    let problems = load_file(&path).expect_err(file);
    assert_eq!(
        problems.len(),
        expected.len(),
        "{file}: expected {} problem(s), got {problems:#?}",
        expected.len()
    );
    for (problem, (line, needles)) in problems.iter().zip(expected) {
        assert_eq!(problem.path, path, "{file}: {problem}");
        assert_eq!(problem.line, *line, "{file}: {problem}");
        assert_eq!(
            problem.line.is_some(),
            problem.column.is_some(),
            "{problem}"
        );
        for needle in *needles {
            assert!(
                problem.message.contains(needle),
                "{file}: `{needle}` not in: {problem}"
            );
        }
        let shown = problem.to_string();
        let prefix = match line {
            Some(l) => format!("{}:{l}: ", path.display()),
            None => format!("{}: ", path.display()),
        };
        assert!(shown.starts_with(&prefix), "{shown}");
    }
}

#[test]
fn syntax_error_stops_the_file() {
    check("syntax.toml", &[(Some(4), &["TOML syntax error"])]);
}

#[test]
fn unknown_top_level_key_suggests_the_right_one() {
    check(
        "unknown_top_key.toml",
        &[(
            Some(3),
            &["unknown key `restrat`", "did you mean `restart`?"],
        )],
    );
}

#[test]
fn unknown_key_in_backoff() {
    check(
        "unknown_backoff_key.toml",
        &[(
            Some(6),
            &[
                "unknown key `mutliplier` in [backoff]",
                "did you mean `multiplier`?",
            ],
        )],
    );
}

#[test]
fn missing_id() {
    check(
        "missing_id.toml",
        &[(None, &["missing required key `id`", "id = \"missing_id\""])],
    );
}

#[test]
fn missing_command() {
    check(
        "missing_command.toml",
        &[(None, &["missing required key `command`"])],
    );
}

#[test]
fn invalid_id_characters() {
    check(
        "bad_id.toml",
        &[(Some(2), &["invalid `id`", "irc.libera", "'.'"])],
    );
}

#[test]
fn wrong_type() {
    check(
        "wrong_type.toml",
        &[(
            Some(3),
            &[
                "`args` must be an array of strings, not a string",
                "args = [",
            ],
        )],
    );
}

#[test]
fn bad_restart_value() {
    check(
        "bad_restart.toml",
        &[(
            Some(3),
            &[
                "`restart` must be one of always, on-failure, never",
                "`sometimes`",
            ],
        )],
    );
}

#[test]
fn bad_duration_string() {
    check(
        "bad_duration.toml",
        &[(
            Some(3),
            &[
                "`ready_timeout`",
                "`5 parsecs` is not a duration",
                "\"500ms\"",
            ],
        )],
    );
}

#[test]
fn bare_number_duration_suggests_units() {
    check(
        "bare_number_duration.toml",
        &[(Some(3), &["`stop_timeout`", "\"10s\" or \"10ms\""])],
    );
}

#[test]
fn zero_ready_timeout() {
    check(
        "zero_ready_timeout.toml",
        &[(Some(3), &["`ready_timeout` must be greater than 0s"])],
    );
}

#[test]
fn multiplier_below_one() {
    check(
        "low_multiplier.toml",
        &[(
            Some(5),
            &["`backoff.multiplier` must be at least 1.0", "0.5"],
        )],
    );
}

#[test]
fn jitter_above_one() {
    check(
        "high_jitter.toml",
        &[(
            Some(5),
            &["`backoff.jitter` must be between 0.0 and 1.0", "1.5"],
        )],
    );
}

#[test]
fn initial_longer_than_max() {
    check(
        "initial_over_max.toml",
        &[(
            Some(6),
            &["`backoff.initial` (1m) is longer than `backoff.max` (30s)"],
        )],
    );
}

#[test]
fn reserved_env_prefix() {
    check(
        "reserved_env.toml",
        &[(
            Some(6),
            &["`env.SWITCHBOARD_NATS_URL`", "SWITCHBOARD_", "reserved"],
        )],
    );
}

#[test]
fn bad_env_name() {
    check(
        "bad_env_name.toml",
        &[(
            Some(5),
            &["`env.LOG-LEVEL` is not a valid environment variable name"],
        )],
    );
}

#[test]
fn secret_with_both_file_and_env() {
    check(
        "secret_both.toml",
        &[(
            Some(5),
            &[
                "secret `sasl.password`",
                "both `file` and `env`",
                "exactly one",
            ],
        )],
    );
}

#[test]
fn inline_secret_is_refused_without_echoing_it() {
    check(
        "inline_secret.toml",
        &[(
            Some(5),
            &["secret `password` must be a reference", "file", "env"],
        )],
    );
    let problems =
        load_file(&fixtures().join("broken/inline_secret.toml")).expect_err("inline secret");
    assert!(!problems[0].message.contains("hunter2"), "{}", problems[0]);
}

#[test]
fn top_level_key_after_a_table_header() {
    check(
        "key_after_table.toml",
        &[(
            Some(7),
            &[
                "unknown key `enabled` in [backoff]",
                "top-level key",
                "above the first",
            ],
        )],
    );
}

#[test]
fn grants_that_would_reach_the_control_plane_are_refused() {
    check(
        "bad_grants.toml",
        &[
            (
                Some(3),
                &[
                    "`publish`: `chat.#.message` has a `#` before its last token",
                    "chat.*.message",
                ],
            ),
            (Some(3), &["`publish`: `sb.ctl.other`", "control plane"]),
            (Some(4), &["`subscribe`: `#` starts with a wildcard"]),
            (Some(4), &["`subscribe`: `_INBOX.>` is not a pattern"]),
            (
                Some(5),
                &[
                    "`api`: unknown API method `stats`",
                    "did you mean `status`?",
                ],
            ),
            (
                Some(6),
                &["`SWITCHBOARD_NATS_PASSWORD` is set by the orchestrator"],
            ),
            (Some(6), &["`A-B` is not a valid environment variable name"]),
            (Some(7), &["`group` without `user`"]),
        ],
    );
}

#[test]
fn every_problem_of_a_file_is_reported() {
    check(
        "many_problems.toml",
        &[
            (Some(2), &["`command` is empty"]),
            (Some(3), &["`args[1]` must be a string, not an integer"]),
            (
                Some(4),
                &[
                    "`control` must be one of nats, signals",
                    "did you mean `signals`?",
                ],
            ),
            (
                Some(5),
                &["`missed_heartbeats` must be at least 1; found 0"],
            ),
            (
                Some(8),
                &["`crash_loop.max_restarts` must be at least 1; found 0"],
            ),
            (
                Some(9),
                &[
                    "unknown key `windw` in [crash_loop]",
                    "did you mean `window`?",
                ],
            ),
        ],
    );
}

#[test]
fn broken_directory_loads_nothing() {
    let dir = fixtures().join("broken");
    let report = load_dir(&dir);
    assert!(report.manifests.is_empty(), "{:?}", report.manifests);
    let files: std::collections::BTreeSet<&Path> =
        report.problems.iter().map(|p| p.path.as_path()).collect();
    let count = std::fs::read_dir(&dir).expect("fixtures").count();
    assert_eq!(files.len(), count, "every broken file reports a problem");
    // File-name order, then line order.
    let order: Vec<(&Path, usize)> = report
        .problems
        .iter()
        .map(|p| (p.path.as_path(), p.line.unwrap_or(usize::MAX)))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
}

#[test]
fn duplicate_id_keeps_the_first_file() {
    let dir = fixtures().join("duplicate");
    let report = load_dir(&dir);
    assert_eq!(report.manifests.len(), 1);
    assert_eq!(report.manifests[0].id, "echo");
    assert_eq!(report.manifests[0].command, "true");
    assert_eq!(report.manifests[0].path, dir.join("a-first.toml"));
    assert_eq!(
        report.problems,
        vec![Problem {
            path: dir.join("b-second.toml"),
            line: Some(3),
            column: Some(6),
            message: format!(
                "duplicate operator id `echo`: already defined in {}:2; \
                 ids must be unique across the directory, rename one of them",
                dir.join("a-first.toml").display()
            ),
        }]
    );
}

#[test]
fn full_manifest_round_trips_to_the_expected_struct() {
    let dir = fixtures().join("good");
    let path = dir.join("full.toml");
    let m = load_file(&path).expect("full.toml is valid");
    let expected = Manifest {
        id: id("full_1"),
        path: path.clone(),
        command: "bin/operator".into(),
        args: vec!["--verbose".into(), "--port".into(), "8080".into()],
        env: BTreeMap::from([
            ("RUST_LOG".to_owned(), "debug".to_owned()),
            ("_PRIVATE".to_owned(), "1".to_owned()),
        ]),
        workdir: Some(dir.join("work")),
        enabled: false,
        control: Control::Signals,
        restart: RestartPolicy::Always,
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(120),
            multiplier: 1.0,
            jitter: 0.25,
            reset_after: Duration::from_secs(3600),
        },
        crash_loop: CrashLoop {
            max_restarts: 10,
            window: Duration::from_secs(300),
        },
        ready_timeout: Duration::from_millis(2500),
        heartbeat_interval: Duration::from_millis(250),
        missed_heartbeats: 5,
        stop_timeout: Duration::ZERO,
        config: json!({
            "nick": "sb",
            "channels": ["#a", "#b"],
            "limits": {"rate": 1.5, "burst": 10},
            "since": "1979-05-27T07:32:00Z",
            "sasl": {"user": "sb"},
        }),
        secrets: BTreeMap::from([
            (
                "sasl.password".to_owned(),
                SecretRef::File(dir.join("secrets/sasl")),
            ),
            ("api.token".to_owned(), SecretRef::Env("API_TOKEN".into())),
        ]),
        publish: vec!["chat.irc.#".into(), "send.irc.*.*.message".into()],
        subscribe: vec![
            "send.irc.#".into(),
            "chat.#.message".into(),
            "sb.event.#".into(),
        ],
        api: vec![ApiGrant::Status, ApiGrant::Logs],
        stream: vec![StreamGrant::Consume],
        inherit_env: vec!["PATH".into(), "LANG".into()],
        nats_creds: Some(dir.join("nats/full.creds")),
        nats_nkey: None,
        user: Some("sb-full".into()),
        group: Some("switchboard".into()),
        sandbox: SandboxKind::None,
        sandbox_binds: vec![dir.join("data"), "/srv/shared".into()],
        sandbox_binds_rw: vec![dir.join("out")],
        placement: switchboard_cluster::PlacementSpec {
            hosts: ["alpha".to_owned(), "beta".to_owned()].into(),
            labels: ["eu".to_owned()].into(),
            spread: Some("irc".into()),
        },
    };
    assert_eq!(m, expected);
    // The one grant NATS cannot express is widened, and said so.
    let notes = m.widened_grants();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("`chat.#.message` is enforced as `chat.#`"),
        "{notes:?}"
    );

    // Serialized (status output, API) and read back: same manifest, and
    // the durations in their canonical text.
    let value = serde_json::to_value(&m).expect("serializes");
    assert_eq!(value["ready_timeout"], "2500ms");
    assert_eq!(value["backoff"]["reset_after"], "1h");
    let back: Manifest = serde_json::from_value(value).expect("deserializes");
    assert_eq!(back, m);
}

#[test]
fn defaults() {
    let path = fixtures().join("good/minimal.toml");
    let m = load_file(&path).expect("minimal.toml is valid");
    let mut expected = Manifest::new(id("minimal"), "switchboard-pingbot");
    expected.path = path;
    assert_eq!(m, expected);
    assert!(m.enabled && m.args.is_empty() && m.env.is_empty() && m.workdir.is_none());
    assert_eq!(m.control, Control::Nats);
    assert_eq!(m.restart, RestartPolicy::OnFailure);
    assert_eq!(
        m.backoff,
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.1,
            reset_after: Duration::from_secs(30),
        }
    );
    assert_eq!(m.crash_loop.max_restarts, 5);
    assert_eq!(m.crash_loop.window, Duration::from_secs(60));
    assert_eq!(m.ready_timeout, Duration::from_secs(10));
    assert_eq!(m.heartbeat_interval, Duration::from_secs(5));
    assert_eq!(m.missed_heartbeats, 3);
    assert_eq!(m.stop_timeout, Duration::from_secs(5));
    assert_eq!(m.config, json!({}));
    assert!(m.secrets.is_empty());
}

#[test]
fn good_directory_loads_sorted_by_id() {
    let report = load_dir(&fixtures().join("good"));
    assert!(report.is_clean(), "{:#?}", report.problems);
    let ids: Vec<&str> = report.manifests.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["full_1", "minimal"]);
}

#[test]
fn only_plain_toml_files_are_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write("b.toml", "id = \"b\"\ncommand = \"true\"\n");
    write("a.toml", "id = \"a\"\ncommand = \"true\"\n");
    write(".hidden.toml", "broken = [");
    write("a.toml~", "broken = [");
    write("README.md", "# not a manifest");
    write("c.toml.disabled", "broken = [");
    std::fs::create_dir(dir.path().join("sub.toml")).expect("mkdir");
    let report = load_dir(dir.path());
    assert!(report.is_clean(), "{:#?}", report.problems);
    let ids: Vec<&str> = report.manifests.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
}

#[test]
fn empty_and_missing_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = load_dir(dir.path());
    assert!(report.manifests.is_empty() && report.problems.is_empty());

    let missing = dir.path().join("nope");
    let report = load_dir(&missing);
    assert!(report.manifests.is_empty());
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].path, missing);
    assert_eq!(report.problems[0].line, None);
    assert!(report.problems[0]
        .message
        .contains("cannot read the manifest directory"));
}

#[test]
fn problem_display_is_like_nginx_t() {
    let with_line = Problem {
        path: "/etc/switchboard/operators.d/irc.toml".into(),
        line: Some(7),
        column: Some(1),
        message: "unknown key `comand`; did you mean `command`?".into(),
    };
    assert_eq!(
        with_line.to_string(),
        "/etc/switchboard/operators.d/irc.toml:7: unknown key `comand`; did you mean `command`?"
    );
    let without = Problem {
        line: None,
        column: None,
        ..with_line
    };
    assert!(without
        .to_string()
        .starts_with("/etc/switchboard/operators.d/irc.toml: unknown"));
}

#[test]
fn secret_paths_must_not_collide_with_config() {
    let text = "id = \"x\"\ncommand = \"true\"\n[config]\nsasl = \"plain\"\nnick = \"sb\"\n\
                [secrets]\n\"sasl.password\" = { env = \"A\" }\nnick = { env = \"B\" }\n";
    let problems = parse_manifest(Path::new("x.toml"), text).expect_err("collisions");
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert_eq!(problems[0].line, Some(7));
    assert!(problems[0]
        .message
        .contains("`config.sasl`, which is not a table"));
    assert_eq!(problems[1].line, Some(8));
    assert!(problems[1].message.contains("would replace `config.nick`"));
}

#[test]
fn nested_secret_tables_are_dotted_paths() {
    let text = "id = \"x\"\ncommand = \"true\"\n[secrets.db]\npassword = { env = \"DB_PASS\" }\n";
    let m = parse_manifest(Path::new("/srv/x.toml"), text).expect("valid");
    assert_eq!(
        m.secrets,
        BTreeMap::from([("db.password".to_owned(), SecretRef::Env("DB_PASS".into()))])
    );
}

#[test]
fn resolve_secrets_from_file_and_env() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("sasl");
    std::fs::write(&secret_file, "s3cret-from-file\n").expect("write");
    let manifest_path = dir.path().join("irc.toml");
    std::fs::write(
        &manifest_path,
        "id = \"irc\"\ncommand = \"irc-operator\"\n\
         [config]\nnick = \"sb\"\nsasl.user = \"sb\"\n\
         [secrets]\n\"sasl.password\" = { file = \"sasl\" }\n\
         \"api.v1.token\" = { env = \"API_TOKEN\" }\n",
    )
    .expect("write");
    let m = load_file(&manifest_path).expect("valid");
    assert_eq!(
        m.secrets["sasl.password"],
        SecretRef::File(secret_file.clone())
    );
    let env = |name: &str| (name == "API_TOKEN").then(|| "t0ken-from-env".to_owned());
    let config = m.resolve_secrets(env).expect("resolves");
    assert_eq!(
        config,
        json!({
            "nick": "sb",
            "sasl": {"user": "sb", "password": "s3cret-from-file"},
            "api": {"v1": {"token": "t0ken-from-env"}},
        })
    );
    // The manifest itself still holds references only.
    let shown = format!("{m:?} {}", serde_json::to_string(&m).expect("json"));
    assert!(
        !shown.contains("s3cret") && !shown.contains("t0ken"),
        "{shown}"
    );

    // Missing file: names the operator and the secret, never a value.
    std::fs::remove_file(&secret_file).expect("rm");
    let err = m.resolve_secrets(env).expect_err("missing file");
    assert!(matches!(err, SecretError::File { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("`irc`") && text.contains("`sasl.password`"),
        "{text}"
    );
    assert!(text.contains(&secret_file.display().to_string()), "{text}");
    assert!(
        !text.contains("s3cret") && !text.contains("t0ken"),
        "{text}"
    );

    // Unset variable.
    std::fs::write(&secret_file, "s3cret-from-file").expect("write");
    let err = m.resolve_secrets(|_| None).expect_err("unset env");
    let text = err.to_string();
    assert!(matches!(err, SecretError::EnvUnset { .. }), "{err:?}");
    assert!(
        text.contains("`irc`") && text.contains("`api.v1.token`") && text.contains("API_TOKEN"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
}

#[test]
fn resolve_secrets_refuses_to_go_through_a_non_table() {
    let mut m = Manifest::new(id("x"), "x");
    m.config = json!({"sasl": "plain"});
    m.secrets
        .insert("sasl.password".into(), SecretRef::Env("P".into()));
    let err = m
        .resolve_secrets(|_| Some("v4lue".into()))
        .expect_err("sasl is a string");
    let text = err.to_string();
    assert!(text.contains("`sasl` is not a table"), "{text}");
    assert!(!text.contains("v4lue"), "{text}");
}

#[test]
fn diff_between_file_versions() {
    let base = "id = \"d\"\ncommand = \"true\"\n";
    let parse = |extra: &str| {
        parse_manifest(Path::new("d.toml"), &format!("{base}{extra}")).expect("valid")
    };
    let old = parse("");
    assert_eq!(old.diff(&parse("")), Change::None);
    assert_eq!(old.diff(&parse("enabled = false\n")), Change::Supervision);
    assert_eq!(
        old.diff(&parse("stop_timeout = \"1s\"\n")),
        Change::Supervision
    );
    assert_eq!(
        old.diff(&parse("[backoff]\nmax = \"1m\"\n")),
        Change::Supervision
    );
    assert_eq!(old.diff(&parse("[config]\nnick = \"x\"\n")), Change::Config);
    assert_eq!(
        old.diff(&parse(
            "restart = \"never\"\n[secrets]\na = { env = \"A\" }\n"
        )),
        Change::Config
    );
    assert_eq!(old.diff(&parse("args = [\"-v\"]\n")), Change::Launch);
    assert_eq!(old.diff(&parse("control = \"signals\"\n")), Change::Launch);
    assert_eq!(
        old.diff(&parse("heartbeat_interval = \"1s\"\n[config]\nx = 1\n")),
        Change::Launch
    );
    assert_eq!(old.diff(&parse("workdir = \"/tmp\"\n")), Change::Launch);
    assert_eq!(old.diff(&parse("[env]\nA = \"1\"\n")), Change::Launch);
    let renamed = parse_manifest(Path::new("renamed.toml"), base).expect("valid");
    assert_eq!(old.diff(&renamed), Change::None);
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn config_file_with_environment_overrides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchboard.toml");
    std::fs::write(
        &path,
        "manifests = \"ops\"\nstate_dir = \"/var/lib/sb\"\n\
         [nats]\nuser = \"sb\"\npassword_file = \"secrets/nats\"\n\
         [nats.embedded]\nport = 4333\nbinary = \"bin/nats-server\"\n\
         [log]\nformat = \"json\"\n",
    )
    .expect("write");
    let config = Config::load_with_env(
        Some(&path),
        env(&[
            ("SWITCHBOARD__NATS__URL", "nats://10.0.0.5:4222"),
            ("SWITCHBOARD__NATS__EMBEDDED__PORT", "0"),
            ("SWITCHBOARD__NATS__EMBEDDED__JETSTREAM", "false"),
            ("SWITCHBOARD__RUNTIME_DIR", "rt"),
            ("SWITCHBOARD__LOG__LEVEL", ""),
            // Launch variables and unrelated ones are not config.
            ("SWITCHBOARD_NATS_URL", "nats://operator-side:1"),
            ("HOME", "/root"),
        ]),
    )
    .expect("loads");
    let base = dir.path();
    assert_eq!(config.manifests_dir, base.join("ops"));
    assert_eq!(config.state_dir, Path::new("/var/lib/sb"));
    assert_eq!(config.runtime_dir, base.join("rt"));
    assert_eq!(config.nats.url.as_deref(), Some("nats://10.0.0.5:4222"));
    assert!(!config.nats.is_embedded());
    assert_eq!(config.nats.user.as_deref(), Some("sb"));
    assert_eq!(config.nats.password_file, Some(base.join("secrets/nats")));
    assert_eq!(config.nats.embedded.port, 0);
    assert!(!config.nats.embedded.jetstream);
    assert_eq!(
        config.nats.embedded.binary,
        Some(base.join("bin/nats-server"))
    );
    assert_eq!(config.nats.embedded.host, "127.0.0.1");
    // An empty variable is unset: the default stays.
    assert_eq!(config.log.level, "info");
    assert_eq!(config.log.format, LogFormat::Json);

    std::fs::create_dir(base.join("secrets")).expect("mkdir");
    std::fs::write(base.join("secrets/nats"), "pa55\n").expect("write");
    assert_eq!(
        config
            .nats
            .read_password(|_| None)
            .expect("reads")
            .as_deref(),
        Some("pa55")
    );
    assert!(!format!("{config:?}").contains("pa55"));
}

#[test]
fn config_without_a_file_uses_defaults_in_the_current_directory() {
    let config = Config::load_with_env(None, Vec::new()).expect("defaults");
    let cwd = std::env::current_dir().expect("cwd");
    assert_eq!(config, Config::defaults_in(&cwd));
    assert_eq!(config.manifests_dir, cwd.join("operators.d"));
    assert!(config.nats.is_embedded());

    let config = Config::load_with_env(None, env(&[("SWITCHBOARD__STATE_DIR", "/srv/state")]))
        .expect("env only");
    assert_eq!(config.state_dir, Path::new("/srv/state"));
}

#[test]
fn config_missing_file_says_how_to_create_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope.toml");
    let err = Config::load_with_env(Some(&path), Vec::new()).expect_err("missing");
    assert!(matches!(err, ConfigError::NotFound { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("deploy/switchboard.toml"), "{text}");
}

#[test]
fn config_unknown_keys_are_errors_with_suggestions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, "manifest = \"ops\"\n[nats.embedded]\nprot = 1\n").expect("write");
    let err = Config::load_with_env(
        Some(&path),
        env(&[("SWITCHBOARD__NATS__URLL", "nats://x:4222")]),
    )
    .expect_err("unknown keys");
    let ConfigError::Invalid { problems } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(problems.len(), 3, "{problems:#?}");
    let all = err.to_string();
    assert!(
        all.contains("unknown key `manifest`; did you mean `manifests`?"),
        "{all}"
    );
    assert!(
        all.contains("unknown key `nats.embedded.prot`; did you mean `nats.embedded.port`?"),
        "{all}"
    );
    assert!(
        all.contains(
            "environment variable SWITCHBOARD__NATS__URLL: unknown key `nats.urll`; \
             did you mean `nats.url`?"
        ),
        "{all}"
    );
}

#[test]
fn config_bad_values_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, "[log]\nformat = \"xml\"\n").expect("write");
    let err = Config::load_with_env(Some(&path), Vec::new()).expect_err("bad format");
    assert!(err.to_string().contains("xml"), "{err}");

    std::fs::write(
        &path,
        "[nats]\nuser = \"sb\"\npassword_file = \"a\"\npassword_env = \"B\"\n",
    )
    .expect("write");
    let err = Config::load_with_env(Some(&path), Vec::new()).expect_err("two passwords");
    assert!(err.to_string().contains("`nats.password_file`"), "{err}");

    std::fs::write(&path, "").expect("write");
    let err = Config::load_with_env(
        Some(&path),
        env(&[("SWITCHBOARD__NATS__EMBEDDED__PORT", "abc")]),
    )
    .expect_err("bad port");
    let text = err.to_string();
    assert!(
        text.contains("nats.embedded.port") && text.contains("environment"),
        "{text}"
    );

    std::fs::write(&path, "state_dir = [").expect("write");
    let err = Config::load_with_env(Some(&path), Vec::new()).expect_err("syntax");
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
}

#[test]
fn deploy_config_loads_with_production_paths() {
    let config =
        Config::load_with_env(Some(&deploy().join("switchboard.toml")), Vec::new()).expect("loads");
    assert_eq!(
        config.manifests_dir,
        Path::new("/etc/switchboard/operators.d")
    );
    assert_eq!(config.state_dir, Path::new("/var/lib/switchboard"));
    assert_eq!(config.runtime_dir, Path::new("/run/switchboard"));
    assert!(config.nats.is_embedded());
    assert_eq!(config.nats.embedded.host, "127.0.0.1");
}

#[test]
fn deploy_manifests_load_without_problems() {
    let report = load_dir(&deploy().join("operators.d"));
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert!(report.manifests.iter().any(|m| m.id == "pingbot"));
    let pingbot = report
        .manifests
        .iter()
        .find(|m| m.id == "pingbot")
        .expect("pingbot");
    assert_eq!(pingbot.command, "switchboard-pingbot");
}

#[test]
fn deploy_example_manifests_are_valid() {
    let path = deploy().join("operators.d/python-echo.toml.example");
    let m = load_file(&path).expect("python-echo example is valid");
    assert_eq!(m.id, "python-echo");
    assert_eq!(m.config, json!({"prefix": "!echo "}));
}

#[test]
fn embedded_server_exposure_needs_opt_in_and_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchboard.toml");
    let problems = |text: &str| -> String {
        std::fs::write(&path, text).expect("write");
        match Config::load_with_env(Some(&path), Vec::new()) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    let e = problems("[nats.embedded]\nhost = \"0.0.0.0\"\n");
    assert!(
        e.contains("not a loopback address") && e.contains("allow_remote = true"),
        "{e}"
    );
    let e = problems("[nats.embedded]\nhost = \"0.0.0.0\"\nallow_remote = true\n");
    assert!(e.contains("`nats.embedded.allow_remote` needs TLS"), "{e}");
    let e = problems("[nats.embedded]\ntls_cert = \"c.pem\"\n");
    assert!(e.contains("go together"), "{e}");
    let e = problems("[nats.embedded]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n");
    assert!(e.contains("`nats.tls_ca` is missing"), "{e}");
    let e = problems("[nats]\ntoken_env = \"T\"\n");
    assert!(e.contains("are for an external server"), "{e}");
    // Loopback in any spelling is fine; remote with TLS on purpose too.
    for host in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"] {
        let e = problems(&format!("[nats.embedded]\nhost = \"{host}\"\n"));
        assert!(e.is_empty(), "{host}: {e}");
    }
    let ok = problems(
        "[nats]\ntls_ca = \"ca.pem\"\n[nats.embedded]\nhost = \"0.0.0.0\"\nallow_remote = true\n\
         tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nmax_file_store = \"2GiB\"\nmonitor_port = 8222\n",
    );
    assert!(ok.is_empty(), "{ok}");
    let config = Config::load_with_env(Some(&path), Vec::new()).expect("valid");
    assert_eq!(config.nats.embedded.max_file_store.as_u64(), 2 << 30);
    assert_eq!(
        config.nats.embedded.tls_cert,
        Some(dir.path().join("c.pem"))
    );
    let e = problems("[nats.embedded]\nmax_file_store = \"lots\"\n");
    assert!(e.contains("max_file_store"), "{e}");
}

#[test]
fn huge_durations_are_refused_not_panicked_on() {
    for (key, value) in [
        ("ready_timeout", "3000000000000000h"),
        ("stop_timeout", "8761h"),
        ("heartbeat_interval", "99999999999999999999999s"),
    ] {
        let text = format!("id = \"x\"\ncommand = \"true\"\n{key} = \"{value}\"\n");
        let problems = parse_manifest(Path::new("x.toml"), &text).expect_err(key);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].message.contains(key) && problems[0].message.contains("longer than a year"),
            "{}",
            problems[0]
        );
    }
    // A year is fine, and so is the product of two large ones (the
    // supervisor's arithmetic saturates).
    let text = "id = \"x\"\ncommand = \"true\"\nheartbeat_interval = \"8760h\"\nmissed_heartbeats = 4000000000\n";
    assert!(parse_manifest(Path::new("x.toml"), text).is_ok());
}

/// `[config] listen` outside the `subscribe` grants: the server would
/// refuse the subscription and the bot would run deaf; `validate` warns
/// (and still passes: the config is the operator's own business, and
/// `listen` may be meant for another version of it).
#[test]
fn listening_outside_the_subscribe_grants_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "deaf.toml",
        "id = \"deaf\"\ncommand = \"x\"\nsubscribe = [\"chat.irc.#\"]\n\n\
         [config]\nlisten = [\"chat.irc.*.*.message\", \"chat.*.*.*.message\"]\n",
    );
    write(
        "hears.toml",
        "id = \"hears\"\ncommand = \"x\"\nsubscribe = [\"chat.*.*.*.message\"]\n\n\
         [config]\nlisten = [\"chat.*.*.*.message\"]\n",
    );
    write(
        "rust.toml",
        "id = \"rust\"\ncommand = \"x\"\nsubscribe = [\"chat.irc.#\"]\n\n\
         [config]\nlisten = [\"chat.#.message\"]\n",
    );
    write(
        "default.toml",
        "id = \"default\"\ncommand = \"x\"\n\n[config]\nlisten = [\"chat.>\"]\n",
    );
    let by_id = |id: &str| load_file(&dir.path().join(format!("{id}.toml"))).unwrap();
    let deaf = by_id("deaf").unheard_listen();
    assert_eq!(deaf.len(), 1, "{deaf:?}");
    assert!(
        deaf[0].contains("listens on `chat.*.*.*.message`"),
        "{deaf:?}"
    );
    assert!(deaf[0].contains("(chat.irc.#)"), "{deaf:?}");
    assert!(by_id("hears").unheard_listen().is_empty());
    // A `#` pattern (Rust's Triggers) is judged by what it subscribes to.
    assert_eq!(by_id("rust").unheard_listen().len(), 1);
    // The default grants (chat.#, send.#) cover chat.>.
    assert!(by_id("default").unheard_listen().is_empty());

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("warning: ").count(), 2, "{text}");
    assert!(text.contains("4 operator manifest(s) OK"), "{text}");
}

#[test]
fn config_cluster_table_is_typed_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchboard.toml");
    let good = "[cluster]\nhost = \"alpha\"\nlabels = [\"eu\"]\nlisten = \"127.0.0.1:6222\"\n\
                peers = [\"127.0.0.2:6222\", \"127.0.0.3:6222\"]\n";
    std::fs::write(&path, good).expect("write");
    let config = Config::load_with_env(Some(&path), Vec::new()).expect("valid cluster");
    let cluster = config.cluster.expect("[cluster] read");
    assert_eq!(cluster.host, "alpha");
    assert_eq!(cluster.peers.len(), 2);

    let refused = |text: &str, words: &[&str]| {
        std::fs::write(&path, text).expect("write");
        let err = Config::load_with_env(Some(&path), Vec::new()).expect_err(text);
        let message = err.to_string();
        for w in words {
            assert!(message.contains(w), "{w:?} not in: {message}");
        }
    };
    refused(
        &good.replace("peers =", "peer ="),
        &["unknown key `cluster.peer`", "peers"],
    );
    refused(
        &good.replace(", \"127.0.0.3:6222\"", ""),
        &["at least 2", "route addresses"],
    );
    refused(
        &good.replace("127.0.0.1:6222", "10.0.0.1:6222"),
        &[
            "`cluster.listen` is not a loopback address",
            "set [cluster.tls]",
            "127.0.0.x",
        ],
    );
    refused(
        &good.replace("127.0.0.3:6222", "beta.example:6222"),
        &["`cluster.peers` lists `beta.example:6222`", "[cluster.tls]"],
    );

    // Off loopback with route TLS: allowed, its relative paths resolved
    // against the config's directory, and every file must be readable.
    for f in ["route.pem", "route.key", "ca.pem"] {
        std::fs::write(dir.path().join(f), "pem").expect("write");
    }
    let wide = good
        .replace("127.0.0.1:6222", "10.0.0.1:6222")
        .replace("127.0.0.3:6222", "beta.example:6222");
    let tls = "[cluster.tls]\ncert = \"route.pem\"\nkey = \"route.key\"\nca = \"ca.pem\"\n";
    std::fs::write(&path, format!("{wide}{tls}")).expect("write");
    let config = Config::load_with_env(Some(&path), Vec::new()).expect("TLS routes off loopback");
    let routes = config
        .cluster
        .and_then(|c| c.tls)
        .expect("[cluster.tls] read");
    assert_eq!(routes.key, dir.path().join("route.key"));
    refused(
        &format!("{wide}{}", tls.replace("ca.pem", "missing-ca.pem")),
        &["`cluster.tls.ca` names", "missing-ca.pem", "cannot be read"],
    );
    refused(
        &format!("{wide}{tls}verify = false\n"),
        &["unknown key `cluster.tls.verify`"],
    );
    refused(
        &format!("{good}[nats]\nurl = \"nats://127.0.0.1:4222\"\n"),
        &["`cluster` with `nats.url` is not supported yet"],
    );
    refused(
        &format!("{good}[nats.embedded]\njetstream = false\n"),
        &["`nats.embedded.jetstream` is false"],
    );
}

#[test]
fn placement_is_checked_and_refused_without_a_cluster() {
    let bad = |text: &str, words: &str| {
        let problems = parse_manifest(Path::new("p.toml"), text).expect_err(text);
        let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            all.iter().any(|p| p.contains(words)),
            "{words:?} not in {all:?}"
        );
    };
    let base = "id = \"p\"\ncommand = \"true\"\n";
    bad(
        &format!("{base}[placement]\nhost = [\"a\"]\n"),
        "unknown field `host`",
    );
    bad(
        &format!("{base}[placement]\nlabels = [\"e u\"]\n"),
        "`e u` is not a valid",
    );
    bad(&format!("{base}placement = 3\n"), "placement");

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("p.toml"),
        format!("{base}[placement]\nspread = \"irc\"\n"),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("q.toml"),
        "id = \"q\"\ncommand = \"true\"\n",
    )
    .expect("write");
    let mut report = load_dir(dir.path());
    assert!(report.is_clean(), "{:?}", report.problems);
    report.refuse_placement();
    assert_eq!(report.manifests.len(), 1);
    assert_eq!(report.manifests[0].id.as_str(), "q");
    assert!(
        report.problems[0]
            .message
            .contains("only means something in cluster mode"),
        "{:?}",
        report.problems
    );
}
