//! Dataset readers: GSM8K and MATH-500 problem files, trace files, and generic JSONL, all read
//! as [`Trace`]s.
//!
//! A [`DatasetSpec`] names a file and how to read it (`gsm8k:PATH`, `math500:PATH`,
//! `traces:PATH` or a bare path for a trace file, `jsonl:PATH` or `chat:PATH` for
//! [`read_jsonl`], `procedural:OPTIONS` for generated problems), and knows which [`Grader`]
//! fits it. The datasets' own human solutions become
//! the traces' reasoning, so a dataset is also a set of (human-written) traces.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::error::{Result, TraceError};
use crate::formats::{FieldMap, read_jsonl};
use crate::grade::Grader;
use crate::jsonl::{self, line_error};
use crate::procedural::{ProblemConfig, generate_problems};
use crate::schema::{Provenance, SCHEMA_VERSION, Trace, read_traces};

/// A dataset file and its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetSpec {
    /// GSM8K JSONL (`question`, `answer` ending in `#### n`).
    Gsm8k(PathBuf),
    /// MATH-500 JSONL (`problem`, `solution`, `answer`, `subject`, `level`, `unique_id`).
    Math500(PathBuf),
    /// A laconic trace file (see [`crate::schema`]).
    Traces(PathBuf),
    /// Generic JSONL, or traces in the shapes people have (OpenAI chat `messages`, R1
    /// `<think>` text, DeepSeek `reasoning_content`), read by [`read_jsonl`] with these field
    /// names.
    Jsonl(PathBuf, FieldMap),
    /// Generated arithmetic word problems (`procedural:count=1000,seed=7,difficulty=3`; see
    /// [`crate::procedural`]): a stand-in dataset, made in memory, with no file.
    Procedural(ProblemConfig),
}

/// The prefixes [`DatasetSpec::parse`] knows, for messages.
const PREFIXES: &str = "`gsm8k:PATH`, `math500:PATH`, `traces:PATH`, `jsonl:PATH` (or \
                        `chat:PATH`), `procedural:count=N,seed=S,difficulty=D` or a bare PATH \
                        (traces)";

impl DatasetSpec {
    /// Parses `gsm8k:PATH`, `math500:PATH`, `traces:PATH`, `jsonl:PATH` (also `chat:PATH`,
    /// with the default [`FieldMap`]; see [`DatasetSpec::with_fields`]), `procedural:OPTIONS`
    /// (generated problems; OPTIONS as [`ProblemConfig::parse`] reads them, all optional, so
    /// `procedural:` alone is the default set), or a bare `PATH` (a trace file).
    ///
    /// Text before the first `:` is taken as a prefix when it is at least two characters of
    /// letters, digits, `-` or `_` (so `C:\data\x.jsonl` and `runs/a:b.jsonl` are bare
    /// paths); an unknown prefix is an error that lists the valid ones.
    pub fn parse(s: &str) -> Result<Self> {
        let spec_err = |message: String| TraceError::Spec {
            spec: s.to_string(),
            message,
        };
        if s.trim().is_empty() {
            return Err(spec_err(format!("empty (expected {PREFIXES})")));
        }
        let (prefix, path) = match s.split_once(':') {
            Some((prefix, path))
                if prefix.len() >= 2
                    && prefix
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
            {
                (Some(prefix), path)
            }
            _ => (None, s),
        };
        if prefix.is_some_and(|p| p.eq_ignore_ascii_case("procedural")) {
            return ProblemConfig::parse(path)
                .map(Self::Procedural)
                .map_err(spec_err);
        }
        if prefix.is_some() && path.is_empty() {
            return Err(spec_err("no path after the prefix".into()));
        }
        let path = PathBuf::from(path);
        match prefix.map(str::to_ascii_lowercase).as_deref() {
            None | Some("traces") => Ok(Self::Traces(path)),
            Some("gsm8k") => Ok(Self::Gsm8k(path)),
            Some("math500") | Some("math") => Ok(Self::Math500(path)),
            Some("jsonl") | Some("chat") => Ok(Self::Jsonl(path, FieldMap::default())),
            Some(other) => Err(spec_err(format!(
                "unknown dataset `{other}` (expected {PREFIXES})"
            ))),
        }
    }

