//! The tokenizer of a GGUF file: `tokenizer.ggml.*` metadata built from a Hugging Face
//! `tokenizer.json`, or carried over from another GGUF.
//!
//! laconic writes byte-level BPE vocabularies (GPT-2, SmolLM, Qwen2/Qwen3, Llama 3) the way
//! llama.cpp's `convert_hf_to_gguf.py` does (read, not copied): model `gpt2`, the tokens in id
//! order with their types, the merges, the pre-tokenizer named from the `tokenizer.json`
//! regex, the special-token ids and the chat template. SentencePiece vocabularies (llama.cpp's
//! `llama` tokenizer model) are not written.

use std::path::Path;

use serde_json::Value;

use super::GgufFile;
use super::write::MetaValue;
use crate::config::ModelConfig;
use crate::error::{InferError, Result};

/// Every `tokenizer.*` key of a GGUF file, with the types gguf-py writes, in sorted order:
/// what a GGUF written from a GGUF base carries over.
pub fn copy_tokenizer_metadata(file: &GgufFile) -> Result<Vec<(String, MetaValue)>> {
    let mut keys: Vec<&String> = file
        .metadata
        .keys()
        .filter(|k| k.starts_with("tokenizer."))
        .collect();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let v = MetaValue::from_read(&file.metadata[k]).ok_or_else(|| {
                InferError::format(file.path(), format!("metadata '{k}' cannot be copied"))
            })?;
            Ok((k.clone(), v))
        })
        .collect()
}

