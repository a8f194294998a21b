//! Plain numbers in free text: finding them and writing them in one canonical form.
//!
//! The canonical form is a decimal string: an optional `-`, the integer digits without leading
//! zeros or thousands separators, and a fraction without trailing zeros (`1,600` -> `1600`,
//! `18.00` -> `18`, `.5` -> `0.5`, `-0` -> `0`). It is computed on the digits, not through
//! `f64`, so large integers stay exact.

/// A number found in text: its byte span and canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Byte offset of the first digit (or of the `.` of `.5`); a sign or `$` before it is not
    /// included.
    pub start: usize,
    /// Byte offset just past the last digit.
    pub end: usize,
    /// The canonical decimal string.
    pub value: String,
}

/// The canonical decimal string of a sign, integer digits and fraction digits.
pub(crate) fn canonical(negative: bool, int_digits: &str, frac_digits: &str) -> String {
    let int = int_digits.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let frac = frac_digits.trim_end_matches('0');
    let mut out = String::with_capacity(int.len() + frac.len() + 2);
    if negative && (int != "0" || !frac.is_empty()) {
        out.push('-');
    }
    out.push_str(int);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// Every number in `text`, left to right.
///
/// A number is digits with optional thousands groups (`1,600`, `1,450,000`: a first group of
/// 1 to 3 digits, then groups of exactly 3) and an optional fraction (`18.00`), or a fraction
/// alone (`.5`). A `-` (or the Unicode minus `−`) right before it, or before a `$` right before
/// it, is its sign unless it follows a letter, digit or closing bracket (then it is a binary
/// minus: `10-3` holds `10` and `3`). A trailing `.` is not part of a number.
pub(crate) fn numbers(text: &str) -> Vec<Found> {
    let b = text.as_bytes();
    let digit = |i: usize| i < b.len() && b[i].is_ascii_digit();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts_fraction = b[i] == b'.' && digit(i + 1) && (i == 0 || !digit(i - 1));
        if !digit(i) && !starts_fraction {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i;
        while digit(j) {
            j += 1;
        }
        let mut int: String = text[start..j].to_string();
        if (1..=3).contains(&(j - start)) {
            while j + 3 < b.len()
                && b[j] == b','
                && digit(j + 1)
                && digit(j + 2)
                && digit(j + 3)
                && !digit(j + 4)
            {
                int.push_str(&text[j + 1..j + 4]);
                j += 4;
            }
        }
        let mut frac = "";
        if j < b.len() && b[j] == b'.' && digit(j + 1) {
            let frac_start = j + 1;
            j = frac_start;
            while digit(j) {
                j += 1;
            }
            frac = &text[frac_start..j];
        }
        let negative = has_sign(text, start);
        found.push(Found {
            start,
            end: j,
            value: canonical(negative, &int, frac),
        });
        i = j;
    }
    found
}

/// Whether the number starting at byte `start` has a minus sign before it.
fn has_sign(text: &str, start: usize) -> bool {
    let mut before = &text[..start];
    before = before
        .strip_suffix("\\$")
        .or_else(|| before.strip_suffix('$'))
        .unwrap_or(before);
    let Some(rest) = before
        .strip_suffix('-')
        .or_else(|| before.strip_suffix('\u{2212}'))
    else {
        return false;
    };
    match rest.chars().next_back() {
        None => true,
        Some(c) => !(c.is_alphanumeric() || matches!(c, ')' | ']' | '}' | '.')),
    }
}

/// The first number in `text`, canonical.
pub(crate) fn first_number(text: &str) -> Option<String> {
    numbers(text).into_iter().next().map(|f| f.value)
}

/// The last number in `text`, canonical.
pub(crate) fn last_number(text: &str) -> Option<String> {
    numbers(text).pop().map(|f| f.value)
}

/// The canonical form of `s` when all of it (after trimming) is one number: an optional sign
/// and a number as [`numbers`] reads it (thousands separators allowed). `None` otherwise.
pub(crate) fn parse_decimal(s: &str) -> Option<String> {
    let s = s.trim();
    let unsigned = s
        .strip_prefix('-')
        .or_else(|| s.strip_prefix('\u{2212}'))
        .or_else(|| s.strip_prefix('+'))
        .unwrap_or(s);
    let found = numbers(unsigned);
    match found.as_slice() {
        [only] if only.start == 0 && only.end == unsigned.len() => {
            let negative = unsigned.len() != s.len() && !s.starts_with('+');
            if negative && only.value != "0" {
                Some(format!("-{}", only.value.trim_start_matches('-')))
            } else {
                Some(only.value.clone())
            }
        }
        _ => None,
    }
}

/// Whether two numbers are equal within a relative tolerance of 1e-6.
pub(crate) fn close(a: f64, b: f64) -> bool {
    if a == b {
        return true;
    }
    let scale = a.abs().max(b.abs());
    (a - b).abs() <= 1e-6 * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<String> {
        numbers(text).into_iter().map(|f| f.value).collect()
    }

    #[test]
    fn canonical_form() {
        assert_eq!(canonical(false, "0018", "00"), "18");
        assert_eq!(canonical(false, "0", "50"), "0.5");
        assert_eq!(canonical(false, "", "5"), "0.5");
        assert_eq!(canonical(true, "0", "0"), "0");
        assert_eq!(canonical(true, "3", ""), "-3");
    }

    #[test]
    fn thousands_separators_join_only_groups_of_three() {
        assert_eq!(values("It costs $1,600 in total."), vec!["1600"]);
        assert_eq!(values("1,450,000 people"), vec!["1450000"]);
        assert_eq!(values("the roots are 3,5,7"), vec!["3", "5", "7"]);
        assert_eq!(values("1,2345"), vec!["1", "2345"]);
        assert_eq!(values("1234,567"), vec!["1234", "567"]);
    }

    #[test]
    fn signs_decimals_and_trailing_periods() {
        assert_eq!(values("The temperature is -3 degrees."), vec!["-3"]);
        assert_eq!(values("She lost -$5 today"), vec!["-5"]);
        assert_eq!(values("10-3=7"), vec!["10", "3", "7"]);
        assert_eq!(values("x-3"), vec!["3"]);
        assert_eq!(values("The answer is 18."), vec!["18"]);
        assert_eq!(values("It is 18.00 dollars"), vec!["18"]);
        assert_eq!(values("half is 0.5 and .25"), vec!["0.5", "0.25"]);
        assert_eq!(values("\u{2212}7"), vec!["-7"]);
        assert_eq!(values("3.14.15"), vec!["3.14", "15"]);
    }

    #[test]
    fn first_and_last() {
        assert_eq!(first_number("5 apples and 3 pears").as_deref(), Some("5"));
        assert_eq!(last_number("5 apples and 3 pears").as_deref(), Some("3"));
        assert_eq!(first_number("no digits here"), None);
    }

    #[test]
    fn whole_string_numbers() {
        assert_eq!(parse_decimal(" 1,600 ").as_deref(), Some("1600"));
        assert_eq!(parse_decimal("-0.50").as_deref(), Some("-0.5"));
        assert_eq!(parse_decimal("-0").as_deref(), Some("0"));
        assert_eq!(parse_decimal("+5").as_deref(), Some("5"));
        assert_eq!(parse_decimal("05").as_deref(), Some("5"));
        assert_eq!(parse_decimal(".35625").as_deref(), Some("0.35625"));
        assert_eq!(parse_decimal("5 apples"), None);
        assert_eq!(parse_decimal("3,5"), None);
        assert_eq!(parse_decimal("--5"), None);
        assert_eq!(parse_decimal(""), None);
    }

    #[test]
    fn tolerance_is_relative() {
        assert!(close(18.0, 18.000_000_1));
        assert!(!close(18.0, 180.0));
        assert!(close(1e9, 1e9 + 1.0));
        assert!(!close(0.0, 1e-9));
    }
}
