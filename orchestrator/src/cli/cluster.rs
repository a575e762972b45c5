//! `apply`, `drain`, `undrain` and `rolling-restart`: cluster mode's
//! commands, run on any host through that host's daemon.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use switchboard_proto::api::{
    methods, ApplyReply, ApplyRequest, DrainReply, DrainRequest, RestartReply, RestartRequest,
    StatusReply, StatusRequest, SupervisedState,
};

use super::args::{ApplyArgs, DrainArgs, RollingRestartArgs};
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

/// `switchboard forget <host>`.
pub(super) async fn forget(client: &Client, args: DrainArgs) -> anyhow::Result<ExitCode> {
    let DrainArgs { host } = args;
    let bus = client.connect().await?;
    let reply: DrainReply =
        crate::api::call(&bus, methods::FORGET, &DrainRequest { host: host.clone() })
            .await
            .map_err(unreachable_hint)?;
    if let Some(e) = reply.error {
        bail!(e);
    }
    println!("{host} forgotten: the cluster no longer lists it");
    Ok(ExitCode::SUCCESS)
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

/// How long one status request of the rolling restart may take (a status
/// waits up to 1.5 s on the durable stream's figures and 1 s on peers).
const ROLL_STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// The same while this host itself restarts: its status answers within
/// 1.5 s (the stream's figures and the peers' details are asked at once).
const ROLL_LOCAL_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the rolling restart looks at the cluster while it waits.
const ROLL_POLL: Duration = Duration::from_millis(250);

/// `switchboard rolling-restart`: every host's daemon restarted in place,
/// one at a time, this host last; the next only once the cluster is whole
/// again.
pub(super) async fn rolling_restart(
    client: &Client,
    args: RollingRestartArgs,
) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_secs(args.timeout);
    let t0 = Instant::now();
    let mut bus = client.connect().await?;
    let status = status_of(&bus, ROLL_STATUS_TIMEOUT)
        .await
        .map_err(unreachable_hint)?;
    let Some(cluster) = &status.cluster else {
        bail!(
            "this daemon is not in cluster mode: restart it with `systemctl restart switchboard` \
             (or stop and start `switchboard run`)"
        );
    };
    let here = cluster.host.clone();
    if let Err(why) = whole(&status) {
        bail!(
            "the cluster is not ready for a rolling restart: {why}; wait until `switchboard \
             status` shows every host alive and every operator running, then try again"
        );
    }
    // A host that left and is not back has no record at all: count the
    // hosts against this host's `[cluster] peers` (restarting one of two
    // servers left of three would leave no majority).
    let expected = crate::config::Config::load(client.config_path.as_deref())
        .ok()
        .and_then(|c| c.cluster)
        .map(|c| c.peers.len() + 1);
    if let Some(expected) = expected.filter(|n| *n > cluster.hosts.len()) {
        bail!(
            "the cluster is not ready for a rolling restart: {} of the {expected} hosts this \
             host's [cluster] names are alive ({}); start the missing ones first",
            cluster.hosts.len(),
            cluster
                .hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut order: Vec<String> = cluster
        .hosts
        .iter()
        .map(|h| h.name.clone())
        .filter(|name| *name != here)
        .collect();
    order.sort();
    order.push(here.clone());
    println!(
        "rolling restart of {} hosts, {} operator(s): {} ({here}, this host, last)",
        order.len(),
        cluster.operators.len(),
        order.join(", ")
    );
    let mut epochs: std::collections::BTreeMap<String, String> = cluster
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.epoch.clone()))
        .collect();
    for (done, host) in order.iter().enumerate() {
        let restarted = &order[..done];
        let stop = |what: String| -> anyhow::Error {
            anyhow::anyhow!(
                "{what}\nthe rolling restart stopped at {host}; hosts restarted so far: {}; \
                 hosts left: {}",
                if restarted.is_empty() {
                    "none".to_owned()
                } else {
                    restarted.join(", ")
                },
                order[done..].join(", ")
            )
        };
        let step = Instant::now();
        let reply: RestartReply = bus
            .request_json(
                &switchboard_proto::api_subject(methods::RESTART),
                &RestartRequest { host: host.clone() },
                ROLL_STATUS_TIMEOUT * 4,
            )
            .await
            .map_err(|e| stop(format!("{host}: the restart request was not answered: {e}")))?;
        if let Some(e) = reply.error {
            return Err(stop(format!("{host}: {e}")));
        }
        progress(
            t0,
            host,
            &format!(
                "restarting (pid {}, {})",
                reply.pid.map_or("?".to_owned(), |p| p.to_string()),
                reply.program.as_deref().unwrap_or("?")
            ),
        );
        let old_epoch = epochs.get(host).cloned().unwrap_or_default();
        let mut left = false;
        let mut back = false;
        // This host's connection went with its server: until a new one is
        // made, asking on it would only wait out the timeout again.
        let mut lost = false;
        loop {
            if step.elapsed() > timeout {
                let what = if back {
                    format!(
                        "{host} is back but the cluster did not settle within {}s: not every \
                         operator runs where placement wants it (see `switchboard status`); when \
                         it has, run `switchboard rolling-restart` again",
                        timeout.as_secs()
                    )
                } else {
                    format!(
                        "{host} did not come back within {}s: look at its daemon's log on that \
                         host (`journalctl -u switchboard`), start it if it is not running \
                         (`systemctl start switchboard`), wait until `switchboard status` shows \
                         it alive, then run `switchboard rolling-restart` again",
                        timeout.as_secs()
                    )
                };
                return Err(stop(what));
            }
            tokio::time::sleep(ROLL_POLL).await;
            // This host's own connection dies with its server: asked
            // with a shorter timeout, so the reconnect is not held up.
            let patience = if *host == here {
                ROLL_LOCAL_TIMEOUT
            } else {
                ROLL_STATUS_TIMEOUT
            };
            if lost {
                // The restarted daemon writes a new runtime file (new
                // passwords): connect anew once it is there.
                match client.connect().await {
                    Ok(b) => {
                        bus = b;
                        lost = false;
                    }
                    Err(_) => continue,
                }
            }
            let status = match status_of(&bus, patience).await {
                Ok(s) => s,
                Err(_) => {
                    lost = *host == here;
                    continue;
                }
            };
            let Some(cluster) = &status.cluster else {
                continue;
            };
            let now = cluster.hosts.iter().find(|h| h.name == *host);
            let incarnation = now.filter(|h| h.alive).map(|h| h.epoch.as_str());
            if !left && incarnation != Some(old_epoch.as_str()) {
                left = true;
                progress(t0, host, &format!("left the cluster after {}", secs(step)));
            }
            if !back && left && incarnation.is_some() {
                back = true;
                progress(
                    t0,
                    host,
                    &format!(
                        "back in the cluster (a new incarnation) after {}",
                        secs(step)
                    ),
                );
                epochs.insert(host.clone(), incarnation.unwrap_or_default().to_owned());
            }
            if back && whole(&status).is_ok() {
                let mine = cluster
                    .operators
                    .iter()
                    .filter(|p| p.host.as_deref() == Some(host.as_str()))
                    .count();
                progress(
                    t0,
                    host,
                    &format!(
                        "done after {}: every operator ({}) running and ready, {mine} of them \
                         on {host}",
                        secs(step),
                        cluster.operators.len()
                    ),
                );
                break;
            }
        }
    }
    println!(
        "rolling restart done: {} hosts in {}",
        order.len(),
        secs(t0)
    );
    Ok(ExitCode::SUCCESS)
}

