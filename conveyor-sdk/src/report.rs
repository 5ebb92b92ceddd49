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
