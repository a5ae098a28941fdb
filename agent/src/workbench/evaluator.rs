//! The Evaluator: re-checks one rule on the target (OpenSCAP in production,
//! DESIGN T4).

use fleet_common::event::EvalStatus;
use fleet_common::RuleTask;

use super::BoxFuture;
use crate::error::AgentError;

/// A verdict plus what the Reflector needs to learn from a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub status: EvalStatus,
    /// Failing check details; empty on pass.
    pub details: String,
}

pub trait Evaluator: Send + Sync {
    /// Evaluates `task.rule` under `task.profile`. Errors mean the scanner
    /// itself failed (the rule escalates with `scanner_error`).
    fn evaluate<'a>(&'a self, task: &'a RuleTask) -> BoxFuture<'a, Result<Evaluation, AgentError>>;
}
