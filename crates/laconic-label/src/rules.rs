//! The rule scorer: how much each word and each step matters, from the text alone.
//!
//! **Words** get a score in `[0, 1]` (higher = more important):
//!
//! | word | score |
//! |---|---|
//! | protected (numbers, operators, equations, math; see [`crate::words`]) | 1 |
//! | units (`dollars`, `hours`, `km`, `%`) | 0.85 |
//! | math words (`per`, `each`, `total`, `times`, `remaining`, `more`, `not`) | 0.75 |
//! | the word after a number (`9 duck eggs`: `duck`) | 0.7 |
//! | other content words | 0.5 (0.6 for a capitalized word inside a sentence: a name) |
//! | stop words (`the`, `is`, `of`, `she`; not when capitalized inside a sentence: `May`) | 0.15 |
//! | punctuation alone (`—`, `;`) | 0.1 |
//! | filler (`so`, `okay`, `let's`, `we need to`, `in order to`, `basically`, `problem`) | 0.05 |
//! | hedges and re-checks (`wait`, `hmm`, `verify`, `correct`, `yes`) | 0.05 |
//!
//! A content word already used earlier in the reasoning loses 0.1, and one taken from the
//! question loses 0.05 (the student sees the question).
//!
//! **Steps** get a redundancy in `[0, 1]` with its reasons ([`Reason`]): a re-verification
//! ("Wait,", "Let me check") or an alternative approach, a restated question (most content
//! words are the question's), a near-duplicate of an earlier step (word-set Jaccard
//! similarity), a step of filler. A word's final rule score is its word score times
//! `1 - 0.7 * redundancy` of its step.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::steps::{Step, StepKind, is_restart};
use crate::words::{Word, is_number, normalize};

/// Stop words, lower case.
const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "of", "to", "in", "on", "at", "for", "from", "by", "with", "as", "and", "or",
    "but", "is", "are", "was", "were", "be", "been", "being", "am", "it", "its", "it's", "this",
    "that", "these", "those", "there", "here", "he", "she", "they", "them", "his", "her", "their",
    "him", "we", "our", "us", "you", "your", "i", "my", "me", "has", "have", "had", "do", "does",
    "did", "will", "would", "can", "could", "should", "shall", "may", "might", "must", "which",
    "who", "whom", "what", "when", "where", "how", "why", "if", "into", "out", "up", "about",
    "also", "all", "some", "any", "such", "then", "than", "too", "very", "just", "only", "both",
    "own", "same", "other", "after", "before", "while", "because", "since",
];

/// Filler words, lower case: they carry no step of the reasoning.
const FILLER_WORDS: &[&str] = &[
    "so",
    "okay",
    "ok",
    "well",
    "now",
    "let's",
    "lets",
    "let",
    "first",
    "firstly",
    "next",
    "finally",
    "then",
    "therefore",
    "thus",
    "hence",
    "basically",
    "essentially",
    "really",
    "just",
    "simply",
    "clearly",
    "obviously",
    "alright",
    "right",
    "great",
    "step",
    "need",
    "needs",
    "know",
    "find",
    "calculate",
    "determine",
    "figure",
    "think",
    "see",
    // Talk about the task rather than the task itself.
    "problem",
    "question",
    "understand",
    "understanding",
    "start",
    "solve",
];

/// Filler phrases, lower case, as word sequences; every word in one scores as filler.
const FILLER_PHRASES: &[&[&str]] = &[
    &["we", "need", "to"],
    &["we", "have", "to"],
    &["we", "know", "that"],
    &["we", "can", "see", "that"],
    &["in", "order", "to"],
    &["this", "means", "that"],
    &["this", "means"],
    &["that", "means"],
    &["which", "means"],
    &["note", "that"],
    &["notice", "that"],
    &["recall", "that"],
    &["it", "follows", "that"],
    &["as", "a", "result"],
    &["let", "me"],
    &["let", "us"],
    &["i", "think"],
    &["the", "answer", "is"],
];

