//! Words, and which of them the math needs.
//!
//! Compression keeps or drops whole **words**: the whitespace-separated pieces of a
//! reasoning text, so that what is left still reads as text. A word is **protected** (always
//! kept, whatever the ratio) when the answer may depend on it:
//!
//! - it holds a digit (`16`, `$18`, `2.5x`, `48/2`, `25%`) or is a number word (`three`,
//!   `half`, `twice`, `dozen`);
//! - it is an operator or bracket (`+`, `-`, `*`, `/`, `=`, `×`, `÷`, `^`, `(`, `)`, ...), or
//!   holds `=` (`x=5`);
//! - it is `x` between two numbers (`0.2 x 50`), or a one-letter variable next to an
//!   operator (`x + 5 = 10`), so that equations keep both sides, or a one-letter variable
//!   that an equation uses anywhere in the text (`Let x be the number of animals` before
//!   `3x-5=16`);
//! - it lies in LaTeX math (`$...$`, `$$...$$`, `\(...\)`, `\[...\]`, `\begin{..}...\end{..}`)
//!   or holds a LaTeX command; only when the text is LaTeX (MATH solutions), since in GSM8K a
//!   `$` is a currency sign;
//! - it lies in a `\boxed{...}`, the final answer a MATH grader reads.

use serde::{Deserialize, Serialize};

/// One whitespace-separated word: the byte span `[start, end)` of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Word {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Word {
    /// The word's text.
    pub fn text<'a>(&self, text: &'a str) -> &'a str {
        &text[self.start..self.end]
    }
}

/// The words of `text`, in order.
pub fn split_words(text: &str) -> Vec<Word> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                words.push(Word { start: s, end: i });
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push(Word {
            start: s,
            end: text.len(),
        });
    }
    words
}

/// Characters that make up operator and bracket words.
const OPERATOR_CHARS: &str = "+-−–*/=×÷^<>≤≥≠±·()[]{}|";

/// Number words, lower case. They are numbers as much as digits are.
const NUMBER_WORDS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
    "hundred",
    "hundreds",
    "thousand",
    "thousands",
    "million",
    "millions",
    "billion",
    "dozen",
    "dozens",
    "half",
    "halves",
    "twice",
    "thrice",
    "double",
    "doubled",
    "triple",
    "tripled",
    "quadruple",
    "quarter",
    "quarters",
    "third",
    "thirds",
    "fourth",
    "fifth",
    "tenth",
    "percent",
];

/// The word with leading and trailing punctuation and quotes removed, in lower case: the
/// form the word lists are written in. `Let's,` → `let's`; `“Janet’s”` → `janet's`.
pub fn normalize(word: &str) -> String {
    word.trim_matches(|c: char| !c.is_alphanumeric())
        .replace('’', "'")
        .to_lowercase()
}

/// Whether a word holds a digit or is a number word.
pub fn is_number(word: &str) -> bool {
    word.chars().any(|c| c.is_ascii_digit()) || NUMBER_WORDS.contains(&normalize(word).as_str())
}

/// Whether a word is made of operator and bracket characters only (`+`, `=`, `(`, `)`...),
/// after a trailing `,`, `.`, `:` or `;`.
pub fn is_operator(word: &str) -> bool {
    let w = word.trim_end_matches([',', '.', ':', ';']);
    !w.is_empty() && w.chars().all(|c| OPERATOR_CHARS.contains(c))
}

/// Whether a word is a one-letter variable (`x`, `n`; any letter but `a` and `I`).
fn is_variable(word: &str) -> bool {
    let w = word.trim_matches(|c: char| !c.is_alphanumeric());
    let mut chars = w.chars();
    matches!((chars.next(), chars.next()), (Some(c), None) if c.is_ascii_alphabetic() && c != 'a' && c != 'I' && c != 'A')
}

