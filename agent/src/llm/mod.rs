//! The `openai` brain: the OpenAI chat-completions API as served by vLLM,
//! llama.cpp's server and Ollama (`/v1/chat/completions`), and the script
//! extraction from its answers; the endpoint's start check and probe
//! (`/models`).

mod brain;
mod client;
mod extract;
mod models;
mod preflight;

pub use brain::OpenAiBrain;
pub use client::{ChatClient, LlmError, LlmSettings, Message};
pub use extract::{extract_script, ExtractError};
pub use models::{EndpointError, ModelsProbe};
pub use preflight::preflight;
