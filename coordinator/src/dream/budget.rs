//! Budgets of one dream pass (the Dream Daemon's bound): at most
//! `max_promotions` APPLYs, and no new write to `main` once the pass has
//! spent `wall_time_s`. What does not fit is DEFERred with a `budget` gate
//! in the ledger and decided again by the next pass, strongest evidence
//! first. Each APPLY is one commit and its ledger entry, so a pass that
//! stops leaves nothing half-applied.

use std::cmp::Reverse;
use std::time::Duration;

use fleet_common::skill_pack::DreamSettings;
use tokio::time::Instant;

use super::gates::{CandidateKind, Decision, GateOutcome, GateResult, Verdict};
use super::promote::Pending;

/// Why a pass stopped applying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Promotions(u32),
    WallTime(u32),
}

impl Stop {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Stop::Promotions(_) => "promotions",
            Stop::WallTime(_) => "wall_time",
        }
    }

    fn detail(self) -> String {
        match self {
            Stop::Promotions(n) => format!(
                "this pass applied its budget of {n} promotions; deferred to the next pass (strongest evidence first)"
            ),
            Stop::WallTime(s) => format!(
                "this pass spent its wall-time budget of {s} s; deferred to the next pass (strongest evidence first)"
            ),
        }
    }
}

/// What one pass may still apply.
#[derive(Debug)]
pub struct PassBudget {
    max_promotions: u32,
    wall_time_s: u32,
    deadline: Instant,
    applied: u32,
    /// Deferred by each budget so far.
    pub deferred: Vec<Stop>,
}

impl PassBudget {
    pub fn new(settings: &DreamSettings, started: Instant) -> Self {
        Self {
            max_promotions: settings.max_promotions,
            wall_time_s: settings.wall_time_s,
            deadline: started + Duration::from_secs(u64::from(settings.wall_time_s)),
            applied: 0,
            deferred: Vec::new(),
        }
    }

    /// Lets an APPLY through, or turns it into a DEFER naming the budget
    /// it would exceed. Other verdicts pass untouched: they write nothing
    /// to `main`.
    pub fn admit(&mut self, decision: &mut Decision, now: Instant) {
        if decision.verdict != Verdict::Apply {
            return;
        }
        let stop = if now >= self.deadline {
            Some(Stop::WallTime(self.wall_time_s))
        } else if self.applied >= self.max_promotions {
            Some(Stop::Promotions(self.max_promotions))
        } else {
            None
        };
        let Some(stop) = stop else {
            self.applied += 1;
            return;
        };
        let detail = stop.detail();
        decision.gates.push(GateResult {
            gate: "budget",
            outcome: GateOutcome::Defer,
            detail: detail.clone(),
        });
        decision.verdict = Verdict::Defer;
        decision.reason = detail;
        self.deferred.push(stop);
    }
}

/// Orders candidates strongest evidence first, so a budget defers the
/// weakest: evidence before none; a skill (an Evaluator pass of exactly
/// its text) before a lesson or ban; the longest waiting first; then as
/// they came.
pub fn strongest_first(pending: &mut [Pending]) {
    pending.sort_by_key(|p| {
        let c = &p.candidate;
        let kind = match c.kind {
            CandidateKind::Skill => 0,
            CandidateKind::Lesson => 1,
            CandidateKind::Ban => 2,
        };
        (Reverse(c.evidence), kind, Reverse(c.deferrals))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply() -> Decision {
        Decision {
            verdict: Verdict::Apply,
            gates: Vec::new(),
            merged_into: None,
            merge: None,
            reason: "every gate passed".into(),
        }
    }

    fn settings(max_promotions: u32, wall_time_s: u32) -> DreamSettings {
        DreamSettings {
            max_promotions,
            wall_time_s,
            ..DreamSettings::default()
        }
    }

    #[test]
    fn applies_past_the_count_defer_and_say_so() {
        let started = Instant::now();
        let mut b = PassBudget::new(&settings(2, 60), started);
        let verdicts: Vec<Verdict> = (0..4)
            .map(|_| {
                let mut d = apply();
                b.admit(&mut d, started);
                d.verdict
            })
            .collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Apply,
                Verdict::Apply,
                Verdict::Defer,
                Verdict::Defer
            ]
        );
        assert_eq!(b.deferred, [Stop::Promotions(2), Stop::Promotions(2)]);
        let mut rejected = apply();
        rejected.verdict = Verdict::Reject;
        b.admit(&mut rejected, started);
        assert_eq!(
            rejected.verdict,
            Verdict::Reject,
            "only APPLYs are budgeted"
        );
    }

    #[test]
    fn past_the_wall_time_nothing_more_is_applied() {
        let started = Instant::now();
        let mut b = PassBudget::new(&settings(25, 5), started);
        let mut first = apply();
        b.admit(&mut first, started + Duration::from_millis(4_999));
        assert_eq!(first.verdict, Verdict::Apply);
        let mut late = apply();
        b.admit(&mut late, started + Duration::from_secs(5));
        assert_eq!(late.verdict, Verdict::Defer);
        assert_eq!(late.gates.last().map(|g| g.gate), Some("budget"));
        assert!(
            late.reason.contains("wall-time budget of 5 s"),
            "{}",
            late.reason
        );
        assert_eq!(b.deferred, [Stop::WallTime(5)]);
    }

    fn pending(id: &str, kind: CandidateKind, evidence: bool, deferrals: u32) -> Pending {
        Pending {
            candidate: super::super::gates::Candidate {
                id: id.into(),
                kind,
                family: "f".into(),
                rule: "r".into(),
                text: String::new(),
                pattern: None,
                provenance: None,
                evidence,
                deferrals,
                refuted_skill: None,
            },
            scope: "family".into(),
            branch: None,
        }
    }

    #[test]
    fn the_strongest_evidence_goes_first_and_the_longest_waiting_among_equals() {
        let mut p = vec![
            pending("lesson", CandidateKind::Lesson, true, 0),
            pending("skill-without", CandidateKind::Skill, false, 0),
            pending("ban-old", CandidateKind::Ban, true, 1),
            pending("lesson-old", CandidateKind::Lesson, true, 1),
            pending("skill", CandidateKind::Skill, true, 0),
        ];
        strongest_first(&mut p);
        let order: Vec<&str> = p.iter().map(|p| p.candidate.id.as_str()).collect();
        assert_eq!(
            order,
            ["skill", "lesson-old", "lesson", "ban-old", "skill-without"]
        );
    }
}
