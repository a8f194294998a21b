//! Comparing normalized MATH answers: as strings, as numbers (`0.5` = `\frac{1}{2}` = `1/2`),
//! or element by element as tuples, intervals, sets, lists or matrices.

use super::extract::matching_brace;
use super::latex::{MAX_NESTING, normalize};
use super::number::{close, parse_decimal};

/// The value of a normalized answer that is a plain number: a decimal, `a/b` of decimals, or
/// a mixed number `N\frac{a}{b}`, with an optional `-`.
pub(crate) fn numeric_value(s: &str) -> Option<f64> {
    if let Some(d) = parse_decimal(s) {
        return d.parse().ok();
    }
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let value = if let Some((num, den)) = body.split_once('/') {
        plain_number(num)? / nonzero(plain_number(den)?)?
    } else if let Some(at) = body.find("\\frac{") {
        let whole = &body[..at];
        if !whole.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let fraction = &body[at + 5..];
        let num_close = matching_brace(fraction, 0)?;
        let den = fraction[num_close + 1..]
            .strip_prefix('{')?
            .strip_suffix('}')?;
        let num = &fraction[1..num_close];
        let whole = if whole.is_empty() {
            0.0
        } else {
            plain_number(whole)?
        };
        whole + plain_number(num)? / nonzero(plain_number(den)?)?
    } else {
        return None;
    };
    Some(if negative { -value } else { value })
}

/// An unsigned decimal's value.
fn plain_number(s: &str) -> Option<f64> {
    if s.starts_with(['-', '+']) {
        return None;
    }
    parse_decimal(s)?.parse().ok()
}

/// `Some(x)` unless `x` is zero.
fn nonzero(x: f64) -> Option<f64> {
    (x != 0.0).then_some(x)
}

/// Whether two MATH answers are equal: as normalized strings, as numbers, as words ignoring
/// case, or element by element (tuples and intervals in order, with the same brackets; sets,
/// unions and bare comma lists in any order; matrices row by row).
pub(crate) fn equivalent(a: &str, b: &str) -> bool {
    let (a, b) = (normalize(a), normalize(b));
    equivalent_normalized(&a, &b, 0)
}

fn equivalent_normalized(a: &str, b: &str, depth: usize) -> bool {
    if a == b {
        return true;
    }
    if let (Some(x), Some(y)) = (numeric_value(a), numeric_value(b)) {
        return close(x, y);
    }
    if is_word(a) && is_word(b) {
        return a.eq_ignore_ascii_case(b);
    }
    if depth > MAX_NESTING {
        return false;
    }
    let (Some(la), Some(lb)) = (split_list(a), split_list(b)) else {
        return false;
    };
    if la.open != lb.open || la.close != lb.close || la.items.len() != lb.items.len() {
        return false;
    }
    let same = |x: &str, y: &str| equivalent_normalized(x, y, depth + 1);
    if la.ordered {
        la.items.iter().zip(&lb.items).all(|(x, y)| same(x, y))
    } else {
        let mut used = vec![false; lb.items.len()];
        la.items.iter().all(|x| {
            let hit = lb
                .items
                .iter()
                .enumerate()
                .find(|&(j, y)| !used[j] && same(x, y))
                .map(|(j, _)| j);
            hit.map(|j| used[j] = true).is_some()
        })
    }
}

/// A word answer (`even`, `Navin`): ASCII letters only, two or more.
fn is_word(s: &str) -> bool {
    s.len() >= 2 && s.chars().all(|c| c.is_ascii_alphabetic())
}

/// An answer read as a list of items.
#[derive(Debug, PartialEq)]
struct List<'a> {
    open: &'a str,
    close: &'a str,
    items: Vec<&'a str>,
    ordered: bool,
}

/// Splits a tuple, interval, set, matrix, union or bare list into its items (at least two
/// items, except inside brackets).
fn split_list(s: &str) -> Option<List<'_>> {
    for env in ["pmatrix", "bmatrix", "matrix", "vmatrix", "Bmatrix"] {
        let open = format!("\\begin{{{env}}}");
        let close = format!("\\end{{{env}}}");
        if let Some(body) = s
            .strip_prefix(open.as_str())
            .and_then(|r| r.strip_suffix(close.as_str()))
        {
            let open_len = open.len();
            return Some(List {
                open: &s[..open_len],
                close: &s[s.len() - close.len()..],
                items: split_top_level(body, "\\\\"),
                ordered: true,
            });
        }
    }
    for (open, close, ordered) in [
        ("\\{", "\\}", false),
        ("(", ")", true),
        ("(", "]", true),
        ("[", ")", true),
        ("[", "]", true),
    ] {
        if let Some(body) = s.strip_prefix(open).and_then(|r| r.strip_suffix(close))
            && encloses(s, open.len(), s.len() - close.len())
        {
            return Some(List {
                open,
                close,
                items: split_top_level(body, ","),
                ordered,
            });
        }
    }
    for (sep, ordered) in [("\\cup", false), (",", false), ("&", true)] {
        let items = split_top_level(s, sep);
        if items.len() >= 2 {
            return Some(List {
                open: "",
                close: "",
                items,
                ordered,
            });
        }
    }
    None
}

