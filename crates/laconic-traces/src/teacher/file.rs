//! A teacher that has already answered: traces in a file, matched to problems by question
//! (whitespace-insensitive) or by id, then graded and selected like any other teacher's.

use std::collections::HashMap;

use super::{SampleRequest, Teacher, TeacherSample};
use crate::datasets::DatasetSpec;
use crate::error::{Result, TraceError};
use crate::schema::Trace;

/// Existing traces, indexed by problem.
#[derive(Debug)]
pub struct FileTeacher {
    spec: String,
    traces: Vec<Trace>,
    by_question: HashMap<String, Vec<usize>>,
    by_id: HashMap<String, Vec<usize>>,
}

/// A question with its whitespace collapsed, as the match key.
fn key(question: &str) -> String {
    question.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl FileTeacher {
    /// Reads `spec` (a dataset spec: `traces:PATH`, `jsonl:PATH`, a bare trace file...).
    pub fn read(spec: &str) -> Result<Self> {
        let traces = DatasetSpec::parse(spec)?.load()?;
        Ok(Self::from_traces(format!("file:{spec}"), traces))
    }

    /// Indexes traces that are already in memory.
    pub fn from_traces(spec: String, traces: Vec<Trace>) -> Self {
        let mut by_question: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_id: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, t) in traces.iter().enumerate() {
            by_question.entry(key(&t.question)).or_default().push(i);
            by_id.entry(t.id.clone()).or_default().push(i);
        }
        Self {
            spec,
            traces,
            by_question,
            by_id,
        }
    }

    /// The traces that answer `problem`.
    fn matches(&self, problem: &Trace) -> &[usize] {
        self.by_question
            .get(&key(&problem.question))
            .or_else(|| self.by_id.get(&problem.id))
            .map_or(&[], Vec::as_slice)
    }
}

impl Teacher for FileTeacher {
    fn spec(&self) -> String {
        self.spec.clone()
    }

    fn model(&self) -> Option<String> {
        None
    }

    fn concurrency(&self) -> usize {
        1
    }

    /// All the file's traces for the problem, however many were requested.
    fn samples_for(&self, problem: &Trace, _requested: usize) -> usize {
        self.matches(problem).len()
    }

    fn sample(&self, request: &SampleRequest<'_>) -> Result<TeacherSample> {
        let index = *self
            .matches(request.problem)
            .get(request.index)
            .ok_or_else(|| TraceError::Teacher {
                teacher: self.spec.clone(),
                message: format!(
                    "no trace {} for problem `{}`",
                    request.index, request.problem.id
                ),
            })?;
        let t = &self.traces[index];
        let p = t.provenance.clone().unwrap_or_default();
        Ok(TeacherSample {
            content: format!("#### {}", t.answer.trim()),
            reasoning: Some(t.reasoning.clone()),
            prompt_tokens: p.prompt_tokens,
            completion_tokens: p.completion_tokens,
            reasoning_tokens: p.reasoning_tokens,
            finish_reason: None,
            model: p.model,
            attempts: 0,
        })
    }
}
