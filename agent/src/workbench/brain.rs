//! The Worker: turns a prompt into a fix script.

use fleet_common::event::{EvalStatus, LessonRef};
use fleet_common::RuleTask;

use super::BoxFuture;
use crate::error::AgentError;

/// What an earlier attempt of this lease came to; fed back into the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorAttempt {
    pub attempt: u32,
    pub status: EvalStatus,
    pub health_ok: bool,
    /// The Evaluator's failing-check details after this attempt.
    pub details: String,
}

/// One prompt as handed to the brain. `lessons` is exactly what the text
/// contains, because credit assignment trusts it (DESIGN E4).
#[derive(Debug, Clone)]
pub struct Prompt {
    pub task: RuleTask,
    /// 1-based attempt this prompt is for.
    pub attempt: u32,
    pub prior: Vec<PriorAttempt>,
    pub lessons: Vec<LessonRef>,
    pub text: String,
}

pub trait Brain: Send + Sync {
    /// Proposes a script for the prompt. Errors mean the brain is
    /// unavailable (the rule escalates with `llm_unavailable`).
    fn propose<'a>(&'a self, prompt: &'a Prompt) -> BoxFuture<'a, Result<String, AgentError>>;
}
