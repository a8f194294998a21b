//! A teacher behind an OpenAI-compatible `POST /v1/chat/completions` endpoint.
//!
//! One request per sample (`n = 1`, the sample's own `seed`), so that samples spread over
//! the concurrency limit and one failure costs one sample. A request that fails in a way that
//! may pass (429, 408, 409, 5xx, a refused or dropped connection, a timeout, a truncated or
//! malformed body) is retried after an exponential backoff with jitter, or after the server's
//! `Retry-After` when it sends one; anything else (401, 404, 400...) fails at once with the
//! server's message.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};

use super::{ClientOptions, SampleRequest, Teacher, TeacherSample};
use crate::error::{Result, TraceError};

/// Bodies larger than this are refused (a reasoning trace is far smaller).
const MAX_BODY: u64 = 64 << 20;

/// An OpenAI-compatible endpoint.
#[derive(Debug)]
pub struct OpenAiTeacher {
    url: String,
    endpoint: String,
    model: Option<String>,
    api_key: Option<String>,
    agent: ureq::Agent,
    options: ClientOptions,
    retries: Mutex<BTreeMap<String, u64>>,
}

/// Why an attempt failed.
enum Failure {
    /// Worth another try: the reason (for accounting), the server's `Retry-After`, a message.
    Retry(&'static str, Option<Duration>, String),
    /// Final.
    Fatal(String),
}

/// `.../chat/completions` and `.../models` from a base URL with or without `/v1` (or the
/// full chat-completions URL).
fn endpoints(url: &str) -> (String, String) {
    let base = url.trim_end_matches('/');
    if let Some(root) = base.strip_suffix("/chat/completions") {
        return (base.to_string(), format!("{root}/models"));
    }
    let v1 = if base.ends_with("/v1") {
        base.to_string()
    } else {
        format!("{base}/v1")
    };
    (format!("{v1}/chat/completions"), format!("{v1}/models"))
}

/// Seconds from a `Retry-After` header (the delta-seconds form; an HTTP date is ignored).
fn retry_after(response: &ureq::http::Response<ureq::Body>) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?;
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// The `error.message` of an OpenAI-style error body, or the body itself, shortened.
fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("error"))
            .or_else(|| v.get("message"))
            .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
    });
    let text = from_json.unwrap_or_else(|| body.trim().to_string());
    if text.chars().count() > 300 {
        format!("{}…", text.chars().take(300).collect::<String>())
    } else {
        text
    }
}

/// Reads one chat-completion reply.
pub fn parse_reply(body: &str) -> std::result::Result<TeacherSample, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("reply is not JSON: {e}"))?;
    let choice = v
        .pointer("/choices/0")
        .ok_or_else(|| format!("reply has no `choices[0]`: {}", error_message(body)))?;
    let message = choice
        .get("message")
        .ok_or("reply's `choices[0]` has no `message`")?;
    let text = |key: &str| {
        message
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let content = match message.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(format!("`message.content` is not a string: {other}")),
    };
    let count = |path: &str| v.pointer(path).and_then(Value::as_u64);
    Ok(TeacherSample {
        content,
        reasoning: text("reasoning_content").or_else(|| text("reasoning")),
        prompt_tokens: count("/usage/prompt_tokens"),
        completion_tokens: count("/usage/completion_tokens"),
        reasoning_tokens: count("/usage/completion_tokens_details/reasoning_tokens"),
        finish_reason: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
        model: v.get("model").and_then(Value::as_str).map(str::to_string),
        attempts: 0,
    })
}

