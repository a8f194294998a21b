//! Teachers: whoever writes the reasoning traces that a student learns from.
//!
//! A [`TeacherSpec`] names one (`openai:URL`, `local:PATH`, `file:PATH`,
//! `procedural:verbose`) and
//! [`TeacherSpec::open`] turns it into a [`Teacher`], which answers one sample request at a
//! time and may be called from many threads at once:
//!
//! - [`openai::OpenAiTeacher`]: any OpenAI-compatible chat endpoint (vLLM, SGLang,
//!   llama.cpp's `llama-server`, Ollama, a hosted API, `laconic serve`), with an API key from
//!   the environment, a per-request timeout, and retries with exponential backoff and jitter
//!   on 429, 5xx, dropped connections, timeouts and malformed replies.
//! - [`local::LocalTeacher`]: a checkpoint run in-process through `laconic-infer`.
//! - [`file::FileTeacher`]: traces that exist already, looked up by problem.
//! - [`crate::procedural::ProceduralTeacher`] (`procedural:verbose`): a stand-in that writes
//!   wordy R1-style traces for the procedural problems, where no reasoning model can run.

pub mod file;
pub mod local;
pub mod openai;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TraceError};
use crate::schema::Trace;

/// One chat message sent to a teacher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// How a teacher samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Softmax temperature (0 = greedy).
    pub temperature: f32,
    /// Nucleus sampling mass.
    pub top_p: f32,
    /// Most tokens per answer.
    pub max_tokens: usize,
    /// Base seed; each sample gets its own seed derived from it (see [`sample_seed`]).
    pub seed: u64,
}

impl Default for SamplingParams {
    /// DeepSeek-R1's recommended sampling (temperature 0.6, top-p 0.95), 2048 tokens, seed 0.
    fn default() -> Self {
        Self {
            temperature: 0.6,
            top_p: 0.95,
            max_tokens: 2048,
            seed: 0,
        }
    }
}

/// The seed of sample `index` of `problem`: a stable hash (FNV-1a) of the base seed, the
/// problem id and the index, kept below 2^31 so every server accepts it. The same command
/// therefore asks the same question with the same seed on every run, which is what makes a
/// resumed run equal to an uninterrupted one on a deterministic teacher.
pub fn sample_seed(base: u64, problem: &str, index: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(&base.to_le_bytes());
    feed(problem.as_bytes());
    feed(&(index as u64).to_le_bytes());
    h & 0x7fff_ffff
}

/// One request to a teacher: sample `index` of `problem`.
#[derive(Debug, Clone)]
pub struct SampleRequest<'a> {
    /// The problem (its id, question and gold answer).
    pub problem: &'a Trace,
    /// Which of the problem's samples this is (0-based).
    pub index: usize,
    /// The conversation to send (system prompt, then the question).
    pub messages: &'a [ChatMessage],
    /// Sampling settings; `seed` is this sample's own seed.
    pub sampling: SamplingParams,
}

/// What a teacher answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TeacherSample {
    /// The answer text (for R1-style models it may hold `<think>…</think>`).
    pub content: String,
    /// Reasoning returned apart from the content (`reasoning_content` of DeepSeek-style APIs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// Prompt tokens, as the teacher counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// Generated tokens, as the teacher counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// Reasoning tokens, when the teacher reports them apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// `stop`, `length`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// The model that answered, as the teacher named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// HTTP attempts this sample took (1 = no retry; 0 for teachers without requests).
    #[serde(default)]
    pub attempts: u32,
}

/// A source of reasoning traces. Implementations are called from several threads at once
/// (up to [`Teacher::concurrency`]).
pub trait Teacher: Send + Sync {
    /// The spec it was opened from, recorded in every trace's provenance.
    fn spec(&self) -> String;

    /// The model name recorded in provenance.
    fn model(&self) -> Option<String>;

    /// How many requests may run at once.
    fn concurrency(&self) -> usize;

    /// How many samples this teacher has for `problem` when `requested` are asked for (a
    /// file teacher has as many as the file holds).
    fn samples_for(&self, problem: &Trace, requested: usize) -> usize {
        let _ = problem;
        requested
    }

