//! The server over real sockets on loopback, with the tiny Llama fixture of `laconic-infer`
//! (a Hugging Face directory with a ChatML template, 256 tokens of context). Expected texts
//! are computed through `laconic_infer::generate` with the same ids and settings.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use burn::prelude::*;
use laconic_infer::LoadedModel;
use laconic_infer::chat::Message;
use laconic_infer::generate::{GenerateConfig, Generation, SamplingConfig, generate};
use laconic_serve::{ServeConfig, ServeError, ServerHandle, start};
use serde_json::{Value, json};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../laconic-infer/tests/fixtures/llama")
}

fn load() -> LoadedModel {
    laconic_infer::load(&fixture(), &Device::flex()).expect("load the fixture model")
}

/// Test settings: a free port, quiet, the model named "tiny".
fn quiet() -> ServeConfig {
    ServeConfig {
        port: 0,
        model_name: "tiny".into(),
        log_requests: false,
        ..Default::default()
    }
}

fn serve(config: ServeConfig) -> ServerHandle {
    start(load(), config).expect("start the server")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// A JSON answer with its status and headers.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    content_type: String,
    body: Value,
}

fn answer(mut r: ureq::http::Response<ureq::Body>) -> Answer {
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (retry_after, content_type) = (header("retry-after"), header("content-type"));
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().expect("read the body");
    Answer {
        status,
        retry_after,
        content_type: content_type.unwrap_or_default(),
        body: serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    }
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> Answer {
    let r = agent()
        .post(&format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .send(body.to_string())
        .expect("POST");
    answer(r)
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    answer(
        agent()
            .get(&format!("http://{addr}{path}"))
            .call()
            .expect("GET"),
    )
}

/// Sends raw bytes and reads the whole reply (the request should say `Connection: close`):
/// status and body.
fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let _ = s.write_all(request);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {reply:?}"));
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The `data:` payloads of a server-sent event stream, read as they come; `on_first` runs
/// after the first one.
fn read_events(r: ureq::http::Response<ureq::Body>, mut on_first: impl FnMut()) -> Vec<String> {
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut lines = BufReader::new(r.into_body().into_reader());
    let mut events = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).expect("read the stream") == 0 {
            break;
        }
        if let Some(data) = line.trim_end_matches('\n').strip_prefix("data: ") {
            events.push(data.to_string());
            if events.len() == 1 {
                on_first();
            }
        } else {
            assert_eq!(line, "\n", "events are `data: ...` lines and blank lines");
        }
    }
    events
}

fn stream(addr: SocketAddr, path: &str, body: &Value) -> Vec<String> {
    let r = agent()
        .post(&format!("http://{addr}{path}"))
        .send(body.to_string())
        .expect("POST");
    read_events(r, || {})
}

/// The events before `[DONE]` as JSON; asserts the stream ends with `[DONE]`.
fn parse_chunks(events: &[String]) -> Vec<Value> {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk JSON"))
        .collect()
}

/// What the library generates for a chat with one user message.
fn chat_reference(
    m: &LoadedModel,
    user: &str,
    max_tokens: usize,
    sampling: SamplingConfig,
    stop: &[&str],
) -> (usize, Generation) {
    let template = m.chat_template.as_ref().expect("chat template");
    let text = template
        .render(&[Message::new("user", user)], true)
        .expect("render");
    let ids = m.tokenizer.encode(&text, false).expect("encode");
    let stop_tokens = m.tokenizer.chat_stop_tokens(&m.config().eos_token_ids);
    (
        ids.len(),
        reference(m, &ids, max_tokens, sampling, stop, stop_tokens),
    )
}

fn reference(
    m: &LoadedModel,
    ids: &[u32],
    max_tokens: usize,
    sampling: SamplingConfig,
    stop: &[&str],
    stop_tokens: Vec<u32>,
) -> Generation {
    let config = GenerateConfig {
        max_new_tokens: max_tokens,
        sampling,
        stop_strings: stop.iter().map(|s| s.to_string()).collect(),
        stop_tokens,
        ..Default::default()
    };
    let mut cache = m.model.new_cache();
    generate(&m.model, &m.tokenizer, ids, &config, &mut cache, |_| {}).expect("generate")
}