/// One progress line: the time since the start, the host, the step.
fn progress(t0: Instant, host: &str, what: &str) {
    println!("[{:>6.1}s] {host}: {what}", t0.elapsed().as_secs_f64());
}

fn secs(since: Instant) -> String {
    format!("{:.1}s", since.elapsed().as_secs_f64())
}

async fn status_of(
    bus: &switchboard_bus::Bus,
    timeout: Duration,
) -> Result<StatusReply, switchboard_bus::RequestError> {
    bus.request_json(
        &switchboard_proto::api_subject(methods::STATUS),
        &StatusRequest {},
        timeout,
    )
    .await
}

/// Whether the cluster is whole as `status` (of the answering host) shows
/// it: its view current, every host with a record alive, every operator
/// of the desired state owned by the host placement gives it and running
/// (ready) there. Otherwise the first thing missing. An operator that
/// does not get ready after a host's restart (a bad upgrade) therefore
/// stops the roll at that host.
///
/// A host that is down counts: restarting another one then would leave
/// one server of three, no majority, and every host would fence.
fn whole(status: &StatusReply) -> Result<(), String> {
    let Some(cluster) = &status.cluster else {
        return Err("the daemon is not in cluster mode".to_owned());
    };
    if let Some(e) = &cluster.error {
        return Err(e.clone());
    }
    if let Some(h) = cluster.hosts.iter().find(|h| !h.alive) {
        return Err(format!("host {} is not alive", h.name));
    }
    for p in &cluster.operators {
        let Some(host) = &p.host else {
            return Err(format!("{} runs nowhere", p.id));
        };
        if p.placed.as_ref() != Some(host) {
            return Err(format!(
                "{} is moving from {host} to {}",
                p.id,
                p.placed.as_deref().unwrap_or("no eligible host")
            ));
        }
        let details = if *host == cluster.host {
            status.operators.iter().find(|o| o.id == p.id)
        } else {
            p.status.as_ref()
        };
        match details.map(|d| d.state) {
            // Ready; halted by `ctl` (ready, paused on purpose); or
            // disabled in its manifest (nothing to wait for).
            Some(
                SupervisedState::Running | SupervisedState::Halted | SupervisedState::Disabled,
            ) => {}
            Some(state) => return Err(format!("{} is {} on {host}", p.id, state.as_str())),
            None => return Err(format!("{} on {host}: no answer from that host", p.id)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A status answered by `alpha`: `a` runs there (its details in
    /// `operators`), `b` on beta (details from beta).
    fn status(b_state: &str, b_placed: &str, beta_alive: bool) -> StatusReply {
        let op = |id: &str, state: &str| json!({"id": id, "state": state, "restarts": 0, "control": "nats"});
        serde_json::from_value(json!({
            "version": "0", "pid": 1, "uptime_ms": 1, "nats_url": "nats://x", "nats_embedded": true,
            "operators": [op("a", "running")],
            "cluster": {
                "host": "alpha",
                "hosts": [
                    {"name": "alpha", "alive": true, "drained": false, "epoch": "e1"},
                    {"name": "beta", "alive": beta_alive, "drained": false, "epoch": "e2"},
                ],
                "operators": [
                    {"id": "a", "host": "alpha", "placed": "alpha"},
                    {"id": "b", "host": "beta", "placed": b_placed, "status": op("b", b_state)},
                ],
            },
        }))
        .expect("a status")
    }

    #[test]
    fn whole_means_every_host_alive_and_every_operator_ready_where_placed() {
        assert_eq!(whole(&status("running", "beta", true)), Ok(()));
        assert_eq!(whole(&status("halted", "beta", true)), Ok(()));
        let not = |s: StatusReply| whole(&s).expect_err("not whole");
        assert!(not(status("running", "beta", false)).contains("beta is not alive"));
        assert!(not(status("running", "alpha", true)).contains("b is moving from beta to alpha"));
        assert!(not(status("starting", "beta", true)).contains("b is starting on beta"));
        assert!(not(status("failed", "beta", true)).contains("b is failed on beta"));
    }
}
