//! The OpenAI wire format: requests read by hand from the JSON value (so that every error
//! names its field, which a derived `Deserialize` does not), and responses, stream chunks and
//! errors built in OpenAI's shapes.
//!
//! Prior art: mistral.rs keeps these types in `mistralrs-server-core/src/openai.rs`; llama.cpp's
//! `llama-server` accepts any `model` value and ignores the fields it does not know, as here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use laconic_infer::chat::Message;
use laconic_infer::generate::FinishReason;
use serde_json::{Map, Value, json};

/// An error answered to the client as `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What is wrong, for a person.
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error` for 4xx, `server_error` for 5xx.
    pub kind: &'static str,
    /// The request field at fault, if any.
    pub param: Option<String>,
    /// A machine-readable code (`invalid_json`, `context_length_exceeded`, ...).
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn invalid(param: &str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: Some(code),
        }
    }

    /// A client error with no field at fault.
    pub fn request(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: Some(code),
        }
    }

    /// A server-side error (5xx).
    pub fn server(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some(code),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, json_body(&self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A JSON response body with its content type.
pub fn json_body(v: &Value) -> impl IntoResponse + use<> {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        v.to_string(),
    )
}

/// What the model is asked to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// Chat messages, rendered with the model's chat template.
    Chat(Vec<Message>),
    /// Raw text (`/v1/completions`).
    Text(String),
    /// Token ids given directly (`/v1/completions` with an array of integers).
    Ids(Vec<u32>),
}

/// Sampling and streaming parameters common to both endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// `max_completion_tokens` or `max_tokens`; `None`: the server's default.
    pub max_tokens: Option<usize>,
    /// `temperature` in [0, 2] (default 1, as OpenAI); below 1e-5 it is 0 (greedy).
    pub temperature: f32,
    /// `top_p` in (0, 1]; a request's 0 becomes the smallest positive float (greedy).
    pub top_p: f32,
    /// `top_k` (an extension of llama-server and vLLM; 0 = no limit).
    pub top_k: usize,
    /// `n`: how many choices.
    pub n: usize,
    /// `stop`: up to 4 strings (empty strings dropped).
    pub stop: Vec<String>,
    /// `seed`; `None`: a fresh random seed.
    pub seed: Option<u64>,
    /// `stream`: answer as server-sent events.
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the token counts.
    pub include_usage: bool,
    /// `ignore_eos` (an extension of vLLM and llama-server): do not stop at end-of-text tokens.
    pub ignore_eos: bool,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// The prompt.
    pub input: PromptInput,
    /// The parameters.
    pub params: Params,
}

/// Most stop strings a request may give (OpenAI's limit).
pub const MAX_STOP: usize = 4;

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(param: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::invalid(
        param,
        "invalid_type",
        format!("'{param}' must be {expected}, got {}", type_name(got)),
    )
}

fn out_of_range(param: &str, message: String) -> ApiError {
    ApiError::invalid(param, "invalid_value", message)
}

/// A field, with `null` read as absent (clients send `"stop": null`).
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn opt_number(obj: &Map<String, Value>, name: &str) -> Result<Option<f64>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| wrong_type(name, "a number", v)),
    }
}

fn opt_uint(obj: &Map<String, Value>, name: &str) -> Result<Option<u64>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(v @ Value::Number(n)) => match n.as_u64() {
            Some(x) => Ok(Some(x)),
            None if n.is_i64() => Err(out_of_range(
                name,
                format!("'{name}' must be a non-negative integer, got {n}"),
            )),
            None => Err(wrong_type(name, "an integer", v)),
        },
        Some(v) => Err(wrong_type(name, "an integer", v)),
    }
}

fn opt_bool(obj: &Map<String, Value>, name: &str) -> Result<Option<bool>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(wrong_type(name, "a boolean", v)),
    }
}

fn to_usize(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

/// Reads the body as a JSON object.
fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::request(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    match value {
        Value::Object(o) => Ok(o),
        other => Err(ApiError::request(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!(
                "the request body must be a JSON object, got {}",
                type_name(&other)
            ),
        )),
    }
}

/// Reads the parameters both endpoints share; `max_n` bounds `n`.
fn parse_params(obj: &Map<String, Value>, max_n: usize) -> Result<Params, ApiError> {
    if let Some(v) = field(obj, "model")
        && !v.is_string()
    {
        return Err(wrong_type("model", "a string", v));
    }
    let max_tokens = match opt_uint(obj, "max_completion_tokens")? {
        Some(x) => Some(("max_completion_tokens", x)),
        None => opt_uint(obj, "max_tokens")?.map(|x| ("max_tokens", x)),
    };
    if let Some((name, 0)) = max_tokens {
        return Err(out_of_range(name, format!("'{name}' must be at least 1")));
    }
    let temperature = opt_number(obj, "temperature")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(out_of_range(
            "temperature",
            format!("'temperature' must be between 0 and 2, got {temperature}"),
        ));
    }
    let top_p = opt_number(obj, "top_p")?.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&top_p) {
        return Err(out_of_range(
            "top_p",
            format!("'top_p' must be between 0 and 1, got {top_p}"),
        ));
    }
    let n = opt_uint(obj, "n")?.unwrap_or(1);
    if n == 0 || n > max_n as u64 {
        return Err(out_of_range(
            "n",
            format!("'n' must be between 1 and {max_n}, got {n}"),
        ));
    }
    let stop = match field(obj, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            if items.len() > MAX_STOP {
                return Err(out_of_range(
                    "stop",
                    format!(
                        "'stop' may hold at most {MAX_STOP} strings, got {}",
                        items.len()
                    ),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| wrong_type(&format!("stop[{i}]"), "a string", s))
                })
                .collect::<Result<_, _>>()?
        }
        Some(v) => return Err(wrong_type("stop", "a string or an array of strings", v)),
    };
    let seed = match field(obj, "seed") {
        None => None,
        Some(v @ Value::Number(n)) => Some(
            n.as_u64()
                .or_else(|| n.as_i64().map(|x| x as u64))
                .ok_or_else(|| wrong_type("seed", "an integer", v))?,
        ),
        Some(v) => return Err(wrong_type("seed", "an integer", v)),
    };
    let stream = opt_bool(obj, "stream")?.unwrap_or(false);
    let include_usage = match field(obj, "stream_options") {
        None => false,
        Some(Value::Object(o)) => opt_bool(o, "include_usage")
            .map_err(|_| {
                wrong_type(
                    "stream_options.include_usage",
                    "a boolean",
                    o.get("include_usage").unwrap_or(&Value::Null),
                )
            })?
            .unwrap_or(false),
        Some(v) => return Err(wrong_type("stream_options", "an object", v)),
    };
    // Features that would change the answer's shape are refused, not silently dropped.
    let logprobs = match field(obj, "logprobs") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
        Some(_) => true,
    };
    if logprobs {
        return Err(ApiError::invalid(
            "logprobs",
            "unsupported_parameter",
            "'logprobs' is not supported by this server",
        ));
    }
    if opt_bool(obj, "echo")? == Some(true) {
        return Err(ApiError::invalid(
            "echo",
            "unsupported_parameter",
            "'echo' is not supported by this server",
        ));
    }
    Ok(Params {
        max_tokens: max_tokens.map(|(_, x)| to_usize(x)),
        // Dividing logits by a vanishing temperature overflows; it means greedy anyway.
        temperature: if temperature < 1e-5 {
            0.0
        } else {
            temperature as f32
        },
        top_p: if top_p == 0.0 {
            f32::MIN_POSITIVE
        } else {
            top_p as f32
        },
        top_k: opt_uint(obj, "top_k")?.map_or(0, to_usize),
        n: to_usize(n),
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        seed,
        stream,
        include_usage,
        ignore_eos: opt_bool(obj, "ignore_eos")?.unwrap_or(false),
    })
}

/// The text of one message's `content`: a string, an array of text parts, or null.
fn message_content(v: Option<&Value>, at: &str) -> Result<String, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let here = format!("{at}.content[{j}]");
                let Value::Object(p) = part else {
                    return Err(wrong_type(&here, "an object", part));
                };
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => match p.get("text") {
                        Some(Value::String(s)) => text.push_str(s),
                        Some(other) => {
                            return Err(wrong_type(&format!("{here}.text"), "a string", other));
                        }
                        None => {
                            return Err(ApiError::invalid(
                                &format!("{here}.text"),
                                "missing_required_parameter",
                                format!("'{here}.text' is required"),
                            ));
                        }
                    },
                    Some(other) => {
                        return Err(ApiError::invalid(
                            &format!("{here}.type"),
                            "invalid_value",
                            format!(
                                "content parts of type '{other}' are not supported (only 'text')"
                            ),
                        ));
                    }
                    None => {
                        return Err(ApiError::invalid(
                            &format!("{here}.type"),
                            "missing_required_parameter",
                            format!("'{here}.type' is required"),
                        ));
                    }
                }
            }
            Ok(text)
        }
        Some(other) => Err(wrong_type(
            &format!("{at}.content"),
            "a string or an array of content parts",
            other,
        )),
    }
}

/// Parses a `/v1/chat/completions` body; `max_n` bounds `n`.
pub fn parse_chat(body: &[u8], max_n: usize) -> Result<CompletionRequest, ApiError> {
    let obj = parse_object(body)?;
    let messages = match obj.get("messages") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                "messages",
                "missing_required_parameter",
                "'messages' is required",
            ));
        }
        Some(Value::Array(m)) => m,
        Some(v) => return Err(wrong_type("messages", "an array", v)),
    };
    if messages.is_empty() {
        return Err(out_of_range(
            "messages",
            "'messages' must hold at least one message".into(),
        ));
    }
    let messages = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("messages[{i}]");
            let Value::Object(m) = m else {
                return Err(wrong_type(&at, "an object", m));
            };
            let role = match m.get("role") {
                Some(Value::String(r)) => r.clone(),
                None | Some(Value::Null) => {
                    return Err(ApiError::invalid(
                        &format!("{at}.role"),
                        "missing_required_parameter",
                        format!("'{at}.role' is required"),
                    ));
                }
                Some(v) => return Err(wrong_type(&format!("{at}.role"), "a string", v)),
            };
            Ok(Message::new(role, message_content(m.get("content"), &at)?))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CompletionRequest {
        input: PromptInput::Chat(messages),
        params: parse_params(&obj, max_n)?,
    })
}

/// Parses a `/v1/completions` body; `max_n` bounds `n`.
pub fn parse_completion(body: &[u8], max_n: usize) -> Result<CompletionRequest, ApiError> {
    let obj = parse_object(body)?;
    let one_prompt = || {
        ApiError::invalid(
            "prompt",
            "invalid_value",
            "only one prompt per request is supported",
        )
    };
    let input = match obj.get("prompt") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                "prompt",
                "missing_required_parameter",
                "'prompt' is required",
            ));
        }
        Some(Value::String(s)) => PromptInput::Text(s.clone()),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => PromptInput::Text(s.clone()),
            [] => return Err(out_of_range("prompt", "'prompt' is empty".into())),
            items if items.iter().all(Value::is_number) => PromptInput::Ids(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        t.as_u64()
                            .and_then(|x| u32::try_from(x).ok())
                            .ok_or_else(|| {
                                out_of_range(
                                    &format!("prompt[{i}]"),
                                    format!("'prompt[{i}]' is not a token id: {t}"),
                                )
                            })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            items if items.iter().all(|x| x.is_string() || x.is_array()) => {
                return Err(one_prompt());
            }
            _ => {
                return Err(wrong_type(
                    "prompt",
                    "a string, an array of one string, or an array of token ids",
                    &Value::Array(items.to_vec()),
                ));
            }
        },
        Some(v) => return Err(wrong_type("prompt", "a string", v)),
    };
    Ok(CompletionRequest {
        input,
        params: parse_params(&obj, max_n)?,
    })
}

/// OpenAI's name of a finish reason.
pub fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop | FinishReason::StopString => "stop",
        FinishReason::Length => "length",
    }
}

/// Which endpoint, hence which object shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`: `chat.completion` and `chat.completion.chunk`.
    Chat,
    /// `/v1/completions`: `text_completion`.
    Completion,
}