fn sampling(temperature: f32, top_p: f32, seed: u64) -> SamplingConfig {
    SamplingConfig {
        temperature,
        top_k: 0,
        top_p,
        seed,
    }
}

fn finish(g: &Generation) -> &'static str {
    match g.finish_reason {
        laconic_infer::generate::FinishReason::Length => "length",
        _ => "stop",
    }
}

fn user(content: &str) -> Value {
    json!([{"role": "user", "content": content}])
}

#[test]
fn chat_answers_have_openai_shape_and_equal_the_library() {
    let server = serve(quiet());
    let addr = server.local_addr();
    let m = load();
    let body = json!({"model": "anything", "messages": user("Tell me a story."),
        "max_tokens": 24, "temperature": 0.8, "top_p": 0.9, "seed": 7, "user": "ignored"});
    let a = post(addr, "/v1/chat/completions", &body);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.content_type, "application/json");
    let r = &a.body;
    assert_eq!(r["object"], "chat.completion");
    assert!(
        r["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    assert!(r["created"].as_u64().is_some_and(|t| t > 1_700_000_000));
    assert_eq!(
        r["model"], "tiny",
        "the served name, whatever the request said"
    );
    let (prompt_tokens, g) = chat_reference(&m, "Tell me a story.", 24, sampling(0.8, 0.9, 7), &[]);
    let choice = &r["choices"][0];
    assert_eq!(r["choices"].as_array().map(Vec::len), Some(1));
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], g.text.as_str());
    assert_eq!(choice["finish_reason"], finish(&g));
    assert_eq!(r["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(r["usage"]["completion_tokens"], g.tokens.len());
    assert_eq!(r["usage"]["total_tokens"], prompt_tokens + g.tokens.len());
    // Same request, same answer.
    let again = post(addr, "/v1/chat/completions", &body);
    assert_eq!(again.body["choices"], r["choices"]);
    assert_ne!(again.body["id"], r["id"], "each response has its own id");
    // Content as text parts is the same message.
    let parts = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Tell me "}, {"type": "text", "text": "a story."}]}],
        "max_tokens": 24, "temperature": 0.8, "top_p": 0.9, "seed": 7});
    let a = post(addr, "/v1/chat/completions", &parts);
    assert_eq!(a.body["choices"], r["choices"]);
    server.shutdown().expect("shutdown");
}

#[test]
fn completions_have_openai_shape_and_equal_the_library() {
    let server = serve(quiet());
    let addr = server.local_addr();
    let m = load();
    let ids = m
        .tokenizer
        .encode("Once upon a time", true)
        .expect("encode");
    let g = reference(
        &m,
        &ids,
        16,
        sampling(0.0, 1.0, 0),
        &[],
        m.config().eos_token_ids.clone(),
    );
    for prompt in [
        json!("Once upon a time"),
        json!(["Once upon a time"]),
        json!(ids),
    ] {
        let a = post(
            addr,
            "/v1/completions",
            &json!({"model": "tiny", "prompt": prompt, "max_tokens": 16, "temperature": 0}),
        );
        assert_eq!(a.status, 200, "{}", a.body);
        let r = &a.body;
        assert_eq!(r["object"], "text_completion");
        assert!(r["id"].as_str().is_some_and(|id| id.starts_with("cmpl-")));
        assert_eq!(r["model"], "tiny");
        assert_eq!(r["choices"][0]["text"], g.text.as_str(), "prompt {prompt}");
        assert_eq!(r["choices"][0]["index"], 0);
        assert_eq!(r["choices"][0]["finish_reason"], finish(&g));
        assert_eq!(r["usage"]["prompt_tokens"], ids.len());
        assert_eq!(r["usage"]["completion_tokens"], g.tokens.len());
        assert_eq!(r["usage"]["total_tokens"], ids.len() + g.tokens.len());
    }
    server.shutdown().expect("shutdown");
}

