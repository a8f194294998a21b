//! Finding the final answer of a MATH-style response: the last `\boxed{}`, or the answer after
//! a marker such as "The final answer is".

/// The content of the last `\boxed{...}` (or `\fbox{...}`, or `\boxed 5`) in `text`, with
/// nested braces; earlier boxes are tried when the last one is not closed.
pub(crate) fn last_boxed(text: &str) -> Option<&str> {
    let mut starts: Vec<(usize, usize)> = Vec::new();
    for name in ["\\boxed", "\\fbox"] {
        for (at, _) in text.match_indices(name) {
            let after = at + name.len();
            if !text[after..].starts_with(|c: char| c.is_ascii_alphabetic()) {
                starts.push((at, after));
            }
        }
    }
    starts.sort_unstable();
    starts
        .iter()
        .rev()
        .find_map(|&(_, after)| boxed_argument(text, after))
}

/// The argument of a `\boxed` whose name ends at byte `after`: a brace group, or a token after
/// a space (`\boxed 5`), up to whitespace or `$`.
fn boxed_argument(text: &str, after: usize) -> Option<&str> {
    let rest = &text[after..];
    let trimmed = rest.trim_start();
    if trimmed.starts_with('{') {
        let open = after + (rest.len() - trimmed.len());
        let close = matching_brace(text, open)?;
        return Some(&text[open + 1..close]);
    }
    if trimmed.len() == rest.len() {
        return None;
    }
    let token = trimmed
        .split(|c: char| c.is_whitespace() || c == '$')
        .next()
        .unwrap_or("");
    (!token.is_empty()).then_some(token)
}

/// The byte index of the `}` closing the `{` at `open`. Escaped braces `\{` `\}` (and the
/// pair `\\`) do not count.
pub(super) fn matching_brace(text: &str, open: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The answer stated after the last answer marker (`final answer is`, `final answer:`,
/// `**Final Answer**`, `the answer is`, any case): the first `$...$` span on its line if there
/// is one, else the line up to the end of its first sentence.
pub(crate) fn after_answer_marker(text: &str) -> Option<&str> {
    let end = last_marker_end(text, &["final answer", "answer is"])?;
    let rest =
        text[end..].trim_start_matches(|c: char| c.is_whitespace() || matches!(c, ':' | '*' | '#'));
    let rest = rest.strip_prefix("is").unwrap_or(rest);
    let rest = rest.trim_start_matches(|c: char| c.is_whitespace() || matches!(c, ':' | '*'));
    let line = rest.lines().next().unwrap_or("").trim();
    if let Some(open) = unescaped_dollar(line, 0) {
        let mut start = open + 1;
        if line[start..].starts_with('$') {
            start += 1; // `$$...$$`
        }
        if let Some(close) = unescaped_dollar(line, start) {
            return Some(line[start..close].trim());
        }
    }
    let sentence = line.split(". ").next().unwrap_or(line);
    let sentence = sentence.trim().trim_end_matches('.').trim();
    (!sentence.is_empty()).then_some(sentence)
}

/// The byte offset of the first `$` at or after `from` that is not escaped as `\$`.
fn unescaped_dollar(s: &str, from: usize) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'$' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The byte offset just past the last occurrence of any marker, matched ignoring ASCII case.
pub(crate) fn last_marker_end(text: &str, markers: &[&str]) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    markers
        .iter()
        .filter_map(|m| lower.rfind(m).map(|at| at + m.len()))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_with_nested_braces() {
        let out = "So $\\sin 60^\\circ = \\boxed{\\frac{\\sqrt{3}}{2}}$.";
        assert_eq!(last_boxed(out), Some("\\frac{\\sqrt{3}}{2}"));
        assert_eq!(last_boxed("\\boxed{1} then \\boxed{2}"), Some("2"));
        assert_eq!(last_boxed("The answer is $\\boxed 5$."), Some("5"));
        assert_eq!(last_boxed("\\fbox{7}"), Some("7"));
        assert_eq!(last_boxed("\\boxed{\\{1,2\\}}"), Some("\\{1,2\\}"));
        // An unclosed last box falls back to the one before.
        assert_eq!(last_boxed("\\boxed{3} and \\boxed{4"), Some("3"));
        assert_eq!(last_boxed("\\boxedx{3}"), None);
        assert_eq!(last_boxed("no box"), None);
    }

    #[test]
    fn answer_markers() {
        assert_eq!(
            after_answer_marker(
                "Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct."
            ),
            Some("\\frac{1}{2}")
        );
        assert_eq!(
            after_answer_marker("**Final Answer**\n\n(3, 4]"),
            Some("(3, 4]")
        );
        assert_eq!(
            after_answer_marker("So the answer is 12. Done."),
            Some("12")
        );
        assert_eq!(
            after_answer_marker("The final answer is $\\$18.90$. I hope it is correct."),
            Some("\\$18.90")
        );
        assert_eq!(
            after_answer_marker("The final answer is $$x+1$$"),
            Some("x+1")
        );
        assert_eq!(after_answer_marker("nothing here"), None);
    }
}
