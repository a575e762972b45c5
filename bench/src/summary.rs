//! What a run met and missed: targets from the design doc, checked
//! against measured ratios and quantities, and the summary printed last.

/// A target from the design doc, checked against a measured ratio or
/// quantity.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
    /// Strictly below a limit in a unit (`< 50 ms`).
    Below(f64, Unit),
}

/// The unit of a [`Target::Below`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Ms,
    Mb,
    PctCore,
}

impl Unit {
    /// `12.3 ms`, `6.1 MB`, `0.42% of a core`.
    pub fn show(self, value: f64) -> String {
        match self {
            Unit::Ms if value < 10.0 => format!("{value:.2} ms"),
            Unit::Ms if value < 100.0 => format!("{value:.1} ms"),
            Unit::Ms => format!("{value:.0} ms"),
            Unit::Mb => format!("{value:.1} MB"),
            Unit::PctCore => format!("{value:.2}% of a core"),
        }
    }
}

impl Target {
    pub fn met(self, value: f64) -> bool {
        match self {
            Target::AtLeast(limit) => value >= limit,
            Target::AtMost(limit) => value <= limit,
            Target::Below(limit, _) => value < limit,
        }
    }

    /// `>= 0.90  ok` or `>= 0.90  MISSED`.
    pub fn verdict(self, value: f64) -> String {
        let state = if self.met(value) { "ok" } else { "MISSED" };
        format!("{}  {state}", target_text(self))
    }

    /// The value as this target's unit shows it.
    pub fn show(self, value: f64) -> String {
        match self {
            Target::Below(_, unit) => unit.show(value),
            _ => format!("{value:.2}"),
        }
    }
}

/// Results that feed the final summary line.
#[derive(Debug, Default)]
pub struct Summary {
    /// (what, measured, target)
    pub checks: Vec<(String, f64, Target)>,
    /// Runs where messages were lost or a run failed (bus).
    pub problems: Vec<String>,
    /// Whether the bus half ran (it reports message loss).
    pub bus_ran: bool,
    /// Supervision runs that left processes behind or misbehaved.
    pub cleanup: Vec<String>,
    /// Whether the supervision half ran.
    pub supervision_ran: bool,
    /// Targets that could not be measured, and why.
    pub unmeasured: Vec<String>,
}

impl Summary {
    pub fn check(&mut self, what: impl Into<String>, value: f64, target: Target) {
        self.checks.push((what.into(), value, target));
    }

    pub fn print(&self) {
        let met: Vec<String> = self
            .checks
            .iter()
            .filter(|(_, v, t)| t.met(*v))
            .map(|(what, v, t)| format!("{what} {}", t.show(*v)))
            .collect();
        let missed: Vec<String> = self
            .checks
            .iter()
            .filter(|(_, v, t)| !t.met(*v))
            .map(|(what, v, t)| format!("{what} {} (target {})", t.show(*v), target_text(*t)))
            .collect();
        println!(
            "summary: {} of {} targets met",
            met.len(),
            self.checks.len()
        );
        if !met.is_empty() {
            println!("  met:    {}", met.join("; "));
        }
        if missed.is_empty() {
            println!("  MISSED: none");
        } else {
            println!("  MISSED: {}", missed.join("; "));
        }
        for what in &self.unmeasured {
            println!("  NOT MEASURED: {what}");
        }
        if self.bus_ran {
            if self.problems.is_empty() {
                println!("  loss:   none (every run delivered every message)");
            } else {
                for p in &self.problems {
                    println!("  LOSS:   {p}");
                }
            }
        }
        if self.supervision_ran {
            if self.cleanup.is_empty() {
                println!("  procs:  every daemon, operator and rival stopped cleanly");
            } else {
                for p in &self.cleanup {
                    println!("  PROCS:  {p}");
                }
            }
        }
    }
}

fn target_text(t: Target) -> String {
    match t {
        Target::AtLeast(l) => format!(">= {l:.2}"),
        Target::AtMost(l) => format!("<= {l:.2}"),
        Target::Below(l, unit) => format!("< {}", unit.show(l)),
    }
}

/// Median of the values (mean of the middle two for an even count; 0
/// when empty).
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }

    #[test]
    fn targets() {
        assert!(Target::AtLeast(0.9).met(0.9));
        assert!(!Target::AtLeast(0.9).met(0.89));
        assert!(Target::AtMost(2.0).verdict(2.5).ends_with("MISSED"));
        assert_eq!(Target::AtMost(1.2).verdict(1.0), "<= 1.20  ok");
        assert_eq!(
            Target::Below(50.0, Unit::Ms).verdict(12.34),
            "< 50.0 ms  ok"
        );
        assert!(!Target::Below(5.0, Unit::Ms).met(5.0));
        assert_eq!(Target::Below(20.0, Unit::Mb).show(7.26), "7.3 MB");
    }
}
