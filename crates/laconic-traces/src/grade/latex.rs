//! Normalizing MATH answers (LaTeX) for comparison.
//!
//! The rules follow what the common MATH graders do (Hendrycks et al.'s `is_equiv` /
//! `strip_string`, PRM800K's grader), rewritten here as small passes over the string:
//! thin spaces, `\left`/`\right`, `\text{}` wrappers, units, degrees, percent and dollar signs
//! go; `\dfrac` becomes `\frac`, `\frac12` becomes `\frac{1}{2}`; a simple fraction of atoms
//! becomes `a/b`; a whole-number answer is written canonically; whitespace goes.

use super::extract::matching_brace;
use super::number::parse_decimal;

/// How deep the recursive passes go into nested groups before they leave the rest as it is
/// (answers nest a few levels; this only bounds the stack on hostile input).
pub(super) const MAX_NESTING: usize = 32;

/// Commands whose argument is kept and the command dropped: `\text{(A)}` -> `(A)`.
const TEXT_COMMANDS: &[&str] = &[
    "text",
    "textbf",
    "textit",
    "textrm",
    "textsf",
    "textnormal",
    "texttt",
    "mbox",
    "hbox",
    "mathrm",
    "mathbf",
    "mathit",
    "mathsf",
    "mathnormal",
    "boldsymbol",
];

/// Unit words that a `\text{...}` after a number may hold (`864 \mbox{ inches}^2`,
/// `5.4 \text{ cents}`); such a group is dropped. Compared lowercase.
const UNIT_WORDS: &[&str] = &[
    "unit",
    "units",
    "sq",
    "square",
    "cubic",
    "cm",
    "centimeter",
    "centimeters",
    "m",
    "meter",
    "meters",
    "metre",
    "metres",
    "km",
    "kilometer",
    "kilometers",
    "mm",
    "millimeter",
    "millimeters",
    "in",
    "inch",
    "inches",
    "ft",
    "foot",
    "feet",
    "yd",
    "yard",
    "yards",
    "mi",
    "mile",
    "miles",
    "mph",
    "degree",
    "degrees",
    "radian",
    "radians",
    "cent",
    "cents",
    "dollar",
    "dollars",
    "s",
    "sec",
    "second",
    "seconds",
    "min",
    "minute",
    "minutes",
    "h",
    "hr",
    "hrs",
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
    "g",
    "gram",
    "grams",
    "kg",
    "kilogram",
    "kilograms",
    "lb",
    "lbs",
    "pound",
    "pounds",
    "oz",
    "ounce",
    "ounces",
    "l",
    "liter",
    "liters",
    "litre",
    "litres",
    "ml",
    "gallon",
    "gallons",
    "cup",
    "cups",
    "people",
    "students",
    "ways",
    "points",
];

/// Whether `word` (possibly ending in `^2`, `^3` or `.`) is a unit word.
fn is_unit_word(word: &str) -> bool {
    let word = word.trim_end_matches('.');
    let word = ["^2", "^3", "^{2}", "^{3}"]
        .iter()
        .find_map(|p| word.strip_suffix(p))
        .unwrap_or(word);
    UNIT_WORDS.contains(&word.to_ascii_lowercase().as_str())
}

/// Normalizes a MATH answer (the content of its box) for comparison. See the module docs for
/// the rules; each pass below has its own. Idempotent.
pub(crate) fn normalize(answer: &str) -> String {
    let mut s = answer.trim().replace(['\n', '\r'], " ").replace("{,}", ",");
    s = unwrap_text_commands(&s);
    s = rewrite_commands(&s);
    for degree in ["^{\\circ}", "^\\circ", "^{°}", "°"] {
        s = s.replace(degree, "");
    }
    s = s.replace(['$', '%'], "");
    s = drop_trailing_unit_words(&s);
    s.retain(|c| !c.is_whitespace());
    while let Some(stripped) = s.strip_suffix('.') {
        s = stripped.to_string();
    }
    s = drop_variable_assignment(&s);
    s = brace_arguments(&s);
    s = unbrace_single_scripts(&s);
    s = fractions_to_slashes(&s);
    s = add_leading_zeros(&s);
    if let Some(letter) = multiple_choice_letter(&s) {
        return letter.to_string();
    }
    parse_decimal(&s).unwrap_or(s)
}

