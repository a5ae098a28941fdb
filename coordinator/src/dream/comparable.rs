//! Which outcomes may be compared (DESIGN D6, amended): a rule's outcome in
//! a run says something about the fleet's knowledge only when the fleet
//! could really try it. An escalation for an infrastructure reason (an LLM
//! outage, a dead target, a lost lease, a broken scanner) is *not
//! comparable*: it is neither a win nor a regression, and never reverts
//! anything (D8). A run with too many such rules reverts nothing at all.
//!
//! A rule recorded `needs_target` (no live agent had the target class it
//! needs, issue 24) was never tried at all: it is left out of the
//! comparison on either side, and out of the share that withholds reverts,
//! since it says nothing about an outage either.
//!
//! Pure, so the learning benchmark plays the same rules as the dream stage.

use std::collections::BTreeMap;

use fleet_common::{EscalationReason, ReasonClass};

/// What one run concluded about one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Fixed,
    /// Tried and not fixed (or passing before any fix): comparable.
    NotFixed,
    /// The fleet could not really try; the reason's label.
    NotComparable(String),
    /// Never leased: no agent had the target the rule needs.
    Untried,
}

impl Standing {
    /// From a `work_items` row's `outcome` and `reason`. A reason this
    /// build does not know is taken as not comparable: knowledge is never
    /// reverted on a signal nobody can read.
    pub fn of(outcome: &str, reason: Option<&str>) -> Standing {
        match (outcome, reason) {
            ("fixed", _) => Standing::Fixed,
            ("needs_target", _) => Standing::Untried,
            ("escalated", Some(r)) => match EscalationReason::parse(r).map(|r| r.class()) {
                Some(ReasonClass::Knowledge) => Standing::NotFixed,
                _ => Standing::NotComparable(r.to_owned()),
            },
            _ => Standing::NotFixed,
        }
    }

    fn comparable(&self) -> bool {
        !matches!(self, Standing::NotComparable(_) | Standing::Untried)
    }
}

/// One run against the previous one, over the rules comparable in both.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement<K> {
    pub wins: Vec<K>,
    pub regressions: Vec<K>,
    /// This run's rules not comparable, by reason.
    pub not_comparable: BTreeMap<String, u64>,
    /// Rules comparable now but not in the previous run (an infrastructure
    /// reason then, or never tried for want of a target).
    pub previous_not_comparable: u64,
    /// Set when the share of this run's rules not comparable is above the
    /// limit: the run reverts nothing, and this says why.
    pub revert_withheld: Option<String>,
}