impl OpenAiTeacher {
    /// Opens `url` (`http://host:port`, `http://host:port/v1`, or the full
    /// `.../chat/completions` URL). The API key is read from `options.api_key_env` (an error
    /// if that variable is named but unset) or else from `OPENAI_API_KEY` if set. `GET
    /// /v1/models` is asked first: a server that cannot be reached, or refuses the key, is
    /// an error now rather than after a run's worth of retries; when the listing works and
    /// no model was named, its first model is used; a named model that it does not list is
    /// an error.
    pub fn connect(url: &str, options: &ClientOptions) -> Result<Self> {
        let spec = format!("openai:{url}");
        let fail = |message: String| TraceError::Teacher {
            teacher: spec.clone(),
            message,
        };
        let api_key = match &options.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                fail(format!(
                    "the API key variable {var} is not set (export {var}=...)"
                ))
            })?),
            None => std::env::var("OPENAI_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
        };
        if options.concurrency == 0 {
            return Err(fail("--concurrency must be at least 1".into()));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(options.timeout))
            .max_idle_connections(options.concurrency.max(10) * 2)
            .max_idle_connections_per_host(options.concurrency.max(10) * 2)
            .user_agent(concat!("laconic/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        let (endpoint, models_url) = endpoints(url);
        let mut teacher = Self {
            url: url.to_string(),
            endpoint,
            model: options.model.clone(),
            api_key,
            agent,
            options: options.clone(),
            retries: Mutex::new(BTreeMap::new()),
        };
        let served = teacher.list_models(&models_url).map_err(fail)?;
        if let Some(served) = served {
            match &teacher.model {
                None => teacher.model = served.first().cloned(),
                Some(m) if !served.is_empty() && !served.contains(m) => {
                    return Err(fail(format!(
                        "model `{m}` is not served here (it lists: {})",
                        served.join(", ")
                    )));
                }
                Some(_) => {}
            }
        }
        if teacher.model.is_none() {
            return Err(fail(
                "no --model given and the server does not list its models".into(),
            ));
        }
        Ok(teacher)
    }

    /// `GET /v1/models`: `Ok(None)` when the server has no such listing, an error when it
    /// cannot be reached or refuses the key.
    fn list_models(&self, url: &str) -> std::result::Result<Option<Vec<String>>, String> {
        let mut request = self
            .agent
            .get(url)
            .config()
            .timeout_global(Some(self.options.timeout.min(Duration::from_secs(30))))
            .build();
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let mut response = request
            .call()
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .unwrap_or_default();
        match status {
            200..=299 => {}
            401 | 403 => {
                return Err(format!(
                    "{url} refused the API key (HTTP {status}): {}",
                    error_message(&body)
                ));
            }
            _ => return Ok(None),
        }
        let Ok(v) = serde_json::from_str::<Value>(&body) else {
            return Ok(None);
        };
        Ok(v.get("data").and_then(Value::as_array).map(|data| {
            data.iter()
                .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        }))
    }

    /// The request body for one sample.
    pub fn request_body(&self, request: &SampleRequest<'_>) -> Value {
        json!({
            "model": self.model,
            "messages": request.messages,
            "temperature": request.sampling.temperature,
            "top_p": request.sampling.top_p,
            "max_tokens": request.sampling.max_tokens,
            "seed": request.sampling.seed,
            "n": 1,
            "stream": false,
        })
    }

    /// One attempt.
    fn attempt(&self, body: &[u8]) -> std::result::Result<TeacherSample, Failure> {
        let mut request = self
            .agent
            .post(&self.endpoint)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let mut response = match request.send(body) {
            Ok(r) => r,
            Err(e) => return Err(classify(e)),
        };
        let status = response.status().as_u16();
        let wait = retry_after(&response);
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| match classify(e) {
                Failure::Fatal(m) => Failure::Retry("malformed", None, m),
                retry => retry,
            })?;
        match status {
            200..=299 => parse_reply(&body).map_err(|m| Failure::Retry("malformed", None, m)),
            429 => Err(Failure::Retry(
                "429",
                wait,
                format!("HTTP 429: {}", error_message(&body)),
            )),
            408 | 409 | 500..=599 => Err(Failure::Retry(
                if status >= 500 { "5xx" } else { "4xx-retry" },
                wait,
                format!("HTTP {status}: {}", error_message(&body)),
            )),
            _ => Err(Failure::Fatal(format!(
                "HTTP {status} from {}: {}",
                self.endpoint,
                error_message(&body)
            ))),
        }
    }

    /// The wait before retry number `retry` (0-based): `base * 2^retry`, capped, with "equal
    /// jitter" (half fixed, half uniform random) so that clients that failed together do not
    /// come back together. A server's `Retry-After` wins when it asks for longer.
    fn backoff(&self, retry: u32, asked: Option<Duration>) -> Duration {
        let cap = self.options.backoff_max;
        let exp = self
            .options
            .backoff_base
            .saturating_mul(1u32 << retry.min(20))
            .min(cap);
        let jittered = exp / 2 + exp.mul_f64(rand::rng().random::<f64>() * 0.5);
        match asked {
            Some(a) => a.min(cap).max(jittered),
            None => jittered,
        }
    }
}

/// Sorts a transport error into retry or not.
fn classify(e: ureq::Error) -> Failure {
    match e {
        ureq::Error::Timeout(t) => Failure::Retry("timeout", None, format!("timed out ({t})")),
        ureq::Error::Io(e) => Failure::Retry("connection", None, format!("connection: {e}")),
        ureq::Error::ConnectionFailed => {
            Failure::Retry("connection", None, "connection failed".into())
        }
        ureq::Error::Protocol(e) => {
            Failure::Retry("malformed", None, format!("malformed HTTP: {e}"))
        }
        ureq::Error::BodyExceedsLimit(n) => Failure::Fatal(format!("reply larger than {n} bytes")),
        other => Failure::Fatal(other.to_string()),
    }
}

