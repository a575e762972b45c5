//! `status` and `ctl`: asking the daemon's API what runs, and telling
//! operators what to do.

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use switchboard_proto::api::{
    methods, ClusterStatus, CtlReply, CtlRequest, OperatorStatus, StatusReply, StatusRequest,
    Unowned,
};
use switchboard_proto::Verb;

use super::args::{CtlArgs, StatusArgs};
use super::connect::{unreachable_hint, Client};

/// `switchboard status`: the table (or JSON) of every operator.
pub(super) async fn status(client: &Client, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let StatusArgs { json } = args;
    let bus = client.connect().await?;
    let status: StatusReply = crate::api::call(&bus, methods::STATUS, &StatusRequest {})
        .await
        .map_err(unreachable_hint)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status_table(&status));
    }
    Ok(ExitCode::SUCCESS)
}

/// `switchboard ctl`: a verb for one operator, a glob, or all; fails
/// when any of them did.
pub(super) async fn ctl(client: &Client, args: CtlArgs) -> anyhow::Result<ExitCode> {
    let CtlArgs {
        verb,
        target,
        all,
        with_config,
        replace,
    } = args;
    let config = match with_config {
        Some(s) => Some(
            serde_json::from_str(&s).context("--with-config must be JSON, e.g. '{\"key\":1}'")?,
        ),
        None => None,
    };
    if config.is_some() && verb != Verb::Reload {
        bail!("--with-config goes with `reload` only");
    }
    if replace && verb != Verb::Restart {
        bail!("--replace goes with `restart` only");
    }
    let target = if all {
        "*".to_string()
    } else {
        target.unwrap_or_default()
    };
    let bus = client.connect().await?;
    let reply: CtlReply = crate::api::call(
        &bus,
        methods::CTL,
        &CtlRequest {
            verb,
            target,
            config,
            in_place: verb == Verb::Restart && !replace,
        },
    )
    .await
    .map_err(unreachable_hint)?;
    if let Some(e) = reply.error {
        bail!(e);
    }
    let mut failed = false;
    for r in &reply.results {
        if r.ok {
            println!("{:<24} {} ok ({})", r.id, verb, r.state);
        } else {
            failed = true;
            println!(
                "{:<24} {} FAILED ({}): {}",
                r.id,
                verb,
                r.state,
                r.error.as_deref().unwrap_or("no reason given")
            );
        }
    }
    if failed {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The `status` table. In cluster mode it has a HOST column and lists
/// every operator of the cluster: this host's with their details, the
/// others with the host that runs them.
pub fn status_table(status: &StatusReply) -> String {
    let mut out = format!(
        "switchboard {} (pid {}, up {}), nats {}{}\n",
        status.version,
        status.pid,
        human_ms(status.uptime_ms),
        status.nats_url,
        if status.nats_embedded {
            " (embedded)"
        } else {
            ""
        }
    );
    let cluster = status.cluster.as_ref();
    if let Some(c) = cluster {
        out.push_str(&cluster_lines(c));
    }
    let host_col = |host: &str| match cluster {
        Some(_) => format!("{host:<12} "),
        None => String::new(),
    };
    out.push_str(&format!(
        "{:<24} {}{:<9} {:>8} {:>9} {:>8} {:>9} {:<7}  {}\n",
        "ID",
        host_col("HOST"),
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "HEARTBEAT",
        "SANDBOX",
        "NOTE"
    ));
    // Every id: this host's operators, and in cluster mode the others.
    let mut rows: std::collections::BTreeMap<&str, Row<'_>> = status
        .operators
        .iter()
        .map(|o| (o.id.as_str(), Row::Here(o)))
        .collect();
    if let Some(c) = cluster {
        for p in &c.operators {
            let row = match (&p.status, p.host.as_deref()) {
                (Some(o), Some(host)) => Row::There(o, host),
                _ => Row::Elsewhere(p.host.as_deref(), p.unowned),
            };
            rows.entry(p.id.as_str()).or_insert(row);
        }
    }
    let me = cluster.map_or("", |c| c.host.as_str());
    for (id, row) in &rows {
        let dash = || "-".to_string();
        match row {
            Row::Here(o) | Row::There(o, _) => {
                let host = match row {
                    Row::There(_, h) => h,
                    _ => me,
                };
                let sandbox = match o.sandbox.as_str() {
                    "" => "-",
                    "bwrap" | "none" => o.sandbox.as_str(),
                    _ => "none(!)", // the host cannot sandbox it: the daemon's log says why
                };
                out.push_str(&format!(
                    "{:<24} {}{:<9} {:>8} {:>9} {:>8} {:>9} {:<7}  {}\n",
                    o.id,
                    host_col(host),
                    o.state.as_str(),
                    o.pid.map(|p| p.to_string()).unwrap_or_else(dash),
                    o.uptime_ms.map(human_ms).unwrap_or_else(dash),
                    o.restarts,
                    o.last_heartbeat_ms
                        .map(|ms| format!("{} ago", human_ms(ms)))
                        .unwrap_or_else(dash),
                    sandbox,
                    note(o),
                ));
            }
            Row::Elsewhere(host, unowned) => {
                let note = match (host, unowned) {
                    (Some(h), _) => format!("runs on {h}, which did not answer with its details"),
                    (None, Some(Unowned::NoEligibleHost)) => {
                        "runs nowhere: no live, undrained host may run it (see its [placement])"
                            .to_owned()
                    }
                    (None, _) => "runs nowhere now (being moved)".to_owned(),
                };
                out.push_str(&format!(
                    "{:<24} {}{:<9} {:>8} {:>9} {:>8} {:>9} {:<7}  {}\n",
                    id,
                    host_col(host.unwrap_or("-")),
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    note,
                ));
            }
        }
    }
    if status.log_lines_dropped > 0 || status.events_dropped > 0 {
        out.push_str(&format!(
            "the bus could not keep up: {} output line(s) and {} event(s) not forwarded \
             (still in `switchboard logs` and the daemon's log)\n",
            status.log_lines_dropped, status.events_dropped
        ));
    }
    if rows.is_empty() {
        out.push_str(match cluster {
            Some(_) => "(no operators: `switchboard apply <dir>` sets the cluster's)\n",
            None => "(no operators: add manifests to the manifests directory and send SIGHUP)\n",
        });
    }
    for o in &status.operators {
        for (name, url) in &o.links {
            out.push_str(&format!("{name}: {url} ({})\n", o.id));
        }
    }
    if let Some(s) = &status.stream {
        match &s.error {
            Some(e) => out.push_str(&format!("stream {}: {e}\n", s.name)),
            None => {
                let percent = (s.bytes as f64 * 100.0 / s.max_bytes.max(1) as f64).min(100.0);
                out.push_str(&format!(
                    "stream {}: {} message(s), {} of {} ({percent:.0}%), {} consumer(s){}\n",
                    s.name,
                    s.messages,
                    bytesize::ByteSize(s.bytes).display().iec(),
                    bytesize::ByteSize(s.max_bytes).display().iec(),
                    s.consumers,
                    s.oldest
                        .map(|t| format!(", oldest {t}"))
                        .unwrap_or_default(),
                ));
            }
        }
    }
    out
}

/// One line of the table: an operator of this host, or one the cluster
/// runs elsewhere (or nowhere, for now).
enum Row<'a> {
    /// This host's.
    Here(&'a OperatorStatus),
    /// Another host's, with the details it gave.
    There(&'a OperatorStatus, &'a str),
    /// Another host's without details (it did not answer), or nobody's.
    Elsewhere(Option<&'a str>, Option<Unowned>),
}

/// The cluster lines above the table: this host, the desired state's
/// revision, every host and its condition.
fn cluster_lines(c: &ClusterStatus) -> String {
    let revision = |r: Option<u64>| r.map_or_else(|| "none".to_owned(), |r| r.to_string());
    let mut out = format!(
        "cluster host {}, desired state revision {} (this host's applies are based on {})\n",
        c.host,
        revision(c.revision),
        revision(c.based_on)
    );
    let hosts: Vec<String> = c
        .hosts
        .iter()
        .map(|h| {
            let mut notes = Vec::new();
            if h.name == c.host {
                notes.push("here");
            }
            if !h.alive {
                notes.push("gone");
            }
            if h.drained {
                notes.push("drained");
            }
            if notes.is_empty() {
                h.name.clone()
            } else {
                format!("{} ({})", h.name, notes.join(", "))
            }
        })
        .collect();
    out.push_str(&format!("hosts: {}\n", hosts.join(", ")));
    if let Some(e) = &c.error {
        out.push_str(&format!("cluster: {e}\n"));
    }
    out
}

/// The NOTE column: why it is in its state (or how it last ended), and
/// lifecycle messages from other processes, which are worth a look.
fn note(o: &OperatorStatus) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(why) = o.reason.as_deref().or(o.last_exit.as_deref()) {
        parts.push(why.to_owned());
    }
    if o.ignored_lifecycle > 0 {
        parts.push(format!(
            "{} lifecycle message(s) from another process ignored",
            o.ignored_lifecycle
        ));
    }
    if o.malformed_lifecycle > 0 {
        parts.push(format!(
            "{} malformed lifecycle message(s) ignored",
            o.malformed_lifecycle
        ));
    }
    if !o.health.is_ok() {
        parts.push(format!(
            "{}: {}",
            o.health.as_str(),
            o.health_reason.as_deref().unwrap_or("no reason given")
        ));
    }
    parts.retain(|p| !p.is_empty());
    parts.join("; ")
}

fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_what_is_worth_a_look() {
        let op: OperatorStatus = serde_json::from_value(serde_json::json!({
            "id": "p", "state": "running", "restarts": 0, "control": "nats",
            "last_exit": "killed by SIGKILL", "ignored_lifecycle": 3,
            "health": "degraded", "health_reason": "cannot write /logs: Permission denied",
            "links": {"dashboard": "http://127.0.0.1:8477/"}
        }))
        .unwrap();
        let status = StatusReply {
            version: "0".into(),
            pid: 1,
            uptime_ms: 1,
            nats_url: "nats://x".into(),
            nats_embedded: true,
            operators: vec![op],
            log_lines_dropped: 7,
            events_dropped: 0,
            rss_bytes: None,
            cpu_seconds: None,
            cluster: None,
            stream: Some(switchboard_proto::api::StreamStatus {
                name: "SWITCHBOARD".into(),
                messages: 12,
                bytes: 1536,
                max_bytes: 1 << 20,
                oldest: None,
                consumers: 1,
                error: None,
            }),
        };
        let table = status_table(&status);
        assert!(
            table.contains("degraded: cannot write /logs: Permission denied"),
            "{table}"
        );
        assert!(
            table.contains("dashboard: http://127.0.0.1:8477/ (p)"),
            "{table}"
        );
        assert!(
            table.contains(
                "stream SWITCHBOARD: 12 message(s), 1.5 KiB of 1.0 MiB (0%), 1 consumer(s)"
            ),
            "{table}"
        );
        assert!(
            table
                .contains("killed by SIGKILL; 3 lifecycle message(s) from another process ignored"),
            "{table}"
        );
        assert!(
            table.contains("7 output line(s) and 0 event(s) not forwarded"),
            "{table}"
        );
        assert!(!table.contains("HOST"), "{table}");

        let mut clustered = status;
        clustered.cluster = Some(ClusterStatus {
            host: "alpha".into(),
            revision: Some(4),
            based_on: Some(3),
            hosts: vec![
                switchboard_proto::api::ClusterHost {
                    name: "alpha".into(),
                    alive: true,
                    drained: false,
                    labels: vec![],
                    ..Default::default()
                },
                switchboard_proto::api::ClusterHost {
                    name: "beta".into(),
                    alive: true,
                    drained: true,
                    labels: vec![],
                    ..Default::default()
                },
            ],
            operators: vec![
                switchboard_proto::api::ClusterPlacement {
                    id: "p".into(),
                    host: Some("alpha".into()),
                    placed: None,
                    status: None,
                    unowned: None,
                },
                switchboard_proto::api::ClusterPlacement {
                    id: "q".into(),
                    host: Some("gamma".into()),
                    placed: None,
                    status: None,
                    unowned: None,
                },
                switchboard_proto::api::ClusterPlacement {
                    id: "n".into(),
                    host: None,
                    placed: None,
                    status: None,
                    unowned: Some(Unowned::NoEligibleHost),
                },
                switchboard_proto::api::ClusterPlacement {
                    id: "r".into(),
                    host: None,
                    placed: None,
                    status: None,
                    unowned: Some(Unowned::Moving),
                },
                switchboard_proto::api::ClusterPlacement {
                    id: "s".into(),
                    host: Some("beta".into()),
                    placed: None,
                    status: Some(OperatorStatus {
                        id: "s".into(),
                        ..clustered.operators[0].clone()
                    }),
                    unowned: None,
                },
            ],
            error: None,
            ..Default::default()
        });
        let table = status_table(&clustered);
        assert!(
            table.contains("revision 4 (this host's applies are based on 3)"),
            "{table}"
        );
        assert!(
            table.contains("hosts: alpha (here), beta (drained)"),
            "{table}"
        );
        let line = |id: &str| {
            table
                .lines()
                .find(|l| l.starts_with(&format!("{id} ")))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            line("p").contains(" alpha ") && line("p").contains("running"),
            "{table}"
        );
        assert!(
            line("q").contains(" gamma ") && line("q").contains("runs on gamma"),
            "{table}"
        );
        assert!(
            line("r").contains("runs nowhere now (being moved)"),
            "{table}"
        );
        assert!(
            line("n").contains("no live, undrained host may run it"),
            "{table}"
        );
    }
}
