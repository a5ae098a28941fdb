//! A brain that writes a recognisable script per (rule, attempt).

use super::machine::script_for;
use crate::error::AgentError;
use crate::workbench::{BoxFuture, Brain, Prompt};

#[derive(Debug, Default, Clone)]
pub struct SimBrain;

impl Brain for SimBrain {
    fn propose<'a>(&'a self, prompt: &'a Prompt) -> BoxFuture<'a, Result<String, AgentError>> {
        Box::pin(async move { Ok(script_for(&prompt.task.rule, prompt.attempt)) })
    }
}