    /// Sets the field names a `jsonl:PATH` spec reads with (the CLI's `--question-field` and
    /// similar flags). The other formats have fixed field names, so they are returned
    /// unchanged: a caller that was given field names for them should refuse them (see
    /// [`DatasetSpec::fields`]).
    pub fn with_fields(self, fields: FieldMap) -> Self {
        match self {
            Self::Jsonl(path, _) => Self::Jsonl(path, fields),
            other => other,
        }
    }

    /// The field names of a `jsonl:PATH` spec; `None` for the other formats.
    pub fn fields(&self) -> Option<&FieldMap> {
        match self {
            Self::Jsonl(_, fields) => Some(fields),
            _ => None,
        }
    }

    /// Reads the file as traces, with the reader its format needs (or generates the
    /// procedural problems).
    pub fn load(&self) -> Result<Vec<Trace>> {
        match self {
            Self::Procedural(config) => Ok(generate_problems(config)),
            Self::Gsm8k(path) => read_gsm8k(path),
            Self::Math500(path) => read_math500(path),
            Self::Traces(path) => read_traces(path),
            Self::Jsonl(path, fields) => read_jsonl(path, fields),
        }
    }

    /// The grader for this dataset's answers; `None` for a trace file or generic JSONL, whose
    /// answers may be of either kind (the caller chooses).
    pub fn grader(&self) -> Option<Grader> {
        match self {
            Self::Gsm8k(_) | Self::Procedural(_) => Some(Grader::Gsm8k),
            Self::Math500(_) => Some(Grader::Math),
            Self::Traces(_) | Self::Jsonl(..) => None,
        }
    }

    /// The file; an empty path for `procedural:` problems, which have none (to name a
    /// dataset in messages, use the spec's `Display`, which every kind has).
    pub fn path(&self) -> &Path {
        match self {
            Self::Gsm8k(path) | Self::Math500(path) | Self::Traces(path) => path,
            Self::Jsonl(path, _) => path,
            Self::Procedural(_) => Path::new(""),
        }
    }
}

impl FromStr for DatasetSpec {
    type Err = TraceError;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for DatasetSpec {
    /// The spec in the form [`DatasetSpec::parse`] reads back (`gsm8k:data/gsm8k/test.jsonl`).
    /// A `jsonl:PATH` spec is written without its field names (and `chat:PATH` as `jsonl:PATH`);
    /// a procedural one with all its options (`procedural:count=1000,seed=0,difficulty=2,
    /// distractors=true`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self {
            Self::Procedural(config) => return write!(f, "procedural:{config}"),
            Self::Gsm8k(_) => "gsm8k",
            Self::Math500(_) => "math500",
            Self::Traces(_) => "traces",
            Self::Jsonl(..) => "jsonl",
        };
        write!(f, "{prefix}:{}", self.path().display())
    }
}

/// One GSM8K line.
#[derive(Deserialize)]
struct Gsm8kRecord {
    question: String,
    answer: String,
}

/// Reads a GSM8K JSONL file (`question`, `answer`) as traces.
///
/// The solution in `answer` ends with a line `#### n`. The trace's `reasoning` is the solution
/// before that line with every calculator annotation `<<48/2=24>>` removed; its `answer` is
/// `n` as written (trimmed, e.g. `1,600`); `gold` is `n` normalized by [`Grader::Gsm8k`]
/// (`1600`). The id is `gsm8k/<file stem>/<0-based index>` and `provenance.source` is
/// `gsm8k:<path>:<line>`, with teacher `human`. A solution without `####`, or whose final
/// answer is not a number, is an error naming `file:line`.
pub fn read_gsm8k(path: &Path) -> Result<Vec<Trace>> {
    let stem = file_stem(path);
    let lines = jsonl::read_lines(path)?;
    let mut traces = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let record: Gsm8kRecord = jsonl::parse_line(path, line)?;
        let err = |message: String| line_error(path, line.number, message);
        if record.question.trim().is_empty() {
            return Err(err("empty `question`".into()));
        }
        let Some((solution, last)) = record.answer.rsplit_once("####") else {
            return Err(err(
                "`answer` has no final `#### <number>` line (is this GSM8K?)".into(),
            ));
        };
        let answer = last.trim();
        let Some(gold) = Grader::Gsm8k.gold(answer) else {
            return Err(err(format!(
                "the final answer `{answer}` after `####` is not a number"
            )));
        };
        traces.push(Trace {
            schema: SCHEMA_VERSION,
            id: format!("gsm8k/{stem}/{index}"),
            system: None,
            question: record.question,
            reasoning: strip_calculator_annotations(solution)
                .trim_end()
                .to_string(),
            answer: answer.to_string(),
            gold: Some(gold),
            ratio: None,
            provenance: Some(Provenance {
                source: format!("gsm8k:{}:{}", path.display(), line.number),
                teacher: Some("human".into()),
                ..Provenance::default()
            }),
        });
    }
    Ok(traces)
}

