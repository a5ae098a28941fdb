//! What an agent leases (`RuleTask`) and what it reports back (`Outcome`).

use serde::{Deserialize, Serialize};

use crate::ids::{RunId, TaskId};

/// Per-rule budgets from the run's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Attempts per rule before escalating with `attempt_budget`. Default 3.
    #[serde(default = "Budgets::default_max_attempts")]
    pub max_attempts: u32,
    /// Wall time per rule in seconds before escalating with `time_budget`.
    /// Default 600.
    #[serde(default = "Budgets::default_wall_time_s")]
    pub wall_time_s: u32,
}

impl Budgets {
    pub const MAX_ATTEMPTS_LIMIT: u32 = 50;
    pub const WALL_TIME_LIMIT_S: u32 = 24 * 3600;

    fn default_max_attempts() -> u32 {
        3
    }
    fn default_wall_time_s() -> u32 {
        600
    }
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            max_attempts: Self::default_max_attempts(),
            wall_time_s: Self::default_wall_time_s(),
        }
    }
}

/// The payload an agent receives with a lease: everything it needs to work
/// on one rule without asking Postgres.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTask {
    pub run: RunId,
    pub task: TaskId,
    pub rule: String,
    pub family: String,
    pub skill_pack: String,
    pub profile: String,
    pub budgets: Budgets,
    /// How the agent checks the rule and its target; from the run's skill
    /// pack. Empty for simulation packs.
    #[serde(default)]
    pub checks: Checks,
    /// The rule's text from the SCAP content, for the Worker's prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_text: Option<RuleText>,
    /// A host task (compose or harden, DESIGN H3–H5) instead of one rule;
    /// `None` for a rule task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<crate::host::HostJob>,
}

/// What the SCAP content says about a rule, as plain text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleText {
    pub title: String,
    pub description: String,
    pub rationale: String,
    pub severity: String,
}

/// The parts of a skill pack an agent needs per task, frozen into the run
/// at submission so an edited pack never changes a run under way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// SCAP source datastream on the target; `None` for simulation packs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastream: Option<String>,
    /// Prefix that turns a short rule id (`package_audit_installed`) into
    /// its XCCDF id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule_prefix: String,
    /// Run after every attempt; one failure reverts the target and counts
    /// the attempt as failed with reason `health`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<HealthCheck>,
    /// The pack's Worker prompt template (`{{placeholders}}`); `None`: the
    /// agent's built-in prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_prompt: Option<String>,
    /// The pack's Reflector prompt template; `None`: the built-in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reflector_prompt: Option<String>,
}

impl Checks {
    /// The XCCDF id of a short rule id.
    pub fn xccdf_rule_id(&self, rule: &str) -> String {
        if rule.starts_with(&self.rule_prefix) {
            rule.to_owned()
        } else {
            format!("{}{rule}", self.rule_prefix)
        }
    }
}

/// One command that must exit 0 on a healthy target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub name: String,
    /// Shell command run on the target (in the sandbox, never the host).
    pub command: String,
    /// Seconds before the check counts as failed. Default 10.
    #[serde(default = "HealthCheck::default_timeout_s")]
    pub timeout_s: u32,
}

impl HealthCheck {
    fn default_timeout_s() -> u32 {
        10
    }
}

/// Why a rule was handed to a human instead of fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationReason {
    AttemptBudget,
    TimeBudget,
    Health,
    NotApplicable,
    ScannerError,
    NoFixAvailable,
    /// The lease-loss budget was spent (DESIGN L5).
    LeaseLost,
    LlmUnavailable,
    /// The target or its sandbox failed under the agent: it stopped
    /// answering, or could not be reverted.
    TargetError,
}

/// What an escalation says about the fleet's knowledge (DESIGN D6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonClass {
    /// The fleet really tried and its knowledge fell short: the outcome
    /// may be compared with another run's.
    Knowledge,
    /// The fleet could not really try (an outage, a dead target, a lost
    /// lease): the outcome says nothing about knowledge and is never
    /// compared.
    Infrastructure,
}

impl EscalationReason {
    pub const ALL: [EscalationReason; 9] = [
        Self::AttemptBudget,
        Self::TimeBudget,
        Self::Health,
        Self::NotApplicable,
        Self::ScannerError,
        Self::NoFixAvailable,
        Self::LeaseLost,
        Self::LlmUnavailable,
        Self::TargetError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AttemptBudget => "attempt_budget",
            Self::TimeBudget => "time_budget",
            Self::Health => "health",
            Self::NotApplicable => "not_applicable",
            Self::ScannerError => "scanner_error",
            Self::NoFixAvailable => "no_fix_available",
            Self::LeaseLost => "lease_lost",
            Self::LlmUnavailable => "llm_unavailable",
            Self::TargetError => "target_error",
        }
    }

    /// The stored label back; `None` for a label this build does not know.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the escalation is a verdict on knowledge or an accident of
    /// infrastructure. `not_applicable` and `no_fix_available` are facts
    /// about the rule on this target: comparable, like a fix.
    pub fn class(self) -> ReasonClass {
        match self {
            Self::AttemptBudget
            | Self::TimeBudget
            | Self::Health
            | Self::NotApplicable
            | Self::NoFixAvailable => ReasonClass::Knowledge,
            Self::ScannerError | Self::LeaseLost | Self::LlmUnavailable | Self::TargetError => {
                ReasonClass::Infrastructure
            }
        }
    }
}

/// The one accepted result of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The Evaluator passed after the given attempt (1-based).
    Fixed {
        attempt: u32,
    },
    /// The rule passed before any attempt.
    AlreadyPassing,
    Escalated {
        reason: EscalationReason,
    },
}

impl Outcome {
    /// Stable label for metrics and the `work_items.outcome` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fixed { .. } => "fixed",
            Self::AlreadyPassing => "already_passing",
            Self::Escalated { .. } => "escalated",
        }
    }

    pub fn reason(&self) -> Option<EscalationReason> {
        match self {
            Self::Escalated { reason } => Some(*reason),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_wire_form_is_tagged_and_snake_case() {
        let o = Outcome::Escalated {
            reason: EscalationReason::LeaseLost,
        };
        let s = serde_json::to_string(&o).unwrap();
        assert_eq!(s, r#"{"kind":"escalated","reason":"lease_lost"}"#);
        assert_eq!(serde_json::from_str::<Outcome>(&s).unwrap(), o);
    }

    #[test]
    fn escalation_reason_labels_match_serde() {
        for r in EscalationReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            assert_eq!(EscalationReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(EscalationReason::parse("from_the_future"), None);
    }

    #[test]
    fn outages_dead_targets_and_lost_leases_are_infrastructure() {
        use EscalationReason::*;
        let infra: Vec<_> = EscalationReason::ALL
            .into_iter()
            .filter(|r| r.class() == ReasonClass::Infrastructure)
            .collect();
        assert_eq!(
            infra,
            [ScannerError, LeaseLost, LlmUnavailable, TargetError]
        );
    }
}
