//! Splitting a reasoning text into steps.
//!
//! A step is the unit that step-level rules judge (is it a re-verification, a restated
//! question, a near-duplicate of an earlier step?). Steps follow the text's own structure:
//!
//! - every non-blank **line** starts a step, and blank lines separate **paragraphs** (each
//!   step records its paragraph);
//! - an R1-style **restart** ("Wait,", "Alternatively,", "Let me check", "Let me
//!   double-check", "Let me verify", "Hmm,", "Hold on", ...) at the start of a sentence starts
//!   a step of its own, which runs to the next restart or the end of the line;
//! - a stretch longer than [`LONG_STEP_CHARS`] is split into its **sentences** (a `.`, `?` or
//!   `!` followed by space and a capital letter, a digit or math; not after `e.g.`, `Mr.` and
//!   the like, and never inside a number such as `2.5`).
//!
//! Spans are byte offsets into the text, so every byte of a step can be traced back. Blank
//! lines and the whitespace around lines belong to no step.

use serde::{Deserialize, Serialize};

/// A stretch of one line longer than this many bytes is split into sentences.
pub const LONG_STEP_CHARS: usize = 100;

/// What opened a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// The start of a line.
    Line,
    /// A sentence within a long line.
    Sentence,
    /// An R1-style restart: "Wait,", "Alternatively,", "Let me check", "Hmm,"...
    Restart,
}

/// One step of a reasoning text: a byte span `[start, end)` with no surrounding whitespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
    /// What opened it.
    pub kind: StepKind,
    /// The 0-based paragraph (paragraphs are separated by blank lines).
    pub paragraph: usize,
    /// The 0-based line of the text it lies on.
    pub line: usize,
}

impl Step {
    /// The step's text.
    pub fn text<'a>(&self, text: &'a str) -> &'a str {
        &text[self.start..self.end]
    }
}

/// Phrases that open an R1-style restart, lower case. A phrase matches at the start of a
/// sentence (after quotes, `*` or `-` bullets) when a non-letter follows it.
const RESTARTS: &[&str] = &[
    "wait",
    "but wait",
    "alternatively",
    "let me check",
    "let me double-check",
    "let me double check",
    "let me verify",
    "let me recheck",
    "let me re-check",
    "let me recalculate",
    "let me recompute",
    "let me reconsider",
    "let me re-examine",
    "let me think again",
    "let me go over",
    "let me recap",
    "let me make sure",
    "let me redo",
    "let's check",
    "let's double-check",
    "let's verify",
    "double-check",
    "double check",
    "hmm",
    "hold on",
    "on second thought",
    "actually,",
];

/// Abbreviations after which a period does not end a sentence, lower case, without the period.
const ABBREVIATIONS: &[&str] = &[
    "e.g", "i.e", "etc", "mr", "mrs", "ms", "dr", "st", "vs", "approx", "no", "fig", "eq", "cf",
];

/// Whether `sentence` (trimmed at its start) opens with a restart phrase.
pub fn is_restart(sentence: &str) -> bool {
    let s = sentence.trim_start_matches(['"', '*', '-', '“']);
    let s = s.trim_start();
    RESTARTS.iter().any(|phrase| {
        let Some(head) = s.get(..phrase.len()) else {
            return false;
        };
        head.eq_ignore_ascii_case(phrase)
            && s[phrase.len()..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphabetic())
    })
}

/// Splits a reasoning text into steps (see the module docs). Steps are in text order, do not
/// overlap, and together cover every non-whitespace byte.
pub fn split_steps(text: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut paragraph = 0usize;
    let mut seen_in_paragraph = false;
    let mut offset = 0usize;
    for (line_no, raw) in text.split('\n').enumerate() {
        let line_start = offset;
        offset += raw.len() + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            if seen_in_paragraph {
                paragraph += 1;
                seen_in_paragraph = false;
            }
            continue;
        }
        seen_in_paragraph = true;
        let start = line_start + (raw.len() - raw.trim_start().len());
        let end = start + trimmed.len();
        split_line(text, start, end, paragraph, line_no, &mut steps);
    }
    steps
}