/// Hedges and re-check words, lower case.
const CHECK_WORDS: &[&str] = &[
    "wait",
    "hmm",
    "hmmm",
    "actually",
    "check",
    "double-check",
    "recheck",
    "verify",
    "confirm",
    "correct",
    "yes",
    "yep",
    "indeed",
    "seems",
    "maybe",
    "perhaps",
];

/// Words that carry arithmetic, lower case.
const MATH_WORDS: &[&str] = &[
    "per",
    "each",
    "every",
    "total",
    "totals",
    "sum",
    "product",
    "difference",
    "quotient",
    "times",
    "plus",
    "minus",
    "divided",
    "multiplied",
    "multiply",
    "divide",
    "add",
    "added",
    "subtract",
    "subtracted",
    "remaining",
    "remain",
    "left",
    "more",
    "less",
    "fewer",
    "not",
    "no",
    "average",
    "ratio",
    "rate",
    "altogether",
    "combined",
    "increase",
    "decrease",
    "square",
    "cube",
    "root",
    "area",
    "perimeter",
    "volume",
    "profit",
    "cost",
    "costs",
    "price",
    "discount",
];

/// Unit words, lower case.
const UNIT_WORDS: &[&str] = &[
    "dollar",
    "dollars",
    "cent",
    "cents",
    "second",
    "seconds",
    "minute",
    "minutes",
    "hour",
    "hours",
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "mile",
    "miles",
    "km",
    "kilometers",
    "meter",
    "meters",
    "cm",
    "mm",
    "foot",
    "feet",
    "inch",
    "inches",
    "yard",
    "yards",
    "pound",
    "pounds",
    "lb",
    "lbs",
    "ounce",
    "ounces",
    "oz",
    "kg",
    "kilograms",
    "gram",
    "grams",
    "liter",
    "liters",
    "gallon",
    "gallons",
    "cup",
    "cups",
    "mph",
    "degrees",
    "%",
    "$",
];

/// Why a step is redundant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// "Wait,", "Let me check", "Hmm,": the reasoning goes over itself again.
    Reverification,
    /// "Alternatively,": a second approach to what is already solved.
    Alternative,
    /// Most of the step's content words are the question's.
    RestatedQuestion,
    /// Nearly the same words as an earlier step.
    NearDuplicate,
    /// Mostly filler and stop words.
    Filler,
}

/// How redundant one step is, and why.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Redundancy {
    /// In `[0, 1]`; 0 for a step that says something new.
    pub redundancy: f32,
    /// The rules that fired.
    pub reasons: Vec<Reason>,
}

/// The content words of a text: normalized, without stop words, filler or check words.
pub(crate) fn content_words(texts: impl Iterator<Item = String>) -> HashSet<String> {
    texts
        .filter(|w| {
            !w.is_empty()
                && !STOP_WORDS.contains(&w.as_str())
                && !FILLER_WORDS.contains(&w.as_str())
                && !CHECK_WORDS.contains(&w.as_str())
        })
        .collect()
}

/// The normalized words of a text.
fn normalized_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split_whitespace().map(normalize)
}