impl Endpoint {
    /// The prefix of response ids.
    pub fn id_prefix(self) -> &'static str {
        match self {
            Endpoint::Chat => "chatcmpl-",
            Endpoint::Completion => "cmpl-",
        }
    }
}

/// One finished choice.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceText {
    /// The generated text.
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Tokens generated (a stop token included).
    pub completion_tokens: usize,
}

/// The `usage` object.
pub fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// Identity fields of a response or chunk.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// `chatcmpl-...` or `cmpl-...`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model name.
    pub model: String,
}

/// A whole (non-streamed) response.
pub fn response(meta: &ResponseMeta, choices: &[ChoiceText], prompt_tokens: usize) -> Value {
    let completion_tokens = choices.iter().map(|c| c.completion_tokens).sum();
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(index, c)| match meta.endpoint {
            Endpoint::Chat => json!({
                "index": index,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": null,
                "finish_reason": finish_reason(c.finish_reason),
            }),
            Endpoint::Completion => json!({
                "index": index,
                "text": c.text,
                "logprobs": null,
                "finish_reason": finish_reason(c.finish_reason),
            }),
        })
        .collect();
    json!({
        "id": meta.id,
        "object": match meta.endpoint {
            Endpoint::Chat => "chat.completion",
            Endpoint::Completion => "text_completion",
        },
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    })
}

