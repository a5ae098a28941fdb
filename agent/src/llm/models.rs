//! `GET {base}/models`: does the endpoint answer, take the key and serve
//! the model? vLLM, llama.cpp's server and Ollama all answer it with
//! `{"data": [{"id": ...}]}`. Used by the start check and, during a hold,
//! to find out when the endpoint is back.

use std::time::Duration;

use fleet_common::redact::redact_url;
use serde::Deserialize;
use thiserror::Error;

use super::client::LlmSettings;

/// A probe never waits longer than this, whatever `--llm-timeout-s` says
/// (a chat answer may take minutes; a model list does not).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What is wrong with the endpoint; each message is one line that says
/// which setting to look at.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EndpointError {
    #[error("LLM endpoint {url} is unreachable ({error}): check --llm-url (FLEET_LLM_URL) and that the model server is running")]
    Unreachable { url: String, error: String },
    #[error("LLM endpoint {url} answered {status} to GET /models: the server is overloaded or starting; it is asked again")]
    Unavailable { url: String, status: u16 },
    #[error("LLM endpoint {url} refused the API key ({status}): check --llm-api-key (FLEET_LLM_API_KEY)")]
    KeyRefused { url: String, status: u16 },
    #[error("no OpenAI-compatible API at {url} (GET /models answered 404): --llm-url (FLEET_LLM_URL) must be the base up to /v1, e.g. http://host:8000/v1")]
    NotFound { url: String },
    #[error("LLM endpoint {url} refused GET /models ({status}: {body}): check --llm-url (FLEET_LLM_URL)")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("LLM endpoint {url} did not answer a model list ({error}): is --llm-url (FLEET_LLM_URL) an OpenAI-compatible server?")]
    Malformed { url: String, error: String },
    #[error("LLM endpoint {url} does not serve model {model:?}; it serves: {listed}. Set --llm-model (FLEET_LLM_MODEL) to one of them")]
    ModelMissing {
        url: String,
        model: String,
        listed: String,
    },
}

impl EndpointError {
    /// Down for now (connection, timeout, 429, 5xx): worth asking again.
    /// Anything else is a wrong setting that waiting does not fix.
    pub fn transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Unavailable { .. })
    }
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

/// Checks one endpoint's model list for one model.
#[derive(Clone)]
pub struct ModelsProbe {
    http: reqwest::Client,
    /// `{base}/models`, as requested.
    models_url: String,
    /// The base URL as logged and shown in errors (no credentials).
    url: String,
    model: String,
    api_key: Option<String>,
}

impl std::fmt::Debug for ModelsProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log line.
        f.debug_struct("ModelsProbe")
            .field("url", &self.url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl ModelsProbe {
    pub fn new(settings: &LlmSettings) -> Result<Self, EndpointError> {
        let base = settings.base_url.trim_end_matches('/');
        let shown = redact_url(base);
        let http = reqwest::Client::builder()
            .timeout(settings.timeout.min(PROBE_TIMEOUT))
            .build()
            .map_err(|e| EndpointError::Unreachable {
                url: shown.clone(),
                error: e.to_string(),
            })?;
        Ok(Self {
            http,
            models_url: format!("{base}/models"),
            url: shown,
            model: settings.model.clone(),
            api_key: settings.api_key.clone(),
        })
    }

    /// The endpoint as shown in logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Ok when the endpoint answers with the key and lists the model.
    pub async fn check(&self) -> Result<(), EndpointError> {
        let url = self.url.clone();
        let mut req = self.http.get(&self.models_url);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| EndpointError::Unreachable {
            url: url.clone(),
            error: transport_error(&e),
        })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| EndpointError::Unreachable {
            url: url.clone(),
            error: transport_error(&e),
        })?;
        match status {
            200..=299 => {}
            401 | 403 => return Err(EndpointError::KeyRefused { url, status }),
            404 => return Err(EndpointError::NotFound { url }),
            429 | 500..=599 => return Err(EndpointError::Unavailable { url, status }),
            _ => {
                return Err(EndpointError::Refused {
                    url,
                    status,
                    body: one_line(&body),
                })
            }
        }
        let list: ModelList =
            serde_json::from_str(&body).map_err(|e| EndpointError::Malformed {
                url: url.clone(),
                error: e.to_string(),
            })?;
        let ids: Vec<String> = list.data.into_iter().map(|m| m.id).collect();
        if ids.iter().any(|id| serves(id, &self.model)) {
            return Ok(());
        }
        let listed = if ids.is_empty() {
            "no model at all".to_owned()
        } else {
            ids.join(", ")
        };
        Err(EndpointError::ModelMissing {
            url,
            model: self.model.clone(),
            listed: one_line(&listed),
        })
    }
}

/// Ollama lists `name:tag` and answers to `name` for `name:latest`.
fn serves(listed: &str, model: &str) -> bool {
    listed == model || listed.strip_suffix(":latest") == Some(model)
}

/// reqwest's top-level message ("error sending request") hides the cause
/// ("connection refused"); the chain says it.
fn transport_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    one_line(&text)
}

/// Error text from outside, cut and on one line.
fn one_line(text: &str) -> String {
    let mut s: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::workbench::truncate_utf8(&mut s, 300);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_tags_serve_the_bare_name() {
        assert!(serves("qwen2.5-coder:7b", "qwen2.5-coder:7b"));
        assert!(serves("llama3:latest", "llama3"));
        assert!(!serves("llama3:8b", "llama3"));
        assert!(!serves("llama3", "llama3:latest"));
    }

    #[test]
    fn only_outages_are_transient() {
        let url = "http://h/v1".to_owned();
        assert!(EndpointError::Unreachable {
            url: url.clone(),
            error: "refused".into()
        }
        .transient());
        assert!(EndpointError::Unavailable {
            url: url.clone(),
            status: 503
        }
        .transient());
        assert!(!EndpointError::KeyRefused {
            url: url.clone(),
            status: 401
        }
        .transient());
        assert!(!EndpointError::NotFound { url: url.clone() }.transient());
        assert!(!EndpointError::ModelMissing {
            url,
            model: "m".into(),
            listed: "a, b".into()
        }
        .transient());
    }

    #[test]
    fn messages_are_one_line_and_name_the_setting() {
        let e = EndpointError::ModelMissing {
            url: "http://h/v1".into(),
            model: "gpt".into(),
            listed: one_line("a,\n b"),
        };
        let text = e.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("--llm-model"), "{text}");
        assert!(text.contains("it serves: a, b"), "{text}");
    }
}
