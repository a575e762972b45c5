//! Which host should run which operator: a pure function of the desired
//! operators, the hosts and who runs what now.
//!
//! Every engine computes it from the same replicated inputs, so in a
//! steady state they agree without talking; while their views differ
//! (a heartbeat one host has seen and another not yet) they may disagree
//! for a moment, and that is safe because placement only says who
//! *should* run an operator: who *does* is decided by the ownership
//! record's compare-and-set (see [`crate::engine`]).
//!
//! The rules, in order:
//! 1. An operator may only go to an *eligible* host: live, not drained,
//!    named in its `hosts` (when that is not empty) and carrying every
//!    label in its `labels`.
//! 2. It stays where it runs if that host is eligible and not over its
//!    fair share (each host `n / hosts`, `n % hosts` of them one more) (so a host that comes back does not pull operators
//!    back through a stop and a start each, unless the others are over
//!    their share).
//! 3. Otherwise it goes to the eligible host with the fewest operators
//!    of its `spread` group, then the fewest operators overall, then the
//!    highest rendezvous hash of (operator, host), which is stable when
//!    other hosts come and go.
//!
//! Operators are placed most constrained first (fewest eligible hosts),
//! then by id, so the result does not depend on any input's order.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// An operator's placement keys (the manifest's `[placement]` table).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSpec {
    /// Only these hosts may run it; empty: any host.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub hosts: BTreeSet<String>,
    /// A host must carry every one of these labels.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub labels: BTreeSet<String>,
    /// Operators naming the same group are kept on different hosts as far
    /// as the hosts allow (two bots on one network, so that losing one
    /// host leaves one of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<String>,
}

/// What placement knows of a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostView {
    /// Its labels.
    pub labels: BTreeSet<String>,
    /// Drained hosts get nothing (and give back what they run).
    pub drained: bool,
}

/// The decision: operator id to host name. An id appears at most once by
/// construction; ids with no eligible host are in [`Placement::unplaced`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Where each placed operator should run.
    pub assigned: BTreeMap<String, String>,
    /// Operators no live, undrained host may run (for `status` to say).
    pub unplaced: BTreeSet<String>,
}

/// Place `operators` on the live `hosts`; `current` says where operators
/// run now (ids or hosts it names that are not in the inputs are
/// ignored).
pub fn place(
    operators: &BTreeMap<String, PlacementSpec>,
    hosts: &BTreeMap<String, HostView>,
    current: &BTreeMap<String, String>,
) -> Placement {
    let mut order: Vec<(&String, &PlacementSpec, Vec<&String>)> = operators
        .iter()
        .map(|(id, spec)| (id, spec, eligible(spec, hosts)))
        .collect();
    order.sort_by(|a, b| a.2.len().cmp(&b.2.len()).then_with(|| a.0.cmp(b.0)));

    let mut out = Placement::default();
    let placeable = order.iter().filter(|o| !o.2.is_empty()).count();
    let live = hosts.values().filter(|h| !h.drained).count().max(1);
    // The fair share: every host `floor`, `extra` of them one more.
    let (floor, extra) = (placeable / live, placeable % live);
    let mut above_floor = 0usize;
    let mut group_size: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, spec, _) in &order {
        if let Some(g) = &spec.spread {
            *group_size.entry(g.as_str()).or_default() += 1;
        }
    }
    let group_cap = |g: &str| group_size.get(g).copied().unwrap_or(0).div_ceil(live);
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    let mut group_load: BTreeMap<(&str, &str), usize> = BTreeMap::new();

    // Rule 2: stay put when fair.
    let mut rest = Vec::new();
    for (id, spec, hosts_ok) in &order {
        if hosts_ok.is_empty() {
            out.unplaced.insert((*id).clone());
            continue;
        }
        let stay = current.get(*id).and_then(|now| {
            let h = hosts_ok.iter().find(|h| **h == now)?;
            let l = load.get(h.as_str()).copied().unwrap_or(0);
            let fits = (l < floor || (l == floor && above_floor < extra))
                && spec.spread.as_deref().is_none_or(|g| {
                    group_load.get(&(g, h.as_str())).copied().unwrap_or(0) < group_cap(g)
                });
            fits.then_some(*h)
        });
        match stay {
            Some(h) => {
                let l = load.entry(h).or_default();
                if *l == floor {
                    above_floor += 1;
                }
                *l += 1;
                if let Some(g) = &spec.spread {
                    *group_load.entry((g, h)).or_default() += 1;
                }
                out.assigned.insert((*id).clone(), h.clone());
            }
            None => rest.push((id, spec, hosts_ok)),
        }
    }
    // Rule 3: the rest where they fit best.
    for (id, spec, hosts_ok) in rest {
        let best = hosts_ok.iter().min_by_key(|h| {
            let g = spec.spread.as_deref().map_or(0, |g| {
                group_load.get(&(g, h.as_str())).copied().unwrap_or(0)
            });
            let l = load.get(h.as_str()).copied().unwrap_or(0);
            (g, l, std::cmp::Reverse(rendezvous(id, h)))
        });
        if let Some(h) = best {
            *load.entry(h).or_default() += 1;
            if let Some(g) = &spec.spread {
                *group_load.entry((g, h)).or_default() += 1;
            }
            out.assigned.insert((*id).clone(), (*h).clone());
        }
    }
    out
}

