//! `validate` and `conformance`: commands that check operators without a
//! running daemon.

use std::path::Path;
use std::process::ExitCode;

use super::args::{ConformanceArgs, ValidateArgs};
use crate::config::Config;

/// `switchboard conformance`: the report, and exit 1 when a rule failed.
pub(super) async fn conformance(args: ConformanceArgs) -> anyhow::Result<ExitCode> {
    let ConformanceArgs {
        manifest,
        json,
        probe,
        command,
    } = args;
    let report = crate::conformance::run(&crate::conformance::Options {
        manifest,
        command,
        probe,
    })
    .await?;
    match json {
        true => println!("{}", serde_json::to_string_pretty(&report)?),
        false => print!("{}", report.table()),
    }
    Ok(ExitCode::from(u8::from(!report.passed)))
}

/// `switchboard validate`: every manifest problem, grant note and sandbox
/// finding; exit 1 when there is a problem.
pub(super) fn validate(config_path: Option<&Path>, args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let ValidateArgs { dir } = args;
    let dir = match dir {
        Some(d) => d,
        None => Config::load(config_path)?.manifests_dir,
    };
    // One file is checked alone (no duplicate-id check across a
    // directory); anything else is read as the manifests directory.
    let mut report = if dir.is_file() {
        match crate::manifest::load_file(&dir) {
            Ok(m) => crate::manifest::LoadReport {
                manifests: vec![m],
                problems: Vec::new(),
            },
            Err(problems) => crate::manifest::LoadReport {
                manifests: Vec::new(),
                problems,
            },
        }
    } else {
        crate::manifest::load_dir(&dir)
    };
    // The daemon's own config (`[cluster]` among it), checked as `run`
    // would; it also says whether `[placement]` means anything here.
    let mut config_problems = 0;
    let config = match Config::load(config_path) {
        Ok(c) => Some(c),
        Err(e) => {
            println!("{e}");
            config_problems += 1;
            None
        }
    };
    if config.as_ref().is_some_and(|c| c.cluster.is_none()) {
        report.refuse_placement();
    }
    for p in &report.problems {
        println!("{p}");
    }
    for m in &report.manifests {
        for note in m.grant_notes() {
            println!("note: {note}");
        }
        for warning in m.unheard_listen() {
            println!("warning: {warning}");
        }
    }
    // Which sandbox each operator gets on this host.
    let sandboxing = config.as_ref().map(|c| {
        crate::sandbox::Sandboxing::probe(
            &crate::sandbox::SandboxConfig {
                required: false,
                ..c.sandbox.clone()
            },
            crate::sandbox::private_paths(c, config_path),
        )
    });
    let mut bad_binds = 0;
    if let Some(Ok(s)) = &sandboxing {
        if let Some(why) = s.unavailable() {
            println!("note: operators would run WITHOUT a sandbox on this host: {why}");
        }
        for m in &report.manifests {
            println!("{}: sandbox {}", m.id, s.describe(m.sandbox));
            for bind in m.sandbox_binds.iter().chain(&m.sandbox_binds_rw) {
                if let Err(e) = s.check_bind(bind) {
                    println!("{}: {e}", m.path.display());
                    bad_binds += 1;
                }
            }
        }
    }
    if report.problems.is_empty() && bad_binds == 0 && config_problems == 0 {
        println!(
            "{}: {} operator manifest(s) OK",
            dir.display(),
            report.manifests.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{} problem(s) found",
            report.problems.len() + bad_binds + config_problems
        );
        Ok(ExitCode::FAILURE)
    }
}
