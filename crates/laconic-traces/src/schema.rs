//! The trace schema: one reasoning trace per JSONL line, versioned.
//!
//! A trace holds a question, the reasoning a model (or a human) wrote for it, and the final
//! answer that reasoning states. The student learns [`Trace::completion`] as the response to
//! [`Trace::prompt`]. Compressed variants carry the compression `ratio`, which the prompt
//! states with a control string ([`ratio_control`], as in TokenSkip), so that one student can
//! learn several lengths.
//!
//! Reading is strict: every line must carry `"schema"`, a version newer than
//! [`SCHEMA_VERSION`] is refused (by name, before any other field is looked at), unknown fields
//! are refused, and every error names `file:line`. Writing is durable: [`write_traces`]
//! replaces a file atomically, [`append_trace`] appends one whole line and syncs it. A process
//! killed in the middle of an append leaves at most one truncated last line, which
//! [`read_traces`] reports by line number and [`drop_incomplete_tail`] removes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TraceError};
use crate::jsonl::{self, Line, line_error};

/// The trace schema version this build writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// One reasoning trace: a JSONL line of a trace file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trace {
    /// The schema version ([`SCHEMA_VERSION`] when written by this build). Required.
    pub schema: u32,
    /// An id unique within its file, e.g. `gsm8k/test/17`.
    pub id: String,
    /// An optional system message for the chat template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The question, as the user asks it (never empty).
    pub question: String,
    /// The reasoning text, without the final-answer line.
    pub reasoning: String,
    /// The final answer as the trace states it, e.g. `18` or `\frac{14}{3}`.
    pub answer: String,
    /// The reference answer, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold: Option<String>,
    /// The compression ratio (kept / original reasoning tokens) of a compressed variant, in
    /// `(0, 1]`; `None` for an uncompressed trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Where the trace came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// Where a trace came from: the problem's source, and the teacher that wrote the reasoning.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The problem's origin, `<dataset>:<file>:<line>`, e.g. `gsm8k:data/gsm8k/test.jsonl:17`.
    pub source: String,
    /// Who wrote the reasoning: `human` for a dataset's own solution, an endpoint, a checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<String>,
    /// The teacher model's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The sampling settings used (free-form JSON: temperature, top_p, seed...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<serde_json::Value>,
    /// When the trace was made (RFC 3339 recommended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// How many tokens the reasoning took, in the teacher's tokenizer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// Tokens in the prompt the teacher saw, as the teacher counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// Tokens the teacher generated for this answer (reasoning and answer together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// Anything else worth keeping (e.g. a MATH problem's subject and level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Trace {
    /// The user message: the question, plus the ratio control string on its own line when
    /// `ratio` is set (`"<question>\n[compress 0.5]"`).
    pub fn prompt(&self) -> String {
        match self.ratio {
            Some(ratio) => format!("{}\n{}", self.question.trim_end(), ratio_control(ratio)),
            None => self.question.clone(),
        }
    }

    /// What the student learns to write: the reasoning, then one uniform final-answer line
    /// that both graders read: `reasoning.trim_end() + "\n#### " + answer`. With empty
    /// reasoning it is the answer line alone.
    pub fn completion(&self) -> String {
        let reasoning = self.reasoning.trim_end();
        let answer = self.answer.trim();
        if reasoning.is_empty() {
            format!("#### {answer}")
        } else {
            format!("{reasoning}\n#### {answer}")
        }
    }

    /// Checks what serde cannot: a non-empty id and question, a ratio in `(0, 1]`.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        if self.id.trim().is_empty() {
            return Err("empty `id`".into());
        }
        if self.question.trim().is_empty() {
            return Err("empty `question`".into());
        }
        if let Some(ratio) = self.ratio
            && !(ratio > 0.0 && ratio <= 1.0)
        {
            return Err(format!("`ratio` must be in (0, 1], found {ratio}"));
        }
        if self.schema == 0 || self.schema > SCHEMA_VERSION {
            return Err(format!(
                "`schema` must be between 1 and {SCHEMA_VERSION}, found {}",
                self.schema
            ));
        }
        Ok(())
    }
}

/// The control string for a compression ratio (TokenSkip-style), which [`Trace::prompt`]
/// appends to the question on its own line: `[compress 0.5]`. The ratio is written with at
/// most 2 decimals and no trailing zeros (`0.5`, `0.75`, `1`); so `0.333` reads `0.33`.
pub fn ratio_control(ratio: f64) -> String {
    let fixed = format!("{ratio:.2}");
    let short = fixed.trim_end_matches('0').trim_end_matches('.');
    format!("[compress {short}]")
}

