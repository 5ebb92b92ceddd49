//! A run's source: a git repository checked out into its workspace before the first
//! step.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The repository a run builds, checked out into its workspace by the runner before
/// the first step: the step containers need neither git nor a network.
///
/// ```
/// let source: simple_runner::spec::Source = serde_json::from_value(serde_json::json!({
///     "git": "https://git.example.com/team/app.git",
///     "ref": "v1.2.0",
///     "depth": 1
/// }))?;
/// assert_eq!(source.reference.as_deref(), Some("v1.2.0"));
/// assert!(!source.submodules);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    description = "A git repository checked out into the run's workspace by the runner before the first step."
)]
pub struct Source {
    /// The repository's URL (`https://…`, `http://…`, `git://…`, `ssh://…`). Its
    /// credentials come from the runner's operator, never from the resource: a URL
    /// with a user name or password in it is refused.
    #[schemars(length(min = 1), regex(pattern = r"^(https?|git|ssh)://[^@/\s]+(/\S*)?$"))]
    pub git: String,
    /// A branch, a tag or a full commit id (default: the repository's default branch).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[^\s~^:?*\[\\]+$"))]
    pub reference: Option<String>,
    /// How many commits of history to fetch (default: all of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub depth: Option<u32>,
    /// Whether the repository's submodules are checked out too (default `false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub submodules: bool,
}
