//! Errors as one line of text, for logs and results.

/// An error and its sources on one line, `outer: cause: root cause`; a source whose
/// text the line already holds is not repeated.
///
/// ```
/// #[derive(Debug, thiserror::Error)]
/// #[error("cannot clone the repository")]
/// struct CloneError(#[source] std::io::Error);
///
/// let error = CloneError(std::io::Error::other("connection refused"));
/// assert_eq!(error.to_string(), "cannot clone the repository");
/// assert_eq!(conveyor_sdk::error_text(&error), "cannot clone the repository: connection refused");
/// ```
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Text from outside as the driver's diagnostics and results may hold it: each control
/// character escaped as Rust writes it (`\n`, `\u{0}`), so that it cannot forge a line,
/// and cut after `max` characters, saying how many bytes it had. Borrowed as it is when
/// nothing needs escaping or cutting.
pub(crate) fn shown(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match escaped(text, max, char::is_control) {
        None => std::borrow::Cow::Borrowed(text),
        Some((head, None)) => std::borrow::Cow::Owned(head),
        Some((head, Some(bytes))) => std::borrow::Cow::Owned(format!("{head}… ({bytes} bytes)")),
    }
}

/// How many characters of a name from outside (a run id) [`quoted`] shows.
pub(crate) const SHOWN_NAME: usize = 64;

/// A name from outside in quotes: every character that is not printable (a control
/// character, a quote, a backslash, …) escaped, cut after [`SHOWN_NAME`] characters:
/// `"a\r\nb"`, `"aaaa…" (100000 bytes)`.
pub(crate) fn quoted(text: &str) -> String {
    match escaped(text, SHOWN_NAME, |c| c.escape_debug().len() != 1) {
        None => format!("\"{text}\""),
        Some((head, None)) => format!("\"{head}\""),
        Some((head, Some(bytes))) => format!("\"{head}…\" ({bytes} bytes)"),
    }
}

/// `None` when `text` has no character to escape and at most `max`; else its first
/// `max` characters, those to escape escaped, and its length in bytes when it was cut.
fn escaped(text: &str, max: usize, escape: impl Fn(char) -> bool) -> Option<(String, Option<usize>)> {
    let mut chars = text.chars();
    if !chars.by_ref().take(max).any(&escape) && chars.next().is_none() {
        return None;
    }
    let mut head = String::with_capacity(max.min(text.len()) + 8);
    let mut chars = text.chars();
    for c in chars.by_ref().take(max) {
        if escape(c) {
            head.extend(c.escape_debug());
        } else {
            head.push(c);
        }
    }
    Some((head, chars.next().is_some().then_some(text.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_text_escapes_control_characters_and_is_cut_with_its_length() {
        assert_eq!(shown("run \"1\"", 64), "run \"1\"");
        assert!(matches!(shown("run-1", 64), std::borrow::Cow::Borrowed(_)));
        assert_eq!(shown("a\r\nb\0", 64), "a\\r\\nb\\0");
        assert_eq!(shown("abcdef", 3), "abc… (6 bytes)");
        assert_eq!(shown(&"\n".repeat(10), 2), "\\n\\n… (10 bytes)");
    }

    #[test]
    fn a_quoted_name_is_escaped_within_its_quotes_and_its_length_outside() {
        assert_eq!(quoted("a b"), "\"a b\"");
        assert_eq!(quoted("a\"b\n"), "\"a\\\"b\\n\"");
        assert_eq!(quoted(""), "\"\"");
        let long = "x".repeat(100_000);
        assert_eq!(quoted(&long), format!("\"{}…\" (100000 bytes)", "x".repeat(SHOWN_NAME)));
    }
}