/// Which words of `text` are protected (see the module docs); `latex` turns on LaTeX math
/// spans and commands.
pub fn protected(text: &str, words: &[Word], latex: bool) -> Vec<bool> {
    let spans = protected_spans(text, latex);
    let texts: Vec<&str> = words.iter().map(|w| w.text(text)).collect();
    let mut keep: Vec<bool> = words
        .iter()
        .zip(&texts)
        .map(|(w, t)| {
            is_number(t)
                || is_operator(t)
                || t.contains('=')
                || (latex && t.contains('\\'))
                || spans.iter().any(|&(s, e)| w.start < e && s < w.end)
        })
        .collect();
    // Letters that equations use as variables (`3x-5=16`, `7+4x`).
    let variables: Vec<char> = texts
        .iter()
        .zip(&keep)
        .filter(|(t, k)| {
            **k && t.contains(|c: char| c.is_ascii_digit() || OPERATOR_CHARS.contains(c))
        })
        .flat_map(|(t, _)| single_letters(t))
        .filter(|c| !matches!(c, 'a' | 'A' | 'I'))
        .collect();
    // `x` as a times sign, variables next to operators, and a variable that an equation
    // uses, wherever it stands (`Let x be the number of apples`).
    for i in 0..words.len() {
        if keep[i] {
            continue;
        }
        let prev = i.checked_sub(1).map(|j| texts[j]);
        let next = texts.get(i + 1).copied();
        let t = texts[i];
        let times = t.trim_end_matches([',', '.']).eq_ignore_ascii_case("x")
            && prev.is_some_and(is_number)
            && next.is_some_and(is_number);
        let variable = is_variable(t)
            && (prev.is_some_and(|p| is_operator(p) || p.ends_with('='))
                || next.is_some_and(|n| is_operator(n) || n.starts_with('=')));
        let defined = is_variable(t)
            && t.chars()
                .find(char::is_ascii_alphabetic)
                .is_some_and(|c| variables.contains(&c));
        if times || variable || defined {
            keep[i] = true;
        }
    }
    keep
}

/// The letters of a word that stand alone between non-letters (`3x-5=16` gives `x`;
/// `Female:44` gives nothing).
fn single_letters(word: &str) -> Vec<char> {
    let chars: Vec<char> = word.chars().collect();
    (0..chars.len())
        .filter(|&i| {
            chars[i].is_ascii_alphabetic()
                && (i == 0 || !chars[i - 1].is_alphabetic())
                && chars.get(i + 1).is_none_or(|c| !c.is_alphabetic())
        })
        .map(|i| chars[i])
        .collect()
}

/// Byte spans that are protected whole: `\boxed{...}` always; LaTeX math when `latex`.
pub fn protected_spans(text: &str, latex: bool) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    for command in ["\\boxed", "\\fbox"] {
        let mut from = 0;
        while let Some(p) = text[from..].find(command) {
            let start = from + p;
            let end = braced_end(text, start + command.len()).unwrap_or(text.len());
            spans.push((start, end));
            from = end.max(start + command.len());
        }
    }
    if latex {
        spans.extend(math_spans(text));
    }
    spans
}

