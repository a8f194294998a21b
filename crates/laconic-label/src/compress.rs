//! Compression to a target ratio: choosing words from their scores, and writing what is left
//! as tidy text.
//!
//! **Selection.** Each word has a cost (1 when the ratio is measured in words, its token
//! count when it is measured in a tokenizer's tokens), a score and a protected flag. For a
//! target ratio γ the budget is `floor(γ × total cost)` ([`select`]; [`select_within`] takes
//! the budget itself). Protected words are kept first,
//! whatever they cost; then the other words in order of score (ties: the earlier word
//! first), each one that still fits in the budget. When the protected words alone exceed the
//! budget, only they are kept and the selection is **limited**: the ratio could not be met
//! without breaking an invariant, and it comes as close as the invariants allow.
//!
//! **Rendering.** The kept words are written line by line, one space between words, lines
//! that lose every word dropped, one blank line kept between paragraphs. A dropped word that
//! ended a sentence (`.`, `?`, `!`) leaves its punctuation on the kept word before it; a kept
//! line never ends in a dangling `,` or `;` that the original line did not end in, nor starts
//! with punctuation; a stray punctuation-only word is not left at either end of a line;
//! brackets that compression left unmatched are removed (when the original line had them
//! matched); and a line, or a sentence after a `.`, `?` or `!`, that began with a capital
//! letter still does (when its first words were dropped).

use crate::words::{Word, is_operator};

/// One word as selection sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unit {
    /// What keeping it costs (words: 1; tokens: its token count).
    pub cost: usize,
    /// Its importance; higher is kept first.
    pub score: f32,
    /// Kept whatever the ratio.
    pub protected: bool,
    /// Dropped whatever the ratio (a slip the reasoning corrected).
    pub excluded: bool,
}

/// Which words a target ratio keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Per word: kept.
    pub keep: Vec<bool>,
    /// Cost of the kept words.
    pub kept_cost: usize,
    /// Cost of all words.
    pub total_cost: usize,
    /// Cost of the protected words.
    pub protected_cost: usize,
    /// The protected words alone exceed the budget: the ratio is as close as the invariants
    /// allow, not the target.
    pub limited: bool,
}

/// Chooses the words to keep for `target` (in `(0, 1]`; see the module docs).
pub fn select(units: &[Unit], target: f64) -> Selection {
    let total_cost: usize = units.iter().map(|u| u.cost).sum();
    select_within(units, budget(target, total_cost))
}

/// The budget for a target ratio: `floor(target × total)` (a hair of tolerance, so that
/// `0.7 × 10` is 7).
pub fn budget(target: f64, total: usize) -> usize {
    ((target * total as f64) + 1e-9).floor() as usize
}

/// Chooses the words to keep within a cost `budget`: the protected words whatever they
/// cost, then the others that are not excluded by score (ties: the earlier first), each one
/// that still fits.
pub fn select_within(units: &[Unit], budget: usize) -> Selection {
    let total_cost: usize = units.iter().map(|u| u.cost).sum();
    let protected_cost: usize = units.iter().filter(|u| u.protected).map(|u| u.cost).sum();
    let mut keep: Vec<bool> = units.iter().map(|u| u.protected).collect();
    let mut kept_cost = protected_cost;
    let limited = protected_cost > budget;
    if !limited {
        let mut order: Vec<usize> = (0..units.len())
            .filter(|&i| !units[i].protected && !units[i].excluded)
            .collect();
        order.sort_by(|&a, &b| units[b].score.total_cmp(&units[a].score).then(a.cmp(&b)));
        for i in order {
            if kept_cost + units[i].cost <= budget {
                keep[i] = true;
                kept_cost += units[i].cost;
            }
        }
    }
    Selection {
        keep,
        kept_cost,
        total_cost,
        protected_cost,
        limited,
    }
}

/// Punctuation that ends a sentence.
const SENTENCE_END: [char; 3] = ['.', '?', '!'];

/// Whether a word has no letter or digit and is not an operator or bracket.
fn is_stray_punctuation(word: &str) -> bool {
    !word.chars().any(char::is_alphanumeric) && !is_operator(word)
}