/// Whether the brackets in `s[body_start..body_end]` balance without closing the outer one.
fn encloses(s: &str, body_start: usize, body_end: usize) -> bool {
    let mut depth = 0i32;
    for &c in &s.as_bytes()[body_start..body_end] {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

/// Splits `s` at every `sep` outside brackets.
fn split_top_level<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    let b = s.as_bytes();
    let mut items = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        if depth == 0 && b[i..].starts_with(sep.as_bytes()) {
            items.push(&s[start..i]);
            i += sep.len();
            start = i;
            continue;
        }
        i += 1;
    }
    items.push(&s[start..]);
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grade::extract::last_boxed;

    fn n(s: &str) -> String {
        normalize(s)
    }

    #[test]
    fn numeric_values() {
        assert_eq!(numeric_value("0.5"), Some(0.5));
        assert_eq!(numeric_value("-3/8"), Some(-0.375));
        assert_eq!(numeric_value("1\\frac{4}{5}"), Some(1.8));
        assert_eq!(numeric_value("-137\\frac{1}{2}"), Some(-137.5));
        assert_eq!(numeric_value("1/0"), None);
        assert_eq!(numeric_value("\\pi/2"), None);
        assert_eq!(numeric_value("2x"), None);
    }

    #[test]
    fn equivalences() {
        assert!(equivalent("0.50", "\\frac12"));
        assert!(equivalent("\\dfrac{1}{2}", "1/2"));
        assert!(equivalent("137 \\frac{1}{2}", "137.5"));
        assert!(equivalent(
            "\\left( 3, \\frac{\\pi}{2} \\right)",
            "(3, \\pi/2)"
        ));
        assert!(equivalent(
            "(3,\\tfrac{\\pi}{2})",
            "\\left(3,\\frac{\\pi}{2}\\right)"
        ));
        assert!(equivalent(
            "\\{1\\pm\\sqrt{5},-2\\}",
            "\\{-2, 1\\pm\\sqrt5\\}"
        ));
        assert!(equivalent("1,-2", "-2, 1"));
        assert!(equivalent("\\text{East}", "east"));
        assert!(equivalent("10,000", "10000"));
        assert!(equivalent(
            "\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}",
            "\\begin{pmatrix} \\frac{1}{5} \\\\ -3.6 \\end{pmatrix}"
        ));
        assert!(equivalent("(2,12) \\cup (12,102)", "(12,102)\\cup(2,12)"));
    }

    #[test]
    fn wrong_answers_are_not_equivalent() {
        assert!(!equivalent("\\frac{1}{2}", "\\frac{2}{1}"));
        assert!(!equivalent("(3,\\pi/2)", "(3,\\pi)"));
        assert!(!equivalent("(3,4]", "(3,4)"));
        assert!(!equivalent("(1,2)", "(2,1)"));
        assert!(!equivalent("18", "180"));
        assert!(!equivalent("1\\frac{4}{5}", "14/5"));
        assert!(!equivalent("\\frac{1}{5\\pi}", "\\frac{1}{5}\\pi"));
        assert!(!equivalent("\\text{(A)}", "\\text{(B)}"));
        assert!(!equivalent(
            "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
            "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}"
        ));
        assert!(!equivalent("", "0"));
    }

    #[test]
    fn non_ascii_and_deep_nesting_do_not_panic() {
        assert!(equivalent("π, 2", "2,π"));
        assert!(!equivalent("(π, 2)", "(2,π)"));
        assert_eq!(n("√2 · 3°"), "√2·3");
        let deep = format!("{}1{}", "\\text{".repeat(2_000), "}".repeat(2_000));
        let _ = n(&deep);
        let deep = format!("{}1{}", "\\frac{".repeat(2_000), "}{2}".repeat(2_000));
        let _ = n(&deep);
        let _ = Some(last_boxed("\\boxed{é"));
    }
}