/// The end of a `{...}` group that starts at `from` (after optional spaces), braces nested
/// and `\{`, `\}` skipped; `None` when no group starts there or it never closes.
fn braced_end(text: &str, from: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = from;
    while i < bytes.len() && bytes[i] == b' ' {
        i += 1;
    }
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    let mut depth = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// LaTeX math spans: `$$...$$`, `$...$`, `\[...\]`, `\(...\)`, `\begin{..}...\end{..}`. An
/// unclosed opener runs to the end of the text.
fn math_spans(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let (open, close) = if rest.starts_with("$$") {
            ("$$", "$$")
        } else if rest.starts_with('$') && (i == 0 || bytes[i - 1] != b'\\') {
            ("$", "$")
        } else if rest.starts_with("\\[") {
            ("\\[", "\\]")
        } else if rest.starts_with("\\(") {
            ("\\(", "\\)")
        } else if rest.starts_with("\\begin{") {
            ("\\begin{", "\\end{")
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let body = i + open.len();
        let end = match find_unescaped(text, body, close) {
            Some(p) if close == "\\end{" => text[p..].find('}').map_or(text.len(), |q| p + q + 1),
            Some(p) => p + close.len(),
            None => text.len(),
        };
        spans.push((i, end));
        i = end.max(i + 1);
    }
    spans
}

/// The first `needle` at or after `from` that is not preceded by a backslash (for `$`).
fn find_unescaped(text: &str, from: usize, needle: &str) -> Option<usize> {
    let mut at = from;
    while let Some(p) = text.get(at..)?.find(needle) {
        let pos = at + p;
        if needle == "$" && pos > 0 && text.as_bytes()[pos - 1] == b'\\' {
            at = pos + 1;
            continue;
        }
        return Some(pos);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protected_words(text: &str, latex: bool) -> Vec<&str> {
        let words = split_words(text);
        let keep = protected(text, &words, latex);
        words
            .iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|(w, _)| w.text(text))
            .collect()
    }

    #[test]
    fn words_are_whitespace_separated_spans() {
        let text = "  Janet sells\t16 - 3 = 13\neggs. ";
        let words: Vec<&str> = split_words(text).iter().map(|w| w.text(text)).collect();
        assert_eq!(
            words,
            ["Janet", "sells", "16", "-", "3", "=", "13", "eggs."]
        );
    }

    #[test]
    fn numbers_operators_and_equations_are_protected() {
        assert_eq!(
            protected_words("Janet sells 16 - 3 - 4 = 9 duck eggs a day.", false),
            ["16", "-", "3", "-", "4", "=", "9"]
        );
        assert_eq!(
            protected_words("She earned 0.2 x 50 = $10. She has half as many.", false),
            ["0.2", "x", "50", "=", "$10.", "half"]
        );
        assert_eq!(
            protected_words("Let x be the cost, so x + 5 = 12 and y=7.", false),
            ["x", "+", "5", "=", "12", "y=7."]
        );
    }

    #[test]
    fn a_variable_that_an_equation_uses_is_protected_where_it_is_defined() {
        assert_eq!(
            protected_words("Let x be the number of animals\n3x-5=16\nx=7", false),
            ["x", "3x-5=16", "x=7"]
        );
        // A letter no equation uses stays a word.
        assert_eq!(
            protected_words("Let n be the count\n3*5=15", false),
            ["3*5=15"]
        );
    }

    #[test]
    fn an_x_that_is_not_between_numbers_is_a_word() {
        assert!(protected_words("Box x holds apples.", false).is_empty());
    }

    #[test]
    fn latex_math_and_boxed_answers_are_protected_only_in_latex_mode() {
        let text = "The roots of $x^2 - 1 = 0$ are easy, so the answer is \\boxed{\\frac{1}{2}}.";
        assert_eq!(
            protected_words(text, true),
            ["$x^2", "-", "1", "=", "0$", "\\boxed{\\frac{1}{2}}."]
        );
        // Without LaTeX, `$` is a currency sign: only numbers, operators and the box.
        assert_eq!(
            protected_words("He pays $5 and then $6 for cake.", false),
            ["$5", "$6"]
        );
        assert_eq!(
            protected_words("so \\boxed{ten apples} it is", false),
            ["\\boxed{ten", "apples}"]
        );
    }

    #[test]
    fn display_math_and_environments_are_spans() {
        let text = "We get \\[ a + b \\] and \\begin{align} p &= q \\end{align} done";
        let spans = protected_spans(text, true);
        let got: Vec<&str> = spans.iter().map(|&(s, e)| &text[s..e]).collect();
        assert_eq!(got, ["\\[ a + b \\]", "\\begin{align} p &= q \\end{align}"]);
    }

    #[test]
    fn normalize_strips_punctuation_and_case() {
        assert_eq!(normalize("Let's,"), "let's");
        assert_eq!(normalize("“Janet’s”"), "janet's");
        assert_eq!(normalize("(Okay)."), "okay");
    }
}
