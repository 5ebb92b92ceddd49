//! A run's source: its git repository checked out by the runner into the run's
//! workspace before the first step.

use conveyor_sdk::LogHandle;

use crate::settings::Settings;
use crate::spec::Source;
use crate::workspace::Workspace;

/// What a checkout came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The commit checked out, in full.
    pub commit: String,
}

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// Not done yet.
    #[error("source checkouts are not supported yet")]
    Unsupported,
}

/// Checks `source` out into `workspace`'s root, with the credentials of `settings`,
/// saying in `log` what it does; cancelled by dropping it.
pub(crate) async fn checkout(
    workspace: &Workspace,
    source: &Source,
    settings: &Settings,
    log: &LogHandle,
) -> Result<Checkout, SourceError> {
    let _ = (workspace, source, settings, log);
    Err(SourceError::Unsupported)
}
