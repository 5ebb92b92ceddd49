//! One log line of a run.

use serde::{Deserialize, Deserializer, Serialize};

/// One log line of a run, as stored by the server and relayed to live viewers.
///
/// The key is `runid` (no underscore), unlike [`DriverMessage::run_id`](super::DriverMessage::run_id).
///
/// ```
/// let line: conveyor_sdk::Log = serde_json::from_str(
///     r#"{"runid":"r-1","driver":"command-runner","pipeline":"","timestamp":"2026-11-23T21:30:46.123456789Z","message":"total 4"}"#,
/// )?;
/// assert_eq!(line.message, "total 4");
/// assert_eq!(line.pipeline, None, "the server's empty pipeline means none");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Log {
    /// The run the line belongs to.
    pub runid: String,
    /// The driver that wrote it.
    pub driver: String,
    /// The resource's pipeline; omitted when it has none (the server reads `""`).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "empty_as_none")]
    pub pipeline: Option<String>,
    /// RFC 3339 UTC with nine fractional digits; sorts in emission order within a run.
    pub timestamp: String,
    /// The line, without its line break.
    pub message: String,
}

fn empty_as_none<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.filter(|s| !s.is_empty()))
}