    /// Produces one sample. Retries, if any, happen inside; an error here is final.
    fn sample(&self, request: &SampleRequest<'_>) -> Result<TeacherSample>;

    /// Counts of retried attempts by reason (`429`, `5xx`, `timeout`, `connection`,
    /// `malformed`), for the run's accounting.
    fn retries(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}

/// Settings of an HTTP teacher that the command line sets.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Model name sent in every request.
    pub model: Option<String>,
    /// Environment variable holding the API key (`OPENAI_API_KEY` unless set).
    pub api_key_env: Option<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Limit on one request, from connect to the last byte.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; it doubles per retry, with jitter, up to `backoff_max`.
    pub backoff_base: Duration,
    /// Longest wait between attempts (also the cap on a server's `Retry-After`).
    pub backoff_max: Duration,
}

impl Default for ClientOptions {
    /// 16 in flight, 600 s per request, 6 retries, backoff 0.5 s doubling to 60 s.
    fn default() -> Self {
        Self {
            model: None,
            api_key_env: None,
            concurrency: 16,
            timeout: Duration::from_secs(600),
            max_retries: 6,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// Where traces come from, as the command line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeacherSpec {
    /// `openai:URL`: an OpenAI-compatible server (`http://host:port`, with or without `/v1`).
    OpenAi(String),
    /// `local:PATH`: a checkpoint (GGUF file or Hugging Face directory) run in-process.
    Local(PathBuf),
    /// `file:SPEC`: existing traces; SPEC is a dataset spec (`traces:PATH`, `jsonl:PATH`, a
    /// bare trace file).
    File(String),
    /// `procedural:STYLE`: the stand-in teacher for procedural problems; STYLE is `verbose`
    /// (see [`crate::procedural::ProceduralTeacher`]).
    Procedural(String),
}

/// The teachers [`TeacherSpec::parse`] knows, for messages.
const TEACHERS: &str = "openai:URL, local:PATH, file:PATH or procedural:verbose";

impl TeacherSpec {
    /// Parses `openai:URL`, `local:PATH`, `file:SPEC` or `procedural:verbose`. A bare
    /// `http://` or `https://` URL is taken as `openai:`.
    pub fn parse(s: &str) -> Result<Self> {
        let err = |message: &str| TraceError::TeacherSpec {
            spec: s.to_string(),
            message: message.to_string(),
        };
        if s.starts_with("http://") || s.starts_with("https://") {
            return Ok(Self::OpenAi(s.to_string()));
        }
        let Some((prefix, rest)) = s.split_once(':') else {
            return Err(err(&format!(
                "expected {TEACHERS} (e.g. openai:http://127.0.0.1:8000/v1)"
            )));
        };
        if rest.is_empty() {
            return Err(err("nothing after the prefix"));
        }
        match prefix {
            "openai" => {
                if !(rest.starts_with("http://") || rest.starts_with("https://")) {
                    return Err(err("the URL must start with http:// or https://"));
                }
                Ok(Self::OpenAi(rest.to_string()))
            }
            "local" => Ok(Self::Local(PathBuf::from(rest))),
            "file" => Ok(Self::File(rest.to_string())),
            "procedural" => {
                if !crate::procedural::PROCEDURAL_STYLES.contains(&rest) {
                    return Err(err(&format!(
                        "unknown procedural teacher style `{rest}` (expected procedural:verbose)"
                    )));
                }
                Ok(Self::Procedural(rest.to_string()))
            }
            _ => Err(err(&format!(
                "unknown teacher `{prefix}` (expected {TEACHERS})"
            ))),
        }
    }

    /// Opens the teacher: checks that the server answers, loads the checkpoint, reads the
    /// file, or makes the procedural stand-in.
    pub fn open(&self, options: &ClientOptions) -> Result<Box<dyn Teacher>> {
        Ok(match self {
            Self::OpenAi(url) => Box::new(openai::OpenAiTeacher::connect(url, options)?),
            Self::Local(path) => Box::new(local::LocalTeacher::load(path)?),
            Self::File(spec) => Box::new(file::FileTeacher::read(spec)?),
            Self::Procedural(style) => Box::new(crate::procedural::ProceduralTeacher::new(style)?),
        })
    }
}

impl std::fmt::Display for TeacherSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OpenAi(url) => write!(f, "openai:{url}"),
            Self::Local(path) => write!(f, "local:{}", path.display()),
            Self::File(spec) => write!(f, "file:{spec}"),
            Self::Procedural(style) => write!(f, "procedural:{style}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for s in [
            "openai:http://127.0.0.1:8000/v1",
            "local:checkpoints/x.gguf",
            "file:traces:runs/a.jsonl",
            "procedural:verbose",
        ] {
            assert_eq!(TeacherSpec::parse(s).expect(s).to_string(), s);
        }
        assert_eq!(
            TeacherSpec::parse("https://api.deepseek.com").expect("url"),
            TeacherSpec::OpenAi("https://api.deepseek.com".into())
        );
        for bad in [
            "openai:localhost:8000",
            "vllm:http://x",
            "local:",
            "nothing",
            "procedural:terse",
        ] {
            let e = TeacherSpec::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(bad), "{e}");
        }
        let e = TeacherSpec::parse("procedural:terse")
            .expect_err("style")
            .to_string();
        assert!(e.contains("procedural:verbose"), "{e}");
    }

    #[test]
    fn sample_seeds_are_stable_distinct_and_small() {
        let a = sample_seed(7, "gsm8k/test/3", 0);
        assert_eq!(a, sample_seed(7, "gsm8k/test/3", 0));
        assert_ne!(a, sample_seed(7, "gsm8k/test/3", 1));
        assert_ne!(a, sample_seed(8, "gsm8k/test/3", 0));
        assert_ne!(a, sample_seed(7, "gsm8k/test/4", 0));
        assert!(a < 1 << 31);
    }
}
