//! The HTTP side: routes, request bodies, prompts, the queue hand-off, whole and streamed
//! answers, JSON errors for every failure (unknown route, wrong method, oversized body
//! included), and one log line per request.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use laconic_infer::LoadedModel;
use laconic_infer::generate::{GenerateConfig, SamplingConfig};
use laconic_infer::policy::KvPolicyConfig;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::engine::{Event, Job, Queue, Refused, Reply};
use crate::openai::{
    self, ApiError, ChunkPart, CompletionRequest, Endpoint, PromptInput, ResponseMeta, json_body,
};

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The model (tokenizer and chat template are read here; the workers run it).
    pub model: Arc<LoadedModel>,
    /// The job queue.
    pub queue: Arc<Queue>,
    /// The name reported as `model`.
    pub name: String,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// `max_tokens` when a request gives none (`None`: up to the context).
    pub default_max_tokens: Option<usize>,
    /// Largest `n`.
    pub max_n: usize,
    /// The KV cache policy of every generation.
    pub kv_policy: KvPolicyConfig,
    /// Whether to log one line per request to stderr.
    pub log_requests: bool,
    /// Unix seconds at start (`created` of `/v1/models`).
    pub started: u64,
}

type Shared = State<Arc<AppState>>;

/// The router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), log))
        .with_state(state)
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------------------------
// Logging

/// Token counts of a whole answer, left on the response for the log line.
#[derive(Debug, Clone, Copy)]
struct Tokens {
    prompt: usize,
    completion: usize,
}

/// Marks a streamed response: its stream writes the log line when it ends.
#[derive(Debug, Clone, Copy)]
struct Streamed;

/// `laconic serve: POST /v1/completions 200 12+34 tokens 0.52 s`, then `outcome`.
fn log_line(
    method: &Method,
    path: &str,
    status: u16,
    tokens: Option<Tokens>,
    t0: Instant,
    outcome: &str,
) {
    let tokens = tokens.map_or(String::new(), |t| {
        format!(" {}+{} tokens", t.prompt, t.completion)
    });
    eprintln!(
        "laconic serve: {method} {path} {status}{tokens} {:.2} s{outcome}",
        t0.elapsed().as_secs_f64()
    );
}

async fn log(State(s): Shared, req: Request, next: Next) -> Response {
    let (method, path, t0) = (
        req.method().clone(),
        req.uri().path().to_string(),
        Instant::now(),
    );
    let response = next.run(req).await;
    if s.log_requests && response.extensions().get::<Streamed>().is_none() {
        let tokens = response.extensions().get::<Tokens>().copied();
        log_line(&method, &path, response.status().as_u16(), tokens, t0, "");
    }
    response
}