impl Teacher for OpenAiTeacher {
    fn spec(&self) -> String {
        format!("openai:{}", self.url)
    }

    fn model(&self) -> Option<String> {
        self.model.clone()
    }

    fn concurrency(&self) -> usize {
        self.options.concurrency
    }

    fn sample(&self, request: &SampleRequest<'_>) -> Result<TeacherSample> {
        let body = self.request_body(request).to_string().into_bytes();
        let mut last = String::new();
        for attempt in 0..=self.options.max_retries {
            match self.attempt(&body) {
                Ok(mut sample) => {
                    sample.attempts = attempt + 1;
                    return Ok(sample);
                }
                Err(Failure::Fatal(message)) => {
                    return Err(TraceError::Teacher {
                        teacher: self.spec(),
                        message: format!(
                            "sample {} of `{}`: {message}",
                            request.index, request.problem.id
                        ),
                    });
                }
                Err(Failure::Retry(reason, asked, message)) => {
                    last = format!("{message} ({reason})");
                    if attempt < self.options.max_retries {
                        if let Ok(mut counts) = self.retries.lock() {
                            *counts.entry(reason.to_string()).or_default() += 1;
                        }
                        std::thread::sleep(self.backoff(attempt, asked));
                    }
                }
            }
        }
        Err(TraceError::Teacher {
            teacher: self.spec(),
            message: format!(
                "sample {} of `{}`: gave up after {} attempts; last: {last}",
                request.index,
                request.problem.id,
                self.options.max_retries + 1
            ),
        })
    }

    fn retries(&self) -> BTreeMap<String, u64> {
        self.retries.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_the_usual_base_urls() {
        for base in [
            "http://h:8000",
            "http://h:8000/",
            "http://h:8000/v1",
            "http://h:8000/v1/",
        ] {
            assert_eq!(
                endpoints(base),
                (
                    "http://h:8000/v1/chat/completions".to_string(),
                    "http://h:8000/v1/models".to_string()
                ),
                "{base}"
            );
        }
        assert_eq!(
            endpoints("https://x.ai/api/v1/chat/completions").0,
            "https://x.ai/api/v1/chat/completions"
        );
    }

    #[test]
    fn replies_are_read_with_reasoning_content_and_usage() {
        let body = r#"{"id":"x","model":"deepseek-reasoner","choices":[{"index":0,
            "message":{"role":"assistant","content":"The answer is 4.","reasoning_content":"2+2=4"},
            "finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":7,
            "completion_tokens_details":{"reasoning_tokens":5}}}"#;
        let s = parse_reply(body).expect("parses");
        assert_eq!(s.content, "The answer is 4.");
        assert_eq!(s.reasoning.as_deref(), Some("2+2=4"));
        assert_eq!(
            (s.prompt_tokens, s.completion_tokens, s.reasoning_tokens),
            (Some(10), Some(7), Some(5))
        );
        assert_eq!(s.finish_reason.as_deref(), Some("stop"));
        assert_eq!(s.model.as_deref(), Some("deepseek-reasoner"));
        // vLLM's newer field name, and a null content.
        let s = parse_reply(
            r#"{"choices":[{"message":{"content":null,"reasoning":"r"},"finish_reason":"length"}]}"#,
        )
        .expect("parses");
        assert_eq!(
            (s.content.as_str(), s.reasoning.as_deref()),
            ("", Some("r"))
        );
    }

    #[test]
    fn bad_replies_say_what_is_wrong() {
        assert!(
            parse_reply(r#"{"choices":[{"message":{"con"#)
                .expect_err("truncated")
                .contains("not JSON")
        );
        let e = parse_reply(r#"{"error":{"message":"overloaded"}}"#).expect_err("no choices");
        assert!(e.contains("choices") && e.contains("overloaded"), "{e}");
        let e = parse_reply(r#"{"choices":[{"message":{"content":3}}]}"#).expect_err("type");
        assert!(e.contains("content"), "{e}");
    }

    #[test]
    fn error_messages_come_from_the_error_object() {
        assert_eq!(
            error_message(r#"{"error":{"message":"bad key","type":"auth"}}"#),
            "bad key"
        );
        assert_eq!(error_message("plain text\n"), "plain text");
        assert!(error_message(&"x".repeat(1000)).chars().count() <= 301);
    }
}
