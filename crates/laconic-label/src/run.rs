//! Labeling a whole file, resumably, and the files made from it.
//!
//! [`label_file`] reads the input (a trace file or a dataset spec), skips the ids that the
//! output file already holds, and appends one [`LabeledTrace`] per remaining trace as one
//! whole line, flushed and synced before the next one starts. A run killed at any moment
//! leaves at most one truncated last line, which the next run removes
//! ([`laconic_traces::schema::drop_incomplete_tail`]) before it continues; so re-running the
//! same command finishes the work with exactly one line per input id. An output file written
//! with another scorer, unit, granularity or set of ratios is refused rather than mixed.
//!
//! [`write_variants`] turns a labeled file into a plain trace file (schema v1) that
//! `laconic train` reads with `traces:PATH`: the compressed variants whose answer survived,
//! and optionally the originals at ratio 1.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use laconic_traces::schema::{drop_incomplete_tail, write_traces};
use laconic_traces::{DatasetSpec, Grader, Trace};
use serde::Deserialize;

use crate::error::{LabelError, Result};
use crate::label::{LabeledTrace, Labeler, guess_grader, ratio_label};

/// Traces labeled together by default (batched forward passes of a model scorer).
pub const LABEL_BATCH: usize = 16;

/// What to label and where.
#[derive(Debug, Clone)]
pub struct LabelJob {
    /// The input: `gsm8k:PATH`, `math500:PATH`, `traces:PATH` or a trace file.
    pub input: DatasetSpec,
    /// The labeled file (JSONL), appended to.
    pub out: PathBuf,
    /// Label only the first N input traces.
    pub limit: Option<usize>,
    /// The grader; `None`: the dataset's, or for a trace file a guess per trace
    /// ([`guess_grader`]).
    pub grader: Option<Grader>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Traces labeled together: a model scorer scores them in batched forward passes (at
    /// least 1; [`LABEL_BATCH`] is the command's default).
    pub batch: usize,
}

/// What [`label_file`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunSummary {
    /// Input traces (after the limit).
    pub inputs: usize,
    /// Of those, already in the output file.
    pub already_done: usize,
    /// Labeled and appended by this run.
    pub labeled: usize,
    /// Whether a truncated last line (a killed run's) was removed first.
    pub dropped_partial_line: bool,
    /// Wall time of this run, in seconds.
    pub seconds: f64,
}

/// The fields of a labeled line that resuming checks.
#[derive(Deserialize)]
struct Head {
    id: String,
    scorer: String,
    unit: String,
    #[serde(default = "crate::label::words_granularity")]
    granularity: String,
    variants: Vec<HeadVariant>,
}

#[derive(Deserialize)]
struct HeadVariant {
    target: f64,
}

