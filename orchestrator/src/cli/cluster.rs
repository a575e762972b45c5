//! `apply`, `drain` and `undrain`: cluster mode's commands, run on any
//! host through that host's daemon.

use std::process::ExitCode;

use anyhow::bail;
use switchboard_proto::api::{methods, ApplyReply, ApplyRequest, DrainReply, DrainRequest};

use super::args::{ApplyArgs, DrainArgs};
use super::connect::{unreachable_hint, Client};

/// `switchboard apply <dir>`: check the directory here, then have the
/// daemon write it as the desired state.
pub(super) async fn apply(client: &Client, args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let ApplyArgs { dir, based_on } = args;
    let set = match crate::cluster::set_from_dir(&dir) {
        Ok(set) => set,
        Err(problems) => {
            for p in &problems {
                println!("{p}");
            }
            bail!(
                "{} problem(s) in {}: nothing applied",
                problems.len(),
                dir.display()
            );
        }
    };
    let operators = set.operators.len();
    let bus = client.connect().await?;
    let reply: ApplyReply = crate::api::call(
        &bus,
        methods::APPLY,
        &ApplyRequest {
            set: serde_json::to_value(&set)?,
            based_on,
        },
    )
    .await
    .map_err(unreachable_hint)?;
    match (reply.revision, reply.error) {
        (Some(revision), _) => {
            println!(
                "applied {operators} operator(s) from {}: desired state revision {revision}",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        (None, Some(e)) => match reply.current {
            Some(current) => bail!(
                "{e}\nnothing applied: see what revision {current} holds (`switchboard status`), \
                 then `switchboard apply {} --based-on {current}` to replace it",
                dir.display()
            ),
            None => bail!(e),
        },
        (None, None) => bail!("the daemon answered neither a revision nor an error"),
    }
}

/// `switchboard drain <host>` (`on`) and `undrain <host>`.
pub(super) async fn drain(client: &Client, args: DrainArgs, on: bool) -> anyhow::Result<ExitCode> {
    let DrainArgs { host } = args;
    let bus = client.connect().await?;
    let method = if on { methods::DRAIN } else { methods::UNDRAIN };
    let reply: DrainReply = crate::api::call(&bus, method, &DrainRequest { host: host.clone() })
        .await
        .map_err(unreachable_hint)?;
    if let Some(e) = reply.error {
        bail!(e);
    }
    if on {
        println!("{host} drained: its operators move to the other hosts (`switchboard status` shows where)");
    } else {
        println!("{host} undrained: placement gives it its share again");
    }
    Ok(ExitCode::SUCCESS)
}
