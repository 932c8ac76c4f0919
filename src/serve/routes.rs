//! The HTTP endpoints. Each handler checks its request, turns it into an
//! engine [`Command`] and answers from the engine's reply or events.

use super::api::{
    ChatRequest, ClassifyRequest, CompletionRequest, LoadAdapter, Sampling, UnloadAdapter, Usage,
};
use super::error::ApiError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request as HttpRequest, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use peftc_compiler::task::TaskKind;
use peftc_runtime::engine::{Command, Event, Finished, Metrics, Reply, Request};
use peftc_runtime::generate::{FinishReason, GenerateOptions};
use peftc_runtime::tokenizer::TextTokenizer;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc::UnboundedReceiver;

pub struct AppState {
    pub commands: std::sync::mpsc::Sender<Command>,
    pub tok: Arc<TextTokenizer>,
    /// Positions a prompt and its continuation may fill.
    pub context: usize,
    pub kind: TaskKind,
    pub metrics: Arc<Metrics>,
    /// Seconds since the epoch when the server started.
    pub started: u64,
    pub ids: AtomicU64,
}

type St = State<Arc<AppState>>;

impl AppState {
    /// Sends a one-shot command and waits for its reply.
    async fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply: Reply<T> = Box::new(move |r| {
            let _ = tx.send(r);
        });
        self.commands
            .send(make(reply))
            .map_err(|_| ApiError::unavailable())?;
        rx.await
            .map_err(|_| ApiError::unavailable())?
            .map_err(ApiError::from)
    }

    fn next_id(&self, prefix: &str) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:x}{n:06x}", self.started)
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The body as `T`, or a 400 saying what is wrong with it (413 over the limit).
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|r| ApiError {
        status: r.status(),
        message: r.body_text(),
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid: {e}")))
}

/// Counts every answer for `/metrics`.
pub async fn count(State(s): St, req: HttpRequest, next: Next) -> Response {
    let r = next.run(req).await;
    s.metrics.requests.inc();
    if r.status().is_client_error() || r.status().is_server_error() {
        s.metrics.request_errors.inc();
    }
    r
}

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn metrics(State(s): St) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

pub async fn not_found(req: HttpRequest) -> ApiError {
    ApiError::not_found(format!("no endpoint {} {}", req.method(), req.uri().path()))
}

