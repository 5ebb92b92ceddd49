//! What an image reference may look like.

/// The grammar of an image reference, as the Docker engine reads one: an optional
/// registry host (with a port), a path of lower-case components, an optional tag and an
/// optional digest (`127.0.0.1:5000/team/app:1.2@sha256:…`).
///
/// ```
/// let reference = regex::Regex::new(simple_runner::spec::IMAGE_REFERENCE).unwrap();
/// assert!(reference.is_match("alpine:3.20"));
/// assert!(reference.is_match("127.0.0.1:5000/team/app:1.2"));
/// assert!(!reference.is_match("Alpine"));
/// assert!(!reference.is_match("alpine:"));
/// ```
pub const IMAGE_REFERENCE: &str = concat!(
    r"^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*",
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?/)?",
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*",
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
);