#[test]
fn streamed_deltas_add_up_to_the_whole_answer() {
    let server = serve(quiet());
    let addr = server.local_addr();
    let body = json!({"messages": user("Count to ten."), "max_tokens": 30, "seed": 11,
        "temperature": 1.0});
    let whole = post(addr, "/v1/chat/completions", &body);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let chunks = parse_chunks(&stream(addr, "/v1/chat/completions", &streamed));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let id = &chunks[0]["id"];
    let mut text = String::new();
    for c in &chunks {
        assert_eq!(&c["id"], id, "one id per stream");
        assert_eq!(c["model"], "tiny");
        assert_eq!(c["object"], "chat.completion.chunk");
        assert!(
            c.get("usage").is_some(),
            "include_usage puts usage on every chunk"
        );
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    assert!(chunks.len() > 3, "the text comes in pieces: {chunks:?}");
    assert_eq!(
        text,
        whole.body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("?")
    );
    let last = &chunks[chunks.len() - 2];
    assert_eq!(
        last["choices"][0]["finish_reason"],
        whole.body["choices"][0]["finish_reason"]
    );
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], whole.body["usage"]);

    // Completions stream `text_completion` chunks; no usage chunk unless asked.
    let body = json!({"prompt": "The sea", "max_tokens": 20, "seed": 3});
    let whole = post(addr, "/v1/completions", &body);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let chunks = parse_chunks(&stream(addr, "/v1/completions", &streamed));
    let text: String = chunks
        .iter()
        .map(|c| {
            assert_eq!(c["object"], "text_completion");
            assert!(c.get("usage").is_none());
            c["choices"][0]["text"].as_str().unwrap_or("?").to_string()
        })
        .collect();
    assert_eq!(
        text,
        whole.body["choices"][0]["text"].as_str().unwrap_or("!")
    );
    let last = chunks.last().expect("a chunk");
    assert_eq!(
        last["choices"][0]["finish_reason"],
        whole.body["choices"][0]["finish_reason"]
    );
    server.shutdown().expect("shutdown");
}

#[test]
fn n_gives_that_many_choices() {
    let server = serve(quiet());
    let addr = server.local_addr();
    let m = load();
    let a = post(
        addr,
        "/v1/chat/completions",
        &json!({"messages": user("Hi"), "n": 3, "max_tokens": 12, "seed": 5}),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let choices = a.body["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert!(c["message"]["content"].is_string());
    }
    let completion = a.body["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    assert!(
        (3..=36).contains(&completion),
        "summed over choices: {completion}"
    );
    // Streamed, the choices come one after another; choice i samples with seed + i.
    let events = stream(
        addr,
        "/v1/chat/completions",
        &json!({"messages": user("Hi"), "n": 2, "max_tokens": 12, "seed": 5, "stream": true}),
    );
    let mut texts = [String::new(), String::new()];
    let mut finished = 0;
    for c in parse_chunks(&events) {
        let choice = &c["choices"][0];
        let i = choice["index"].as_u64().expect("index") as usize;
        if let Some(t) = choice["delta"]["content"].as_str() {
            texts[i].push_str(t);
        }
        finished += usize::from(choice["finish_reason"].is_string());
    }
    assert_eq!(finished, 2);
    for (i, text) in texts.iter().enumerate() {
        let (_, g) = chat_reference(&m, "Hi", 12, sampling(1.0, 1.0, 5 + i as u64), &[]);
        assert_eq!(text, &g.text, "choice {i}");
    }
    server.shutdown().expect("shutdown");
}

#[test]
fn stop_strings_end_the_answer() {
    let server = serve(quiet());
    let addr = server.local_addr();
    let m = load();
    let base = json!({"messages": user("Say something."), "max_tokens": 40, "temperature": 0});
    let free = post(addr, "/v1/chat/completions", &base);
    let text = free.body["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    // A stop string taken from the middle of the free answer.
    let chars: Vec<char> = text.chars().collect();
    assert!(
        chars.len() > 8,
        "the fixture writes a long enough answer: {text:?}"
    );
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let mut body = base.clone();
    body["stop"] = json!(["never-appears", stop]);
    let a = post(addr, "/v1/chat/completions", &body);
    let got = a.body["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    let (_, g) = chat_reference(
        &m,
        "Say something.",
        40,
        sampling(0.0, 1.0, 0),
        &["never-appears", &stop],
    );
    assert_eq!(got, g.text);
    assert!(
        !got.contains(stop.as_str()) && got.len() < text.len(),
        "{got:?} vs {text:?}"
    );
    assert_eq!(a.body["choices"][0]["finish_reason"], "stop");
    // A single string works too.
    body["stop"] = json!(stop);
    let b = post(addr, "/v1/chat/completions", &body);
    assert_eq!(b.body["choices"], a.body["choices"]);
    server.shutdown().expect("shutdown");
}

/// An error answer: status, JSON `{"error": {message, type, param, code}}`.
fn assert_error(a: &Answer, status: u16, code: &str, param: Option<&str>) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.content_type, "application/json");
    let e = &a.body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    assert!(e["type"].is_string(), "{e}");
    assert_eq!(e["code"], code, "{e}");
    assert_eq!(e["param"].as_str(), param, "{e}");
}