/// Writes the kept words of `text` as tidy text (see the module docs). `keep[i]` says
/// whether `words[i]` is kept.
pub fn render(text: &str, words: &[Word], keep: &[bool]) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut blank_before = false;
    let mut i = 0;
    while i < words.len() {
        // One original line: the words up to the next newline.
        let mut j = i + 1;
        while j < words.len() && !text[words[j - 1].end..words[j].start].contains('\n') {
            j += 1;
        }
        let gap = if i == 0 {
            ""
        } else {
            &text[words[i - 1].end..words[i].start]
        };
        if gap.matches('\n').count() >= 2 {
            blank_before = true;
        }
        let line = render_line(text, &words[i..j], &keep[i..j]);
        if !line.is_empty() {
            if blank_before && !lines.is_empty() {
                lines.push(String::new());
            }
            blank_before = false;
            lines.push(line);
        }
        i = j;
    }
    lines.join("\n")
}

/// Renders one original line's kept words.
fn render_line(text: &str, words: &[Word], keep: &[bool]) -> String {
    let mut out: Vec<String> = Vec::new();
    for (i, (w, &k)) in words.iter().zip(keep).enumerate() {
        let t = w.text(text);
        if k {
            // A sentence whose first words were dropped still starts with a capital.
            let after_dropped_start =
                i > 0 && !keep[i - 1] && out.last().is_some_and(|l| l.ends_with(SENTENCE_END));
            let plain_word = t.chars().next().is_some_and(char::is_lowercase)
                && !t.contains(['$', '\\'])
                && !t.chars().any(|c| c.is_ascii_digit());
            if after_dropped_start && plain_word {
                out.push(capitalize_like(t, "A"));
            } else {
                out.push(t.to_string());
            }
            continue;
        }
        // A dropped word that ends a sentence leaves its punctuation behind.
        let tail: String = t
            .chars()
            .rev()
            .take_while(|c| SENTENCE_END.contains(c) || *c == '"' || *c == ')')
            .filter(|c| SENTENCE_END.contains(c))
            .collect();
        if !tail.is_empty()
            && let Some(last) = out.last_mut()
        {
            // `apples,` + a dropped `pears.` reads `apples.`; `cost:` or `9.` stay as they are.
            let bare = last.trim_end_matches([',', ';']);
            if !bare.is_empty() && !bare.ends_with(|c: char| ".:!?".contains(c)) {
                *last = bare.chars().chain(tail.chars().rev()).collect();
            }
        }
    }
    // Stray punctuation at either end goes.
    while out.first().is_some_and(|w| is_stray_punctuation(w)) {
        out.remove(0);
    }
    while out.last().is_some_and(|w| is_stray_punctuation(w)) {
        out.pop();
    }
    // No leading punctuation; no dangling `,` or `;` the original line did not end in.
    if let Some(first) = out.first_mut() {
        let trimmed = first.trim_start_matches([',', ';', ':', '.']).to_string();
        *first = trimmed;
    }
    let original_last = words.last().map_or("", |w| w.text(text));
    if let Some(last) = out.last_mut()
        && keep.last() != Some(&true)
    {
        let trimmed = last.trim_end_matches([',', ';']);
        if trimmed.len() < last.len() && !trimmed.is_empty() && !original_last.ends_with([',', ';'])
        {
            *last = trimmed.to_string();
        }
    }
    let mut line = out
        .iter()
        .filter(|w| !w.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let original: String = words
        .iter()
        .map(|w| w.text(text))
        .collect::<Vec<_>>()
        .join(" ");
    for (open, close) in [('(', ')'), ('[', ']')] {
        if balanced(&original, open, close) && !balanced(&line, open, close) {
            line = drop_unmatched(&line, open, close);
        }
    }
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    capitalize_like(&line, &original)
}

/// Whether every `open` in `s` has its `close`, in order.
fn balanced(s: &str, open: char, close: char) -> bool {
    let mut depth = 0i64;
    for c in s.chars() {
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth < 0 {
                return false;
            }
        }
    }
    depth == 0
}

/// `s` without the `open`/`close` characters that have no partner.
fn drop_unmatched(s: &str, open: char, close: char) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut drop = vec![false; chars.len()];
    let mut stack = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        if c == open {
            stack.push(i);
        } else if c == close && stack.pop().is_none() {
            drop[i] = true;
        }
    }
    for i in stack {
        drop[i] = true;
    }
    chars
        .iter()
        .zip(drop)
        .filter(|(_, d)| !d)
        .map(|(c, _)| c)
        .collect()
}

