//! A run's caches and artifacts: files of its workspace kept in the JetStream object
//! store, between runs (caches) or after the run (artifacts).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A cache: paths of the workspace restored before the first step and saved after a
/// successful run, under a key.
///
/// ```
/// let cache: simple_runner::spec::Cache = serde_json::from_value(serde_json::json!({
///     "key": "cargo-{{ checksum \"Cargo.lock\" }}",
///     "paths": ["target", ".cargo/registry"],
///     "restore_keys": ["cargo-"]
/// }))?;
/// assert_eq!(cache.paths.len(), 2);
/// assert!(!cache.shared);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    description = "Paths of the workspace restored before the first step and saved after a successful run, under a key."
)]
pub struct Cache {
    /// The entry's key: letters, digits and `._-`, with `{{ checksum "FILE" }}` for
    /// the SHA-256 of a workspace file. An entry is saved only when its key is new:
    /// entries are never overwritten.
    #[schemars(length(min = 1, max = 200))]
    pub key: String,
    /// The paths saved and restored, relative to the workspace.
    #[schemars(length(min = 1))]
    pub paths: Vec<String>,
    /// Prefixes of keys to restore from when no entry has the exact key: the newest
    /// entry whose key starts with the first prefix that has one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_keys: Vec<String>,
    /// Whether the entry is shared by every resource of the driver (default `false`:
    /// the resource's own).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

/// An artifact: paths of the workspace kept after the run, under the run's id.
///
/// ```
/// let artifact: simple_runner::spec::Artifact = serde_json::from_value(serde_json::json!({
///     "name": "binary",
///     "paths": ["target/release/app"],
///     "when": "always"
/// }))?;
/// assert_eq!(artifact.when, simple_runner::spec::ArtifactWhen::Always);
/// assert!(!artifact.optional);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    description = "Paths of the workspace kept after the run in the object store, under the run's id."
)]
pub struct Artifact {
    /// Its name, under which it is fetched: letters, digits and `._-`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"))]
    pub name: String,
    /// The paths it holds, relative to the workspace.
    #[schemars(length(min = 1))]
    pub paths: Vec<String>,
    /// When it is kept (default `on_success`).
    #[serde(default, skip_serializing_if = "ArtifactWhen::is_default")]
    pub when: ArtifactWhen,
    /// Whether a missing path is fine (default `false`: it fails the run).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// When an artifact is kept.
///
/// ```
/// use simple_runner::spec::ArtifactWhen;
///
/// assert!(ArtifactWhen::OnSuccess.keeps(true) && !ArtifactWhen::OnSuccess.keeps(false));
/// assert!(ArtifactWhen::OnFailure.keeps(false) && ArtifactWhen::Always.keeps(true));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactWhen {
    /// When the steps succeeded.
    #[default]
    OnSuccess,
    /// When a step failed.
    OnFailure,
    /// Whatever the steps came to.
    Always,
}

impl ArtifactWhen {
    /// Whether an artifact with this condition is kept when the steps `succeeded`.
    ///
    /// ```
    /// assert!(simple_runner::spec::ArtifactWhen::Always.keeps(false));
    /// ```
    pub fn keeps(self, succeeded: bool) -> bool {
        match self {
            ArtifactWhen::OnSuccess => succeeded,
            ArtifactWhen::OnFailure => !succeeded,
            ArtifactWhen::Always => true,
        }
    }

    fn is_default(&self) -> bool {
        *self == ArtifactWhen::OnSuccess
    }
}
