//! Answer grading: pull the final answer out of a model's response, normalize it, and compare
//! it with the reference answer.
//!
//! Two graders, one per answer style:
//!
//! - [`Grader::Gsm8k`]: numbers. The answer is read from the text after the last `####`, else
//!   after the last "the answer is" / "final answer" (any case, `**Final Answer**` too), else
//!   from the last `\boxed{}`, else (a lenient fallback) it is the last number in the response.
//!   From the chosen span it takes the first number, so `$1,600.`, `18 dollars` and `5 apples`
//!   read as `1600`, `18` and `5`. Answers compare as numbers (relative tolerance 1e-6).
//! - [`Grader::Math`]: LaTeX. The answer is the last `\boxed{}` (`\fbox{}`, `\boxed 5`), else
//!   the rest of the last `####` line, else what follows the last "final answer is". It is
//!   normalized (see [`Grader::extract`]) and compared as a number when both sides are numbers,
//!   element by element for tuples, intervals, sets and matrices, else as a string.
//!
//! The same rules read a reference answer ([`Grader::gold`]): a full solution, or a bare
//! answer. [`grade_file`] grades a JSONL file of `{"output", "gold"}` lines.

mod compare;
pub(crate) mod extract;
mod latex;
mod number;

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::error::Result;
use crate::jsonl::{self, line_error};
use crate::schema::json_kind;

/// How a dataset's answers are extracted and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grader {
    /// Numeric answers (GSM8K): canonical decimal strings, compared as numbers.
    Gsm8k,
    /// LaTeX answers (MATH, MATH-500): normalized LaTeX, compared as numbers, lists or strings.
    Math,
}

/// The outcome of grading one response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Graded {
    /// The response's final answer, normalized; `None` when none was found.
    pub extracted: Option<String>,
    /// The reference answer, normalized; `None` when it holds no answer.
    pub gold: Option<String>,
    /// Whether both were found and are equivalent.
    pub correct: bool,
}

/// Counts from [`grade_file`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GradeSummary {
    /// Lines graded.
    pub total: usize,
    /// Lines whose answer was correct.
    pub correct: usize,
    /// Lines whose response held no answer the grader could find.
    pub unextracted: usize,
    /// `correct / total` (0 for an empty file).
    pub accuracy: f64,
}