/// A raw reply's JSON error body.
fn raw_error(body: &str, code: &str) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string());
}

#[test]
fn client_errors_are_json() {
    let server = serve(ServeConfig {
        max_body_bytes: 1024,
        ..quiet()
    });
    let addr = server.local_addr();
    let chat = "/v1/chat/completions";
    let ok = |extra: Value| {
        let mut b = json!({"messages": user("x"), "max_tokens": 2});
        if let (Some(o), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        b
    };
    assert_error(
        &post(addr, chat, &ok(json!({"n": 0}))),
        400,
        "invalid_value",
        Some("n"),
    );
    assert_error(
        &post(addr, chat, &ok(json!({"n": 99}))),
        400,
        "invalid_value",
        Some("n"),
    );
    let a = post(addr, chat, &ok(json!({"temperature": -1})));
    assert_error(&a, 400, "invalid_value", Some("temperature"));
    let a = post(addr, chat, &ok(json!({"temperature": "warm"})));
    assert_error(&a, 400, "invalid_type", Some("temperature"));
    assert!(
        a.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("temperature"))
    );
    let a = post(
        addr,
        chat,
        &json!({"messages": [{"role": "user", "content": 5}]}),
    );
    assert_error(&a, 400, "invalid_type", Some("messages[0].content"));
    assert_error(
        &post(addr, chat, &json!({})),
        400,
        "missing_required_parameter",
        Some("messages"),
    );
    let a = post(addr, "/v1/completions", &json!({"prompt": [600]}));
    assert_error(&a, 400, "invalid_value", Some("prompt[0]"));
    let a = post(addr, "/v1/completions", &json!({"prompt": ""}));
    assert_error(&a, 400, "invalid_value", Some("prompt"));
    // Longer than the 256-token context (ids, since a text this long would exceed 1 KiB).
    let a = post(addr, "/v1/completions", &json!({"prompt": vec![5; 300]}));
    assert_error(&a, 400, "context_length_exceeded", Some("prompt"));

    // Malformed JSON, through the raw socket.
    let bad = "{\"messages\": [";
    let req = format!(
        "POST {chat} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{bad}",
        bad.len()
    );
    let (status, body) = raw(addr, req.as_bytes());
    assert_eq!(status, 400);
    raw_error(&body, "invalid_json");

    // Oversized: refused by its Content-Length before the body is read ...
    let req = format!(
        "POST {chat} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = raw(addr, req.as_bytes());
    assert_eq!(status, 413, "{body}");
    raw_error(&body, "request_too_large");
    // ... or once too many bytes have come in chunks.
    let chunk = "x".repeat(2000);
    let req = format!(
        "POST {chat} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{chunk}\r\n",
        chunk.len()
    );
    let (status, body) = raw(addr, req.as_bytes());
    assert_eq!(status, 413, "{body}");
    raw_error(&body, "request_too_large");

    // Unknown route and wrong method.
    assert_error(&get(addr, "/v1/nothing"), 404, "unknown_url", None);
    assert_error(
        &post(addr, "/v2/chat", &json!({})),
        404,
        "unknown_url",
        None,
    );
    assert_error(&get(addr, chat), 405, "method_not_allowed", None);
    assert_error(
        &post(addr, "/health", &json!({})),
        405,
        "method_not_allowed",
        None,
    );

    // The server is still fine.
    assert_eq!(post(addr, chat, &ok(json!({}))).status, 200);
    server.shutdown().expect("shutdown");
}

#[test]
fn models_and_health() {
    let server = serve(quiet());
    let addr = server.local_addr();
    let a = get(addr, "/v1/models");
    assert_eq!(a.status, 200);
    assert_eq!(a.body["object"], "list");
    assert_eq!(a.body["data"][0]["id"], "tiny");
    assert_eq!(a.body["data"][0]["object"], "model");
    assert_eq!(a.body["data"][0]["owned_by"], "laconic");
    assert!(a.body["data"][0]["created"].is_u64());
    let h = get(addr, "/health");
    assert_eq!(h.status, 200);
    assert_eq!(h.body, json!({"status": "ok", "queued": 0, "running": 0}));
    server.shutdown().expect("shutdown");
}

/// A request that decodes `max_tokens` tokens for each of `n` choices whatever the model
/// writes (the fixture decodes a token in about 0.2 ms, so a long request is many tokens).
fn long_request(max_tokens: usize, n: usize) -> Value {
    json!({"prompt": "a", "max_tokens": max_tokens, "n": n, "ignore_eos": true, "seed": 1})
}

#[test]
fn a_full_queue_answers_503() {
    let server = serve(ServeConfig {
        queue_capacity: 1,
        ..quiet()
    });
    let addr = server.local_addr();
    let clients = 16;
    let barrier = Arc::new(Barrier::new(clients));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                post(addr, "/v1/completions", &long_request(250, 4))
            })
        })
        .collect();
    let answers: Vec<Answer> = handles
        .into_iter()
        .map(|h| h.join().expect("client"))
        .collect();
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let busy: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    assert_eq!(ok + busy.len(), clients, "only 200 or 503");
    assert!(
        ok >= 1 && !busy.is_empty(),
        "{ok} answered, {} refused",
        busy.len()
    );
    for a in busy {
        assert_error(a, 503, "queue_full", None);
        assert_eq!(a.retry_after.as_deref(), Some("1"));
    }
    for a in answers.iter().filter(|a| a.status == 200) {
        assert_eq!(a.body["usage"]["completion_tokens"], 1000);
    }
    server.shutdown().expect("shutdown");
}

