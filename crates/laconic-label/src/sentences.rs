//! Sentence-level compression ([`Granularity::Sentences`](crate::label::Granularity)): whole
//! sentences are kept or dropped, so every line of a compressed trace is a line the teacher
//! wrote, word for word.
//!
//! Token-level pruning (TokenSkip's, the default) reaches any ratio but leaves telegraphic
//! text ("Says: Ruby collection 18 crayons."); a small student learns that text less well
//! than the fluent original. Dropping whole sentences keeps the text fluent: what goes is
//! the restatements, re-checks, recaps and filler that verbose teachers write around the
//! computation.
//!
//! **Which sentences are kept whatever the ratio** (protected):
//!
//! - a sentence with an equation or math (a protected word that is not a plain number:
//!   an operator, `x=5`, a variable, LaTeX, a `\boxed{}`) in a step that is not redundant
//!   (redundancy below [`WHOLE_STEP_REDUNDANCY`](crate::label::WHOLE_STEP_REDUNDANCY):
//!   a slip and its correction inside a "Wait," re-check may go; a step that is only a
//!   near-duplicate of an earlier one is not redundant here: `12 - 10 = 2` and
//!   `2 + 10 = 12` share their words, not their arithmetic);
//! - the sentence that states the final answer: the last one holding every number of the
//!   trace's answer, or the last holding a `\boxed{}`; the last sentence when none does;
//! - for every number of a non-redundant step that neither the question nor the sentences
//!   above state, the first sentence that holds it: no number the reasoning found is lost.
//!
//! A **slip**, an equation whose left side is given another result last (`3 * 4 = 14`
//! before `3 * 4 = 12`), is never kept, nor is what lies between it and its correction
//! ("Hold on, let me redo that.", "3 times 4 is 12, not 14.") or a sentence that names its
//! result. A **repeat**, an equation written before with the same result, is not protected
//! and counts at 0.1 of its score.
//!
//! **The others** are ranked by the mean rule (or mixed) score of their words that are not
//! protected (numbers in a sentence are the invariants' business, not its importance), and
//! a sentence whose numbers all come from the question and whose content words mostly do
//! (at least [`RESTATED_OVERLAP`]) counts at 0.3 of that: it restates the question, which
//! the student sees anyway. So does a **recap**: a sentence without an equation whose two or
//! more numbers were all written before in the reasoning ("The total goes 18, then 9.").
//!
//! Except when the restatement **grounds** an equation: a sentence without an equation that
//! holds an operand of an equation at most [`GROUNDING_REACH`] sentences later ("Okay,
//! first: She gives 3 friends 3 crayons each." before `3 * 3 = 9`) scores at least
//! [`GROUNDING_SCORE`], ahead of every other unprotected sentence. A small student that
//! restates the clause it is about to compute with picks the right numbers; one trained
//! without those lines computes from the wrong ones (the quickstart's student (b), 31% against
//! (a)'s 49%, with such lines ranked down: README).

use std::collections::HashSet;

use crate::label::{RuleAnalysis, WHOLE_STEP_REDUNDANCY};
use crate::rules::{Reason, content_words};
use crate::steps::sentence_spans;
use crate::words::{is_number, normalize, protected_spans};

/// A sentence at least this much made of the question's content words and numbers (and no
/// other number) restates it.
pub const RESTATED_OVERLAP: f32 = 0.6;

/// How many sentences ahead an equation may be for a sentence holding one of its operands to
/// ground it.
pub const GROUNDING_REACH: usize = 4;

/// The least score of a sentence that grounds an equation.
pub const GROUNDING_SCORE: f32 = 0.9;

/// The sentences of a reasoning text as selection units.
#[derive(Debug, Clone, PartialEq)]
pub struct Sentences {
    /// Per word: its sentence.
    pub sentence_of: Vec<usize>,
    /// Per sentence: its score (see the module docs).
    pub score: Vec<f32>,
    /// Per sentence: kept whatever the ratio.
    pub protected: Vec<bool>,
    /// Per sentence: dropped whatever the ratio (a slip and what follows it up to its
    /// correction).
    pub excluded: Vec<bool>,
}