impl Grader {
    /// Parses a grader name: `gsm8k`, or `math` / `math500` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "gsm8k" => Some(Self::Gsm8k),
            "math" | "math500" | "math-500" => Some(Self::Math),
            _ => None,
        }
    }

    /// The grader's name, as [`Grader::parse`] reads it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Gsm8k => "gsm8k",
            Self::Math => "math",
        }
    }

    /// The final answer of a model's full response, normalized; `None` if there is none.
    ///
    /// GSM8K, in this order: the first number after the last `####`; after the last "the
    /// answer is" or "final answer" (any case); in the last `\boxed{}`; else the last number
    /// anywhere in the text (lenient: a response that never states its answer is still read).
    /// A marker with no number after it falls through to the next rule. Numbers may carry
    /// thousands separators, a `$`, a sign, decimals and trailing words; the result is a
    /// canonical decimal (`1,600` -> `1600`, `18.00` -> `18`, `-3`, `0.5`).
    ///
    /// MATH: the last `\boxed{...}` (nested braces; also `\boxed 5` and `\fbox{}`), else the
    /// rest of the line after the last `####`, else the answer after the last "final answer
    /// is" / "the answer is" (the first `$...$` on its line, or its first sentence); then
    /// normalized: `\left`/`\right`, thin spaces (`\!` `\,` `\;` `\:`), `$`, `\%`/`%`,
    /// degrees (`^\circ`), a trailing `.`, and all whitespace go; `\text{}`, `\textbf{}`,
    /// `\mbox{}` and similar give their content, but a group of unit words after a value
    /// (`\text{ cm}^2`) is dropped, as are plain unit words after a number (`10 cm`); `\dfrac`
    /// and `\tfrac` become `\frac`; `\frac12` becomes `\frac{1}{2}` and `\sqrt2` `\sqrt{2}`;
    /// `^{2}` becomes `^2`; a leading single-variable assignment (`x = `, `x \in`) goes; a
    /// fraction of simple terms becomes `a/b` (`\frac{\pi}{2}` -> `\pi/2`); `(C)` becomes
    /// `C`; a number is written canonically (`.5` -> `0.5`, `05` -> `5`, `0.50` -> `0.5`,
    /// `10{,}000` -> `10000`).
    pub fn extract(&self, output: &str) -> Option<String> {
        match self {
            Self::Gsm8k => extract_gsm8k(output),
            Self::Math => {
                let raw = extract::last_boxed(output)
                    .or_else(|| after_hashes(output).map(first_line))
                    .or_else(|| extract::after_answer_marker(output))?;
                non_empty(latex::normalize(raw))
            }
        }
    }

    /// A reference answer, normalized: a full GSM8K solution ending in `#### n`, a MATH
    /// solution with `\boxed{}`, or a bare answer (`1,600`, `\frac{14}{3}`).
    ///
    /// GSM8K: the first number after the last `####`, else in the last `\boxed{}`, else the
    /// first number of the text. MATH: the last `\boxed{}`, else the line after the last
    /// `####`, else the whole text; normalized as in [`Grader::extract`].
    pub fn gold(&self, gold: &str) -> Option<String> {
        match self {
            Self::Gsm8k => after_hashes(gold)
                .and_then(number::first_number)
                .or_else(|| extract::last_boxed(gold).and_then(number::first_number))
                .or_else(|| number::first_number(gold)),
            Self::Math => {
                let raw = extract::last_boxed(gold)
                    .or_else(|| after_hashes(gold).map(first_line))
                    .unwrap_or(gold);
                non_empty(latex::normalize(raw))
            }
        }
    }

    /// Whether two answers are the same. GSM8K: as numbers, within a relative tolerance of
    /// 1e-6 (as strings if either is not a number). MATH: as normalized strings, as numbers
    /// when both are numbers (decimals, `a/b`, `\frac{a}{b}`, mixed numbers), as words ignoring
    /// case, or element by element for tuples and intervals (in order, same brackets), sets,
    /// unions and comma lists (any order) and matrices (row by row). Made for normalized
    /// answers; MATH normalizes again (it is idempotent), so raw LaTeX works too.
    pub fn equivalent(&self, a: &str, b: &str) -> bool {
        match self {
            Self::Gsm8k => {
                let value = |s: &str| number::parse_decimal(s).and_then(|d| d.parse::<f64>().ok());
                match (value(a), value(b)) {
                    (Some(x), Some(y)) => number::close(x, y),
                    _ => a.trim() == b.trim(),
                }
            }
            Self::Math => compare::equivalent(a, b),
        }
    }

    /// Grades a full response against a reference answer ([`Grader::gold`] reads it).
    pub fn grade(&self, output: &str, gold: &str) -> Graded {
        let extracted = self.extract(output);
        let gold = self.gold(gold);
        let correct = match (&extracted, &gold) {
            (Some(e), Some(g)) => self.equivalent(e, g),
            _ => false,
        };
        Graded {
            extracted,
            gold,
            correct,
        }
    }
}

/// The GSM8K extraction rules, in priority order.
fn extract_gsm8k(output: &str) -> Option<String> {
    if let Some(n) = after_hashes(output).and_then(number::first_number) {
        return Some(n);
    }
    let marker = extract::last_marker_end(output, &["answer is", "final answer"]);
    if let Some(n) = marker.and_then(|end| number::first_number(&output[end..])) {
        return Some(n);
    }
    if let Some(n) = extract::last_boxed(output).and_then(number::first_number) {
        return Some(n);
    }
    number::last_number(output)
}

/// The text after the last `####`.
fn after_hashes(text: &str) -> Option<&str> {
    text.rfind("####").map(|at| &text[at + 4..])
}