/// Qwen2's pre-tokenizer split, as real Qwen2/Qwen3 `tokenizer.json` files spell it.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's pre-tokenizer split.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's name (`tokenizer.ggml.pre`) for a `tokenizer.json` pre-tokenizer, if it is one
/// laconic recognizes: GPT-2's byte level (`gpt-2`), SmolLM's single digits then byte level
/// (`smollm`), Qwen2's split (`qwen2`), Llama 3's split (`llama-bpe`). These are the names
/// laconic's GGUF tokenizer reads back to the same pre-tokenizer.
pub fn pre_tokenizer_name(pre: &Value) -> Option<&'static str> {
    let kind = |v: &Value| v.get("type").and_then(Value::as_str).map(str::to_string);
    let flag = |v: &Value, k: &str| v.get(k).and_then(Value::as_bool);
    match kind(pre)?.as_str() {
        "ByteLevel" if flag(pre, "use_regex") != Some(false) => Some("gpt-2"),
        "Sequence" => {
            let parts = pre.get("pretokenizers")?.as_array()?;
            match parts.as_slice() {
                [digits, bl]
                    if kind(digits).as_deref() == Some("Digits")
                        && flag(digits, "individual_digits") == Some(true)
                        && kind(bl).as_deref() == Some("ByteLevel")
                        && flag(bl, "use_regex") != Some(false) =>
                {
                    Some("smollm")
                }
                [split, bl]
                    if kind(split).as_deref() == Some("Split")
                        && kind(bl).as_deref() == Some("ByteLevel")
                        && flag(bl, "use_regex") == Some(false) =>
                {
                    match split.get("pattern")?.get("Regex")?.as_str()? {
                        QWEN2_SPLIT => Some("qwen2"),
                        LLAMA3_SPLIT => Some("llama-bpe"),
                        _ => None,
                    }
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The `tokenizer.ggml.*` metadata of a Hugging Face byte-level BPE tokenizer, as llama.cpp's
/// converter writes it: the vocabulary in id order (padded to the model's `vocab_size` with
/// unused `[PADn]` tokens), token types (1 normal, 3 control for special added tokens, 4
/// user-defined for other added tokens, 5 unused), merges as `"a b"`, the pre-tokenizer name,
/// BOS/EOS/padding ids, whether to add BOS, and the chat template. `dir` holds
/// `tokenizer.json` (and optionally `tokenizer_config.json`); `config` gives the vocabulary
/// size and the fallback BOS/EOS ids.
pub fn tokenizer_metadata(
    dir: &Path,
    c: &ModelConfig,
    chat_template: Option<&str>,
) -> Result<Vec<(String, MetaValue)>> {
    let path = dir.join("tokenizer.json");
    let read = |p: &Path| -> Result<Value> {
        let text = std::fs::read_to_string(p).map_err(|e| InferError::io(p, e))?;
        serde_json::from_str(&text)
            .map_err(|e| InferError::config(p, format!("not valid JSON: {e}")))
    };
    let spec = read(&path)?;
    let bad = |reason: String| InferError::Tokenizer {
        source_name: path.display().to_string(),
        reason,
    };
    let model = &spec["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(bad(format!(
            "tokenizer model {} cannot be written to GGUF by laconic (byte-level BPE can)",
            model["type"]
        )));
    }
    let pre = pre_tokenizer_name(&spec["pre_tokenizer"]).ok_or_else(|| {
        bad(format!(
            "pre-tokenizer not recognized for GGUF (known: GPT-2 byte level, SmolLM digits, \
             Qwen2 and Llama 3 splits): {}",
            spec["pre_tokenizer"]
        ))
    })?;
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("model.vocab is not an object".into()))?;
    let added: Vec<(usize, String, bool)> = spec["added_tokens"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some((
                        t["id"].as_u64()? as usize,
                        t["content"].as_str()?.to_string(),
                        t["special"].as_bool().unwrap_or(false),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let max_id = vocab
        .values()
        .filter_map(Value::as_u64)
        .map(|i| i as usize)
        .chain(added.iter().map(|a| a.0))
        .max()
        .unwrap_or(0);
    let n = c.vocab_size.max(max_id + 1);
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut types = vec![5i32; n];
    for (tok, id) in vocab {
        if let Some(id) = id.as_u64() {
            tokens[id as usize] = Some(tok.clone());
            types[id as usize] = 1;
        }
    }
    for (id, content, special) in &added {
        tokens[*id] = Some(content.clone());
        types[*id] = if *special { 3 } else { 4 };
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| format!("[PAD{i}]")))
        .collect();
    let merges: Vec<String> = model["merges"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| match m {
                    Value::String(s) => Some(s.clone()),
                    Value::Array(p) => {
                        Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?))
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();

    // Special tokens: tokenizer_config.json's strings, else config.json's ids.
    let tc_path = dir.join("tokenizer_config.json");
    let tc = if tc_path.is_file() {
        read(&tc_path)?
    } else {
        Value::Null
    };
    let id_of = |key: &str| -> Option<u32> {
        let content = match &tc[key] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o.get("content")?.as_str()?.to_string(),
            _ => return None,
        };
        tokens.iter().position(|t| *t == content).map(|i| i as u32)
    };
    let bos = id_of("bos_token").or(c.bos_token_id);
    let eos = id_of("eos_token").or_else(|| c.eos_token_ids.first().copied());
    let pad = id_of("pad_token");
    let add_bos = tc["add_bos_token"].as_bool().unwrap_or_else(|| {
        // A template post-processor that starts with a special token adds BOS.
        let pp = &spec["post_processor"];
        pp["type"].as_str() == Some("TemplateProcessing")
            && pp["single"][0].get("SpecialToken").is_some()
    });

    let mut meta = vec![
        (
            "tokenizer.ggml.model".to_string(),
            MetaValue::Str("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".into(), MetaValue::Str(pre.into())),
        ("tokenizer.ggml.tokens".into(), MetaValue::Strs(tokens)),
        ("tokenizer.ggml.token_type".into(), MetaValue::I32s(types)),
        ("tokenizer.ggml.merges".into(), MetaValue::Strs(merges)),
    ];
    if let Some(b) = bos {
        meta.push(("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(b)));
    }
    if let Some(e) = eos {
        meta.push(("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(e)));
    }
    if let Some(p) = pad {
        meta.push(("tokenizer.ggml.padding_token_id".into(), MetaValue::U32(p)));
    }
    meta.push((
        "tokenizer.ggml.add_bos_token".into(),
        MetaValue::Bool(add_bos),
    ));
    if let Some(t) = chat_template {
        meta.push((
            "tokenizer.chat_template".into(),
            MetaValue::Str(t.to_string()),
        ));
    }
    Ok(meta)
}