pub async fn models(State(s): St) -> Result<Json<Value>, ApiError> {
    let names = s.ask(|reply| Command::Models { reply }).await?;
    let data: Vec<Value> = names
        .iter()
        .map(|n| json!({"id": n, "object": "model", "created": s.started, "owned_by": "peftc"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

pub async fn load_adapter(
    State(s): St,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let r: LoadAdapter = parse(body)?;
    let (name, path) = (r.lora_name.clone(), std::path::PathBuf::from(&r.lora_path));
    s.ask(|reply| Command::Load { name, path, reply }).await?;
    Ok(Json(json!({
        "status": "ok",
        "message": format!("Success: LoRA adapter '{}' added successfully.", r.lora_name),
    })))
}

pub async fn unload_adapter(
    State(s): St,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let r: UnloadAdapter = parse(body)?;
    let name = r.lora_name.clone();
    s.ask(|reply| Command::Unload { name, reply }).await?;
    Ok(Json(json!({
        "status": "ok",
        "message": format!("Success: LoRA adapter '{}' removed successfully.", r.lora_name),
    })))
}

pub async fn classify(
    State(s): St,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let r: ClassifyRequest = parse(body)?;
    if s.kind != TaskKind::Classify {
        return Err(ApiError::bad_request(
            "this server runs a causal_lm spec; /v1/classify needs a `task = classify` spec",
        ));
    }
    let texts = r.input.into_vec();
    if texts.is_empty() {
        return Err(ApiError::bad_request("`input` holds no text"));
    }
    let model = r.model.clone();
    let probs = s
        .ask(|reply| Command::Classify {
            model,
            texts,
            reply,
        })
        .await?;
    let data: Vec<Value> = probs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let label = p
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (k, &x)| if x > b.1 { (k, x) } else { b },
                )
                .0;
            json!({"index": i, "label": label, "probs": p})
        })
        .collect();
    Ok(Json(json!({
        "id": s.next_id("classify"),
        "object": "list",
        "created": now(),
        "model": r.model,
        "data": data,
    })))
}

/// The engine's options for a request's sampling fields (OpenAI's defaults:
/// temperature 1, top_p 1).
fn options(s: &Sampling, default_max: usize) -> Result<GenerateOptions, ApiError> {
    if s.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("`n` must be 1"));
    }
    let temperature = s.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(ApiError::bad_request(format!(
            "`temperature` must be a number ≥ 0, not {temperature}"
        )));
    }
    let top_p = s.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad_request(format!(
            "`top_p` must be in (0, 1], not {top_p}"
        )));
    }
    let top_k = match s.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => k as usize,
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "`top_k` must be -1 (all) or ≥ 1, not {k}"
            )));
        }
    };
    let max_tokens = s
        .max_completion_tokens
        .or(s.max_tokens)
        .unwrap_or(default_max);
    if max_tokens == 0 {
        return Err(ApiError::bad_request("`max_tokens` must be at least 1"));
    }
    let stop = s.stop.clone().map(|x| x.into_vec()).unwrap_or_default();
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::bad_request("a `stop` string is empty"));
    }
    static UNSEEDED: AtomicU64 = AtomicU64::new(0);
    let seed = s.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        t ^ UNSEEDED.fetch_add(1, Ordering::Relaxed).rotate_left(32)
    });
    Ok(GenerateOptions {
        max_tokens,
        temperature,
        top_p,
        top_k,
        seed,
        stop,
    })
}

/// A generation in progress: its first event (already received, so errors
/// before any text become error statuses) and the rest.
struct Generation {
    first: Option<Event>,
    rx: UnboundedReceiver<Event>,
}

impl Generation {
    async fn next(&mut self) -> Option<Event> {
        match self.first.take() {
            Some(e) => Some(e),
            None => self.rx.recv().await,
        }
    }

    /// The whole text and how it ended.
    async fn collect(mut self) -> Result<(String, Finished), ApiError> {
        let mut text = String::new();
        loop {
            match self.next().await {
                Some(Event::Text(t)) => text.push_str(&t),
                Some(Event::Done(f)) => return Ok((text, f)),
                Some(Event::Failed(e)) => return Err(e.into()),
                None => return Err(ApiError::unavailable()),
            }
        }
    }
}

impl AppState {
    /// Checks a tokenized prompt against the context and queues it.
    async fn start(
        &self,
        model: String,
        prompt: Vec<u32>,
        options: GenerateOptions,
    ) -> Result<Generation, ApiError> {
        if self.kind == TaskKind::CausalLm {
            if prompt.is_empty() {
                return Err(ApiError::bad_request("the prompt is empty"));
            }
            if prompt.len() >= self.context {
                return Err(ApiError::bad_request(format!(
                    "the prompt has {} tokens; the model's context is {} (prompt and completion together)",
                    prompt.len(),
                    self.context
                )));
            }
        } else {
            return Err(ApiError::bad_request(
                "this server runs a classification spec; generation needs a `task = causal_lm` spec (use /v1/classify)",
            ));
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let request = Request {
            model,
            prompt,
            options,
            sink: Box::new(move |e| tx.send(e).is_ok()),
        };
        self.commands
            .send(Command::Generate(request))
            .map_err(|_| ApiError::unavailable())?;
        match rx.recv().await {
            None => Err(ApiError::unavailable()),
            Some(Event::Failed(e)) => Err(e.into()),
            Some(first) => Ok(Generation {
                first: Some(first),
                rx,
            }),
        }
    }
}

fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Stop => "stop",
    }
}