/// Splits one trimmed line `text[start..end]` into steps.
fn split_line(
    text: &str,
    start: usize,
    end: usize,
    paragraph: usize,
    line: usize,
    steps: &mut Vec<Step>,
) {
    let sentences = sentence_starts(&text[start..end]);
    // Segments: the line's start and each restart sentence open one.
    let mut segments: Vec<(usize, usize, StepKind)> = Vec::new();
    for (i, &rel) in sentences.iter().enumerate() {
        let s = start + rel;
        let restart = is_restart(&text[s..end]);
        if i == 0 {
            let kind = if restart {
                StepKind::Restart
            } else {
                StepKind::Line
            };
            segments.push((s, end, kind));
        } else if restart {
            if let Some(last) = segments.last_mut() {
                last.1 = s;
            }
            segments.push((s, end, StepKind::Restart));
        }
    }
    for (seg_start, seg_end, kind) in segments {
        let seg_end = seg_start + text[seg_start..seg_end].trim_end().len();
        if seg_end - seg_start <= LONG_STEP_CHARS {
            steps.push(Step {
                start: seg_start,
                end: seg_end,
                kind,
                paragraph,
                line,
            });
            continue;
        }
        let inner: Vec<usize> = sentence_starts(&text[seg_start..seg_end])
            .into_iter()
            .map(|rel| seg_start + rel)
            .collect();
        for (i, &s) in inner.iter().enumerate() {
            let e = inner.get(i + 1).copied().unwrap_or(seg_end);
            let e = s + text[s..e].trim_end().len();
            steps.push(Step {
                start: s,
                end: e,
                kind: if i == 0 { kind } else { StepKind::Sentence },
                paragraph,
                line,
            });
        }
    }
}

/// The sentences of `text[start..end]` (a step), as byte spans of `text` without trailing
/// whitespace, split as long lines are (see the module docs).
pub fn sentence_spans(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    let starts: Vec<usize> = sentence_starts(&text[start..end])
        .into_iter()
        .map(|rel| start + rel)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let e = starts.get(i + 1).copied().unwrap_or(end);
            (s, s + text[s..e].trim_end().len())
        })
        .collect()
}

/// Byte offsets (within `line`, which has no leading whitespace) where sentences start; the
/// first is always 0.
fn sentence_starts(line: &str) -> Vec<usize> {
    let bytes = line.as_bytes();
    let mut starts = vec![0];
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if matches!(c, b'.' | b'?' | b'!') && ends_sentence(line, i) {
            // Skip closing quotes and brackets, then the whitespace.
            let mut j = i + 1;
            while j < bytes.len() && matches!(bytes[j], b'"' | b')' | b'\'') {
                j += 1;
            }
            let ws = j;
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            if j > ws && j < bytes.len() && opens_sentence(&line[j..]) {
                starts.push(j);
            }
            i = j.max(i + 1);
            continue;
        }
        i += 1;
    }
    starts
}

/// Whether the `.`/`?`/`!` at byte `i` can end a sentence (it is not inside a number and
/// does not end an abbreviation).
fn ends_sentence(line: &str, i: usize) -> bool {
    let bytes = line.as_bytes();
    if bytes[i] != b'.' {
        return true;
    }
    if bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit()) {
        return false;
    }
    let word_start = line[..i]
        .rfind(|c: char| c.is_whitespace() || c == '(')
        .map_or(0, |p| p + 1);
    let word = line[word_start..i].to_ascii_lowercase();
    !ABBREVIATIONS.contains(&word.as_str())
}

