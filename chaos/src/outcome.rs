//! One scenario's result and its row in docs/reliability.md.

use crate::Tally;

/// One scenario's result, a row of docs/reliability.md.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The fault.
    pub fault: &'static str,
    /// What should happen.
    pub expected: &'static str,
    /// What did.
    pub observed: String,
    /// Traffic, when the scenario had any.
    pub tally: Option<Tally>,
    /// Whether the expectation held.
    pub ok: bool,
    /// Whether losses are acceptable on this path (at-most-once).
    pub at_most_once: bool,
}

impl Outcome {
    /// The table row.
    pub fn row(&self) -> String {
        let (accepted, delivered, lost, gap) = match &self.tally {
            Some(t) => (
                t.sent.to_string(),
                t.answered.to_string(),
                (t.sent - t.answered.min(t.sent)).to_string(),
                format!("{} ms", t.longest_gap.as_millis()),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        format!(
            "| {} | {} | {} | {accepted} | {delivered} | {lost}{} | {gap} | {} |",
            self.fault,
            self.expected,
            self.observed,
            if self.at_most_once && lost != "0" && lost != "-" {
                " (at-most-once, counted)"
            } else {
                ""
            },
            if self.ok { "ok" } else { "FAILED" }
        )
    }
}