/// `\text{...}` and friends become their content; a group that holds only unit words and
/// follows something is dropped, with a `^2`/`^3` right after it.
fn unwrap_text_commands(s: &str) -> String {
    unwrap_text_commands_nested(s, 0)
}

fn unwrap_text_commands_nested(s: &str, depth: usize) -> String {
    if depth > MAX_NESTING {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        if let Some((name_len, open)) = text_command_at(rest) {
            if let Some(close) = matching_brace(rest, open) {
                let content = &rest[open + 1..close];
                let mut next = i + close + 1;
                let words: Vec<&str> = content.split_whitespace().collect();
                let is_units = !words.is_empty() && words.iter().all(|w| is_unit_word(w));
                if is_units && !out.trim().is_empty() {
                    for power in ["^{2}", "^{3}", "^2", "^3"] {
                        if s[next..].starts_with(power) {
                            next += power.len();
                            break;
                        }
                    }
                } else {
                    out.push_str(&unwrap_text_commands_nested(content, depth + 1));
                }
                i = next;
                continue;
            }
            // Unclosed group: keep the command name as text and go on.
            out.push_str(&rest[..name_len]);
            i += name_len;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// When `rest` starts with a text command and its `{`: the command's length and the offset of
/// the `{`.
fn text_command_at(rest: &str) -> Option<(usize, usize)> {
    let name = command_name(rest)?;
    if !TEXT_COMMANDS.contains(&name) {
        return None;
    }
    let name_len = 1 + name.len();
    let after = &rest[name_len..];
    let trimmed = after.trim_start();
    trimmed
        .starts_with('{')
        .then_some((name_len, name_len + after.len() - trimmed.len()))
}

/// The name of the command that `s` starts with: letters after `\`, or the one symbol after it.
fn command_name(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('\\')?;
    let letters = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    if letters > 0 {
        return Some(&rest[..letters]);
    }
    rest.chars().next().map(|c| &rest[..c.len_utf8()])
}

/// Rewrites commands token by token (so `\right` never matches inside `\rightarrow`, and `\\`
/// stays one token): spacing commands, `\left`, `\right`, `\displaystyle`, `\%` and `\$` go;
/// `\dfrac`/`\tfrac` become `\frac`; `\le`/`\ge`/`\ne` become `\leq`/`\geq`/`\neq`.
fn rewrite_commands(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        if let Some(name) = command_name(rest) {
            let token_len = 1 + name.len();
            let replacement = match name {
                "left" | "right" | "big" | "Big" | "bigl" | "bigr" | "Bigl" | "Bigr"
                | "displaystyle" | "textstyle" | "!" | "," | ";" | ":" | " " | "%" | "$"
                | "degree" => Some(""),
                "quad" | "qquad" => Some(" "),
                "dfrac" | "tfrac" => Some("\\frac"),
                "dbinom" | "tbinom" => Some("\\binom"),
                "le" => Some("\\leq"),
                "ge" => Some("\\geq"),
                "ne" => Some("\\neq"),
                _ => None,
            };
            out.push_str(replacement.unwrap_or(&rest[..token_len]));
            i += token_len;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Drops unit words written without `\text` after a number: `10 cm` -> `10`,
/// `5 inches^2` -> `5`. Only words of two letters or more, and not `in`.
fn drop_trailing_unit_words(s: &str) -> String {
    let mut words: Vec<&str> = s.split_whitespace().collect();
    while words.len() >= 2 {
        let last = words[words.len() - 1];
        let before = words[words.len() - 2];
        let bare = last.trim_end_matches('.');
        let is_unit = bare.len() >= 2
            && bare.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && !bare.eq_ignore_ascii_case("in")
            && is_unit_word(bare);
        if is_unit && before.ends_with(|c: char| c.is_ascii_digit() || c == '}') {
            words.pop();
        } else {
            break;
        }
    }
    if words.len() == s.split_whitespace().count() {
        s.to_string()
    } else {
        words.join(" ")
    }
}

/// `x=5` -> `5`, `y=2x+3` -> `2x+3`, `x\in[-2,7]` -> `[-2,7]`: a leading assignment to a
/// single variable (one letter, with an optional subscript, or one command like `\theta`).
fn drop_variable_assignment(s: &str) -> String {
    let (lhs, rhs) = if s.matches('=').count() == 1 {
        match s.split_once('=') {
            Some(parts) => parts,
            None => return s.to_string(),
        }
    } else if let Some(at) = s.find("\\in") {
        let rhs = &s[at + 3..];
        if rhs.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return s.to_string();
        }
        (&s[..at], rhs)
    } else {
        return s.to_string();
    };
    if rhs.is_empty() || !is_single_variable(lhs) {
        return s.to_string();
    }
    rhs.to_string()
}

/// One letter (`x`), a letter with a subscript (`x_1`, `a_{n}`), or one command (`\theta`).
fn is_single_variable(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some('\\') => {
            let name = &s[1..];
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic())
        }
        Some(c) if c.is_ascii_alphabetic() => {
            let rest = chars.as_str();
            rest.is_empty()
                || rest
                    .strip_prefix('_')
                    .is_some_and(|sub| !sub.is_empty() && sub.len() <= 4)
        }
        _ => false,
    }
}

/// Braces the arguments of `\frac`, `\binom` and `\sqrt` when they are single tokens:
/// `\frac12` -> `\frac{1}{2}`, `\frac{270}7` -> `\frac{270}{7}`, `\sqrt2` -> `\sqrt{2}`.
fn brace_arguments(s: &str) -> String {
    brace_arguments_nested(s, 0)
}

fn brace_arguments_nested(s: &str, depth: usize) -> String {
    if depth > MAX_NESTING {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        let Some(name) = command_name(rest) else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
            continue;
        };
        let token_len = 1 + name.len();
        out.push_str(&rest[..token_len]);
        i += token_len;
        let args = match name {
            "frac" | "binom" => 2,
            "sqrt" => 1,
            _ => continue,
        };
        if name == "sqrt"
            && s[i..].starts_with('[')
            && let Some(close) = s[i..].find(']')
        {
            out.push_str(&s[i..=i + close]);
            i += close + 1;
        }
        for _ in 0..args {
            let rest = &s[i..];
            if rest.starts_with('{') {
                let Some(close) = matching_brace(rest, 0) else {
                    break;
                };
                out.push('{');
                out.push_str(&brace_arguments_nested(&rest[1..close], depth + 1));
                out.push('}');
                i += close + 1;
            } else if let Some(cmd) = command_name(rest).filter(|_| rest.starts_with('\\')) {
                out.push('{');
                out.push_str(&rest[..1 + cmd.len()]);
                out.push('}');
                i += 1 + cmd.len();
            } else if let Some(c) = rest.chars().next().filter(|c| c.is_ascii_alphanumeric()) {
                out.push('{');
                out.push(c);
                out.push('}');
                i += c.len_utf8();
            } else {
                break;
            }
        }
    }
    out
}

/// `^{2}` -> `^2` and `_{5}` -> `_5`: a script of one letter or digit loses its braces.
fn unbrace_single_scripts(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if (b[i] == b'^' || b[i] == b'_')
            && b.get(i + 1) == Some(&b'{')
            && b.get(i + 2).is_some_and(u8::is_ascii_alphanumeric)
            && b.get(i + 3) == Some(&b'}')
        {
            out.push(b[i] as char);
            out.push(b[i + 2] as char);
            i += 4;
            continue;
        }
        let c = s[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// `\frac{a}{b}` -> `a/b` when both are atoms and nothing binds to the fraction from outside:
/// `\frac{\pi}{2}` -> `\pi/2`, `-\frac{3}{8}` -> `-3/8`, `\frac{\sqrt{3}}{2}` -> `\sqrt{3}/2`.
/// The numerator may be a number, a letter, a command or `\sqrt{..}` with a number as
/// coefficient (`3\sqrt{3}`); the denominator a number, a letter or a command. A fraction right
/// after a digit (a mixed number, `1\frac{4}{5}`), a letter, a closing bracket, `^` or `_`, or
/// right before a letter, a command or `^`, is left as it is, so no two different values meet.
fn fractions_to_slashes(s: &str) -> String {
    let mut s = s.to_string();
    let mut from = 0;
    while let Some(found) = s[from..].find("\\frac{") {
        let at = from + found;
        from = at + 5;
        let num_open = at + 5;
        let Some(num_close) = matching_brace(&s, num_open) else {
            continue;
        };
        if s.as_bytes().get(num_close + 1) != Some(&b'{') {
            continue;
        }
        let Some(den_close) = matching_brace(&s, num_close + 1) else {
            continue;
        };
        let numerator = &s[num_open + 1..num_close];
        let denominator = &s[num_close + 2..den_close];
        let before = s[..at].chars().next_back();
        let after = s[den_close + 1..].chars().next();
        let binds_before = !opens_environment(&s[..at])
            && before.is_some_and(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '}' | ')' | ']' | '^' | '_' | '.' | '!')
            });
        let binds_after = after.is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '\\' | '^'));
        if binds_before || binds_after || !is_atom(numerator, true) || !is_atom(denominator, false)
        {
            continue;
        }
        let replacement = format!("{numerator}/{denominator}");
        s.replace_range(at..=den_close, &replacement);
        from = at + replacement.len();
    }
    s
}

