//! The `openai` Worker and Reflector. Worker: the assembled prompt as the
//! user message, the fenced script of the answer as the fix; an answer
//! without a script is asked again once (models sometimes only explain),
//! then given up on. Reflector: the same, for a JSON lesson. An endpoint
//! that is down answers `BrainUnavailable`: the runner holds the lease's
//! work instead of escalating the rule.

use fleet_common::lesson::ReflectionFailure;
use tracing::warn;

use super::client::{ChatClient, Message};
use super::extract::extract_script;
use crate::error::AgentError;
use crate::remediation::{parse_reflection, Reflection};
use crate::workbench::{BoxFuture, Brain, Prompt};

const SYSTEM: &str =
    "You are a Linux hardening engineer. Answer with one bash script in a ```bash fenced block.";
const REFLECTOR_SYSTEM: &str =
    "You review failed Linux hardening scripts. Answer with one JSON object and nothing else.";
const REFLECTOR_AGAIN: &str = "That was not the JSON object asked for. Answer with the JSON object only: {\"lesson\": \"...\", \"ban\": null, \"scope\": \"rule\"}";

pub struct OpenAiBrain {
    pub client: ChatClient,
}

impl OpenAiBrain {
    async fn ask(&self, prompt: &Prompt) -> Result<String, AgentError> {
        let mut messages = vec![Message::system(SYSTEM), Message::user(prompt.text.clone())];
        for round in 0..2 {
            let answer = self.client.complete(&messages).await.map_err(|e| {
                if e.endpoint_down() {
                    AgentError::BrainUnavailable(e.to_string())
                } else {
                    AgentError::Brain(e.to_string())
                }
            })?;
            match extract_script(&answer) {
                Ok(script) => return Ok(script),
                Err(e) if round == 0 => {
                    warn!(error = %e, "answer without a script; asking once more");
                    messages.push(Message {
                        role: "assistant".into(),
                        content: answer,
                    });
                    messages.push(Message::user(
                        "Reply with the script only, in one ```bash fenced block.",
                    ));
                }
                Err(e) => {
                    return Err(AgentError::Brain(format!(
                        "no script after a second ask: {e}"
                    )))
                }
            }
        }
        unreachable!("two rounds always return")
    }

    async fn ask_reflector(&self, prompt: &str) -> Result<Option<Reflection>, ReflectionFailure> {
        let mut messages = vec![Message::system(REFLECTOR_SYSTEM), Message::user(prompt)];
        for round in 0..2 {
            let answer = self.client.complete(&messages).await.map_err(|e| {
                warn!(error = %e, "Reflector endpoint unavailable");
                ReflectionFailure::ReflectorUnavailable
            })?;
            match parse_reflection(&answer) {
                Ok(r) => return Ok(Some(r)),
                Err(e) if round == 0 => {
                    warn!(error = %e, "Reflector answer unparseable; asking once more");
                    messages.push(Message {
                        role: "assistant".into(),
                        content: answer,
                    });
                    messages.push(Message::user(REFLECTOR_AGAIN));
                }
                Err(e) => {
                    warn!(error = %e, "Reflector answer unparseable twice");
                    return Err(ReflectionFailure::ReflectorUnparseable);
                }
            }
        }
        unreachable!("two rounds always return")
    }
}

impl Brain for OpenAiBrain {
    fn propose<'a>(&'a self, prompt: &'a Prompt) -> BoxFuture<'a, Result<String, AgentError>> {
        Box::pin(self.ask(prompt))
    }

    fn reflect<'a>(
        &'a self,
        prompt: &'a str,
    ) -> BoxFuture<'a, Result<Option<Reflection>, ReflectionFailure>> {
        Box::pin(self.ask_reflector(prompt))
    }
}
