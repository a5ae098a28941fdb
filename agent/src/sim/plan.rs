//! What the simulation does with each rule: a pure function of a stable
//! hash of the rule id, so tests can predict every outcome.

use fleet_common::{Budgets, EscalationReason, Outcome};

use super::hash::fnv1a64;

/// How a simulated rule behaves on a fresh target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimBehaviour {
    /// Passes before any fix (~10 % of rules).
    AlreadyPassing,
    /// Passes once the fix of this attempt (1–3) is applied (~70 %).
    FixedOnAttempt(u32),
    /// Never passes (~20 %).
    NeverFixable,
}

pub fn behaviour(rule: &str) -> SimBehaviour {
    let h = fnv1a64(rule.as_bytes());
    match h % 100 {
        0..=9 => SimBehaviour::AlreadyPassing,
        // Higher bits pick the attempt so it is independent of the bucket.
        10..=79 => SimBehaviour::FixedOnAttempt(1 + ((h >> 32) % 3) as u32),
        _ => SimBehaviour::NeverFixable,
    }
}

/// The outcome the remediation loop reaches on a simulated rule, assuming
/// the wall-time budget covers the attempts (`sim_work` × attempts).
pub fn expected_outcome(rule: &str, budgets: &Budgets) -> Outcome {
    match behaviour(rule) {
        SimBehaviour::AlreadyPassing => Outcome::AlreadyPassing,
        SimBehaviour::FixedOnAttempt(n) if n <= budgets.max_attempts => {
            Outcome::Fixed { attempt: n }
        }
        _ => Outcome::Escalated {
            reason: EscalationReason::AttemptBudget,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_mix_is_roughly_as_documented() {
        let (mut passing, mut fixed, mut never) = (0, 0, 0);
        let mut by_attempt = [0; 3];
        for i in 0..10_000 {
            match behaviour(&format!("rule_{i}")) {
                SimBehaviour::AlreadyPassing => passing += 1,
                SimBehaviour::FixedOnAttempt(n) => {
                    fixed += 1;
                    by_attempt[n as usize - 1] += 1;
                }
                SimBehaviour::NeverFixable => never += 1,
            }
        }
        assert!((800..1200).contains(&passing), "already passing: {passing}");
        assert!((6700..7300).contains(&fixed), "fixed: {fixed}");
        assert!((1700..2300).contains(&never), "never: {never}");
        assert!(
            by_attempt.iter().all(|&n| n > 2000),
            "fix attempts {by_attempt:?}"
        );
    }

    #[test]
    fn small_attempt_budgets_turn_late_fixes_into_escalations() {
        let late = (0..1000)
            .map(|i| format!("rule_{i}"))
            .find(|r| behaviour(r) == SimBehaviour::FixedOnAttempt(3))
            .unwrap();
        let tight = Budgets {
            max_attempts: 2,
            ..Budgets::default()
        };
        assert_eq!(
            expected_outcome(&late, &Budgets::default()),
            Outcome::Fixed { attempt: 3 }
        );
        assert_eq!(
            expected_outcome(&late, &tight),
            Outcome::Escalated {
                reason: EscalationReason::AttemptBudget
            }
        );
    }
}