/// Whether `s` ends with `\begin{name}`, after which a fraction starts a matrix cell.
fn opens_environment(s: &str) -> bool {
    s.rfind("\\begin{").is_some_and(|at| {
        let rest = &s[at + "\\begin{".len()..];
        rest.strip_suffix('}')
            .is_some_and(|name| name.chars().all(|c| c.is_ascii_alphabetic()))
    })
}

/// A number, a letter or a command (`\pi`); for a numerator also `\sqrt{..}` of a number or a
/// letter, and any of these after a number (`3\sqrt{3}`, `5\pi`), with an optional `-`.
fn is_atom(s: &str, numerator: bool) -> bool {
    let s = if numerator {
        s.strip_prefix('-').unwrap_or(s)
    } else {
        s
    };
    if s.is_empty() {
        return false;
    }
    if parse_decimal(s).is_some() && !s.contains(',') && !s.starts_with(['-', '+']) {
        return true;
    }
    let tail = if numerator {
        s.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.')
    } else {
        s
    };
    if tail.is_empty() {
        return false;
    }
    if tail.len() == 1 {
        return tail.chars().all(|c| c.is_ascii_alphabetic());
    }
    if let Some(name) = tail.strip_prefix('\\') {
        if name.chars().all(|c| c.is_ascii_alphabetic()) {
            return name != "sqrt";
        }
        if numerator && let Some(arg) = name.strip_prefix("sqrt{").and_then(|r| r.strip_suffix('}'))
        {
            return !arg.is_empty()
                && (arg.chars().all(|c| c.is_ascii_digit())
                    || (arg.len() == 1 && arg.chars().all(|c| c.is_ascii_alphabetic())));
        }
    }
    false
}

