//! Bad input gets an error that names the file or tensor and what was expected, never a panic.

mod common;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use common::*;
use laconic_infer::generate::{GenerateConfig, SamplingConfig, generate, score_ids};
use laconic_infer::{InferError, load};

fn err(path: &Path) -> String {
    match load(path, &Device::flex()) {
        Ok(_) => panic!("{} loaded, but it should have failed", path.display()),
        Err(e) => e.to_string(),
    }
}

/// A scratch copy of a fixture directory.
fn copy_dir(family: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dst = tmp.path().join(family);
    std::fs::create_dir(&dst).expect("mkdir");
    for entry in std::fs::read_dir(fixtures().join(family)).expect("read_dir") {
        let p = entry.expect("entry").path();
        if p.is_file() {
            std::fs::copy(&p, dst.join(p.file_name().expect("name"))).expect("copy");
        }
    }
    (tmp, dst)
}

fn replace_bytes(path: &Path, from: &[u8], to: &[u8]) {
    let mut bytes = std::fs::read(path).expect("read");
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    bytes.splice(at..at + from.len(), to.iter().copied());
    std::fs::write(path, bytes).expect("write");
}

fn truncate(path: &Path, keep: f64) {
    let bytes = std::fs::read(path).expect("read");
    std::fs::write(path, &bytes[..(bytes.len() as f64 * keep) as usize]).expect("write");
}

#[test]
fn missing_path() {
    let e = err(Path::new("/nonexistent/model.gguf"));
    assert!(
        e.contains("/nonexistent/model.gguf") && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn directory_without_config() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let e = err(tmp.path());
    assert!(
        e.contains("config.json") && e.contains(&tmp.path().display().to_string()),
        "{e}"
    );
}

#[test]
fn unknown_model_type() {
    let (_tmp, dir) = copy_dir("llama");
    replace_bytes(
        &dir.join("config.json"),
        b"\"model_type\": \"llama\"",
        b"\"model_type\": \"gpt_neox\"",
    );
    let e = err(&dir);
    assert!(e.contains("config.json") && e.contains("gpt_neox"), "{e}");
}

#[test]
fn missing_tensor() {
    let (_tmp, dir) = copy_dir("llama");
    // Same length, so the header stays valid: the tensor is simply not there under its name.
    replace_bytes(
        &dir.join("model.safetensors"),
        b"model.norm.weight",
        b"model.norm.wXight",
    );
    let e = err(&dir);
    assert!(
        e.contains("missing tensor") && e.contains("model.norm.weight"),
        "{e}"
    );
}

#[test]
fn tensor_of_the_wrong_shape() {
    let (_tmp, dir) = copy_dir("llama");
    replace_bytes(
        &dir.join("config.json"),
        b"\"intermediate_size\": 128",
        b"\"intermediate_size\": 96",
    );
    let e = err(&dir);
    assert!(
        e.contains("model.safetensors")
            && e.contains("gate_proj")
            && e.contains("[96, 64]")
            && e.contains("[128, 64]"),
        "{e}"
    );
}

#[test]
fn truncated_safetensors() {
    let (_tmp, dir) = copy_dir("llama");
    truncate(&dir.join("model.safetensors"), 0.5);
    let e = err(&dir);
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
    truncate(&dir.join("model.safetensors"), 0.0001);
    let e = err(&dir);
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn truncated_gguf() {
    let (_tmp, dir) = copy_dir("qwen2");
    let path = dir.join("model-q8_0.gguf");
    truncate(&path, 0.9);
    let e = err(&path);
    assert!(
        e.contains("model-q8_0.gguf") && e.contains("truncated") && e.contains("tensor"),
        "{e}"
    );
    // Cut inside the metadata: still an error naming what was being read.
    truncate(&path, 0.01);
    let e = err(&path);
    assert!(
        e.contains("model-q8_0.gguf") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn gguf_with_an_unsupported_quant_type() {
    let (_tmp, dir) = copy_dir("llama");
    let path = dir.join("model-f32.gguf");
    let mut bytes = std::fs::read(&path).expect("read");
    let name = b"blk.0.ffn_up.weight";
    let at = bytes
        .windows(name.len())
        .position(|w| w == name)
        .expect("tensor info")
        + name.len();
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("u32")) as usize;
    let ty = at + 4 + 8 * n_dims;
    bytes[ty..ty + 4].copy_from_slice(&10u32.to_le_bytes()); // Q2_K
    std::fs::write(&path, bytes).expect("write");
    let e = err(&path);
    assert!(
        e.contains("blk.0.ffn_up.weight") && e.contains("Q2_K") && e.contains("unsupported"),
        "{e}"
    );
}

#[test]
fn not_a_model_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("notes.txt");
    std::fs::write(&path, "hello").expect("write");
    let e = err(&path);
    assert!(e.contains("notes.txt") && e.contains("GGUF"), "{e}");
}

#[test]
fn prompt_longer_than_the_context() {
    let m = load_fixture();
    let context = m.config().max_position_embeddings;
    let prompt: Vec<u32> = (0..context as u32 + 10).map(|i| i % 200).collect();
    let config = GenerateConfig {
        max_new_tokens: 4,
        sampling: SamplingConfig::default(),
        stop_strings: vec![],
        stop_tokens: vec![],
        ..Default::default()
    };
    let mut cache = m.model.new_cache();
    let e = generate(&m.model, &m.tokenizer, &prompt, &config, &mut cache, |_| {}).unwrap_err();
    assert!(matches!(e, InferError::ContextOverflow { .. }), "{e}");
    assert!(e.to_string().contains(&context.to_string()), "{e}");
    let e = score_ids(&m.model, &prompt).unwrap_err();
    assert!(matches!(e, InferError::ContextOverflow { .. }), "{e}");
}

fn load_fixture() -> laconic_infer::LoadedModel {
    common::load(&fixtures().join("llama"))
}
