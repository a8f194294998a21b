//! A teacher run in-process: a checkpoint loaded through `laconic-infer` and asked through
//! its own chat template, one sample at a time (the decoder already uses every core).

use std::path::{Path, PathBuf};

use laconic_infer::chat::Message;
use laconic_infer::generate::{GenerateConfig, SamplingConfig, generate};
use laconic_infer::{LoadedModel, load};

use super::{SampleRequest, Teacher, TeacherSample};
use crate::error::{Result, TraceError};

/// A checkpoint (GGUF file or Hugging Face directory) on the CPU.
#[derive(Debug)]
pub struct LocalTeacher {
    path: PathBuf,
    loaded: LoadedModel,
}

impl LocalTeacher {
    /// Loads the checkpoint onto the CPU. It must ship a chat template.
    pub fn load(path: &Path) -> Result<Self> {
        let fail = |message: String| TraceError::Teacher {
            teacher: format!("local:{}", path.display()),
            message,
        };
        let device =
            laconic_infer::device::parse_device("flex").map_err(|e| fail(e.to_string()))?;
        let loaded = load(path, &device).map_err(|e| fail(e.to_string()))?;
        if loaded.chat_template.is_none() {
            return Err(fail(
                "the checkpoint has no chat template, so it cannot be asked questions".into(),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            loaded,
        })
    }

    /// Runs one generation.
    fn run(&self, request: &SampleRequest<'_>) -> laconic_infer::Result<TeacherSample> {
        let m = &self.loaded;
        let messages: Vec<Message> = request
            .messages
            .iter()
            .map(|msg| Message::new(msg.role.clone(), msg.content.clone()))
            .collect();
        let Some(template) = &m.chat_template else {
            return Err(laconic_infer::InferError::InvalidArgument(
                "no chat template".into(),
            ));
        };
        let text = template.render(&messages, true)?;
        // A rendered template already holds BOS when the model wants one.
        let prompt = m.tokenizer.encode(&text, false)?;
        let config = GenerateConfig {
            max_new_tokens: request.sampling.max_tokens,
            sampling: SamplingConfig {
                temperature: request.sampling.temperature,
                top_k: 0,
                top_p: request.sampling.top_p,
                seed: request.sampling.seed,
            },
            stop_tokens: m.tokenizer.chat_stop_tokens(&m.config().eos_token_ids),
            ..GenerateConfig::default()
        };
        let mut cache = m.model.new_cache();
        let g = generate(&m.model, &m.tokenizer, &prompt, &config, &mut cache, |_| {})?;
        Ok(TeacherSample {
            content: g.text,
            reasoning: None,
            prompt_tokens: Some(g.prompt_tokens as u64),
            completion_tokens: Some(g.tokens.len() as u64),
            reasoning_tokens: None,
            finish_reason: Some(
                match g.finish_reason {
                    laconic_infer::generate::FinishReason::Length => "length",
                    _ => "stop",
                }
                .into(),
            ),
            model: self.model(),
            attempts: 1,
        })
    }
}

impl Teacher for LocalTeacher {
    fn spec(&self) -> String {
        format!("local:{}", self.path.display())
    }

    fn model(&self) -> Option<String> {
        let name = self.path.file_stem()?.to_string_lossy();
        let name = name.strip_suffix(".gguf").unwrap_or(&name);
        Some(name.to_string())
    }

    fn concurrency(&self) -> usize {
        1
    }

    fn sample(&self, request: &SampleRequest<'_>) -> Result<TeacherSample> {
        self.run(request).map_err(|e| TraceError::Teacher {
            teacher: self.spec(),
            message: format!("sample {} of `{}`: {e}", request.index, request.problem.id),
        })
    }
}