/// Scores each step's redundancy (see the module docs).
pub fn step_redundancy(text: &str, steps: &[Step], question: &str) -> Vec<Redundancy> {
    let question_words = content_words(normalized_words(question));
    let mut earlier: Vec<HashSet<String>> = Vec::with_capacity(steps.len());
    steps
        .iter()
        .map(|step| {
            let step_text = step.text(text);
            let words: Vec<String> = normalized_words(step_text).collect();
            let content = content_words(words.iter().cloned());
            let mut r = Redundancy::default();
            let mut fire = |reason: Reason, score: f32| {
                r.reasons.push(reason);
                r.redundancy = r.redundancy.max(score);
            };
            if step.kind == StepKind::Restart && is_restart(step_text) {
                let alternative = words.first().is_some_and(|w| w == "alternatively");
                if alternative {
                    fire(Reason::Alternative, 0.5);
                } else {
                    fire(Reason::Reverification, 0.6);
                }
            }
            let numbers = step_text
                .split_whitespace()
                .filter(|w| is_number(w))
                .count();
            if content.len() >= 4 && numbers == 0 {
                let shared = content.intersection(&question_words).count();
                let overlap = shared as f32 / content.len() as f32;
                if overlap >= 0.7 {
                    fire(Reason::RestatedQuestion, overlap);
                }
            }
            if content.len() >= 3 {
                let best = earlier
                    .iter()
                    .map(|e| jaccard(&content, e))
                    .fold(0.0f32, f32::max);
                if best >= 0.7 {
                    fire(Reason::NearDuplicate, best);
                }
            }
            if words.len() >= 3 {
                let filler = words
                    .iter()
                    .filter(|w| {
                        FILLER_WORDS.contains(&w.as_str())
                            || STOP_WORDS.contains(&w.as_str())
                            || CHECK_WORDS.contains(&w.as_str())
                    })
                    .count();
                if filler as f32 / words.len() as f32 >= 0.75 {
                    fire(Reason::Filler, 0.5);
                }
            }
            // Numbers count for near-duplicates: "3 + 4 = 7" twice is a repeat.
            let mut signature = content;
            signature.extend(
                step_text
                    .split_whitespace()
                    .filter(|w| is_number(w))
                    .map(normalize),
            );
            earlier.push(signature);
            r
        })
        .collect()
}

/// Jaccard similarity of two sets (0 when both are empty).
fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f32 {
    let union = a.union(b).count();
    if union == 0 {
        return 0.0;
    }
    a.intersection(b).count() as f32 / union as f32
}

/// Scores each word in `[0, 1]` from word lists alone (see the module docs); `protected`
/// words score 1.
pub fn word_scores(text: &str, words: &[Word], protected: &[bool], question: &str) -> Vec<f32> {
    let norm: Vec<String> = words.iter().map(|w| normalize(w.text(text))).collect();
    let question_words = content_words(normalized_words(question));
    let mut filler_phrase = vec![false; words.len()];
    for phrase in FILLER_PHRASES {
        for i in 0..words.len().saturating_sub(phrase.len() - 1) {
            if phrase.iter().zip(&norm[i..]).all(|(p, w)| p == w) {
                filler_phrase[i..i + phrase.len()]
                    .iter_mut()
                    .for_each(|f| *f = true);
            }
        }
    }
    let mut seen: HashSet<&str> = HashSet::new();
    (0..words.len())
        .map(|i| {
            if protected[i] {
                return 1.0;
            }
            let w = norm[i].as_str();
            let raw = words[i].text(text);
            let after_number = i > 0 && is_number(words[i - 1].text(text));
            let starts_sentence = i == 0 || {
                let prev = words[i - 1].text(text);
                prev.ends_with(['.', '?', '!', ':'])
                    || text[words[i - 1].end..words[i].start].contains('\n')
            };
            // A capital inside a sentence marks a name (`May`, `Mark`), not a stop word.
            let name =
                raw.chars().next().is_some_and(char::is_uppercase) && !starts_sentence && w != "i";
            let score = if filler_phrase[i] || FILLER_WORDS.contains(&w) || CHECK_WORDS.contains(&w)
            {
                0.05
            } else if UNIT_WORDS.contains(&w) || UNIT_WORDS.contains(&raw) {
                0.85
            } else if w.is_empty() {
                0.1 // punctuation alone
            } else if MATH_WORDS.contains(&w) {
                0.75
            } else if STOP_WORDS.contains(&w) && !name {
                0.15
            } else if after_number {
                0.7
            } else {
                let mut s = if name { 0.6 } else { 0.5 };
                if seen.contains(w) {
                    s -= 0.1;
                } else if question_words.contains(w) {
                    s -= 0.05;
                }
                s
            };
            seen.insert(w);
            score
        })
        .collect()
}

