//! The kit's verdicts: one line per rule, as a table for people or JSON
//! for machines.

use serde::Serialize;

/// The verdict on one rule of docs/PROTOCOL.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The rule's short name (`ready`, `heartbeat`, `ack.halt`, ...).
    pub rule: &'static str,
    /// Whether the operator kept it.
    pub passed: bool,
    /// What was seen: why it failed, or what passing looked like.
    pub detail: String,
}

impl Verdict {
    /// A kept rule.
    pub fn pass(rule: &'static str, detail: impl Into<String>) -> Verdict {
        Verdict {
            rule,
            passed: true,
            detail: detail.into(),
        }
    }

    /// A broken rule, with the reason.
    pub fn fail(rule: &'static str, reason: impl Into<String>) -> Verdict {
        Verdict {
            rule,
            passed: false,
            detail: reason.into(),
        }
    }

    /// Pass with `ok` or fail with the error's words.
    ///
    /// Both sides are plain text on purpose: a rule's outcome is the final
    /// message of the report's table row (what passed, or what the
    /// operator did wrong), and nothing branches on it.
    pub fn from_result(rule: &'static str, result: Result<String, String>) -> Verdict {
        match result {
            Ok(ok) => Verdict::pass(rule, ok),
            Err(why) => Verdict::fail(rule, why),
        }
    }
}

/// Every verdict of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The operator id the kit ran it as.
    pub operator: String,
    /// `nats` or `signals`.
    pub control: String,
    /// Whether every rule passed.
    pub passed: bool,
    /// The verdicts, in the order the rules were checked.
    pub rules: Vec<Verdict>,
}

impl Report {
    /// Gather the verdicts.
    pub fn new(operator: &str, control: &str, rules: Vec<Verdict>) -> Report {
        Report {
            operator: operator.to_owned(),
            control: control.to_owned(),
            passed: rules.iter().all(|v| v.passed),
            rules,
        }
    }

    /// The rules that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Verdict> {
        self.rules.iter().filter(|v| !v.passed)
    }

    /// The pass/fail table people read.
    pub fn table(&self) -> String {
        let width = self.rules.iter().map(|v| v.rule.len()).max().unwrap_or(4);
        let mut out = format!(
            "conformance of `{}` (control = \"{}\") to docs/PROTOCOL.md\n",
            self.operator, self.control
        );
        for v in &self.rules {
            let mark = if v.passed { "pass" } else { "FAIL" };
            out.push_str(&format!("{mark}  {:<width$}  {}\n", v.rule, v.detail));
        }
        let failed = self.failures().count();
        out.push_str(&format!("{failed} of {} rules broken\n", self.rules.len()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_fails_the_report_and_shows_its_reason() {
        let r = Report::new(
            "py",
            "nats",
            vec![
                Verdict::pass("ready", "in 120ms"),
                Verdict::fail("heartbeat", "none within 600ms"),
            ],
        );
        assert!(!r.passed);
        let t = r.table();
        assert!(t.contains("FAIL  heartbeat  none within 600ms"), "{t}");
        assert!(t.contains("pass  ready"), "{t}");
        assert!(t.ends_with("1 of 2 rules broken\n"), "{t}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["rules"][1]["passed"], false);
        assert_eq!(json["passed"], false);
    }
}
