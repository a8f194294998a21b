//! Training checkpoints, written so that a kill at any moment leaves the last complete one
//! readable.
//!
//! ```text
//! RUN/checkpoints/step-000050/
//!     trainable.safetensors   the trained parameters (adapters, or every weight), by Burn path
//!     optimizer.safetensors   AdamW moments: exp_avg.PATH, exp_avg_sq.PATH
//!     state.json              step, micro-batches consumed, tokens seen, the seed, the recipe
//! RUN/checkpoints/latest      the name of the newest complete checkpoint
//! ```
//!
//! A checkpoint is written into `step-N.tmp/`, every file synced, then the directory is
//! renamed and `latest` replaced (temporary file, then rename). The random state needs no
//! saving: data order, adapter initialization and dropout masks are all derived from the seed
//! and the step, so the step is the state.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::params::{NamedTensor, TensorMap};

/// What `state.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: usize,
    /// Micro-batches consumed (the data position).
    pub micro_batches: usize,
    /// Tokens trained on so far.
    pub tokens: u64,
    /// Seconds of training so far.
    pub elapsed_s: f64,
    /// The seed every random choice derives from (with the step).
    pub seed: u64,
    /// What must not change between a run and its resumption.
    pub fingerprint: String,
}

/// The checkpoint directory of a step.
pub fn step_dir(run: &Path, step: usize) -> PathBuf {
    run.join("checkpoints").join(format!("step-{step:06}"))
}

/// Writes a checkpoint for `state.step` and points `latest` at it; then removes all but
/// the `keep` newest.
pub fn save(
    run: &Path,
    state: &TrainState,
    trainable: &[NamedTensor],
    optimizer: &[NamedTensor],
    keep: usize,
) -> Result<PathBuf> {
    let dir = step_dir(run, state.step);
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    laconic_infer::safetensors::write_f32(&tmp.join("trainable.safetensors"), trainable, &[])?;
    laconic_infer::safetensors::write_f32(&tmp.join("optimizer.safetensors"), optimizer, &[])?;
    let json = serde_json::to_value(state)
        .map_err(|e| TrainError::checkpoint(&tmp, format!("state: {e}")))?;
    write_json(&tmp.join("state.json"), &json)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| TrainError::io(&dir, e))?;
    sync_dir(dir.parent().unwrap_or(run));
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    write_atomic(&run.join("checkpoints").join("latest"), name.as_bytes())?;
    prune(run, keep)?;
    Ok(dir)
}

/// Removes all but the `keep` newest complete checkpoints, and any leftover `.tmp`.
fn prune(run: &Path, keep: usize) -> Result<()> {
    let root = run.join("checkpoints");
    let mut steps = Vec::new();
    let entries = std::fs::read_dir(&root).map_err(|e| TrainError::io(&root, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix("step-") {
            if n.ends_with(".tmp") {
                let _ = std::fs::remove_dir_all(entry.path());
            } else if let Ok(s) = n.parse::<usize>() {
                steps.push((s, entry.path()));
            }
        }
    }
    steps.sort();
    let drop = steps.len().saturating_sub(keep);
    for (_, path) in steps.into_iter().take(drop) {
        std::fs::remove_dir_all(&path).map_err(|e| TrainError::io(&path, e))?;
    }
    Ok(())
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Loaded {
    /// Its directory.
    pub dir: PathBuf,
    /// Its state.
    pub state: TrainState,
    /// Trained parameters by path.
    pub trainable: TensorMap,
    /// Optimizer moments by name.
    pub optimizer: TensorMap,
}

/// The newest complete checkpoint of a run, if it has one.
pub fn latest(run: &Path) -> Result<Option<PathBuf>> {
    let pointer = run.join("checkpoints").join("latest");
    if !pointer.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&pointer).map_err(|e| TrainError::io(&pointer, e))?;
    let dir = run.join("checkpoints").join(name.trim());
    if !dir.is_dir() {
        return Err(TrainError::checkpoint(
            &pointer,
            format!("points at {}, which does not exist", dir.display()),
        ));
    }
    Ok(Some(dir))
}

/// Reads a checkpoint directory.
pub fn load(dir: &Path) -> Result<Loaded> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
    let state: TrainState = serde_json::from_str(&text)
        .map_err(|e| TrainError::checkpoint(&state_path, format!("malformed: {e}")))?;
    Ok(Loaded {
        dir: dir.to_path_buf(),
        state,
        trainable: read_all(&dir.join("trainable.safetensors"))?,
        optimizer: read_all(&dir.join("optimizer.safetensors"))?,
    })
}

/// Every tensor of a safetensors file as f32.
pub fn read_all(path: &Path) -> Result<TensorMap> {
    let file = laconic_infer::safetensors::SafetensorsFile::open(path)?;
    let mut out = TensorMap::new();
    let names: Vec<String> = file.names().map(str::to_string).collect();
    for name in names {
        if let Some((v, shape)) = file.tensor_f32(&name)? {
            out.insert(name, (shape, v));
        }
    }
    Ok(out)
}

/// Writes JSON atomically (temporary file, sync, rename).
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
    write_atomic(path, text.as_bytes())
}

/// Writes bytes atomically: `PATH.tmp`, synced, renamed over `path` (the trace files'
/// writer, [`laconic_traces::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    Ok(laconic_traces::write_atomic(path, |w| w.write_all(bytes))?)
}

/// Makes a rename durable (best effort: not every platform can sync a directory).
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}
