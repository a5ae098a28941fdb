//! A chat-completions client: timeouts, retries with backoff on 429, 5xx
//! and transport errors, and a concurrency limit per endpoint so a fleet of
//! slots cannot swamp one small model server.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::Semaphore;
use tracing::warn;

#[derive(Clone)]
pub struct LlmSettings {
    /// Base URL up to and including `/v1`, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    pub model: String,
    /// Bearer key; vLLM, llama.cpp and Ollama usually need none.
    pub api_key: Option<String>,
    pub temperature: f32,
    pub max_tokens: u32,
    /// Per request, including reading the whole answer.
    pub timeout: Duration,
    /// Retries after the first try, on 429, 5xx and transport errors.
    pub retries: usize,
    /// Requests in flight to this endpoint from this agent.
    pub concurrency: usize,
    /// How long the start check waits for an endpoint that does not answer
    /// yet (a wrong key or model fails at once).
    pub start_wait: Duration,
    /// Longest pause between probes of an endpoint that went down.
    pub probe_max: Duration,
    /// Hold (hand leases back, lease nothing) while the endpoint is down;
    /// `false`: escalate `llm_unavailable` and go on.
    pub hold: bool,
}

impl std::fmt::Debug for LlmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Settings get logged; the key must not be.
        f.debug_struct("LlmSettings")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("concurrency", &self.concurrency)
            .field("start_wait", &self.start_wait)
            .field("probe_max", &self.probe_max)
            .field("hold", &self.hold)
            .finish()
    }
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8000/v1".into(),
            model: "default".into(),
            api_key: None,
            temperature: 0.2,
            max_tokens: 2048,
            timeout: Duration::from_secs(120),
            retries: 3,
            concurrency: 2,
            start_wait: Duration::from_secs(30),
            probe_max: Duration::from_secs(30),
            hold: true,
        }
    }
}

#[derive(Debug, Error)]
pub enum LlmError {
    #[error("endpoint unreachable or too slow: {0}")]
    Transport(String),
    /// 429 or 5xx after every retry.
    #[error("endpoint answered {status} after retries: {body}")]
    Unavailable { status: u16, body: String },
    /// Any other status: retrying cannot help (bad model name, bad key).
    #[error("endpoint refused the request ({status}): {body}")]
    Refused { status: u16, body: String },
    #[error("answer is not a chat completion: {0}")]
    Malformed(String),
}

impl LlmError {
    fn retryable(&self) -> bool {
        matches!(self, Self::Transport(_) | Self::Unavailable { .. })
    }

    /// The endpoint, not this request, is the problem: down, overloaded,
    /// or no longer taking the key (401, 403) or serving the URL or model
    /// (404). The agent then holds its work until `/models` answers again
    /// rather than escalating the rule. Other refusals (a 400 for this
    /// prompt) and malformed answers are about the request.
    pub fn endpoint_down(&self) -> bool {
        match self {
            Self::Transport(_) | Self::Unavailable { .. } => true,
            Self::Refused { status, .. } => matches!(status, 401 | 403 | 404),
            Self::Malformed(_) => false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system".into(),
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: &'a [Message],
    temperature: f32,
    max_tokens: u32,
    stream: bool,
}

#[derive(Deserialize)]
struct Response {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: ResponseMessage,
}

#[derive(Deserialize)]
struct ResponseMessage {
    #[serde(default)]
    content: Option<String>,
}

/// Bodies quoted in errors are cut here: a 5xx page must not flood logs.
const MAX_ERROR_BODY: usize = 300;

#[derive(Clone)]
pub struct ChatClient {
    http: reqwest::Client,
    settings: Arc<LlmSettings>,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log line.
        f.debug_struct("ChatClient")
            .field("base_url", &self.settings.base_url)
            .field("model", &self.settings.model)
            .finish_non_exhaustive()
    }
}

impl ChatClient {
    pub fn new(settings: LlmSettings) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        Ok(Self {
            http,
            settings: Arc::new(settings),
            slots,
        })
    }

    /// The assistant's answer to `messages`.
    pub async fn complete(&self, messages: &[Message]) -> Result<String, LlmError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .with_max_times(self.settings.retries);
        (|| self.once(messages))
            .retry(backoff)
            .when(LlmError::retryable)
            .notify(|e, wait| warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "llm request failed, retrying"))
            .await
    }

    async fn once(&self, messages: &[Message]) -> Result<String, LlmError> {
        let s = &self.settings;
        let url = format!("{}/chat/completions", s.base_url.trim_end_matches('/'));
        let mut req = self.http.post(url).json(&Request {
            model: &s.model,
            messages,
            temperature: s.temperature,
            max_tokens: s.max_tokens,
            stream: false,
        });
        if let Some(key) = &s.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(LlmError::Unavailable {
                status: status.as_u16(),
                body: cut(&body),
            });
        }
        if !status.is_success() {
            return Err(LlmError::Refused {
                status: status.as_u16(),
                body: cut(&body),
            });
        }
        let parsed: Response = serde_json::from_str(&body)
            .map_err(|e| LlmError::Malformed(format!("{e}: {}", cut(&body))))?;
        parsed
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| LlmError::Malformed("no choices[0].message.content".into()))
    }
}

fn cut(body: &str) -> String {
    let mut s = body.to_owned();
    crate::workbench::truncate_utf8(&mut s, MAX_ERROR_BODY);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let s = LlmSettings {
            api_key: Some("sk-very-secret".into()),
            ..LlmSettings::default()
        };
        let shown = format!("{s:?} {:?}", ChatClient::new(s.clone()).unwrap());
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