#[test]
fn concurrent_clients_get_their_own_answers() {
    let server = serve(ServeConfig {
        parallel: 2,
        ..quiet()
    });
    let addr = server.local_addr();
    let request = |i: usize| {
        if i.is_multiple_of(2) {
            (
                "/v1/chat/completions",
                json!({"messages": user(&format!("Question number {i}?")), "max_tokens": 10,
                    "seed": 100 + i, "temperature": 0.9}),
            )
        } else {
            (
                "/v1/completions",
                json!({"prompt": format!("Story {i}:"), "max_tokens": 10, "seed": 100 + i}),
            )
        }
    };
    let clients = 32;
    let barrier = Arc::new(Barrier::new(clients));
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            let (path, body) = request(i);
            std::thread::spawn(move || {
                barrier.wait();
                post(addr, path, &body)
            })
        })
        .collect();
    let together: Vec<Answer> = handles
        .into_iter()
        .map(|h| h.join().expect("client"))
        .collect();
    let choices = |a: &Answer| a.body["choices"].clone();
    let mut distinct = std::collections::HashSet::new();
    for (i, a) in together.iter().enumerate() {
        assert_eq!(a.status, 200, "client {i}: {}", a.body);
        let (path, body) = request(i);
        let alone = post(addr, path, &body);
        assert_eq!(choices(a), choices(&alone), "client {i}");
        assert_eq!(a.body["usage"], alone.body["usage"], "client {i}");
        distinct.insert(choices(a).to_string());
    }
    assert!(
        distinct.len() > clients / 2,
        "distinct prompts, distinct answers"
    );
    server.shutdown().expect("shutdown");
}

