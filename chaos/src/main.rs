//! `make chaos`: run every fault scenario against the real daemon and
//! write the results into docs/reliability.md (between its "fault suite"
//! markers), and print them.

use std::path::PathBuf;

use clap::Parser;
use switchboard_chaos as chaos;

/// Faults injected into a real daemon, nats-server and operators while
/// traffic flows; the table goes to docs/reliability.md.
#[derive(Debug, Parser)]
#[command(name = "switchboard-chaos", version)]
struct Args {
    /// Smaller loads (10 MB of output, 100 manifests): a quick check.
    #[arg(long)]
    quick: bool,
    /// Where to write the report [default: docs/reliability.md].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print only; do not write the report.
    #[arg(long)]
    no_write: bool,
}

const BEGIN: &str = "<!-- fault suite: begin (written by `make chaos`) -->";
const END: &str = "<!-- fault suite: end -->";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let args = Args::parse();
    let (mb, manifests) = if args.quick { (10, 100) } else { (100, 1000) };
    let mut outcomes = Vec::new();
    macro_rules! run {
        ($name:expr, $scenario:expr) => {{
            eprintln!("==> {}", $name);
            match $scenario.await {
                Ok(o) => {
                    eprintln!("    {}", o.row());
                    outcomes.push(o);
                }
                Err(e) => {
                    eprintln!("    could not run: {e:#}");
                    return Ok(std::process::ExitCode::FAILURE);
                }
            }
        }};
    }
    run!("operator SIGKILL", chaos::operator_sigkill());
    run!("operator SIGSTOP", chaos::operator_sigstop());
    run!("nats-server SIGKILL", chaos::nats_sigkill());
    run!("daemon SIGKILL", chaos::daemon_sigkill());
    run!("hang at start", chaos::hang_at_start());
    run!("hang on shutdown", chaos::hang_on_shutdown());
    run!("flood of output", chaos::flood_of_output(mb));
    run!("many manifests", chaos::many_manifests(manifests));
    run!("full state dir", chaos::full_state_dir());
    run!("logger under faults", chaos::logger_under_faults());
    run!("misbehaving operator", chaos::misbehaving_operator());
    run!("IRC server restart", chaos::irc_server_restart());
    run!("Nostr relay restart", chaos::nostr_relay_restart());

    let mut table = String::from(
        "| fault | expected | observed | pings accepted | answered | lost | longest gap | verdict |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for o in &outcomes {
        table.push_str(&o.row());
        table.push('\n');
    }
    println!("{table}");
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    if !args.no_write {
        let path = args.out.unwrap_or_else(chaos::default_report);
        let existing = std::fs::read_to_string(&path).unwrap_or_default();
        let section = format!(
            "{BEGIN}\nLast run: `make chaos{}` on {} ({} of {} scenarios as expected).\n\n{table}{END}",
            if args.quick { " QUICK=1" } else { "" },
            time_now(),
            outcomes.len() - failed,
            outcomes.len()
        );
        let text = match (existing.find(BEGIN), existing.find(END)) {
            (Some(a), Some(b)) if b > a => {
                format!("{}{section}{}", &existing[..a], &existing[b + END.len()..])
            }
            _ => format!("{existing}\n{section}\n"),
        };
        std::fs::write(&path, text)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

fn time_now() -> String {
    switchboard_proto::Timestamp::now().to_string()
}