/// The hosts of `hosts` (the live ones) that may run an operator with
/// `spec`: rule 1. Also what `status` uses to tell "being moved" from "no
/// host may run it".
pub fn eligible<'h>(
    spec: &PlacementSpec,
    hosts: &'h BTreeMap<String, HostView>,
) -> Vec<&'h String> {
    hosts
        .iter()
        .filter(|(name, view)| {
            !view.drained
                && (spec.hosts.is_empty() || spec.hosts.contains(*name))
                && spec.labels.is_subset(&view.labels)
        })
        .map(|(name, _)| name)
        .collect()
}

/// FNV-1a of `id`, a zero byte and `host`: a hash fixed by its definition
/// (std's hasher may change between Rust releases, and hosts in a rolling
/// upgrade must agree).
fn rendezvous(id: &str, host: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes().chain([0]).chain(host.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hosts(names: &[&str]) -> BTreeMap<String, HostView> {
        names
            .iter()
            .map(|n| (n.to_string(), HostView::default()))
            .collect()
    }

    fn ops(n: usize) -> BTreeMap<String, PlacementSpec> {
        (0..n)
            .map(|i| (format!("op{i:03}"), PlacementSpec::default()))
            .collect()
    }

    fn loads(p: &Placement) -> BTreeMap<String, usize> {
        let mut l = BTreeMap::new();
        for h in p.assigned.values() {
            *l.entry(h.clone()).or_default() += 1;
        }
        l
    }

    #[test]
    fn default_is_balanced() {
        let p = place(&ops(300), &hosts(&["a", "b", "c"]), &BTreeMap::new());
        assert_eq!(p.assigned.len(), 300);
        assert!(loads(&p).values().all(|&n| n == 100), "{:?}", loads(&p));
    }

    #[test]
    fn drained_hosts_get_nothing_and_labels_and_hosts_restrict() {
        let mut hs = hosts(&["a", "b", "c"]);
        hs.get_mut("a").expect("a").drained = true;
        hs.get_mut("c").expect("c").labels.insert("gpu".into());
        let mut os = ops(4);
        os.get_mut("op000").expect("op").labels.insert("gpu".into());
        os.get_mut("op001").expect("op").hosts.insert("a".into());
        os.get_mut("op002").expect("op").hosts.insert("b".into());
        let p = place(&os, &hs, &BTreeMap::new());
        assert_eq!(p.assigned.get("op000").map(String::as_str), Some("c"));
        assert_eq!(p.assigned.get("op002").map(String::as_str), Some("b"));
        assert!(
            p.unplaced.contains("op001"),
            "only a drained host may run it"
        );
        assert!(!p.assigned.values().any(|h| h == "a"));
    }

    #[test]
    fn spread_groups_go_to_different_hosts() {
        let mut os = ops(6);
        for id in ["op000", "op001", "op002"] {
            os.get_mut(id).expect("op").spread = Some("irc".into());
        }
        // Even when "stay put" would stack them on one host.
        let current: BTreeMap<_, _> = os.keys().map(|id| (id.clone(), "a".into())).collect();
        let p = place(&os, &hosts(&["a", "b", "c"]), &current);
        let irc: BTreeSet<_> = ["op000", "op001", "op002"]
            .iter()
            .map(|id| p.assigned[*id].clone())
            .collect();
        assert_eq!(irc.len(), 3, "{p:?}");
    }

    #[test]
    fn a_returning_host_does_not_pull_fairly_placed_operators_back() {
        // a died: b and c took its share. a returns with nothing.
        let os = ops(6);
        let two = place(&os, &hosts(&["b", "c"]), &BTreeMap::new());
        let three = place(&os, &hosts(&["a", "b", "c"]), &two.assigned);
        // b and c each had 3, the fair share is now 2: one each moves.
        let moved = os
            .keys()
            .filter(|id| two.assigned[*id] != three.assigned[*id])
            .count();
        assert_eq!(moved, 2, "{two:?} -> {three:?}");
        assert!(loads(&three).values().all(|&n| n == 2));
        // Nothing moves when the cluster is already balanced.
        assert_eq!(place(&os, &hosts(&["a", "b", "c"]), &three.assigned), three);
    }

    fn arb_case() -> impl Strategy<
        Value = (
            BTreeMap<String, PlacementSpec>,
            BTreeMap<String, HostView>,
            BTreeMap<String, String>,
        ),
    > {
        let host_names = prop::collection::btree_set("[a-e]", 1..5);
        host_names.prop_flat_map(|names| {
            let names: Vec<String> = names.into_iter().collect();
            let n = names.clone();
            let host = prop::sample::select(n.clone());
            let label = prop::sample::select(vec!["x".to_string(), "y".to_string()]);
            let views = prop::collection::vec(
                (
                    any::<bool>(),
                    prop::collection::btree_set(label.clone(), 0..2),
                ),
                names.len(),
            )
            .prop_map(move |v| {
                n.iter()
                    .cloned()
                    .zip(v)
                    .map(|(name, (drained, labels))| (name, HostView { labels, drained }))
                    .collect::<BTreeMap<_, _>>()
            });
            let spec = (
                prop::collection::btree_set(host.clone(), 0..2),
                prop::collection::btree_set(label, 0..2),
                prop::option::of(prop::sample::select(vec!["g".to_string(), "h".to_string()])),
            )
                .prop_map(|(hosts, labels, spread)| PlacementSpec {
                    hosts,
                    labels,
                    spread,
                });
            let ops = prop::collection::btree_map("[a-z]{1,3}", spec, 0..30);
            (ops, views).prop_flat_map(move |(ops, views)| {
                let ids: Vec<String> = ops.keys().cloned().collect();
                let current = prop::collection::vec(prop::option::of(host.clone()), ids.len())
                    .prop_map(move |hs| {
                        ids.iter()
                            .cloned()
                            .zip(hs)
                            .filter_map(|(id, h)| h.map(|h| (id, h)))
                            .collect::<BTreeMap<_, _>>()
                    });
                (Just(ops), Just(views), current)
            })
        })
    }

    proptest! {
        #[test]
        fn every_operator_is_placed_once_on_an_eligible_host((os, hs, current) in arb_case()) {
            let p = place(&os, &hs, &current);
            for (id, spec) in &os {
                let placed = p.assigned.get(id);
                // Exactly one of: placed, or unplaced.
                prop_assert_eq!(placed.is_some(), !p.unplaced.contains(id));
                let any_eligible = hs.iter().any(|(n, v)| !v.drained
                    && (spec.hosts.is_empty() || spec.hosts.contains(n))
                    && spec.labels.is_subset(&v.labels));
                prop_assert_eq!(placed.is_some(), any_eligible);
                if let Some(h) = placed {
                    let v = &hs[h];
                    prop_assert!(!v.drained, "{} on drained {}", id, h);
                    prop_assert!(spec.hosts.is_empty() || spec.hosts.contains(h));
                    prop_assert!(spec.labels.is_subset(&v.labels));
                }
            }
            prop_assert_eq!(p.assigned.len() + p.unplaced.len(), os.len());
        }

        #[test]
        fn unconstrained_placement_is_balanced_and_deterministic(
            n in 0usize..60, h in 1usize..6, seed in any::<u64>()
        ) {
            let names: Vec<String> = (0..h).map(|i| format!("h{i}")).collect();
            let hs: BTreeMap<_, _> = names.iter().map(|n| (n.clone(), HostView::default())).collect();
            // Whatever runs where now (even everything on one host).
            let current: BTreeMap<_, _> = ops(n).keys().enumerate()
                .map(|(i, id)| (id.clone(), names[(seed as usize).wrapping_add(i * (seed as usize % 3)) % h].clone()))
                .collect();
            let p = place(&ops(n), &hs, &current);
            let l = loads(&p);
            let max = l.values().max().copied().unwrap_or(0);
            let min = if l.len() < h { 0 } else { l.values().min().copied().unwrap_or(0) };
            prop_assert!(max - min <= 1, "{:?}", l);
            prop_assert_eq!(place(&ops(n), &hs, &current), p);
        }
    }
}