/// The log line of a streamed request, written when the stream ends or the client leaves.
struct StreamLog {
    method: Method,
    path: &'static str,
    t0: Instant,
    tokens: Tokens,
    /// What to print at the end: empty, " (client gone)" or " (failed)".
    outcome: &'static str,
    enabled: bool,
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        if self.enabled {
            log_line(
                &self.method,
                self.path,
                200,
                Some(self.tokens),
                self.t0,
                self.outcome,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small routes

async fn models(State(s): Shared) -> Response {
    json_body(&json!({
        "object": "list",
        "data": [{"id": s.name, "object": "model", "created": s.started, "owned_by": "laconic"}],
    }))
    .into_response()
}

async fn health(State(s): Shared) -> Response {
    json_body(&json!({
        "status": "ok",
        "queued": s.queue.waiting(),
        "running": s.queue.running(),
    }))
    .into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::request(
        StatusCode::NOT_FOUND,
        "unknown_url",
        format!(
            "Invalid URL ({method} {}): this server has POST /v1/chat/completions, \
             POST /v1/completions, GET /v1/models and GET /health",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let allowed = match uri.path() {
        "/v1/chat/completions" | "/v1/completions" => "POST",
        _ => "GET",
    };
    let mut r = ApiError::request(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "method {method} is not allowed on {} (use {allowed})",
            uri.path()
        ),
    )
    .into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    r
}

// ---------------------------------------------------------------------------------------------
// Completions

async fn chat(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let method = req.method().clone();
    let body = read_body(req, s.max_body_bytes).await?;
    let parsed = openai::parse_chat(&body, s.max_n)?;
    complete(s, Endpoint::Chat, method, parsed).await
}

async fn completions(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let method = req.method().clone();
    let body = read_body(req, s.max_body_bytes).await?;
    let parsed = openai::parse_completion(&body, s.max_n)?;
    complete(s, Endpoint::Completion, method, parsed).await
}

fn too_large(limit: usize) -> ApiError {
    ApiError::request(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        format!("the request body is larger than this server's limit of {limit} bytes"),
    )
}

/// The request body, refused with 413 past `limit` bytes (by its `Content-Length` before
/// reading anything, or once that many bytes have arrived).
async fn read_body(req: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut stream = req.into_body().into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::request(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("cannot read the request body: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Prompt ids and the tokens that end the answer.
struct Prompt {
    ids: Vec<u32>,
    stop_tokens: Vec<u32>,
    /// The request field the prompt came from, for errors.
    param: &'static str,
}

/// Renders and tokenizes a prompt as `laconic generate` does: chat messages through the
/// model's template (which holds BOS when the model wants one) ending at the chat stop tokens;
/// raw text with BOS, ending at EOS.
fn prepare(model: &LoadedModel, input: PromptInput) -> Result<Prompt, ApiError> {
    let tokenizer_failed = |e: laconic_infer::InferError| {
        ApiError::server(
            StatusCode::INTERNAL_SERVER_ERROR,
            "tokenizer_failed",
            format!("cannot tokenize the prompt: {e}"),
        )
    };
    let eos = &model.config().eos_token_ids;
    let prompt = match input {
        PromptInput::Chat(messages) => {
            let Some(template) = &model.chat_template else {
                return Err(ApiError::invalid(
                    "messages",
                    "no_chat_template",
                    "the served model has no chat template; send a raw prompt to /v1/completions",
                ));
            };
            let text = template.render(&messages, true).map_err(|e| {
                ApiError::invalid(
                    "messages",
                    "invalid_value",
                    format!("the model's chat template refused the messages: {e}"),
                )
            })?;
            Prompt {
                ids: model
                    .tokenizer
                    .encode(&text, false)
                    .map_err(tokenizer_failed)?,
                stop_tokens: model.tokenizer.chat_stop_tokens(eos),
                param: "messages",
            }
        }
        PromptInput::Text(text) => Prompt {
            ids: model
                .tokenizer
                .encode(&text, true)
                .map_err(tokenizer_failed)?,
            stop_tokens: eos.clone(),
            param: "prompt",
        },
        PromptInput::Ids(ids) => {
            let vocab = model.config().vocab_size;
            if let Some(i) = ids.iter().position(|&t| t as usize >= vocab) {
                return Err(ApiError::invalid(
                    &format!("prompt[{i}]"),
                    "invalid_value",
                    format!("token id {} is outside the vocabulary (0..{vocab})", ids[i]),
                ));
            }
            Prompt {
                ids,
                stop_tokens: eos.clone(),
                param: "prompt",
            }
        }
    };
    if prompt.ids.is_empty() {
        return Err(ApiError::invalid(
            prompt.param,
            "invalid_value",
            "the prompt is empty",
        ));
    }
    let context = model.config().max_position_embeddings;
    if prompt.ids.len() >= context {
        return Err(ApiError::invalid(
            prompt.param,
            "context_length_exceeded",
            format!(
                "this model's maximum context length is {context} tokens, and the prompt has {} \
                 (leaving no room to answer)",
                prompt.ids.len()
            ),
        ));
    }
    Ok(prompt)
}

fn internal(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, code, message)
}

/// Offers a job to the queue: 503 when it is full or closing.
fn submit(queue: &Queue, job: Job) -> Result<(), ApiError> {
    queue.try_push(job).map_err(|why| match why {
        Refused::Full => ApiError::server(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_full",
            "the server is busy (its request queue is full); retry later",
        ),
        Refused::Closed => ApiError::server(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        ),
    })
}

async fn complete(
    s: Arc<AppState>,
    endpoint: Endpoint,
    method: Method,
    req: CompletionRequest,
) -> Result<Response, ApiError> {
    let CompletionRequest { input, params } = req;
    let model = Arc::clone(&s.model);
    let prompt = tokio::task::spawn_blocking(move || prepare(&model, input))
        .await
        .map_err(|e| {
            internal(
                "tokenizer_failed",
                format!("prompt preparation failed: {e}"),
            )
        })??;
    let context = s.model.config().max_position_embeddings;
    let config = GenerateConfig {
        max_new_tokens: params
            .max_tokens
            .or(s.default_max_tokens)
            .unwrap_or(context),
        sampling: SamplingConfig {
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
            seed: params.seed.unwrap_or_else(rand::random),
        },
        stop_strings: params.stop.clone(),
        stop_tokens: if params.ignore_eos {
            Vec::new()
        } else {
            prompt.stop_tokens
        },
        kv_policy: s.kv_policy.clone(),
        think: None,
    };
    let meta = ResponseMeta {
        endpoint,
        id: format!(
            "{}{:024x}",
            endpoint.id_prefix(),
            rand::random::<u128>() >> 32
        ),
        created: unix_now(),
        model: s.name.clone(),
    };
    let prompt_tokens = prompt.ids.len();
    if params.stream {
        let (tx, rx) = mpsc::unbounded_channel();
        submit(
            &s.queue,
            Job {
                prompt: prompt.ids,
                config,
                n: params.n,
                reply: Reply::Stream(tx),
            },
        )?;
        let log = StreamLog {
            method,
            path: match endpoint {
                Endpoint::Chat => "/v1/chat/completions",
                Endpoint::Completion => "/v1/completions",
            },
            t0: Instant::now(),
            tokens: Tokens {
                prompt: prompt_tokens,
                completion: 0,
            },
            outcome: " (client gone)",
            enabled: s.log_requests,
        };
        let stream = SseStream {
            rx,
            meta,
            n: params.n,
            ended: 0,
            include_usage: params.include_usage,
            log,
            done: false,
        };
        let body = Body::from_stream(futures_util::stream::unfold(stream, |mut st| async move {
            st.next_event()
                .await
                .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), st))
        }));
        let mut response = (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            body,
        )
            .into_response();
        response.extensions_mut().insert(Streamed);
        return Ok(response);
    }
    let (tx, rx) = oneshot::channel();
    submit(
        &s.queue,
        Job {
            prompt: prompt.ids,
            config,
            n: params.n,
            reply: Reply::Whole(tx),
        },
    )?;
    let choices = rx
        .await
        .map_err(|_| internal("generation_failed", "the model worker stopped"))?
        .map_err(|m| internal("generation_failed", m))?;
    let body = openai::response(&meta, &choices, prompt_tokens);
    let mut response = json_body(&body).into_response();
    response.extensions_mut().insert(Tokens {
        prompt: prompt_tokens,
        completion: choices.iter().map(|c| c.completion_tokens).sum(),
    });
    Ok(response)
}

/// Turns a job's events into server-sent events.
struct SseStream {
    rx: mpsc::UnboundedReceiver<Event>,
    meta: ResponseMeta,
    n: usize,
    ended: usize,
    include_usage: bool,
    log: StreamLog,
    done: bool,
}

impl SseStream {
    /// The next bytes to send; `None` when the stream is over.
    async fn next_event(&mut self) -> Option<Bytes> {
        while !self.done {
            let Some(event) = self.rx.recv().await else {
                // The worker dropped its sender without finishing: say so.
                self.done = true;
                self.log.outcome = " (failed)";
                let e = internal("generation_failed", "generation stopped unexpectedly");
                return Some(openai::sse(&e.body()).into());
            };
            let chunk = |index, part| openai::chunk(&self.meta, index, part, self.include_usage);
            let out = match event {
                Event::Start(i) => chunk(i, ChunkPart::Start).map(|c| openai::sse(&c)),
                Event::Text(i, t) => chunk(i, ChunkPart::Text(&t)).map(|c| openai::sse(&c)),
                Event::End(i, finish, tokens) => {
                    self.log.tokens.completion += tokens;
                    self.ended += 1;
                    let mut out = chunk(i, ChunkPart::End(finish))
                        .map(|c| openai::sse(&c))
                        .unwrap_or_default();
                    if self.ended == self.n {
                        if self.include_usage {
                            let u = openai::usage_chunk(
                                &self.meta,
                                self.log.tokens.prompt,
                                self.log.tokens.completion,
                            );
                            out.push_str(&openai::sse(&u));
                        }
                        out.push_str(openai::SSE_DONE);
                        self.done = true;
                        self.log.outcome = "";
                    }
                    Some(out)
                }
                Event::Failed(message) => {
                    self.done = true;
                    self.log.outcome = " (failed)";
                    let e = internal("generation_failed", message);
                    Some(openai::sse(&e.body()))
                }
            };
            if let Some(out) = out {
                return Some(out.into());
            }
        }
        None
    }
}