/// Judges each of this run's rules: `(key, now, previous)`, `previous`
/// `None` when the previous run did not have the rule (left out).
/// `max_not_comparable` is the share of this run's rules above which it
/// reverts nothing.
pub fn judge<K>(
    rules: impl IntoIterator<Item = (K, Standing, Option<Standing>)>,
    max_not_comparable: f64,
) -> Judgement<K> {
    let mut j = Judgement {
        wins: Vec::new(),
        regressions: Vec::new(),
        not_comparable: BTreeMap::new(),
        previous_not_comparable: 0,
        revert_withheld: None,
    };
    let mut total = 0u64;
    for (key, now, previous) in rules {
        if now == Standing::Untried {
            continue;
        }
        total += 1;
        if let Standing::NotComparable(reason) = &now {
            *j.not_comparable.entry(reason.clone()).or_default() += 1;
            continue;
        }
        let Some(previous) = previous else { continue };
        if !previous.comparable() {
            j.previous_not_comparable += 1;
            continue;
        }
        match (previous == Standing::Fixed, now == Standing::Fixed) {
            (false, true) => j.wins.push(key),
            (true, false) => j.regressions.push(key),
            _ => {}
        }
    }
    let left_out: u64 = j.not_comparable.values().sum();
    if total > 0 && left_out as f64 > max_not_comparable * total as f64 {
        let reasons: Vec<String> = j
            .not_comparable
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        j.revert_withheld = Some(format!(
            "{left_out} of this run's {total} rules ({:.0} %) were not comparable ({}), \
             above the pack's limit of {:.0} %: an outage is not a regression, so nothing is reverted",
            100.0 * left_out as f64 / total as f64,
            reasons.join(", "),
            100.0 * max_not_comparable,
        ));
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(outcome: &str, reason: Option<&str>) -> Standing {
        Standing::of(outcome, reason)
    }

    #[test]
    fn infrastructure_reasons_are_not_comparable_and_knowledge_ones_are() {
        assert_eq!(s("fixed", None), Standing::Fixed);
        assert_eq!(s("already_passing", None), Standing::NotFixed);
        for r in ["attempt_budget", "time_budget", "health", "not_applicable"] {
            assert_eq!(s("escalated", Some(r)), Standing::NotFixed, "{r}");
        }
        for r in [
            "llm_unavailable",
            "lease_lost",
            "scanner_error",
            "target_error",
            "from_a_newer_agent",
        ] {
            assert_eq!(
                s("escalated", Some(r)),
                Standing::NotComparable(r.into()),
                "{r}"
            );
        }
    }

    #[test]
    fn an_outage_is_neither_a_regression_nor_a_win_and_withholds_reverts() {
        let outage = Standing::NotComparable("llm_unavailable".into());
        let rules = vec![
            ("a", outage.clone(), Some(Standing::Fixed)),
            ("b", outage.clone(), Some(Standing::NotFixed)),
            ("c", Standing::Fixed, Some(Standing::Fixed)),
            ("d", Standing::NotFixed, Some(Standing::Fixed)),
        ];
        let j = judge(rules, 0.2);
        assert_eq!(j.wins, Vec::<&str>::new());
        assert_eq!(j.regressions, vec!["d"], "a real regression still counts");
        assert_eq!(
            j.not_comparable,
            BTreeMap::from([("llm_unavailable".into(), 2)])
        );
        let why = j.revert_withheld.expect("half the run is an outage");
        assert!(why.contains("2 of this run's 4 rules (50 %)"), "{why}");
        assert!(why.contains("llm_unavailable=2"), "{why}");
    }

    #[test]
    fn a_few_infrastructure_outcomes_leave_reverts_on() {
        let mut rules: Vec<(usize, Standing, Option<Standing>)> = (0..10)
            .map(|i| (i, Standing::Fixed, Some(Standing::Fixed)))
            .collect();
        rules[0].1 = Standing::NotComparable("lease_lost".into());
        rules[1].1 = Standing::NotComparable("target_error".into());
        rules[2].1 = Standing::NotFixed;
        let j = judge(rules.clone(), 0.2);
        assert_eq!(j.regressions, vec![2]);
        assert_eq!(j.revert_withheld, None, "2 of 10 is not above 20 %");
        rules[3].1 = Standing::NotComparable("scanner_error".into());
        assert!(judge(rules, 0.2).revert_withheld.is_some(), "3 of 10 is");
    }

    #[test]
    fn a_rule_that_needed_a_target_is_never_a_win_nor_a_regression() {
        assert_eq!(s("needs_target", Some("vm")), Standing::Untried);
        let mut rules: Vec<(usize, Standing, Option<Standing>)> = vec![
            // Fixed then, no VM agent now: no regression.
            (0, Standing::Untried, Some(Standing::Fixed)),
            // No VM agent then, fixed now: no win.
            (1, Standing::Fixed, Some(Standing::Untried)),
            (2, Standing::Untried, Some(Standing::Untried)),
            (3, Standing::Fixed, Some(Standing::NotFixed)),
        ];
        // Many more untried rules than tried ones withhold nothing: they
        // are no outage.
        rules.extend((4..40).map(|i| (i, Standing::Untried, Some(Standing::Fixed))));
        rules.push((40, Standing::NotComparable("lease_lost".into()), None));
        let j = judge(rules, 0.2);
        assert_eq!(j.wins, vec![3]);
        assert_eq!(j.regressions, Vec::<usize>::new());
        assert_eq!(j.previous_not_comparable, 1, "rule 1");
        assert_eq!(j.not_comparable, BTreeMap::from([("lease_lost".into(), 1)]));
        let why = j
            .revert_withheld
            .expect("1 of the 3 tried rules is an outage");
        assert!(why.contains("1 of this run's 3 rules"), "{why}");
    }

    #[test]
    fn a_rule_the_previous_run_could_not_try_is_no_win() {
        let j = judge(
            vec![
                (
                    "a",
                    Standing::Fixed,
                    Some(Standing::NotComparable("llm_unavailable".into())),
                ),
                ("b", Standing::Fixed, Some(Standing::NotFixed)),
                ("c", Standing::Fixed, None),
            ],
            0.2,
        );
        assert_eq!(j.wins, vec!["b"]);
        assert_eq!(j.previous_not_comparable, 1);
        assert_eq!(j.revert_withheld, None);
    }
}