/// What one streamed chunk carries.
enum Piece<'a> {
    /// The chat stream's opening chunk (the assistant's role).
    Start,
    Text(&'a str),
    End(FinishReason),
}

/// Streams `g` as server-sent events, each chunk rendered by `chunk`, then
/// `[DONE]`. A client that goes away ends the generation (its slot is freed).
fn stream(
    mut g: Generation,
    opening: bool,
    chunk: impl Fn(Piece) -> Value + Send + 'static,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<SseEvent, Infallible>>(64);
    tokio::spawn(async move {
        let send = |v: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(SseEvent::default().data(v))).await.is_ok() }
        };
        if opening && !send(chunk(Piece::Start).to_string()).await {
            return;
        }
        loop {
            let data = match g.next().await {
                Some(Event::Text(t)) => chunk(Piece::Text(&t)),
                Some(Event::Done(f)) => {
                    let _ = send(chunk(Piece::End(f.finish)).to_string()).await;
                    break;
                }
                Some(Event::Failed(e)) => {
                    let e = ApiError::from(e);
                    json!({"error": {"message": e.message, "code": e.status.as_u16()}})
                }
                None => json!({"error": {"message": "the server is shutting down", "code": 503}}),
            };
            let failed = data.get("error").is_some();
            if !send(data.to_string()).await || failed {
                return;
            }
        }
        let _ = send("[DONE]".into()).await;
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

pub async fn completions(
    State(s): St,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let r: CompletionRequest = parse(body)?;
    let mut prompts = r.prompt.into_vec();
    if prompts.len() != 1 {
        return Err(ApiError::bad_request(format!(
            "`prompt` must be one text ({} given); send one request per prompt",
            prompts.len()
        )));
    }
    let prompt = prompts.remove(0);
    let ids = s
        .tok
        .encode_plain(&prompt)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let opts = options(&r.sampling, 16)?;
    let g = s.start(r.model.clone(), ids, opts).await?;
    let (id, created, model) = (s.next_id("cmpl"), now(), r.model);
    if r.sampling.stream {
        return Ok(stream(g, false, move |p| {
            let (text, finish) = match p {
                Piece::Start => ("", None),
                Piece::Text(t) => (t, None),
                Piece::End(f) => ("", Some(finish_reason(f))),
            };
            json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
            })
        }));
    }
    let (text, f) = g.collect().await?;
    Ok(Json(json!({
        "id": id, "object": "text_completion", "created": created, "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason(f.finish)}],
        "usage": Usage::new(f.prompt_tokens, f.completion_tokens),
    }))
    .into_response())
}

pub async fn chat_completions(
    State(s): St,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let r: ChatRequest = parse(body)?;
    let Some(template) = &s.tok.chat else {
        return Err(ApiError::bad_request(
            "the model ships no chat template; use /v1/completions",
        ));
    };
    if r.messages.is_empty() {
        return Err(ApiError::bad_request("`messages` is empty"));
    }
    let text = template
        .render(&r.messages)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let ids = s
        .tok
        .encode_plain(&text)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let room = s.context.saturating_sub(ids.len()).max(1);
    let opts = options(&r.sampling, room)?;
    let g = s.start(r.model.clone(), ids, opts).await?;
    let (id, created, model) = (s.next_id("chatcmpl"), now(), r.model);
    if r.sampling.stream {
        return Ok(stream(g, true, move |p| {
            let (delta, finish) = match p {
                Piece::Start => (json!({"role": "assistant", "content": ""}), None),
                Piece::Text(t) => (json!({"content": t}), None),
                Piece::End(f) => (json!({}), Some(finish_reason(f))),
            };
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            })
        }));
    }
    let (text, f) = g.collect().await?;
    Ok(Json(json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish_reason(f.finish),
        }],
        "usage": Usage::new(f.prompt_tokens, f.completion_tokens),
    }))
    .into_response())
}
