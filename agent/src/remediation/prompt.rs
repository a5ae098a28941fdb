//! Prompt assembly. For now: the rule, its family and profile, and how the
//! earlier attempts of this lease went; ranked lessons come with the
//! knowledge repo, and whatever goes in is listed in `lessons` (DESIGN E4).

use std::fmt::Write;

use fleet_common::RuleTask;

use crate::workbench::{PriorAttempt, Prompt};

pub fn assemble(task: &RuleTask, attempt: u32, prior: &[PriorAttempt]) -> Prompt {
    let mut text = String::new();
    let _ = writeln!(text, "Write a shell script that makes this SCAP rule pass.");
    let _ = writeln!(text, "Rule: {}", task.rule);
    let _ = writeln!(text, "Family: {}", task.family);
    let _ = writeln!(text, "Profile: {}", task.profile);
    let _ = writeln!(text, "Attempt: {attempt}");
    if !prior.is_empty() {
        let _ = writeln!(text, "Earlier attempts:");
        for p in prior {
            let health = if p.health_ok {
                "healthy"
            } else {
                "target unhealthy"
            };
            let _ = writeln!(text, "- attempt {}: {:?}, {health}", p.attempt, p.status);
        }
    }
    Prompt {
        task: task.clone(),
        attempt,
        prior: prior.to_vec(),
        lessons: Vec::new(),
        text,
    }
}

#[cfg(test)]
mod tests {
    use fleet_common::event::EvalStatus;
    use fleet_common::{Budgets, RunId, TaskId};

    use super::*;

    #[test]
    fn prompt_names_the_rule_and_the_earlier_attempts() {
        let task = RuleTask {
            run: RunId(1),
            task: TaskId(2),
            rule: "audit_rules_immutable".into(),
            family: "audit_rules".into(),
            skill_pack: "debian11".into(),
            profile: "stig".into(),
            budgets: Budgets::default(),
            checks: Default::default(),
        };
        let prior = [PriorAttempt {
            attempt: 1,
            status: EvalStatus::Fail,
            health_ok: true,
        }];
        let p = assemble(&task, 2, &prior);
        assert!(p.text.contains("audit_rules_immutable"));
        assert!(p.text.contains("Family: audit_rules"));
        assert!(p.text.contains("attempt 1: Fail"));
        assert!(p.lessons.is_empty());
    }
}