/// `line` with its first letter upper-cased when `original` began with an upper-case letter
/// and the line now begins with a lower-case one.
fn capitalize_like(line: &str, original: &str) -> String {
    let starts_upper = original.chars().next().is_some_and(char::is_uppercase);
    let mut chars = line.chars();
    match chars.next() {
        Some(c) if starts_upper && c.is_lowercase() => c.to_uppercase().chain(chars).collect(),
        _ => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::words::split_words;

    fn unit(cost: usize, score: f32, protected: bool) -> Unit {
        Unit {
            cost,
            score,
            protected,
            excluded: false,
        }
    }

    #[test]
    fn selection_keeps_protected_words_then_the_best_that_fit() {
        let units = [
            unit(1, 0.1, false),
            unit(1, 1.0, true),
            unit(1, 0.9, false),
            unit(1, 0.5, false),
            unit(1, 0.5, false),
        ];
        // Budget floor(0.6 * 5) = 3: the protected word, 0.9, then the earlier 0.5.
        let s = select(&units, 0.6);
        assert_eq!(s.keep, [false, true, true, true, false]);
        assert_eq!((s.kept_cost, s.total_cost, s.protected_cost), (3, 5, 1));
        assert!(!s.limited);
        // At ratio 1 everything is kept.
        assert!(select(&units, 1.0).keep.iter().all(|&k| k));
    }

    #[test]
    fn costs_are_respected_and_a_cheaper_word_can_fill_the_rest() {
        let units = [
            unit(3, 0.9, false),
            unit(2, 0.8, false),
            unit(1, 0.1, false),
        ];
        // Budget floor(0.5 * 6) = 3: the 0.9 word fills it.
        assert_eq!(select(&units, 0.5).keep, [true, false, false]);
        // Budget floor(0.7 * 6) = 4: the 0.9 word, then the 0.8 one no longer fits, the 0.1 one does.
        assert_eq!(select(&units, 0.7).keep, [true, false, true]);
    }

    #[test]
    fn an_excluded_unit_is_never_kept() {
        let mut units = [unit(1, 0.9, false), unit(1, 0.1, false)];
        units[0].excluded = true;
        assert_eq!(select(&units, 1.0).keep, [false, true]);
    }

    #[test]
    fn too_many_protected_words_is_limited_not_broken() {
        let units = [unit(1, 1.0, true), unit(1, 1.0, true), unit(1, 0.2, false)];
        let s = select(&units, 0.3);
        assert!(s.limited);
        assert_eq!(s.keep, [true, true, false]);
        assert_eq!(s.kept_cost, 2);
    }

    fn render_keeping(text: &str, kept: &[&str]) -> String {
        let words = split_words(text);
        let keep: Vec<bool> = words.iter().map(|w| kept.contains(&w.text(text))).collect();
        render(text, &words, &keep)
    }

    #[test]
    fn rendering_carries_sentence_ends_and_capitals() {
        let text = "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $18 every day.";
        let out = render_keeping(
            text,
            &[
                "sells", "16", "-", "3", "4", "=", "9", "eggs", "makes", "*", "2", "$18",
            ],
        );
        assert_eq!(out, "Sells 16 - 3 - 4 = 9 eggs.\nMakes 9 * 2 = $18.");
        let text = "So 3 + 4 = 7. In total, she has 7 apples. And that is it.";
        let out = render_keeping(
            text,
            &["3", "+", "4", "=", "7.", "total,", "she", "7", "is"],
        );
        assert_eq!(out, "3 + 4 = 7. Total, she 7. Is.");
    }

    #[test]
    fn rendering_drops_empty_lines_dangling_commas_and_unmatched_brackets() {
        let text =
            "So, we know that.\n\nHe has 3 apples, and (after lunch) 2 pears.\n\nThen 3 + 2 = 5.";
        let out = render_keeping(
            text,
            &["3", "apples,", "lunch)", "2", "pears.", "+", "=", "5."],
        );
        assert_eq!(out, "3 apples, lunch 2 pears.\n\n3 + 2 = 5.");
        let line = "He has 3 apples, and (after lunch) 2 pears.";
        let out = render_keeping(line, &["He", "has", "3", "apples,"]);
        assert_eq!(out, "He has 3 apples.");
    }

    #[test]
    fn rendering_everything_only_tidies_whitespace() {
        let text = "  A  line   with  gaps.\nNext line.\n\n\n\nLast paragraph.  ";
        let words = split_words(text);
        let keep = vec![true; words.len()];
        assert_eq!(
            render(text, &words, &keep),
            "A line with gaps.\nNext line.\n\nLast paragraph."
        );
    }
}