/// Removes GSM8K calculator annotations: every `<<...>>`. An unclosed `<<` is kept as text.
pub fn strip_calculator_annotations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("<<") {
        let Some(close) = rest[open + 2..].find(">>") else {
            break;
        };
        out.push_str(&rest[..open]);
        rest = &rest[open + 2 + close + 2..];
    }
    out.push_str(rest);
    out
}

/// One MATH-500 line.
#[derive(Deserialize)]
struct Math500Record {
    problem: String,
    solution: String,
    answer: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    level: Option<serde_json::Value>,
    #[serde(default)]
    unique_id: Option<String>,
}

/// Reads a MATH-500 JSONL file as traces.
///
/// `question` is `problem`; `reasoning` is the whole `solution` (it ends in the `\boxed{}`
/// answer, which is kept); `answer` and `gold` are the `answer` field; the id is `unique_id`
/// (`test/precalculus/807.json`), or `math500/<file stem>/<0-based index>` when it is absent.
/// `provenance.source` is `math500:<path>:<line>`, its note the subject and level.
pub fn read_math500(path: &Path) -> Result<Vec<Trace>> {
    let stem = file_stem(path);
    let lines = jsonl::read_lines(path)?;
    let mut traces = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let record: Math500Record = jsonl::parse_line(path, line)?;
        if record.problem.trim().is_empty() {
            return Err(line_error(path, line.number, "empty `problem`"));
        }
        let note = match (&record.subject, &record.level) {
            (Some(subject), Some(level)) => Some(format!("{subject}, level {level}")),
            (Some(subject), None) => Some(subject.clone()),
            (None, Some(level)) => Some(format!("level {level}")),
            (None, None) => None,
        };
        let answer = record.answer.trim().to_string();
        traces.push(Trace {
            schema: SCHEMA_VERSION,
            id: record
                .unique_id
                .unwrap_or_else(|| format!("math500/{stem}/{index}")),
            system: None,
            question: record.problem,
            reasoning: record.solution.trim_end().to_string(),
            answer: answer.clone(),
            gold: Some(answer),
            ratio: None,
            provenance: Some(Provenance {
                source: format!("math500:{}:{}", path.display(), line.number),
                teacher: Some("human".into()),
                note,
                ..Provenance::default()
            }),
        });
    }
    Ok(traces)
}