/// The first line of `text`, trimmed.
fn first_line(text: &str) -> &str {
    text.trim_start().lines().next().unwrap_or("").trim()
}

/// `Some(s)` unless `s` is empty.
fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Grades a JSONL file of `{"output": ..., "gold": ...}` lines (other fields are kept but not
/// read; `gold` may also be a JSON number; blank lines are skipped).
///
/// If `out` is given it is written atomically with one JSON object per graded line, in input
/// order: the input line's fields as they were, plus `"extracted"` (string or null) and
/// `"correct"` (bool), which replace fields of those names. A line that is not a JSON object,
/// lacks `output` or `gold`, has one of the wrong type, or whose gold holds no answer is an
/// error naming `file:line`, and nothing is written.
pub fn grade_file(grader: Grader, input: &Path, out: Option<&Path>) -> Result<GradeSummary> {
    let lines = jsonl::read_lines(input)?;
    let mut rows: Vec<String> = Vec::with_capacity(if out.is_some() { lines.len() } else { 0 });
    let mut summary = GradeSummary {
        total: 0,
        correct: 0,
        unextracted: 0,
        accuracy: 0.0,
    };
    for line in &lines {
        let value: Value = jsonl::parse_line(input, line)?;
        let err = |message: String| line_error(input, line.number, message);
        let Some(object) = value.as_object() else {
            return Err(err(format!(
                "expected a JSON object, found {}",
                json_kind(&value)
            )));
        };
        let output = match object.get("output") {
            None => return Err(err("missing field `output`".into())),
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(err(format!(
                    "field `output` must be a string, found {}",
                    json_kind(other)
                )));
            }
        };
        let gold_text = match object.get("gold") {
            None => return Err(err("missing field `gold`".into())),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(err(format!(
                    "field `gold` must be a string or a number, found {}",
                    json_kind(other)
                )));
            }
        };
        let graded = grader.grade(output, &gold_text);
        if graded.gold.is_none() {
            return Err(err(format!(
                "field `gold` holds no {} answer: {gold_text:?}",
                grader.name()
            )));
        }
        summary.total += 1;
        summary.correct += usize::from(graded.correct);
        summary.unextracted += usize::from(graded.extracted.is_none());
        if out.is_some() {
            rows.push(graded_row(&line.text, &value, &graded));
        }
    }
    if summary.total > 0 {
        summary.accuracy = summary.correct as f64 / summary.total as f64;
    }
    if let Some(out) = out {
        jsonl::write_atomic(out, |writer| {
            for row in &rows {
                writer.write_all(row.as_bytes())?;
                writer.write_all(b"\n")?;
            }
            Ok(())
        })?;
    }
    Ok(summary)
}