/// The control string for a reasoning budget in tokens, which a student trained with a length
/// budget (GRPO in `laconic-train`) sees on its own line after the question: `[budget 128]`.
pub fn budget_control(tokens: usize) -> String {
    format!("[budget {tokens}]")
}

/// Reads a trace file (JSONL, one [`Trace`] per line; blank lines skipped).
///
/// Every bad line is an error naming `file:line` and the problem: invalid JSON (including a
/// truncated last line), a missing `schema` or a newer version than [`SCHEMA_VERSION`], a
/// missing or unknown field, an empty `id` or `question`, a `ratio` outside `(0, 1]`, an id
/// already used on an earlier line.
pub fn read_traces(path: &Path) -> Result<Vec<Trace>> {
    let lines = jsonl::read_lines(path)?;
    let mut traces = Vec::with_capacity(lines.len());
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for line in &lines {
        let trace = parse_trace(path, line)?;
        if let Some(first) = first_line.insert(trace.id.clone(), line.number) {
            return Err(line_error(
                path,
                line.number,
                format!("duplicate id `{}` (first on line {first})", trace.id),
            ));
        }
        traces.push(trace);
    }
    Ok(traces)
}

/// Parses and checks one trace line. The version is checked before the fields, so that a line
/// from a newer laconic is refused for its version, not for a field this build does not know.
fn parse_trace(path: &Path, line: &Line) -> Result<Trace> {
    let value: serde_json::Value = jsonl::parse_line(path, line)?;
    let err = |message: String| line_error(path, line.number, message);
    let Some(object) = value.as_object() else {
        return Err(err(format!(
            "expected a JSON object, found {}",
            json_kind(&value)
        )));
    };
    match object.get("schema") {
        None => return Err(err("missing field `schema`".into())),
        Some(version) => match version.as_u64() {
            Some(v) if v > u64::from(SCHEMA_VERSION) => {
                return Err(err(format!(
                    "schema version {v} is newer than this build of laconic reads \
                     (up to {SCHEMA_VERSION}): upgrade laconic"
                )));
            }
            Some(0) => {
                return Err(err(
                    "schema version 0 is invalid (versions start at 1)".into()
                ));
            }
            Some(_) => {}
            None => {
                return Err(err(format!(
                    "field `schema` must be a positive integer, found {version}"
                )));
            }
        },
    }
    let trace: Trace = serde_json::from_value(value).map_err(|e| err(jsonl::json_message(&e)))?;
    trace.check().map_err(err)?;
    Ok(trace)
}

