//! Why an artifact could not be kept or fetched.

use super::ArtifactKey;

/// Why an artifact could not be kept, fetched, listed or deleted.
///
/// ```
/// use conveyor_sdk::artifacts::{ArtifactError, ArtifactKey};
///
/// let error = ArtifactKey::new("command-runner", "7c1d", "a/b").unwrap_err();
/// assert_eq!(error.to_string(), "\"a/b\" cannot be an artifact's name: it holds a `/`");
/// assert!(matches!(error, ArtifactError::InvalidKey { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// A driver, run id or name cannot be part of an artifact's key.
    #[error("{text:?} cannot be an artifact's {part}: {fault}")]
    InvalidKey {
        /// Which part: `driver`, `run id` or `name`.
        part: &'static str,
        /// What was given.
        text: String,
        /// Why not.
        fault: &'static str,
    },
    /// There is no such artifact: never kept, deleted, or gone with the bucket's
    /// `max_age`.
    #[error("run {run_id} of driver {driver} has no artifact {name} (never kept, or expired)")]
    NotFound {
        /// The driver.
        driver: String,
        /// The run.
        run_id: String,
        /// The artifact's name.
        name: String,
    },
    /// The bucket does not exist: no artifact was ever kept in it (or it was
    /// deleted).
    #[error("there is no artifact bucket {0}: no artifact was ever kept in it")]
    NoBucket(String),
    /// The content held more bytes than the put's limit; what was put is deleted.
    #[error("the artifact holds more than its limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The object store failed: NATS did not answer, or refused.
    #[error("{action}")]
    Store {
        /// What was being done, e.g. `cannot put command-runner/7c1d/binary`.
        action: String,
        /// What NATS said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The content to put could not be read.
    #[error("cannot read the artifact's content")]
    Read(#[source] std::io::Error),
    /// The fetched content could not be written.
    #[error("cannot write the artifact")]
    Write(#[source] std::io::Error),
    /// The fetched content is not what was put: its SHA-256 differs, or it ended
    /// early.
    #[error("the artifact fetched is not the one kept")]
    Corrupt(#[source] std::io::Error),
    /// The store described an object without a SHA-256 digest it could read.
    #[error("object {object} has no SHA-256 digest (it has {digest:?})")]
    Digest {
        /// The object's name.
        object: String,
        /// The digest it has.
        digest: Option<String>,
    },
}

impl ArtifactError {
    pub(super) fn store(action: String, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Store { action, source: source.into() }
    }

    pub(super) fn not_found(key: &ArtifactKey) -> Self {
        Self::NotFound {
            driver: key.driver().to_owned(),
            run_id: key.run_id().to_owned(),
            name: key.name().to_owned(),
        }
    }
}