/// Whether a sentence can start at `rest`: an upper-case letter, a digit, math (`$`, `\`,
/// `(`), a quote or a bullet, or a lower-case restart phrase ("wait,").
fn opens_sentence(rest: &str) -> bool {
    let Some(c) = rest.chars().next() else {
        return false;
    };
    c.is_uppercase()
        || c.is_ascii_digit()
        || matches!(c, '$' | '\\' | '(' | '"' | '“' | '*' | '-')
        || is_restart(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(text: &'a str, steps: &[Step]) -> Vec<&'a str> {
        steps.iter().map(|s| s.text(text)).collect()
    }

    #[test]
    fn lines_are_steps_and_blank_lines_separate_paragraphs() {
        let text = "First line.\nSecond line.\n\n  Third, after a blank line.  \n";
        let steps = split_steps(text);
        assert_eq!(
            texts(text, &steps),
            ["First line.", "Second line.", "Third, after a blank line."]
        );
        let paragraphs: Vec<usize> = steps.iter().map(|s| s.paragraph).collect();
        assert_eq!(paragraphs, [0, 0, 1]);
        let lines: Vec<usize> = steps.iter().map(|s| s.line).collect();
        assert_eq!(lines, [0, 1, 3]);
        assert!(steps.iter().all(|s| s.kind == StepKind::Line));
    }

    #[test]
    fn short_lines_keep_their_sentences_together() {
        let text = "She has 3 apples. She buys 2 more.";
        let steps = split_steps(text);
        assert_eq!(texts(text, &steps), [text]);
    }

    #[test]
    fn long_lines_split_into_sentences_but_not_inside_numbers_or_abbreviations() {
        let text = "The price is $2.50 per pound, e.g. for apples bought at the market today. \
                    She buys 4 pounds, so she pays 4 * 2.50 = $10. How much change does she get?";
        let steps = split_steps(text);
        assert_eq!(
            texts(text, &steps),
            [
                "The price is $2.50 per pound, e.g. for apples bought at the market today.",
                "She buys 4 pounds, so she pays 4 * 2.50 = $10.",
                "How much change does she get?",
            ]
        );
        assert_eq!(steps[0].kind, StepKind::Line);
        assert_eq!(steps[1].kind, StepKind::Sentence);
    }

    #[test]
    fn restarts_open_their_own_step_even_in_a_short_line() {
        let text = "So 16 - 3 = 13. Wait, she also bakes with 4. Hmm, so 13 - 4 = 9.";
        let steps = split_steps(text);
        assert_eq!(
            texts(text, &steps),
            [
                "So 16 - 3 = 13.",
                "Wait, she also bakes with 4.",
                "Hmm, so 13 - 4 = 9."
            ]
        );
        let kinds: Vec<StepKind> = steps.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [StepKind::Line, StepKind::Restart, StepKind::Restart]
        );
    }

    #[test]
    fn sentence_spans_split_a_step() {
        let text = "x Wait, let me check. 16 - 3 = 13. Yes.";
        let spans = sentence_spans(text, 2, text.len());
        let got: Vec<&str> = spans.iter().map(|&(s, e)| &text[s..e]).collect();
        assert_eq!(got, ["Wait, let me check.", "16 - 3 = 13.", "Yes."]);
    }

    #[test]
    fn restart_phrases_need_a_word_boundary() {
        assert!(is_restart("Wait, that is wrong."));
        assert!(is_restart("Let me double-check: 3 + 4 = 7."));
        assert!(is_restart("**Alternatively**, use the formula."));
        assert!(is_restart("hmm."));
        assert!(!is_restart("Waiters earn $5 an hour."));
        assert!(!is_restart("Let me see."));
    }

    #[test]
    fn steps_cover_every_non_whitespace_byte_in_order() {
        let text = "A b. C d!\n\nWait, e? F.\r\n  g h.  ";
        let steps = split_steps(text);
        let mut covered = vec![false; text.len()];
        let mut last_end = 0;
        for s in &steps {
            assert!(s.start >= last_end && s.end > s.start);
            last_end = s.end;
            covered[s.start..s.end].iter_mut().for_each(|c| *c = true);
        }
        for (i, b) in text.bytes().enumerate() {
            if !b.is_ascii_whitespace() {
                assert!(covered[i], "byte {i} ({}) not covered", b as char);
            }
        }
    }
}