/// Combines word scores with the redundancy of each word's step: `score * (1 - 0.7 r)`.
/// `step_of[i]` is word `i`'s step.
pub fn apply_redundancy(scores: &mut [f32], step_of: &[usize], redundancy: &[Redundancy]) {
    for (score, &step) in scores.iter_mut().zip(step_of) {
        if let Some(r) = redundancy.get(step) {
            *score *= 1.0 - 0.7 * r.redundancy;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::split_steps;
    use crate::words::{protected, split_words};

    fn scores(text: &str) -> Vec<(String, f32)> {
        let words = split_words(text);
        let prot = protected(text, &words, false);
        let s = word_scores(text, &words, &prot, "");
        words
            .iter()
            .map(|w| w.text(text).to_string())
            .zip(s)
            .collect()
    }

    fn score_of(scores: &[(String, f32)], word: &str) -> f32 {
        scores
            .iter()
            .find(|(w, _)| w == word)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("no word {word}"))
    }

    #[test]
    fn filler_and_stop_words_score_below_content_below_units_below_numbers() {
        let s = scores("So, we need to find the cost: 3 apples cost $6, or 2 dollars per apple.");
        let filler = score_of(&s, "So,");
        let phrase = score_of(&s, "need");
        let stop = score_of(&s, "the");
        let after_number = score_of(&s, "apples");
        let unit = score_of(&s, "dollars");
        let math = score_of(&s, "per");
        let number = score_of(&s, "$6,");
        assert!(filler < stop && phrase < stop, "{s:?}");
        assert!(stop < after_number && after_number < math, "{s:?}");
        assert!(math < unit && unit < number, "{s:?}");
        assert_eq!(number, 1.0);
    }

    #[test]
    fn a_capitalized_stop_word_inside_a_sentence_is_a_name() {
        let s = scores("She sold 24 clips in May. May she sell more?");
        let may: Vec<f32> = s
            .iter()
            .filter(|(w, _)| w.starts_with("May"))
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(may, [0.6, 0.15]);
    }

    #[test]
    fn a_repeated_content_word_scores_lower_the_second_time() {
        let s = scores("Apples grow. Bananas grow too.");
        let grows: Vec<f32> = s
            .iter()
            .filter(|(w, _)| w.starts_with("grow"))
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(grows.len(), 2);
        assert!(grows[1] < grows[0], "{s:?}");
    }

    #[test]
    fn step_rules_find_rechecks_restatements_duplicates_and_filler() {
        let question = "Janet's ducks lay 16 eggs per day. How many eggs does Janet sell daily?";
        let text = "We want how many eggs Janet's ducks lay and Janet sells daily.\n\
                    She sells 16 - 3 - 4 = 9 eggs daily.\n\
                    Wait, let me double-check: 16 - 3 - 4 = 9.\n\
                    So she sells 16 - 3 - 4 = 9 eggs daily.\n\
                    Alternatively, count what she keeps: 3 + 4 = 7.\n\
                    Okay, so then we have it.";
        let steps = split_steps(text);
        assert_eq!(steps.len(), 6);
        let r = step_redundancy(text, &steps, question);
        assert_eq!(r[0].reasons, [Reason::RestatedQuestion]);
        assert!(r[1].reasons.is_empty(), "{:?}", r[1]);
        assert_eq!(r[1].redundancy, 0.0);
        assert!(r[2].reasons.contains(&Reason::Reverification), "{:?}", r[2]);
        assert!(r[3].reasons.contains(&Reason::NearDuplicate), "{:?}", r[3]);
        assert_eq!(r[4].reasons, [Reason::Alternative]);
        assert_eq!(r[5].reasons, [Reason::Filler]);
        assert!(r.iter().all(|x| (0.0..=1.0).contains(&x.redundancy)));
    }

    #[test]
    fn redundancy_scales_word_scores_down() {
        let mut s = vec![1.0, 0.5, 0.5];
        let red = vec![
            Redundancy::default(),
            Redundancy {
                redundancy: 1.0,
                reasons: vec![Reason::Filler],
            },
        ];
        apply_redundancy(&mut s, &[0, 1, 1], &red);
        assert_eq!(s[0], 1.0);
        assert!((s[1] - 0.15).abs() < 1e-6);
    }
}