/// What a stream chunk carries for one choice.
#[derive(Debug, Clone, Copy)]
pub enum ChunkPart<'a> {
    /// The start of a choice (chat: the `role` delta).
    Start,
    /// A piece of text.
    Text(&'a str),
    /// The end of a choice.
    End(FinishReason),
}

/// One stream chunk for choice `index`; `None` where the endpoint sends nothing for `part`
/// (completions have no start chunk). With `include_usage`, carries `"usage": null`.
pub fn chunk(
    meta: &ResponseMeta,
    index: usize,
    part: ChunkPart<'_>,
    include_usage: bool,
) -> Option<Value> {
    let finish = match part {
        ChunkPart::End(f) => Value::from(finish_reason(f)),
        _ => Value::Null,
    };
    let choice = match meta.endpoint {
        Endpoint::Chat => {
            let delta = match part {
                ChunkPart::Start => json!({"role": "assistant", "content": ""}),
                ChunkPart::Text(t) => json!({"content": t}),
                ChunkPart::End(_) => json!({}),
            };
            json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish})
        }
        Endpoint::Completion => {
            let text = match part {
                ChunkPart::Start => return None,
                ChunkPart::Text(t) => t,
                ChunkPart::End(_) => "",
            };
            json!({"index": index, "text": text, "logprobs": null, "finish_reason": finish})
        }
    };
    let mut v = chunk_frame(meta, vec![choice]);
    if include_usage && let Some(o) = v.as_object_mut() {
        o.insert("usage".into(), Value::Null);
    }
    Some(v)
}

