//! Tokenizers: Hugging Face `tokenizer.json` through the `tokenizers` crate, or the same
//! byte-level BPE rebuilt from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! llama.cpp names the pre-tokenizer of a GGUF (`tokenizer.ggml.pre`); each name maps to the
//! pre-tokenizer that the model's own `tokenizer.json` declares, so that a GGUF and its
//! Hugging Face original split text identically.

use std::path::Path;

use serde_json::{Value, json};

use crate::error::{InferError, Result};
use crate::gguf::{GgufFile, GgufValue};

/// Qwen2's split (single digits).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split (digits in groups of up to three).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer plus the special-token facts generation needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: String,
    bos_token_id: Option<u32>,
    /// Whether encoding prepends BOS by hand (GGUF `add_bos_token`); a `tokenizer.json` adds it
    /// through its own post-processor instead.
    prepend_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

fn split_then_bytelevel(pattern: &str) -> Value {
    json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
    ]})
}

/// The Hugging Face pre-tokenizer for a llama.cpp pre-tokenizer name.
fn pre_tokenizer(pre: &str) -> Option<Value> {
    let bytelevel = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    Some(match pre {
        "gpt2" | "default" | "gpt-2" => bytelevel,
        "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, bytelevel]}),
        "qwen2" | "deepseek-r1-qwen" => split_then_bytelevel(QWEN2_SPLIT),
        "llama-bpe" | "llama3" | "smaug-bpe" => split_then_bytelevel(LLAMA3_SPLIT),
        _ => return None,
    })
}

impl Tokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path, bos_token_id: Option<u32>) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| InferError::Tokenizer {
            source_name: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            inner,
            source: path.display().to_string(),
            bos_token_id,
            prepend_bos: false,
        })
    }

    /// Rebuilds the byte-level BPE tokenizer stored in a GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let source = format!("{} (GGUF tokenizer.ggml.*)", file.path().display());
        let err = |reason: String| InferError::Tokenizer {
            source_name: source.clone(),
            reason,
        };
        let model = file
            .get("tokenizer.ggml.model")
            .and_then(GgufValue::as_str)
            .unwrap_or("");
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer.ggml.model '{model}' is not supported (laconic rebuilds byte-level BPE, 'gpt2'); \
                 use the model's Hugging Face directory with tokenizer.json instead"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            let arr = file
                .get(key)
                .and_then(GgufValue::as_array)
                .ok_or_else(|| err(format!("missing '{key}'")))?;
            arr.iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| err(format!("'{key}' holds a non-string")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<u64> = file
            .get("tokenizer.ggml.token_type")
            .and_then(GgufValue::as_array)
            .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
            .unwrap_or_else(|| vec![1; tokens.len()]);
        let pre_name = file
            .get("tokenizer.ggml.pre")
            .and_then(GgufValue::as_str)
            .unwrap_or("default");
        let pre = pre_tokenizer(pre_name).ok_or_else(|| {
            err(format!(
                "pre-tokenizer '{pre_name}' is not supported (supported: gpt2, default, smollm, starcoder, qwen2, deepseek-r1-qwen, llama-bpe)"
            ))
        })?;
        let mut vocab = serde_json::Map::with_capacity(tokens.len());
        let mut added = Vec::new();
        for (id, tok) in tokens.iter().enumerate() {
            vocab.insert(tok.clone(), json!(id));
            let ty = types.get(id).copied().unwrap_or(1);
            // 3 = control, 4 = user-defined: matched whole in the text, never split by BPE.
            if ty == 3 || ty == 4 {
                added.push(
                    json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": ty == 3}),
                );
            }
        }
        let spec = json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": pre_name == "llama-bpe" || pre_name == "llama3",
                "vocab": vocab, "merges": merges}
        });
        let inner: tokenizers::Tokenizer = spec
            .to_string()
            .parse()
            .map_err(|e: tokenizers::Error| err(e.to_string()))?;
        let bos = file
            .get("tokenizer.ggml.bos_token_id")
            .and_then(GgufValue::as_u64)
            .map(|v| v as u32);
        let add_bos = file
            .get("tokenizer.ggml.add_bos_token")
            .and_then(GgufValue::as_bool)
            .unwrap_or(false);
        Ok(Self {
            inner,
            source,
            bos_token_id: bos,
            prepend_bos: add_bos && bos.is_some(),
        })
    }

    /// Where the tokenizer came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`. Special-token strings in the text (`<|im_start|>`) become their
    /// ids. With `add_special`, BOS or whatever the tokenizer's post-processor adds is added.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| InferError::Tokenizer {
                source_name: self.source.clone(),
                reason: format!("encoding failed: {e}"),
            })?;
        let mut ids = enc.get_ids().to_vec();
        if add_special
            && self.prepend_bos
            && let Some(bos) = self.bos_token_id
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// Text of `ids`; with `skip_special`, special tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| InferError::Tokenizer {
                source_name: self.source.clone(),
                reason: format!("decoding failed: {e}"),
            })
    }

    /// The vocabulary string of one token (byte-level symbols as stored), if the id exists.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Tokens that end a chat answer: `eos` plus the end-of-turn markers of the common chat
    /// templates (`<|im_end|>`, `<|eot_id|>`, `<|end_of_text|>`, `<|endoftext|>`) this
    /// vocabulary has.
    pub fn chat_stop_tokens(&self, eos: &[u32]) -> Vec<u32> {
        let mut stop = eos.to_vec();
        for t in [
            "<|im_end|>",
            "<|eot_id|>",
            "<|end_of_text|>",
            "<|endoftext|>",
        ] {
            if let Some(id) = self.token_to_id(t)
                && !stop.contains(&id)
            {
                stop.push(id);
            }
        }
        stop
    }

    /// The tokenizer as `tokenizer.json` text (what the `tokenizers` crate serializes; a
    /// GGUF's `add_bos_token` is not part of it).
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(true)
            .map_err(|e| InferError::Tokenizer {
                source_name: self.source.clone(),
                reason: format!("cannot serialize: {e}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_pre_tokenizers_parse() {
        for name in ["gpt2", "smollm", "qwen2", "llama-bpe"] {
            let pre = pre_tokenizer(name).unwrap();
            let spec = json!({"version": "1.0", "pre_tokenizer": pre, "model": {"type": "BPE",
                "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}});
            let t: std::result::Result<tokenizers::Tokenizer, _> = spec.to_string().parse();
            assert!(t.is_ok(), "{name}: {:?}", t.err());
        }
        assert!(pre_tokenizer("jais").is_none());
    }
}