#[test]
fn shutdown_finishes_the_request_in_flight() {
    let server = serve(quiet());
    let addr = server.local_addr();
    let (first_tx, first_rx) = mpsc::channel();
    let client = std::thread::spawn(move || {
        // Four choices streamed one after another: about 0.2 s on the fixture.
        let mut body = long_request(250, 4);
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let r = agent()
            .post(&format!("http://{addr}/v1/completions"))
            .send(body.to_string())
            .expect("POST");
        read_events(r, || {
            let _ = first_tx.send(());
        })
    });
    first_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the stream started");
    let t = Instant::now();
    server.shutdown().expect("graceful shutdown");
    let events = client.join().expect("client");
    let chunks = parse_chunks(&events);
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(
        usage["usage"]["completion_tokens"], 1000,
        "the whole answer came"
    );
    let finished = chunks
        .iter()
        .filter(|c| c["choices"][0]["finish_reason"] == "length")
        .count();
    assert_eq!(finished, 4);
    assert!(t.elapsed() < Duration::from_secs(60));
    assert!(
        TcpStream::connect(addr).is_err(),
        "no more connections are accepted"
    );
}

/// Waits until no request is waiting or generating; how long that took.
fn until_idle(addr: SocketAddr) -> Duration {
    let t = Instant::now();
    loop {
        let h = get(addr, "/health").body;
        if h["running"] == 0 && h["queued"] == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the worker stays busy"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    t.elapsed()
}

/// Sends a streamed request over a raw socket and reads its first bytes.
fn start_stream(addr: SocketAddr, body: &Value) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    let b = body.to_string();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    )
    .expect("send");
    let mut first = [0u8; 64];
    let n = s.read(&mut first).expect("the stream started");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    s
}

#[test]
fn a_client_leaving_mid_stream_stops_its_generation() {
    let server = serve(quiet());
    let addr = server.local_addr();
    // Eight choices of 250 tokens, streamed one after another.
    let mut body = long_request(250, 8);
    body["stream"] = json!(true);
    // Read to the end, it keeps the worker busy for this long ...
    let s = start_stream(addr, &body);
    let full = until_idle(addr);
    drop(s);
    // ... and left after the first bytes, for much less.
    let s = start_stream(addr, &body);
    drop(s);
    let left = until_idle(addr);
    assert!(left * 2 < full, "{left:?} after leaving vs {full:?}");
    // The server goes on answering.
    let a = post(
        addr,
        "/v1/completions",
        &json!({"prompt": "b", "max_tokens": 3}),
    );
    assert_eq!(a.status, 200);
    server.shutdown().expect("shutdown");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let first = serve(quiet());
    let port = first.local_addr().port();
    let e = start(load(), ServeConfig { port, ..quiet() }).expect_err("the port is taken");
    assert!(matches!(e, ServeError::Bind { .. }));
    assert_eq!(
        e.to_string(),
        format!("cannot bind 127.0.0.1:{port}: address in use")
    );
    first.shutdown().expect("shutdown");
}
