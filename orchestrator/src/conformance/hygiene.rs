//! Rules every operator keeps whatever its control: it survives garbage
//! on the subjects it listens to, and publishes only where its manifest
//! lets it (nats-server refuses the rest and logs each refusal, which the
//! daemon passes on to its log; the kit reads it there).

use std::time::Duration;

use super::harness::{alive, Harness};
use super::Verdict;

/// Payloads no envelope parser may choke on.
const GARBAGE: [&[u8]; 6] = [
    b"",
    b"not json",
    b"[1,2,3]",
    b"{\"source\":42}",
    b"{\"source\":\"x\",\"timestamp\":\"yesterday\",\"body\":null}",
    b"\xff\xfe\x00 not utf-8",
];

/// Concrete subjects the operator listens to: each of its manifest's
/// `subscribe` grants (default `chat.#`, `send.#`) with every wildcard
/// filled in, plus its control subject for NATS-controlled operators
/// (garbage there must get a `bad_request` ack, checked elsewhere).
fn listened(h: &Harness) -> Vec<String> {
    let grants: Vec<String> = if h.manifest.subscribe.is_empty() {
        crate::manifest::DEFAULT_DATA_GRANTS
            .iter()
            .map(|g| g.to_string())
            .collect()
    } else {
        h.manifest.subscribe.clone()
    };
    grants
        .iter()
        .map(|g| {
            let mut tokens: Vec<&str> = g
                .split('.')
                .map(|t| match t {
                    "*" | ">" => "conformance",
                    t => t,
                })
                .filter(|t| *t != "#")
                .collect();
            // A trailing `#` or a chat/send grant: make it a full
            // 5-token chat subject so chat parsers see a real shape.
            if matches!(tokens.first(), Some(&"chat") | Some(&"send")) {
                while tokens.len() < 5 {
                    tokens.push(if tokens.len() == 4 {
                        "message"
                    } else {
                        "conformance"
                    });
                }
            } else if g.ends_with('#') {
                tokens.push("conformance");
            }
            tokens.join(".")
        })
        .collect()
}

/// A chat subject the operator may hear (from its grants), for the
/// probe: the first concrete `chat.…` subject of `listened`.
pub fn chat_subject(h: &Harness) -> String {
    listened(h)
        .into_iter()
        .find(|s| s.starts_with("chat."))
        .unwrap_or_else(|| "chat.conformance.conformance.conformance.message".into())
}

/// Publish garbage on every subject the operator listens to; it must
/// still be the same live process `settle` later.
pub async fn survives_garbage(h: &Harness, pid: u32, settle: Duration) -> Verdict {
    const RULE: &str = "survives-garbage";
    let subjects = listened(h);
    for s in &subjects {
        for g in GARBAGE {
            if let Err(e) = h.bus.publish_bytes(s, g.to_vec().into()).await {
                return Verdict::fail(RULE, format!("the kit could not publish on {s}: {e}"));
            }
        }
    }
    let _ = h.bus.flush().await;
    tokio::time::sleep(settle).await;
    if !alive(pid) {
        return Verdict::fail(
            RULE,
            format!(
                "process {pid} died after {} garbage messages on {}",
                GARBAGE.len() * subjects.len(),
                subjects.join(", ")
            ),
        );
    }
    Verdict::pass(
        RULE,
        format!(
            "still running after {} garbage messages on {}",
            GARBAGE.len() * subjects.len(),
            subjects.join(", ")
        ),
    )
}

/// Every publish or subscription nats-server refused for the operator's
/// user during the run.
pub fn own_subjects(h: &Harness) -> Verdict {
    const RULE: &str = "own-subjects";
    // nats-server names the refused user as `"$G/user:op-<id>"`.
    let user = format!(
        "user:{}{}\"",
        crate::nats_server::OPERATOR_USER_PREFIX,
        h.id()
    );
    let refused: Vec<String> = h
        .daemon_log()
        .lines()
        .filter(|l| l.contains("Violation") && l.contains(&user))
        .map(violation)
        .collect();
    if refused.is_empty() {
        Verdict::pass(RULE, "nats-server refused nothing it did")
    } else {
        Verdict::fail(
            RULE,
            format!(
                "nats-server refused {} of its operations, e.g. {}; publish only on its own \
                 subjects (sb.op.<id>.…, replies) and its manifest's `publish` grants",
                refused.len(),
                refused[0]
            ),
        )
    }
}

/// `refused-subscriptions-reported`: when nats-server refused one of the
/// operator's subscriptions (it listens where its `subscribe` grants do
/// not reach), the operator runs deaf there; it must say so with health
/// `failed` and a reason naming the subject, so `switchboard status`
/// shows it instead of a cheerful `running`.
pub async fn refused_subscriptions_reported(h: &Harness) -> Verdict {
    const RULE: &str = "refused-subscriptions-reported";
    let user = format!(
        "user:{}{}\"",
        crate::nats_server::OPERATOR_USER_PREFIX,
        h.id()
    );
    let refused: Vec<String> = h
        .daemon_log()
        .lines()
        .filter(|l| l.contains("Subscription Violation") && l.contains(&user))
        .map(violation)
        .collect();
    let Some(first) = refused.first() else {
        return Verdict::pass(RULE, "nats-server refused none of its subscriptions");
    };
    // The heartbeat that reports it may be an interval behind the refusal.
    let mut seen = None;
    for _ in 0..(super::nats_rules::LATE * 2) {
        seen = h.status().await;
        if seen
            .as_ref()
            .is_some_and(|o| o.health == switchboard_proto::Health::Failed)
        {
            break;
        }
        tokio::time::sleep(super::HEARTBEAT).await;
    }
    match seen {
        Some(o) if o.health == switchboard_proto::Health::Failed => Verdict::pass(
            RULE,
            format!(
                "nats-server refused {first}, and it reports health failed: {}",
                o.health_reason.unwrap_or_default()
            ),
        ),
        other => Verdict::fail(
            RULE,
            format!(
                "nats-server refused {first}, but it reports health {}: an operator that \
                 cannot hear must report health `failed` with the reason (and its manifest's \
                 `subscribe` grants should cover what it listens to)",
                other.map(|o| o.health).unwrap_or_default().as_str()
            ),
        ),
    }
}

/// The useful end of a nats-server violation line.
fn violation(line: &str) -> String {
    line.find("Violation")
        .and_then(|i| {
            line[..i]
                .rfind(" - ")
                .map(|s| line[s + 3..].trim().to_owned())
        })
        .unwrap_or_else(|| line.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::violation;

    #[test]
    fn a_violation_is_shown_from_its_kind() {
        let line = "WARN [26081] 2026/12/01 17:43:31.063926 [ERR] 127.0.0.1:60142 - cid:10 - \"v2.16.0:python3\" - \"$G/user:op-faulty\" - Publish Violation - Subject \"sb.op.x.heartbeat\"";
        assert_eq!(
            violation(line),
            "Publish Violation - Subject \"sb.op.x.heartbeat\""
        );
    }
}
