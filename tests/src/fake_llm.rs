//! A fake OpenAI-compatible endpoint (the one fake the project allows): a
//! real HTTP server on 127.0.0.1 answering `POST /v1/chat/completions` from
//! a script. Each rule names needles (a rule id, a lesson id, a phrase of
//! the Reflector prompt), all looked for anywhere in the conversation, and
//! the replies to give in turn; the last reply repeats. The first rule that
//! matches answers. Replies can be slow, an HTTP error, or garbage.
//!
//! `GET /v1/models` lists the served models (`fake-model` unless told
//! otherwise), as vLLM, llama.cpp and Ollama do. The endpoint can require
//! an API key (401 without it) and be taken down and brought back: while
//! down, every request answers 503.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<Scripted>>,
    models: Arc<Mutex<Vec<String>>>,
    /// The bearer key every request must carry, if any.
    key: Arc<Mutex<Option<String>>>,
    down: Arc<AtomicBool>,
    /// Goes down once this many chat requests were received in all.
    down_after: Arc<Mutex<Option<usize>>>,
    /// `GET /v1/models` requests, answered or not.
    model_requests: Arc<AtomicUsize>,
    /// Requests of either route answered 503 because the endpoint was down.
    refused_down: Arc<AtomicUsize>,
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
        let shared = Shared {
            script: Arc::default(),
            models: Arc::new(Mutex::new(vec![MODEL.to_owned()])),
            key: Arc::default(),
            down: Arc::default(),
            down_after: Arc::default(),
            model_requests: Arc::default(),
            refused_down: Arc::default(),
            requests: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            prompts: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(complete))
            .route("/v1/models", get(models))
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

    /// The models `GET /v1/models` lists (default: [`MODEL`]).
    pub fn serve_models(&self, models: &[&str]) -> &Self {
        *self.shared.models.lock().unwrap() = models.iter().map(|m| (*m).to_owned()).collect();
        self
    }

    /// Every request must carry `Authorization: Bearer <key>` (else 401).
    pub fn require_key(&self, key: &str) -> &Self {
        *self.shared.key.lock().unwrap() = Some(key.to_owned());
        self
    }

    /// Takes the endpoint down (every request answers 503) or brings it
    /// back.
    pub fn set_down(&self, down: bool) -> &Self {
        self.shared.down.store(down, Ordering::SeqCst);
        self
    }

    /// Answers the next `n` chat requests as scripted, then goes down (as
    /// [`FakeLlm::set_down`]) until brought back: an outage mid-run,
    /// wherever the run happens to be.
    pub fn go_down_after(&self, n: usize) -> &Self {
        *self.shared.down_after.lock().unwrap() = Some(self.requests() + n);
        self
    }

    /// `GET /v1/models` requests so far.
    pub fn model_requests(&self) -> usize {
        self.shared.model_requests.load(Ordering::SeqCst)
    }

    /// Requests answered 503 because the endpoint was down.
    pub fn refused_while_down(&self) -> usize {
        self.shared.refused_down.load(Ordering::SeqCst)
    }

    /// The reply when no needle matches (default: a 400 refusal).
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

/// The model the fake serves unless told otherwise.
pub const MODEL: &str = "fake-model";

/// Why a request is turned away before it is looked at: the endpoint is
/// down (503), or the key is missing or wrong (401).
fn turned_away(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    if s.down.load(Ordering::SeqCst) {
        s.refused_down.fetch_add(1, Ordering::SeqCst);
        let body = json!({"error": {"message": "model server is down"}});
        return Some((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response());
    }
    let wanted = s.key.lock().unwrap().clone()?;
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(wanted.as_str()) {
        return None;
    }
    let body = json!({"error": {"message": "invalid api key"}});
    Some((StatusCode::UNAUTHORIZED, Json(body)).into_response())
}

async fn models(State(s): State<Shared>, headers: HeaderMap) -> Response {
    s.model_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(refusal) = turned_away(&s, &headers) {
        return refusal;
    }
    let data: Vec<Value> = s
        .models
        .lock()
        .unwrap()
        .iter()
        .map(|id| json!({"id": id, "object": "model", "owned_by": "fake"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn complete(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let seen = s.requests.fetch_add(1, Ordering::SeqCst) + 1;
    {
        let mut after = s.down_after.lock().unwrap();
        if after.is_some_and(|n| seen > n) {
            *after = None;
            s.down.store(true, Ordering::SeqCst);
        }
    }
    if let Some(refusal) = turned_away(&s, &headers) {
        return refusal;
    }
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
            // A 400 refuses this request only; a 404 would say the model
            // or URL is gone, and the agent would hold instead.
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": {"message": "no scripted reply"}})),
                )
                    .into_response()
            }
        }
    }
}