/// The file name without its extension, for ids.
pub(crate) fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_prefixes() {
        assert_eq!(
            DatasetSpec::parse("gsm8k:data/gsm8k/test.jsonl").expect("parse"),
            DatasetSpec::Gsm8k("data/gsm8k/test.jsonl".into())
        );
        assert_eq!(
            DatasetSpec::parse("math500:m.jsonl").expect("parse"),
            DatasetSpec::Math500("m.jsonl".into())
        );
        assert_eq!(
            DatasetSpec::parse("traces:t.jsonl").expect("parse"),
            DatasetSpec::Traces("t.jsonl".into())
        );
        assert_eq!(
            DatasetSpec::parse("runs/t.jsonl").expect("parse"),
            DatasetSpec::Traces("runs/t.jsonl".into())
        );
        // A drive letter or a colon inside a path is not a prefix.
        assert_eq!(
            DatasetSpec::parse("C:\\data\\t.jsonl").expect("parse"),
            DatasetSpec::Traces("C:\\data\\t.jsonl".into())
        );
        assert_eq!(
            DatasetSpec::parse("runs/a:b.jsonl").expect("parse"),
            DatasetSpec::Traces("runs/a:b.jsonl".into())
        );
    }

    #[test]
    fn spec_errors() {
        let message = DatasetSpec::parse("gsm9k:x.jsonl")
            .expect_err("unknown prefix")
            .to_string();
        assert!(message.contains("unknown dataset `gsm9k`"), "{message}");
        assert!(message.contains("gsm8k:PATH"), "{message}");
        assert!(message.contains("math500:PATH"), "{message}");
        assert!(DatasetSpec::parse("").is_err());
        assert!(DatasetSpec::parse("gsm8k:").is_err());
    }

    #[test]
    fn spec_display_parses_back_and_picks_grader() {
        for s in [
            "gsm8k:a.jsonl",
            "math500:b.jsonl",
            "traces:c.jsonl",
            "jsonl:d.jsonl",
        ] {
            let spec = DatasetSpec::parse(s).expect("parse");
            assert_eq!(spec.to_string(), s);
            assert_eq!(
                spec.path(),
                Path::new(&s[s.find(':').expect("colon") + 1..])
            );
        }
        assert_eq!(
            DatasetSpec::parse("gsm8k:a").expect("parse").grader(),
            Some(Grader::Gsm8k)
        );
        assert_eq!(
            DatasetSpec::parse("math500:a").expect("parse").grader(),
            Some(Grader::Math)
        );
        assert_eq!(DatasetSpec::parse("a").expect("parse").grader(), None);
    }

    #[test]
    fn procedural_spec_reads_options_and_prints_them_all() {
        let spec = DatasetSpec::parse("procedural:count=30,seed=7,difficulty=3").expect("parse");
        let config = ProblemConfig {
            count: 30,
            seed: 7,
            difficulty: 3,
            distractors: true,
        };
        assert_eq!(spec, DatasetSpec::Procedural(config));
        assert_eq!(
            spec.to_string(),
            "procedural:count=30,seed=7,difficulty=3,distractors=true"
        );
        assert_eq!(DatasetSpec::parse(&spec.to_string()).expect("again"), spec);
        assert_eq!(spec.grader(), Some(Grader::Gsm8k));
        assert_eq!(spec.path(), Path::new(""));
        assert_eq!(spec.fields(), None);
        let traces = spec.load().expect("load");
        assert_eq!(traces.len(), 30);
        assert_eq!(traces[4].id, "procedural/7/4");
        assert_eq!(
            DatasetSpec::parse("procedural:").expect("defaults"),
            DatasetSpec::Procedural(ProblemConfig::default())
        );
        for (bad, key) in [
            ("procedural:count=-3", "`count`"),
            ("procedural:difficulty=9", "`difficulty`"),
            ("procedural:level=2", "`level`"),
        ] {
            let e = DatasetSpec::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(key) && e.contains(bad), "{e}");
        }
        let e = DatasetSpec::parse("gsm9k:x")
            .expect_err("prefix")
            .to_string();
        assert!(e.contains("procedural:"), "{e}");
    }

    #[test]
    fn jsonl_spec_takes_field_names() {
        let spec = DatasetSpec::parse("jsonl:runs/r1.jsonl").expect("parse");
        assert_eq!(
            spec,
            DatasetSpec::Jsonl("runs/r1.jsonl".into(), FieldMap::default())
        );
        assert_eq!(
            DatasetSpec::parse("chat:runs/r1.jsonl").expect("parse"),
            spec
        );
        assert_eq!(spec.to_string(), "jsonl:runs/r1.jsonl");
        assert_eq!(spec.path(), Path::new("runs/r1.jsonl"));
        assert_eq!(spec.grader(), None);
        assert_eq!(spec.fields(), Some(&FieldMap::default()));

        let fields = FieldMap {
            question: "input".into(),
            reasoning: Some("output".into()),
            ..FieldMap::default()
        };
        let spec = spec.with_fields(fields.clone());
        assert_eq!(spec.fields(), Some(&fields));
        assert_eq!(spec.to_string(), "jsonl:runs/r1.jsonl");

        // Formats with fixed field names ignore them.
        let gsm8k = DatasetSpec::parse("gsm8k:g.jsonl").expect("parse");
        assert_eq!(gsm8k.clone().with_fields(fields), gsm8k);
        assert_eq!(gsm8k.fields(), None);

        let message = DatasetSpec::parse("jsnol:x").expect_err("typo").to_string();
        assert!(message.contains("`jsonl:PATH`"), "{message}");
    }

    #[test]
    fn calculator_annotations_are_removed() {
        assert_eq!(
            strip_calculator_annotations("She makes 9 * 2 = $<<9*2=18>>18 every day."),
            "She makes 9 * 2 = $18 every day."
        );
        assert_eq!(
            strip_calculator_annotations("a <<1+1=2>>2 and <<2*3=6>>6"),
            "a 2 and 6"
        );
        assert_eq!(strip_calculator_annotations("x << y"), "x << y");
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn gsm8k_reader_splits_the_answer_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "mini.jsonl",
            concat!(
                r#"{"question": "Q1?", "answer": "It costs 2*800=<<2*800=1600>>1600.\n#### 1,600"}"#,
                "\n\n",
                r#"{"question": "Q2?", "answer": "The change is 2-5=<<2-5=-3>>-3\n#### -3"}"#,
                "\n"
            ),
        );
        let traces = read_gsm8k(&path).expect("read");
        assert_eq!(traces.len(), 2);
        assert_eq!(traces[0].id, "gsm8k/mini/0");
        assert_eq!(traces[0].reasoning, "It costs 2*800=1600.");
        assert_eq!(traces[0].answer, "1,600");
        assert_eq!(traces[0].gold.as_deref(), Some("1600"));
        assert_eq!(traces[1].id, "gsm8k/mini/1");
        assert_eq!(traces[1].gold.as_deref(), Some("-3"));
        let source = &traces[1].provenance.as_ref().expect("provenance").source;
        assert_eq!(source, &format!("gsm8k:{}:3", path.display()));
    }

    #[test]
    fn gsm8k_reader_errors_name_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "bad.jsonl",
            "{\"question\": \"Q?\", \"answer\": \"1\\n#### 1\"}\n{\"question\": \"Q?\", \"answer\": \"no final line\"}\n",
        );
        let message = read_gsm8k(&path).expect_err("no ####").to_string();
        assert!(message.contains("bad.jsonl:2: "), "{message}");
        assert!(message.contains("####"), "{message}");

        let path = write(dir.path(), "nofield.jsonl", "{\"answer\": \"#### 1\"}\n");
        let message = read_gsm8k(&path).expect_err("missing field").to_string();
        assert!(
            message.ends_with("nofield.jsonl:1: missing field `question`"),
            "{message}"
        );

        let path = write(
            dir.path(),
            "word.jsonl",
            "{\"question\": \"Q?\", \"answer\": \"#### many\"}\n",
        );
        let message = read_gsm8k(&path).expect_err("not a number").to_string();
        assert!(message.contains("word.jsonl:1: "), "{message}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let message = read_gsm8k(Path::new("no/such/file.jsonl"))
            .expect_err("missing")
            .to_string();
        assert!(
            message.starts_with("cannot open no/such/file.jsonl: "),
            "{message}"
        );
    }

    #[test]
    fn math500_reader_keeps_the_boxed_solution() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "m.jsonl",
            concat!(
                r#"{"problem": "What is $\\frac{7}{2}+1$?", "solution": "It is $\\boxed{\\frac{9}{2}}$.", "answer": "\\frac{9}{2}", "subject": "Algebra", "level": 1, "unique_id": "test/algebra/1.json"}"#,
                "\n",
                r#"{"problem": "P?", "solution": "$\\boxed{3}$", "answer": "3"}"#,
                "\n"
            ),
        );
        let traces = read_math500(&path).expect("read");
        assert_eq!(traces[0].id, "test/algebra/1.json");
        assert_eq!(traces[0].reasoning, "It is $\\boxed{\\frac{9}{2}}$.");
        assert_eq!(traces[0].answer, "\\frac{9}{2}");
        assert_eq!(traces[0].gold.as_deref(), Some("\\frac{9}{2}"));
        let provenance = traces[0].provenance.as_ref().expect("provenance");
        assert_eq!(provenance.note.as_deref(), Some("Algebra, level 1"));
        assert_eq!(traces[1].id, "math500/m/1");
    }
}
