//! What an agent leases (`RuleTask`) and what it reports back (`Outcome`).

use serde::{Deserialize, Serialize};

use crate::ids::{RunId, TaskId};
use crate::target_class::TargetClass;

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
    /// the attempt as failed with reason `health`. An agent runs only the
    /// checks that fit its target class ([`Checks::health_for`]).
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
    /// The health checks an agent whose targets are of class `class` runs:
    /// those without a `targets` filter and those that name its class.
    pub fn health_for(&self, class: TargetClass) -> Vec<HealthCheck> {
        self.health
            .iter()
            .filter(|h| h.fits(class))
            .cloned()
            .collect()
    }

    /// These checks as an agent with targets of class `class` runs them.
    pub fn for_class(&self, class: TargetClass) -> Checks {
        Checks {
            health: self.health_for(class),
            ..self.clone()
        }
    }

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
    /// The target classes the check is run on (e.g. `["vm"]`: systemd and
    /// sshd exist only there); empty: every target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetClass>,
}

impl HealthCheck {
    fn default_timeout_s() -> u32 {
        10
    }

    /// Whether an agent with targets of class `class` runs this check.
    pub fn fits(&self, class: TargetClass) -> bool {
        self.targets.is_empty() || self.targets.contains(&class)
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
    /// Never leased: the rule needs a target of class `target` (the pack's
    /// `[[requires]]`) and no live agent had one when the run was planned.
    /// Recorded by the planner, never by an agent; neither a fix nor an
    /// escalation, and never compared (DESIGN D6).
    NeedsTarget {
        target: TargetClass,
    },
}

impl Outcome {
    /// Stable label for metrics and the `work_items.outcome` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fixed { .. } => "fixed",
            Self::AlreadyPassing => "already_passing",
            Self::Escalated { .. } => "escalated",
            Self::NeedsTarget { .. } => "needs_target",
        }
    }

    pub fn reason(&self) -> Option<EscalationReason> {
        match self {
            Self::Escalated { reason } => Some(*reason),
            _ => None,
        }
    }

    /// What `work_items.reason` holds: the escalation reason, or for
    /// `needs_target` the target class the rule needs.
    pub fn reason_label(&self) -> Option<&'static str> {
        match self {
            Self::Escalated { reason } => Some(reason.as_str()),
            Self::NeedsTarget { target } => Some(target.as_str()),
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
        let o = Outcome::NeedsTarget {
            target: TargetClass::Vm,
        };
        let s = serde_json::to_string(&o).unwrap();
        assert_eq!(s, r#"{"kind":"needs_target","target":"vm"}"#);
        assert_eq!(o.kind(), "needs_target");
        assert_eq!(o.reason(), None);
        assert_eq!(o.reason_label(), Some("vm"));
    }

    #[test]
    fn an_agent_runs_the_health_checks_that_fit_its_target_class() {
        let check = |name: &str, targets: Vec<TargetClass>| HealthCheck {
            name: name.into(),
            command: "true".into(),
            timeout_s: 10,
            targets,
        };
        let checks = Checks {
            health: vec![
                check("shell", vec![]),
                check("systemd", vec![TargetClass::Vm]),
                check("both", vec![TargetClass::Container, TargetClass::Vm]),
            ],
            ..Checks::default()
        };
        let names = |class| -> Vec<String> {
            checks
                .health_for(class)
                .into_iter()
                .map(|h| h.name)
                .collect()
        };
        assert_eq!(names(TargetClass::Container), ["shell", "both"]);
        assert_eq!(names(TargetClass::Vm), ["shell", "systemd", "both"]);
        // A check without a filter keeps its old wire form.
        let json = serde_json::to_value(&checks.health[0]).unwrap();
        assert!(json.get("targets").is_none(), "{json}");
        assert_eq!(
            serde_json::to_value(&checks.health[1]).unwrap()["targets"][0],
            "vm"
        );
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
