//! `/metrics` read by a real Prometheus text-format parser (PyPI
//! `prometheus-client`, installed by `make tools`), compared with
//! `switchboard status --json` and with traffic the test published.

mod common;

use std::time::Duration;

use anyhow::{bail, Context as _};
use common::{get, parse, Samples};
use serde_json::{json, Value};
use switchboard_bus::{ChatAddress, Envelope};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_match_switchboard_status() -> anyhow::Result<()> {
    let d = common::start(false).await?;
    d.daemon
        .try_wait_for("pingbot", "published counters", |o| {
            o.counters.as_ref().is_some_and(|c| c.published > 0)
        })
        .await?;

    // Traffic the dashboard must count exactly: 7 messages on chat.dashtest.
    let room = ChatAddress::new("dashtest", "x", "room");
    for i in 0..7 {
        let env = Envelope::new(
            "test",
            json!({"text": format!("hello {i}"), "sender": "t", "room": "room"}),
        );
        d.daemon
            .bus
            .publish(&room.event_subject("message"), &env)
            .await?;
    }
    d.daemon.bus.flush().await?;

    let mut last_problem = String::new();
    for _attempt in 0..20 {
        let before = common::cli_status(&d.daemon)?;
        // Longer than the dashboard's poll interval (100 ms): the status
        // behind the metrics is at least as new as `before`.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (code, text) = common::http(d.addr, "GET", "/metrics", &[], "").await?;
        assert_eq!(code, 200, "{text}");
        let after = common::cli_status(&d.daemon)?;
        let (s, all) = parse(&text).await?;
        match compare(&s, &before, &after) {
            Ok(()) => {
                // Conventions: counters end in _total, and every family
                // the parser saw has a type.
                for x in &all {
                    if x["type"] == "counter" {
                        let n = x["name"].as_str().unwrap_or_default();
                        assert!(n.ends_with("_total") || n.ends_with("_created"), "{n}");
                    }
                    assert_ne!(x["type"], "unknown", "{x}");
                }
                assert_eq!(
                    get(
                        &s,
                        "switchboard_bus_messages_total",
                        &[("branch", "chat.dashtest")]
                    ),
                    Some(7.0),
                    "{text}"
                );
                assert!(
                    get(&s, "switchboard_bus_messages_total", &[("branch", "sb.op")]) > Some(0.0)
                );
                assert_eq!(get(&s, "switchboard_up", &[]), Some(1.0));
                assert!(get(&s, "switchboard_daemon_resident_memory_bytes", &[]) > Some(1e6));
                assert!(get(&s, "switchboard_daemon_cpu_seconds_total", &[]) > Some(0.0));
                assert_eq!(
                    get(&s, "switchboard_dashboard_unauthorized_total", &[]),
                    Some(0.0)
                );
                grafana_names_exist(&s)?;
                return Ok(());
            }
            Err(p) => last_problem = p,
        }
    }
    bail!("metrics never matched `switchboard status --json`: {last_problem}")
}

/// Every operator's state, restarts and heartbeat counters in the metrics
/// lie between two `switchboard status --json` taken around them.
fn compare(s: &Samples, before: &Value, after: &Value) -> Result<(), String> {
    let ops = before["operators"].as_array().ok_or("no operators")?;
    if ops.len() != 2 {
        return Err(format!("expected 2 operators: {before}"));
    }
    for op in ops {
        let id = op["id"].as_str().unwrap_or_default();
        let later = after["operators"]
            .as_array()
            .and_then(|a| a.iter().find(|o| o["id"] == id))
            .ok_or(format!("{id} gone"))?;
        let state_before = op["state"].as_str().unwrap_or_default();
        let state_after = later["state"].as_str().unwrap_or_default();
        let current: Vec<&str> = [
            "starting", "running", "halted", "stopping", "backoff", "exited", "failed", "disabled",
        ]
        .into_iter()
        .filter(|st| {
            get(
                s,
                "switchboard_operator_state",
                &[("operator", id), ("state", st)],
            ) == Some(1.0)
        })
        .collect();
        if current.len() != 1 || (current[0] != state_before && current[0] != state_after) {
            return Err(format!(
                "{id}: state {current:?}, status says {state_before}/{state_after}"
            ));
        }
        let within = |name: &str, lo: u64, hi: u64| -> Result<(), String> {
            let v = get(s, name, &[("operator", id)]).ok_or(format!("{id}: no {name}"))?;
            if v < lo as f64 || v > hi as f64 {
                return Err(format!("{id}: {name} = {v}, status says {lo}..={hi}"));
            }
            Ok(())
        };
        within(
            "switchboard_operator_restarts_total",
            op["restarts"].as_u64().unwrap_or(0),
            later["restarts"].as_u64().unwrap_or(0),
        )?;
        let counters = op["counters"]
            .as_object()
            .ok_or(format!("{id}: no counters yet"))?;
        for (k, v) in counters {
            if k == "publish_pending" {
                // A gauge (it goes down): present, not compared.
                get(
                    s,
                    "switchboard_operator_publish_pending",
                    &[("operator", id)],
                )
                .ok_or(format!("{id}: no publish_pending"))?;
                continue;
            }
            let hi = later["counters"][k].as_u64().unwrap_or(u64::MAX);
            within(
                &format!("switchboard_operator_{k}_total"),
                v.as_u64().unwrap_or(0),
                hi,
            )?;
        }
    }
    Ok(())
}

/// Every metric the example Grafana panels query is one the dashboard
/// serves (a renamed metric would leave an empty panel).
fn grafana_names_exist(s: &Samples) -> anyhow::Result<()> {
    let path = switchboard_testkit::workspace_root().join("deploy/grafana-switchboard.json");
    let board: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let mut checked = 0;
    for panel in board["panels"].as_array().context("panels")? {
        for target in panel["targets"].as_array().context("targets")? {
            let expr = target["expr"].as_str().context("expr")?;
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("switchboard_") {
                    anyhow::ensure!(
                        s.keys().any(|(name, _)| name == word),
                        "{}: `{word}` is not served",
                        path.display()
                    );
                    checked += 1;
                }
            }
        }
    }
    anyhow::ensure!(
        checked >= 8,
        "only {checked} metric names found in {}",
        path.display()
    );
    Ok(())
}