/// `.5` -> `0.5` wherever a number starts with its decimal point.
fn add_leading_zeros(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len() + 2);
    for (i, c) in s.char_indices() {
        if c == '.'
            && b.get(i + 1).is_some_and(u8::is_ascii_digit)
            && (i == 0 || !b[i - 1].is_ascii_digit())
        {
            out.push('0');
        }
        out.push(c);
    }
    out
}

/// `(C)` -> `C`: a multiple-choice letter in parentheses.
fn multiple_choice_letter(s: &str) -> Option<&str> {
    let letter = s.strip_prefix('(')?.strip_suffix(')')?;
    (letter.len() == 1 && letter.chars().all(|c| c.is_ascii_uppercase())).then_some(letter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize(s)
    }

    #[test]
    fn dfrac_and_frac_shorthand() {
        assert_eq!(n("\\dfrac{33}{100}"), n("\\frac{33}{100}"));
        assert_eq!(n("\\tfrac{1}{2}"), "1/2");
        assert_eq!(n("\\frac12"), "1/2");
        assert_eq!(n("\\frac 59"), "5/9");
        assert_eq!(n("\\frac{270}7"), "270/7");
        assert_eq!(n("\\frac9{19}"), "9/19");
        assert_eq!(n("\\sqrt2"), "\\sqrt{2}");
        assert_eq!(n("11\\sqrt2"), "11\\sqrt{2}");
    }

    #[test]
    fn degrees_percent_dollars_and_text() {
        assert_eq!(n("30^\\circ"), "30");
        assert_eq!(n("90^{\\circ}"), "90");
        assert_eq!(n("10\\%"), "10");
        assert_eq!(n("\\$18.90"), "18.9");
        assert_eq!(n("\\$32,\\!348"), "32348");
        assert_eq!(n("\\text{(A)}"), "A");
        assert_eq!(n("\\textbf{(C)}"), "C");
        assert_eq!(n("\\text{Navin}"), "Navin");
        assert_eq!(n("\\mbox{even}"), "even");
    }

    #[test]
    fn units_are_dropped_only_after_something() {
        assert_eq!(n("864 \\mbox{ inches}^2"), "864");
        assert_eq!(n("15\\mbox{ cm}^2"), "15");
        assert_eq!(n("5.4 \\text{ cents}"), "5.4");
        assert_eq!(n("\\frac{270}7\\text{ degrees}"), "270/7");
        assert_eq!(n("10 cm"), "10");
        // A lone word stays: it is the answer.
        assert_eq!(n("\\text{cm}"), "cm");
        // Not a unit.
        assert_eq!(n("\\text{east}"), "east");
    }

    #[test]
    fn left_right_and_spaces() {
        assert_eq!(n("\\left( 3, \\frac{\\pi}{2} \\right)"), "(3,\\pi/2)");
        assert_eq!(
            n("\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]"),
            "[\\frac{\\pi^2}{8},\\frac{5\\pi^2}{4}]"
        );
        assert_eq!(n("x \\rightarrow 0"), "x\\rightarrow0");
        assert_eq!(n("11,\\! 111,\\! 111,\\! 100"), "11111111100");
        assert_eq!(n("10{,}000"), "10000");
    }

    #[test]
    fn assignments_and_numbers() {
        assert_eq!(n("x = 5"), "5");
        assert_eq!(n("y = 2x + 3"), "2x+3");
        assert_eq!(n("x \\in [-2,7]"), "[-2,7]");
        assert_eq!(n("5x - 7y + 11z + 4 = 0"), "5x-7y+11z+4=0");
        assert_eq!(n("0.50"), "0.5");
        assert_eq!(n(".35625"), "0.35625");
        assert_eq!(n("05"), "5");
        assert_eq!(n("18.00."), "18");
        assert_eq!(n("4210_{5}"), "4210_5");
    }

    #[test]
    fn fractions_near_other_terms_stay_fractions() {
        assert_eq!(n("1\\frac{4}{5}"), "1\\frac{4}{5}");
        assert_eq!(n("\\frac{1}{5}\\pi"), "\\frac{1}{5}\\pi");
        assert_eq!(n("x^\\frac{1}{2}"), "x^\\frac{1}{2}");
        assert_eq!(n("\\frac{1}{5\\pi}"), "\\frac{1}{5\\pi}");
        assert_eq!(n("-\\frac{3}{8}"), "-3/8");
        assert_eq!(n("\\frac{3\\sqrt{3}}{4}"), "3\\sqrt{3}/4");
    }

    #[test]
    fn normalization_is_idempotent() {
        for s in [
            "\\left( 3, \\frac{\\pi}{2} \\right)",
            "\\frac{270}7\\text{ degrees}",
            "\\$32,\\!348",
            "x \\in [-2,7]",
            "\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}",
            "1\\frac{4}{5}",
        ] {
            let once = n(s);
            assert_eq!(n(&once), once, "{s}");
        }
    }
}