/// The numbers written with digits in `s`: maximal runs of digits and inner `.`, with
/// thousands separators removed (`$1,200.` gives `1200`; `3*3=9` gives `3`, `3`, `9`).
pub fn digit_numbers(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let between_digits = |i: usize| {
            i > 0
                && chars[i - 1].is_ascii_digit()
                && chars.get(i + 1).is_some_and(char::is_ascii_digit)
        };
        if c.is_ascii_digit() || (c == '.' && between_digits(i)) {
            cur.push(c);
        } else if c == ',' && between_digits(i) {
            // A thousands separator: the number goes on.
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out.into_iter()
        .map(|n| {
            // `07` and `7` are one number; `2.50` and `2.5` too.
            let n = if n.contains('.') {
                n.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                n
            };
            let t = n.trim_start_matches('0');
            if t.is_empty() || t.starts_with('.') {
                format!("0{t}")
            } else {
                t.to_string()
            }
        })
        .collect()
}

/// The equations of a sentence: each `=` with the arithmetic right before it (digits,
/// operators, brackets, spaces removed) and the first number after it. `3 * 4 = 12` gives
/// `("3*4", "12")`; an `=` with no arithmetic before it or no number after it gives none.
pub fn equations(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (at, _) in s.match_indices('=') {
        let lhs: String = s[..at]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit() || " .,+-*/×÷^()x$".contains(*c))
            .filter(|c| !c.is_whitespace() && *c != '$')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let lhs = lhs.trim_start_matches([',', '.']).to_string();
        let rhs = digit_numbers(&s[at + 1..]).into_iter().next();
        if let Some(rhs) = rhs
            && lhs.chars().any(|c| c.is_ascii_digit())
        {
            out.push((lhs, rhs));
        }
    }
    out
}

