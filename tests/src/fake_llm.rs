//! A fake OpenAI-compatible endpoint (the one fake the project allows): a
//! real HTTP server on 127.0.0.1 answering `POST /v1/chat/completions` from
//! a script. Each rule names needles (a rule id, a lesson id, a phrase of
//! the Reflector prompt), all looked for anywhere in the conversation, and
//! the replies to give in turn; the last reply repeats. The first rule that
//! matches answers. Replies can be slow, an HTTP error, or garbage.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub enum Reply {
    /// A chat completion whose content is this text.
    Answer(String),
    /// This HTTP status with a short error body.
    Status(u16),
    /// 200 with a body that is not a chat completion.
    Garbage,
    /// The inner reply after a delay.
    Slow(Duration, Box<Reply>),
}

impl Reply {
    /// A Reflector answer: the structured lesson as JSON, in a fence.
    pub fn lesson(lesson: &str, ban: Option<&str>, scope: &str) -> Reply {
        let json = json!({ "lesson": lesson, "ban": ban, "scope": scope });
        Reply::Answer(format!("```json\n{json}\n```"))
    }

    /// An answer holding `script` in a bash fence, with some prose around.
    pub fn script(script: &str) -> Reply {
        Reply::Answer(format!(
            "Here is the fix:\n```bash\n{script}\n```\nIt is idempotent."
        ))
    }
}

#[derive(Default)]
struct Scripted {
    rules: Vec<(Vec<String>, VecDeque<Reply>)>,
    fallback: Option<Reply>,
}

#[derive(Clone, Default)]
struct Shared {
    script: Arc<Mutex<Scripted>>,
    requests: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    prompts: Arc<Mutex<Vec<String>>>,
}

pub struct FakeLlm {
    /// Base URL including `/v1`, as clients are configured.
    pub base_url: String,
    shared: Shared,
}

impl FakeLlm {
    pub async fn start() -> FakeLlm {
        let shared = Shared::default();
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeLlm { base_url, shared }
    }

    /// When the conversation contains `needle`, give `replies` in turn.
    pub fn on(&self, needle: &str, replies: Vec<Reply>) -> &Self {
        self.on_all(&[needle], replies)
    }

    /// When the conversation contains every one of `needles`.
    pub fn on_all(&self, needles: &[&str], replies: Vec<Reply>) -> &Self {
        let needles = needles.iter().map(|n| (*n).to_owned()).collect();
        self.lock().rules.push((needles, replies.into()));
        self
    }

    /// Forgets every rule and the fallback (the endpoint starts answering
    /// differently mid-test).
    pub fn reset(&self) -> &Self {
        *self.lock() = Scripted::default();
        self
    }

    /// The reply when no needle matches (default: a 404-like refusal).
    pub fn otherwise(&self, reply: Reply) -> &Self {
        self.lock().fallback = Some(reply);
        self
    }

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Most requests that were being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests so far whose prompt contains `needle` (say, a rule id):
    /// how often the brain or the Reflector was asked about it.
    pub fn requests_mentioning(&self, needle: &str) -> usize {
        let prompts = self.shared.prompts.lock().unwrap();
        prompts.iter().filter(|p| p.contains(needle)).count()
    }

    /// Every last user message received, in order.
    pub fn prompts(&self) -> Vec<String> {
        self.shared.prompts.lock().unwrap().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Scripted> {
        self.shared.script.lock().unwrap()
    }
}

async fn complete(State(s): State<Shared>, Json(body): Json<Value>) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let prompt = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    s.prompts.lock().unwrap().push(prompt.clone());
    // Needles match anywhere in the conversation, so a follow-up message
    // ("reply with the script only") stays with its rule.
    let conversation: String = body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["content"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let reply = {
        let mut script = s.script.lock().unwrap();
        let found = script
            .rules
            .iter_mut()
            .find(|(needles, _)| needles.iter().all(|n| conversation.contains(n.as_str())));
        match found {
            Some((_, replies)) if replies.len() > 1 => replies.pop_front(),
            Some((_, replies)) => replies.front().cloned(),
            None => script.fallback.clone(),
        }
    };
    let resp = respond(reply, body["model"].as_str().unwrap_or("fake")).await;
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    resp
}

async fn respond(reply: Option<Reply>, model: &str) -> Response {
    let mut reply = reply;
    loop {
        match reply {
            Some(Reply::Slow(d, inner)) => {
                tokio::time::sleep(d).await;
                reply = Some(*inner);
            }
            Some(Reply::Answer(text)) => {
                return Json(json!({
                    "id": "chatcmpl-fake", "object": "chat.completion", "model": model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                }))
                .into_response()
            }
            Some(Reply::Status(code)) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return (
                    status,
                    Json(json!({"error": {"message": format!("scripted {code}")}})),
                )
                    .into_response();
            }
            Some(Reply::Garbage) => return (StatusCode::OK, "<html>not json").into_response(),
            None => {
                return (
                    StatusCode::NOT_FOUND,
                    Json(json!({"error": {"message": "no scripted reply"}})),
                )
                    .into_response()
            }
        }
    }
}