/// The last chunk of a stream with `include_usage`: no choices, the token counts.
pub fn usage_chunk(meta: &ResponseMeta, prompt_tokens: usize, completion_tokens: usize) -> Value {
    let mut v = chunk_frame(meta, Vec::new());
    if let Some(o) = v.as_object_mut() {
        o.insert("usage".into(), usage(prompt_tokens, completion_tokens));
    }
    v
}

fn chunk_frame(meta: &ResponseMeta, choices: Vec<Value>) -> Value {
    json!({
        "id": meta.id,
        "object": match meta.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completion => "text_completion",
        },
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
    })
}

/// One server-sent event: `data: {json}\n\n`.
pub fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// The event that ends a stream.
pub const SSE_DONE: &str = "data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<CompletionRequest, ApiError> {
        parse_chat(body.as_bytes(), 8)
    }

    #[test]
    fn defaults_follow_openai() {
        let r = chat(r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(r.input, PromptInput::Chat(vec![Message::new("user", "hi")]));
        let p = r.params;
        assert_eq!(
            (p.temperature, p.top_p, p.n, p.max_tokens),
            (1.0, 1.0, 1, None)
        );
        assert!(p.seed.is_none() && !p.stream && p.stop.is_empty());
    }

    #[test]
    fn fields_are_read_with_their_variants() {
        let r = chat(
            r#"{"messages":[{"role":"system","content":null},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
                "max_tokens":5,"max_completion_tokens":7,"temperature":0,"top_p":0,"n":3,
                "stop":["x",""],"seed":-1,"stream":true,"stream_options":{"include_usage":true},
                "frequency_penalty":0.5,"tools":[],"logprobs":false}"#,
        )
        .unwrap();
        assert_eq!(
            r.input,
            PromptInput::Chat(vec![Message::new("system", ""), Message::new("user", "ab")])
        );
        let p = r.params;
        assert_eq!(p.max_tokens, Some(7), "max_completion_tokens wins");
        assert_eq!(p.top_p, f32::MIN_POSITIVE);
        assert_eq!(
            (p.n, p.stop, p.seed),
            (3, vec!["x".to_string()], Some(u64::MAX))
        );
        assert!(p.stream && p.include_usage);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("{", "invalid_json", None),
            ("[1]", "invalid_json", None),
            (r#"{"messages":"hi"}"#, "invalid_type", Some("messages")),
            (r#"{}"#, "missing_required_parameter", Some("messages")),
            (r#"{"messages":[]}"#, "invalid_value", Some("messages")),
            (
                r#"{"messages":[{"content":"x"}]}"#,
                "missing_required_parameter",
                Some("messages[0].role"),
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
                "invalid_value",
                Some("messages[0].content[0].type"),
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
                "invalid_type",
                Some("temperature"),
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":-1}"#,
                "invalid_value",
                Some("temperature"),
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"n":0}"#,
                "invalid_value",
                Some("n"),
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"n":9}"#,
                "invalid_value",
                Some("n"),
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"n":1.5}"#,
                "invalid_type",
                Some("n"),
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":-3}"#,
                "invalid_value",
                Some("max_tokens"),
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"stop":[1]}"#,
                "invalid_type",
                Some("stop[0]"),
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#,
                "invalid_value",
                Some("stop"),
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "invalid_type",
                Some("stream"),
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"model":3}"#,
                "invalid_type",
                Some("model"),
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"logprobs":true}"#,
                "unsupported_parameter",
                Some("logprobs"),
            ),
        ];
        for (body, code, param) in cases {
            let e = chat(body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(
                (e.code, e.param.as_deref()),
                (Some(code), param),
                "{body}: {}",
                e.message
            );
            if let Some(p) = param {
                assert!(
                    e.message.contains(p.split('.').next_back().unwrap_or(p)),
                    "{}",
                    e.message
                );
            }
        }
    }

    #[test]
    fn completion_prompts() {
        let p = |s: &str| parse_completion(s.as_bytes(), 1).map(|r| r.input);
        assert_eq!(p(r#"{"prompt":"a"}"#), Ok(PromptInput::Text("a".into())));
        assert_eq!(p(r#"{"prompt":["a"]}"#), Ok(PromptInput::Text("a".into())));
        assert_eq!(p(r#"{"prompt":[1,2]}"#), Ok(PromptInput::Ids(vec![1, 2])));
        assert_eq!(
            p(r#"{"prompt":["a","b"]}"#).unwrap_err().code,
            Some("invalid_value")
        );
        assert_eq!(
            p(r#"{"prompt":[-1]}"#).unwrap_err().param.as_deref(),
            Some("prompt[0]")
        );
        assert_eq!(p(r#"{"prompt":5}"#).unwrap_err().code, Some("invalid_type"));
        assert_eq!(
            p(r#"{"prompt":"a","echo":true}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("echo")
        );
    }

    #[test]
    fn chunks_have_openai_shapes() {
        let meta = ResponseMeta {
            endpoint: Endpoint::Chat,
            id: "chatcmpl-1".into(),
            created: 7,
            model: "m".into(),
        };
        let c = chunk(&meta, 0, ChunkPart::Start, false).unwrap();
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["choices"][0]["delta"]["role"], "assistant");
        assert!(c.get("usage").is_none());
        let c = chunk(&meta, 1, ChunkPart::End(FinishReason::StopString), true).unwrap();
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert_eq!(c["choices"][0]["index"], 1);
        assert!(c["usage"].is_null() && c.get("usage").is_some());
        let u = usage_chunk(&meta, 3, 4);
        assert_eq!(u["usage"]["total_tokens"], 7);
        assert_eq!(u["choices"].as_array().map(Vec::len), Some(0));
        let meta = ResponseMeta {
            endpoint: Endpoint::Completion,
            ..meta
        };
        assert!(chunk(&meta, 0, ChunkPart::Start, false).is_none());
        assert_eq!(
            chunk(&meta, 0, ChunkPart::Text("x"), false).unwrap()["choices"][0]["text"],
            "x"
        );
    }
}