/// Splits `text` into sentences (the sentences of each of `rules`' steps) and decides which
/// are protected and how each scores (see the module docs). `scores` are the words' scores
/// (the rules', or mixed with a model's); `answer` is the trace's final answer.
pub fn sentences(
    text: &str,
    rules: &RuleAnalysis,
    scores: &[f32],
    question: &str,
    answer: &str,
) -> Sentences {
    let RuleAnalysis {
        steps,
        words,
        step_of,
        prot,
        redundancy,
        ..
    } = rules;
    // Sentence spans, in order, with the step each lies in.
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    for (k, step) in steps.iter().enumerate() {
        for (s, e) in sentence_spans(text, step.start, step.end) {
            spans.push((s, e, k));
        }
    }
    // Each word's sentence: the span holding its first byte; a word outside every span (none
    // should be) is a sentence of its own.
    let mut sentence_of = Vec::with_capacity(words.len());
    let mut members: Vec<Vec<usize>> = Vec::new();
    let mut redundant: Vec<bool> = Vec::new();
    let mut last_span: Option<usize> = None;
    for (i, w) in words.iter().enumerate() {
        let span = spans.partition_point(|&(_, e, _)| e <= w.start);
        let inside = spans.get(span).is_some_and(|&(s, _, _)| s <= w.start);
        if inside && last_span == Some(span) {
            if let Some(m) = members.last_mut() {
                m.push(i);
            }
        } else {
            members.push(vec![i]);
            let step = if inside { spans[span].2 } else { step_of[i] };
            redundant.push(redundancy.get(step).is_some_and(|r| {
                r.redundancy >= WHOLE_STEP_REDUNDANCY
                    && r.reasons.iter().any(|&why| why != Reason::NearDuplicate)
            }));
        }
        last_span = inside.then_some(span);
        sentence_of.push(members.len() - 1);
    }
    let n = members.len();
    let sentence_text = |m: &[usize]| -> &str {
        match (m.first(), m.last()) {
            (Some(&a), Some(&b)) => &text[words[a].start..words[b].end],
            _ => "",
        }
    };
    let numbers: Vec<Vec<String>> = members
        .iter()
        .map(|m| digit_numbers(sentence_text(m)))
        .collect();
    let boxed = protected_spans(text, false);
    let holds_boxed = |m: &[usize]| {
        m.iter().any(|&w| {
            boxed
                .iter()
                .any(|&(s, e)| words[w].start < e && s < words[w].end)
        })
    };

    // Slips (an equation whose left side comes again with another result) and repeats (an
    // equation written before with the same result).
    let eqs: Vec<Vec<(String, String)>> = members
        .iter()
        .map(|m| equations(sentence_text(m)))
        .collect();
    // The result a left side is given last is the one the reasoning settled on.
    let last: std::collections::HashMap<&String, &String> =
        eqs.iter().flatten().map(|(l, r)| (l, r)).collect();
    let mut slip = vec![false; n];
    let mut slip_results: HashSet<String> = HashSet::new();
    for k in 0..n {
        for (lhs, rhs) in &eqs[k] {
            if last.get(lhs).is_some_and(|r| *r != rhs) {
                slip[k] = true;
                slip_results.insert(rhs.clone());
            }
        }
    }
    let mut repeat = vec![false; n];
    for k in 0..n {
        repeat[k] = !eqs[k].is_empty()
            && eqs[k]
                .iter()
                .all(|e| eqs[..k].iter().flatten().any(|earlier| earlier == e));
    }
    // What lies between a slip and its correction (the first later sentence that gives the
    // settled result) goes with the slip.
    for k in 0..n {
        let Some((lhs, _)) = eqs[k]
            .iter()
            .find(|(l, r)| last.get(l).is_some_and(|x| *x != r))
        else {
            continue;
        };
        let settled = last.get(lhs).copied();
        if let Some(j) =
            (k + 1..n).find(|&j| eqs[j].iter().any(|(l, r)| l == lhs && Some(r) == settled))
        {
            slip[k + 1..j].iter_mut().for_each(|s| *s = true);
        }
    }
    // A sentence without an equation that names a slip's result (one no equation settled
    // on) goes with the slip.
    for r in last.values() {
        slip_results.remove(*r);
    }
    for k in 0..n {
        if eqs[k].is_empty() && numbers[k].iter().any(|x| slip_results.contains(x)) {
            slip[k] = true;
        }
    }

    let mut protected = vec![false; n];
    // Equations and math in steps that are not redundant.
    for (k, m) in members.iter().enumerate() {
        let math = m
            .iter()
            .any(|&w| prot[w] && !is_number(words[w].text(text)));
        protected[k] = math && !redundant[k] && !slip[k] && !repeat[k];
    }
    // The final answer's sentence.
    let answer_numbers = digit_numbers(answer);
    let states_answer = |k: usize| {
        if answer_numbers.is_empty() {
            holds_boxed(&members[k])
        } else {
            answer_numbers.iter().all(|a| numbers[k].contains(a))
        }
    };
    if let Some(k) = (0..n)
        .rev()
        .find(|&k| states_answer(k))
        .or(n.checked_sub(1))
    {
        protected[k] = true;
    }
    // Every number a non-redundant step found, once.
    let question_numbers: HashSet<String> = digit_numbers(question).into_iter().collect();
    let mut stated = question_numbers.clone();
    for k in (0..n).filter(|&k| protected[k]) {
        stated.extend(numbers[k].iter().cloned());
    }
    for k in 0..n {
        let new_number = numbers[k]
            .iter()
            .any(|x| !stated.contains(x) && !slip_results.contains(x));
        if !protected[k] && !redundant[k] && !slip[k] && new_number {
            protected[k] = true;
            stated.extend(numbers[k].iter().cloned());
        }
    }

    // Scores: the mean over words that are not protected; restatements count less.
    let question_words = content_words(question.split_whitespace().map(normalize));
    // Recaps: no equation, two or more numbers, all written before.
    let mut written: HashSet<&String> = HashSet::new();
    let recap: Vec<bool> = (0..n)
        .map(|k| {
            let r = eqs[k].is_empty()
                && numbers[k].len() >= 2
                && numbers[k].iter().all(|x| written.contains(x));
            written.extend(numbers[k].iter());
            r
        })
        .collect();
    let score = members
        .iter()
        .enumerate()
        .map(|(k, m)| {
            let free: Vec<f32> = m
                .iter()
                .filter(|&&w| !prot[w])
                .map(|&w| scores[w])
                .collect();
            let mean = if free.is_empty() {
                1.0
            } else {
                free.iter().sum::<f32>() / free.len() as f32
            };
            let content = content_words(
                m.iter()
                    .map(|&w| normalize(words[w].text(text)))
                    .filter(|w| !is_number(w)),
            );
            let from_question = content.intersection(&question_words).count() + numbers[k].len();
            let all = content.len() + numbers[k].len();
            let restated = all >= 3
                && numbers[k].iter().all(|x| question_numbers.contains(x))
                && from_question as f32 >= RESTATED_OVERLAP * all as f32;
            let recap = recap[k];
            let grounds = eqs[k].is_empty()
                && eqs[k + 1..n.min(k + 1 + GROUNDING_REACH)]
                    .iter()
                    .flatten()
                    .any(|(lhs, _)| digit_numbers(lhs).iter().any(|x| numbers[k].contains(x)));
            if repeat[k] {
                0.1 * mean
            } else if grounds {
                mean.max(GROUNDING_SCORE)
            } else if restated || recap {
                0.3 * mean
            } else {
                mean
            }
        })
        .collect();
    Sentences {
        sentence_of,
        score,
        protected,
        excluded: slip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(text: &str, question: &str, answer: &str) -> (Vec<String>, Sentences) {
        let rules = RuleAnalysis::new(text, question, false);
        let words = &rules.words;
        let s = sentences(text, &rules, &rules.scores, question, answer);
        let mut texts = vec![String::new(); s.score.len()];
        for (w, &k) in words.iter().zip(&s.sentence_of) {
            if !texts[k].is_empty() {
                texts[k].push(' ');
            }
            texts[k].push_str(w.text(text));
        }
        (texts, s)
    }

    /// The sentences whose flag is set.
    fn flagged<'a>(texts: &'a [String], flags: &[bool]) -> Vec<&'a str> {
        texts
            .iter()
            .zip(flags)
            .filter(|(_, f)| **f)
            .map(|(t, _)| t.as_str())
            .collect()
    }

    #[test]
    fn digit_numbers_read_separators_decimals_and_equations() {
        assert_eq!(
            digit_numbers("$1,200.50 and 3*3=9."),
            ["1200.5", "3", "3", "9"]
        );
        assert_eq!(digit_numbers("07, 2.0, 0.25"), ["7", "2", "0.25"]);
        assert!(digit_numbers("no numbers, here.").is_empty());
    }

    #[test]
    fn equations_the_answer_and_new_numbers_are_protected_rechecks_are_not() {
        let question =
            "Ruby has 18 crayons. She gives 3 friends 3 crayons each. How many are left?";
        let text = "Okay, let me think about this problem.\n\
                    Ruby has 18 crayons to start with.\n\
                    She gives 3 friends 3 crayons each.\n\
                    3 * 3 = 9 crayons given away.\n\
                    That leaves 9 crayons, because 18 minus 9 is 9.\n\
                    Wait, let me check: 3 * 3 = 8? No, 3 * 3 = 9.\n\
                    So the answer is 9.";
        let (texts, s) = label(text, question, "9");
        let kept = flagged(&texts, &s.protected);
        assert_eq!(
            kept,
            ["3 * 3 = 9 crayons given away.", "So the answer is 9."]
        );
        // The restated question scores below the sentence that explains the subtraction.
        let score = |t: &str| s.score[texts.iter().position(|x| x == t).expect("sentence")];
        assert!(
            score("Ruby has 18 crayons to start with.")
                < score("That leaves 9 crayons, because 18 minus 9 is 9.")
        );
        assert!(score("Okay, let me think about this problem.") < 0.2);
    }

    #[test]
    fn a_restated_clause_right_before_its_equation_ranks_first() {
        let question = "Ruby has 18 crayons. She gives 3 friends 3 crayons each. \
                        How many crayons does Ruby have left?";
        let text = "The problem says: Ruby has 18 crayons. She gives 3 friends 3 crayons each.\n\
                    I need the crayons at the end.\n\
                    Let me be careful here.\n\
                    I will go one step at a time.\n\
                    \n\
                    Okay, first: She gives 3 friends 3 crayons each.\n\
                    3 * 3 = 9 crayons given away.\n\
                    So 18 - 9 = 9.";
        let (texts, s) = label(text, question, "9");
        let score = |t: &str| s.score[texts.iter().position(|x| x == t).expect("sentence")];
        let near = score("Okay, first: She gives 3 friends 3 crayons each.");
        assert!(near >= GROUNDING_SCORE);
        // The same clause five sentences before is a restatement, ranked down.
        assert!(score("She gives 3 friends 3 crayons each.") < 0.3);
        // So is the whole-question line's first sentence, whose 18 is used only later.
        assert!(score("The problem says: Ruby has 18 crayons.") < near);
    }

    #[test]
    fn equations_are_read_with_their_left_side_and_result() {
        assert_eq!(
            equations("That's 3 * 4 = 14 stickers, and (2+1) x 5 = $15."),
            [
                ("3*4".to_string(), "14".to_string()),
                ("(2+1)x5".to_string(), "15".to_string())
            ]
        );
        assert!(equations("Let the total = the sum.").is_empty());
    }

    #[test]
    fn a_slip_its_correction_note_and_a_repeat_are_not_protected() {
        let question =
            "Tom has 19 stickers. He gives 3 friends 4 stickers each. How many are left?";
        let text = "That's 3 * 4 = 14 stickers.\n\
                    3 times 4 is 12, not 14.\n\
                    So 3 * 4 = 12.\n\
                    19 - 12 = 7 stickers now.\n\
                    Again, 19 - 12 = 7.\n\
                    The numbers go 19, 12, 7.\n\
                    So the answer is 7.";
        let (texts, s) = label(text, question, "7");
        let protected = flagged(&texts, &s.protected);
        assert_eq!(
            protected,
            [
                "So 3 * 4 = 12.",
                "19 - 12 = 7 stickers now.",
                "So the answer is 7."
            ]
        );
        let at = |t: &str| texts.iter().position(|x| x == t).expect("sentence");
        // The slip and its note are never kept; the repeat ranks below the recap.
        let excluded = flagged(&texts, &s.excluded);
        assert_eq!(
            excluded,
            ["That's 3 * 4 = 14 stickers.", "3 times 4 is 12, not 14."]
        );
        assert!(s.score[at("Again, 19 - 12 = 7.")] < s.score[at("The numbers go 19, 12, 7.")]);
    }

    #[test]
    fn a_number_only_a_plain_sentence_found_is_protected() {
        let question = "A box holds 4 rows of 5 eggs. How many eggs?";
        let text = "There are 20 eggs in the box.\nSo the answer is 20 eggs, I think.\nYes, 20.";
        let (texts, s) = label(text, question, "20");
        // `20` is in no equation: the last sentence that states it is the answer's; the
        // first, which found it, need not be kept as well.
        assert_eq!(texts.len(), 3);
        assert_eq!(s.protected, [false, false, true]);
        let text = "We count 4 rows and 7 spare eggs.\nSo the answer is 20.";
        let (_, s) = label(text, question, "20");
        // `7` is new and not in the question: its sentence stays.
        assert_eq!(s.protected, [true, true]);
    }
}