/// Labels every input trace that `job.out` does not hold yet (see the module docs).
pub fn label_file(labeler: &Labeler, job: &LabelJob) -> Result<RunSummary> {
    let started = Instant::now();
    let mut traces = job.input.load()?;
    if let Some(limit) = job.limit {
        traces.truncate(limit);
    }
    let mut dropped_partial_line = false;
    let mut done: HashSet<String> = HashSet::new();
    if job.out.exists() {
        dropped_partial_line = drop_incomplete_tail(&job.out)?;
        done = done_ids(labeler, &job.out)?;
    }
    let todo: Vec<&Trace> = traces.iter().filter(|t| !done.contains(&t.id)).collect();
    let already_done = traces.len() - todo.len();
    if let Some(parent) = job.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| LabelError::io(parent, e))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&job.out)
        .map_err(|e| LabelError::io(&job.out, e))?;
    let bar = progress_bar(job.progress, traces.len(), already_done);
    let mut labeled = 0;
    // A few traces at a time, so that a model scorer can batch them; each line is still
    // appended and synced on its own.
    for chunk in todo.chunks(job.batch.max(1)) {
        let items: Vec<(&Trace, Grader)> = chunk
            .iter()
            .map(|&t| {
                let grader = job
                    .grader
                    .or_else(|| job.input.grader())
                    .unwrap_or_else(|| guess_grader(t));
                (t, grader)
            })
            .collect();
        for line in labeler.label_batch(&items)? {
            let json = serde_json::to_string(&line).map_err(|e| LabelError::Label {
                id: line.id.clone(),
                message: format!("cannot serialize: {e}"),
            })?;
            append_line(&mut file, &job.out, &json)?;
            labeled += 1;
            if let Some(b) = &bar {
                b.inc(1);
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(RunSummary {
        inputs: traces.len(),
        already_done,
        labeled,
        dropped_partial_line,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A progress bar with done/total and ETA, starting at `at`; `None` when not wanted.
fn progress_bar(show: bool, total: usize, at: usize) -> Option<indicatif::ProgressBar> {
    if !show {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    let style = indicatif::ProgressStyle::with_template(
        "label {pos}/{len} [{bar:30}] {per_sec}  elapsed {elapsed} eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_position(at as u64);
    bar.reset_eta();
    Some(bar)
}

/// The ids an existing labeled file holds, after checking that it was written with the
/// labeler's scorer, unit and ratios (its first line is checked) and has no duplicate id.
fn done_ids(labeler: &Labeler, path: &Path) -> Result<HashSet<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| LabelError::io(path, e))?;
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let mut checked = false;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let head: Head = serde_json::from_str(line).map_err(|e| LabelError::Line {
            path: path.to_path_buf(),
            line: number,
            message: format!("not a labeled trace: {e}"),
        })?;
        if !checked {
            check_head(labeler, path, number, &head)?;
            checked = true;
        }
        if let Some(first) = first_line.insert(head.id.clone(), number) {
            return Err(LabelError::Line {
                path: path.to_path_buf(),
                line: number,
                message: format!("duplicate id `{}` (first on line {first})", head.id),
            });
        }
    }
    Ok(first_line.into_keys().collect())
}

/// Refuses a labeled file written with other settings.
fn check_head(labeler: &Labeler, path: &Path, line: usize, head: &Head) -> Result<()> {
    let mismatch = |field: &'static str, expected: String, found: String| LabelError::Mismatch {
        path: path.to_path_buf(),
        line,
        field,
        expected,
        found,
    };
    if head.scorer != labeler.scorer_name() {
        return Err(mismatch(
            "scorer",
            labeler.scorer_name(),
            head.scorer.clone(),
        ));
    }
    if head.unit != labeler.unit_name() {
        return Err(mismatch("unit", labeler.unit_name(), head.unit.clone()));
    }
    let granularity = labeler.config().granularity.name();
    if head.granularity != granularity {
        return Err(mismatch(
            "granularity",
            granularity.to_string(),
            head.granularity.clone(),
        ));
    }
    let list = |r: &mut dyn Iterator<Item = f64>| r.map(ratio_label).collect::<Vec<_>>().join(",");
    let expected = list(&mut labeler.config().ratios.iter().copied());
    let found = list(&mut head.variants.iter().map(|v| v.target));
    if expected != found {
        return Err(mismatch("variants[].target", expected, found));
    }
    Ok(())
}

/// Appends `json` as one whole line and syncs it. If the file does not end with a newline (a
/// complete last line without one), a newline goes first.
fn append_line(file: &mut File, path: &Path, json: &str) -> Result<()> {
    let io = |e| LabelError::io(path, e);
    let len = file.metadata().map_err(io)?.len();
    let mut line = String::with_capacity(json.len() + 2);
    if len > 0 {
        file.seek(SeekFrom::End(-1)).map_err(io)?;
        let mut last = [0u8];
        file.read_exact(&mut last).map_err(io)?;
        if last[0] != b'\n' {
            line.push('\n');
        }
    }
    line.push_str(json);
    line.push('\n');
    file.write_all(line.as_bytes()).map_err(io)?;
    file.flush().map_err(io)?;
    file.sync_data().map_err(io)
}

/// Reads a labeled file. Every bad line is an error naming the file and line: invalid JSON
/// (a truncated last line included), a missing or unknown field, a duplicate id.
pub fn read_labeled(path: &Path) -> Result<Vec<LabeledTrace>> {
    let text = std::fs::read_to_string(path).map_err(|e| LabelError::io(path, e))?;
    let mut out = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let labeled: LabeledTrace = serde_json::from_str(line).map_err(|e| LabelError::Line {
            path: path.to_path_buf(),
            line: number,
            message: if index + 1 == text.lines().count() && !text.ends_with('\n') {
                format!("{e} (the last line has no newline: probably truncated by a killed run)")
            } else {
                e.to_string()
            },
        })?;
        if let Some(first) = first_line.insert(labeled.id.clone(), number) {
            return Err(LabelError::Line {
                path: path.to_path_buf(),
                line: number,
                message: format!("duplicate id `{}` (first on line {first})", labeled.id),
            });
        }
        out.push(labeled);
    }
    Ok(out)
}

/// What [`write_variants`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VariantsSummary {
    /// Traces written (variants, plus originals with `keep_original`).
    pub written: usize,
    /// Variants left out because their answer was not the original's.
    pub skipped: usize,
}

/// Writes the compressed variants of `labeled` as a trace file (atomically; schema v1), for
/// `laconic train` (`traces:PATH`). A variant is written when its answer is the one the
/// original completion gives (`preserved`); with `keep_original`, each original trace comes
/// first, at ratio 1 with id `ID@1`.
pub fn write_variants(
    labeled: &[LabeledTrace],
    path: &Path,
    keep_original: bool,
) -> Result<VariantsSummary> {
    let mut traces = Vec::new();
    let mut skipped = 0;
    for l in labeled {
        if keep_original {
            let mut original = l.trace.clone();
            original.id = format!("{}@1", l.trace.id);
            original.ratio = Some(1.0);
            traces.push(original);
        }
        for v in &l.variants {
            if !v.preserved {
                skipped += 1;
                continue;
            }
            // An original kept at ratio 1 and a variant at target 1 would share an id.
            if keep_original && ratio_label(v.target) == "1" {
                continue;
            }
            traces.push(v.trace.clone());
        }
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| LabelError::io(parent, e))?;
    }
    write_traces(path, &traces)?;
    Ok(VariantsSummary {
        written: traces.len(),
        skipped,
    })
}