/// The JSON type of a value, for messages.
pub(crate) fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Writes `traces` to `path` atomically: `PATH.tmp` is written, synced and renamed over
/// `path`, so a kill leaves either the old file or the new one. Every trace is checked first
/// (as [`read_traces`] would check it, ids unique); an invalid one writes nothing.
pub fn write_traces(path: &Path, traces: &[Trace]) -> Result<()> {
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for (index, trace) in traces.iter().enumerate() {
        trace.check().map_err(|message| TraceError::InvalidTrace {
            id: trace.id.clone(),
            message,
        })?;
        if let Some(first) = first_index.insert(&trace.id, index) {
            return Err(TraceError::InvalidTrace {
                id: trace.id.clone(),
                message: format!("duplicate id (traces #{first} and #{index})"),
            });
        }
    }
    jsonl::write_atomic(path, |writer| {
        for trace in traces {
            serde_json::to_writer(&mut *writer, trace)?;
            writer.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// Appends one trace to an open trace file as one whole line, then flushes and syncs it
/// (`sync_data`), so that a trace reported written survives a crash.
///
/// Open the file with `OpenOptions::new().read(true).append(true).create(true)`. If the file
/// is readable and does not end with a newline (a previous run was killed mid-line), a newline
/// is written first: the new trace stays whole on its own line, and [`read_traces`] reports the
/// truncated line by number (remove it with [`drop_incomplete_tail`] before appending). The
/// trace is checked first; an invalid one is not written. Ids are not checked against the
/// file's other lines: that is the caller's job (it knows which ids it has done).
pub fn append_trace(file: &mut File, trace: &Trace) -> Result<()> {
    trace.check().map_err(|message| TraceError::InvalidTrace {
        id: trace.id.clone(),
        message,
    })?;
    crate::jsonl::append_json_line(file, trace).map_err(|source| TraceError::Append {
        id: trace.id.clone(),
        source,
    })
}

/// Whether a non-empty file's last byte is not a newline. A handle that cannot be read (opened
/// write-only) reports `false`. The position is left at the end of the file.
pub(crate) fn ends_mid_line(file: &mut File) -> std::io::Result<bool> {
    if file.metadata()?.len() == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    let read = file.read_exact(&mut last);
    file.seek(SeekFrom::End(0))?;
    Ok(read.is_ok() && last[0] != b'\n')
}

/// Removes a truncated last line from a JSONL file: one that has no newline and is not valid
/// JSON, as a process killed in the middle of a write leaves. Returns whether it removed one.
/// A complete last line without a newline is left alone ([`append_trace`] copes with it).
/// Run it before resuming work on a file that a killed run was appending to.
pub fn drop_incomplete_tail(path: &Path) -> Result<bool> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| TraceError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let write_err = |source| TraceError::Write {
        path: path.to_path_buf(),
        source,
    };
    let len = file.metadata().map_err(write_err)?.len();
    // Find the start of the last line by reading backwards in chunks.
    let mut tail: Vec<u8> = Vec::new();
    let mut start = len;
    const CHUNK: u64 = 64 * 1024;
    let line_start = loop {
        if start == 0 {
            break 0;
        }
        let from = start.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (start - from) as usize];
        file.seek(SeekFrom::Start(from)).map_err(write_err)?;
        file.read_exact(&mut chunk).map_err(write_err)?;
        if start == len && chunk.last() == Some(&b'\n') {
            return Ok(false);
        }
        let newline = chunk.iter().rposition(|&b| b == b'\n');
        chunk.extend_from_slice(&tail);
        tail = chunk;
        match newline {
            Some(i) => {
                tail.drain(..=i);
                break from + i as u64 + 1;
            }
            None => start = from,
        }
    };
    if tail.iter().all(u8::is_ascii_whitespace)
        || serde_json::from_slice::<serde_json::Value>(&tail).is_ok()
    {
        return Ok(false);
    }
    file.set_len(line_start).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(id: &str) -> Trace {
        Trace {
            schema: SCHEMA_VERSION,
            id: id.into(),
            system: None,
            question: "Janet has 3 apples and buys 2 more. How many does she have?".into(),
            reasoning: "She has 3 + 2 = 5 apples.\n".into(),
            answer: "5".into(),
            gold: Some("5".into()),
            ratio: None,
            provenance: None,
        }
    }

    #[test]
    fn ratio_control_uses_at_most_two_decimals() {
        assert_eq!(ratio_control(0.5), "[compress 0.5]");
        assert_eq!(ratio_control(0.75), "[compress 0.75]");
        assert_eq!(ratio_control(1.0), "[compress 1]");
        assert_eq!(ratio_control(0.333), "[compress 0.33]");
        assert_eq!(ratio_control(0.9), "[compress 0.9]");
        assert_eq!(ratio_control(0.6), "[compress 0.6]");
        assert_eq!(ratio_control(0.25), "[compress 0.25]");
    }

    #[test]
    fn prompt_adds_the_control_line_only_with_a_ratio() {
        let mut t = trace("a");
        assert_eq!(t.prompt(), t.question);
        t.ratio = Some(0.5);
        let prompt = t.prompt();
        let (question, control) = prompt.rsplit_once('\n').expect("two lines");
        assert_eq!(question, t.question);
        assert_eq!(control, "[compress 0.5]");
    }

    #[test]
    fn completion_ends_with_one_answer_line() {
        let mut t = trace("a");
        assert_eq!(t.completion(), "She has 3 + 2 = 5 apples.\n#### 5");
        t.reasoning = "  \n".into();
        assert_eq!(t.completion(), "#### 5");
    }

    #[test]
    fn check_refuses_bad_ratio_and_empty_fields() {
        let mut t = trace("a");
        assert!(t.check().is_ok());
        for bad in [0.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
            t.ratio = Some(bad);
            assert!(t.check().is_err(), "ratio {bad} must be refused");
        }
        t.ratio = Some(1.0);
        assert!(t.check().is_ok());
        t.question = " ".into();
        assert!(t.check().is_err());
        let mut t = trace("");
        assert!(t.check().is_err());
        t.id = "x".into();
        t.schema = 2;
        assert!(t.check().is_err());
    }

    #[test]
    fn none_fields_are_not_written() {
        let json = serde_json::to_string(&trace("a")).expect("serialize");
        assert!(!json.contains("system"), "{json}");
        assert!(!json.contains("ratio"), "{json}");
        assert!(!json.contains("provenance"), "{json}");
        assert!(json.contains("\"gold\":\"5\""), "{json}");
    }
}