/// One output line: the input line as written with `extracted` and `correct` appended, so the
/// input's fields keep their order and formatting; if the input already has either field, the
/// object is rebuilt with them replaced.
fn graded_row(text: &str, value: &Value, graded: &Graded) -> String {
    let extracted = match &graded.extracted {
        Some(s) => Value::String(s.clone()),
        None => Value::Null,
    };
    let has_own = value
        .as_object()
        .is_some_and(|o| o.contains_key("extracted") || o.contains_key("correct"));
    let body = text.trim().strip_suffix('}');
    match body {
        Some(body) if !has_own => format!(
            "{},\"extracted\":{},\"correct\":{}}}",
            body.trim_end(),
            extracted,
            graded.correct
        ),
        _ => {
            let mut object = value.as_object().cloned().unwrap_or_default();
            object.insert("extracted".into(), extracted);
            object.insert("correct".into(), Value::Bool(graded.correct));
            Value::Object(object).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gsm(output: &str) -> Option<String> {
        Grader::Gsm8k.extract(output)
    }

    #[test]
    fn parse_names() {
        assert_eq!(Grader::parse("gsm8k"), Some(Grader::Gsm8k));
        assert_eq!(Grader::parse("GSM8K"), Some(Grader::Gsm8k));
        assert_eq!(Grader::parse("math"), Some(Grader::Math));
        assert_eq!(Grader::parse("math500"), Some(Grader::Math));
        assert_eq!(Grader::parse("aime"), None);
        for g in [Grader::Gsm8k, Grader::Math] {
            assert_eq!(Grader::parse(g.name()), Some(g));
        }
    }

    #[test]
    fn gsm8k_hashes_with_thousands_separator() {
        let out = "He pays 2 * 800 = $1,600 for both.\n#### 1,600";
        assert_eq!(gsm(out).as_deref(), Some("1600"));
    }

    #[test]
    fn gsm8k_the_last_hashes_win() {
        let out = "#### 12\nWait, I forgot the tax.\n#### 14";
        assert_eq!(gsm(out).as_deref(), Some("14"));
    }

    #[test]
    fn gsm8k_the_answer_is_with_dollar_and_period() {
        let out =
            "Janet sells 16 - 3 - 4 = 9 eggs and makes 9 * 2 = 18 dollars.\nThe answer is $18.";
        assert_eq!(gsm(out).as_deref(), Some("18"));
    }

    #[test]
    fn gsm8k_final_answer_markdown() {
        let out = "Step 1: 5 + 7 = 12.\n\n**Final Answer**\n\n42 marbles in all";
        assert_eq!(gsm(out).as_deref(), Some("42"));
        let out = "Final answer: 7 (after 3 days)";
        assert_eq!(gsm(out).as_deref(), Some("7"));
    }

    #[test]
    fn gsm8k_negative_decimal_percent_units() {
        assert_eq!(
            gsm("The temperature drops from 5 to -3.\nThe answer is -3").as_deref(),
            Some("-3")
        );
        assert_eq!(
            gsm("Each costs 6 / 3 = 2, so in total 18.00\n#### 18.00").as_deref(),
            Some("18")
        );
        assert_eq!(gsm("#### 0.5").as_deref(), Some("0.5"));
        assert_eq!(
            gsm("She gives away 2 and keeps the rest.\nThe answer is 5 apples.").as_deref(),
            Some("5")
        );
        assert_eq!(
            gsm("The increase is 25/100 of the price.\nThe answer is 25%.").as_deref(),
            Some("25")
        );
    }

    #[test]
    fn gsm8k_boxed_and_last_number_fallbacks() {
        assert_eq!(
            gsm("So she has $3 + 4 = 7$ left: $\\boxed{7}$").as_deref(),
            Some("7")
        );
        // No marker and no box: the last number (lenient).
        assert_eq!(gsm("3 + 4 = 7, then 7 * 2 = 14").as_deref(), Some("14"));
        // A marker without a number falls through.
        assert_eq!(gsm("We get 9.\n####").as_deref(), Some("9"));
        assert_eq!(gsm("I do not know."), None);
    }

    #[test]
    fn gsm8k_gold_forms() {
        let g = Grader::Gsm8k;
        assert_eq!(
            g.gold("Step 48/2=<<48/2=24>>24\n#### 72").as_deref(),
            Some("72")
        );
        assert_eq!(g.gold("1,600").as_deref(), Some("1600"));
        assert_eq!(g.gold("-3").as_deref(), Some("-3"));
        assert_eq!(g.gold("\\boxed{12}").as_deref(), Some("12"));
        assert_eq!(g.gold("none"), None);
    }

    #[test]
    fn gsm8k_equivalence_is_numeric() {
        let g = Grader::Gsm8k;
        assert!(g.equivalent("18", "18.0"));
        assert!(g.equivalent("1600", "1,600"));
        assert!(!g.equivalent("18", "180"));
        assert!(!g.equivalent("-3", "3"));
        assert!(g.grade("#### 1,600", "1600").correct);
        assert!(!g.grade("The answer is 180.", "#### 18").correct);
    }

    #[test]
    fn math_extracts_nested_box() {
        let out = "Since $\\sin 60^\\circ = \\frac{\\sqrt{3}}{2}$, we get $\\boxed{\\frac{\\sqrt{3}}{2}}$.";
        let g = Grader::Math;
        assert_eq!(g.extract(out).as_deref(), Some("\\sqrt{3}/2"));
        assert!(g.grade(out, "\\frac{\\sqrt3}{2}").correct);
        assert!(!g.grade(out, "\\frac{\\sqrt{2}}{2}").correct);
    }

    #[test]
    fn math_dfrac_degrees_percent_choice() {
        let g = Grader::Math;
        assert!(
            g.grade("Thus $p = \\boxed{\\dfrac{14}{3}}$.", "\\frac{14}{3}")
                .correct
        );
        assert!(g.grade("The angle is $\\boxed{30^\\circ}$.", "30").correct);
        assert!(
            g.grade("The angle is $\\boxed{30^{\\circ}}$.", "30^\\circ")
                .correct
        );
        assert!(g.grade("It grows by $\\boxed{10\\%}$.", "10").correct);
        assert!(
            g.grade("The answer is $\\boxed{\\text{(A)}}$", "\\text{(A)}")
                .correct
        );
        assert!(
            g.grade("The answer is (A). \\boxed{A}", "\\text{(A)}")
                .correct
        );
        assert!(!g.grade("\\boxed{\\text{(B)}}", "\\text{(A)}").correct);
    }

    #[test]
    fn math_polar_point_and_halves() {
        let g = Grader::Math;
        let gold = "\\left( 3, \\frac{\\pi}{2} \\right)";
        assert!(
            g.grade("so $(r,\\theta) = \\boxed{(3, \\pi/2)}$", gold)
                .correct
        );
        assert!(
            g.grade("$\\boxed{\\left(3,\\frac{\\pi}{2}\\right)}$", gold)
                .correct
        );
        assert!(!g.grade("$\\boxed{(3, \\pi)}$", gold).correct);
        assert!(g.grade("$\\boxed{0.50}$", "\\frac12").correct);
        assert!(!g.grade("$\\boxed{\\frac{2}{1}}$", "\\frac{1}{2}").correct);
    }

    #[test]
    fn math_hashes_and_final_answer_fallbacks() {
        let g = Grader::Math;
        assert_eq!(
            g.extract("We find x.\n#### \\frac{14}{3}\n").as_deref(),
            Some("14/3")
        );
        assert_eq!(
            g.extract("Final Answer: The final answer is $-\\frac{3}{8}$. I hope it is correct.")
                .as_deref(),
            Some("-3/8")
        );
        assert_eq!(g.extract("I could not solve it."), None);
        assert_eq!(g.extract("\\boxed{}"), None);
    }

    #[test]
    fn math_gold_forms() {
        let g = Grader::Math;
        assert_eq!(
            g.gold("so it is $\\boxed{\\dfrac{33}{100}}$.").as_deref(),
            Some("33/100")
        );
        assert_eq!(g.gold("\\$18.90").as_deref(), Some("18.9"));
        assert_eq!(g.gold("x=5").as_deref(), Some("5"));
    }

    #[test]
    fn graded_row_appends_fields_in_place() {
        let graded = Graded {
            extracted: Some("18".into()),
            gold: Some("18".into()),
            correct: true,
        };
        let text = "{\"id\": 7, \"output\": \"#### 18\", \"gold\": \"18\"}";
        let value: Value = serde_json::from_str(text).expect("json");
        assert_eq!(
            graded_row(text, &value, &graded),
            "{\"id\": 7, \"output\": \"#### 18\", \"gold\": \"18\",\"extracted\":\"18\",\"correct\":true}"
        );
        let text = r#"{"output": "x", "gold": "18", "correct": false}"#;
        let value: Value = serde_json::from_str(text).expect("json");
        let row: Value = serde_json::from_str(&graded_row(text, &value, &graded)).expect("json");
        assert_eq!(row["correct"], Value::Bool(true));
        assert_eq!(row["extracted"], Value::String("18".into()));
    }
}
