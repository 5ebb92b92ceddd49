//! A run's source: its git repository checked out by the runner into the run's
//! workspace before the first step, so that the steps need neither git nor a network.
//!
//! The runner runs its host's `git` (`git.rs`) in a directory of its own
//! (`scratch.rs`), with the operator's credentials only (`credentials.rs`), the
//! commands `plan.rs` lists, then streams a tar of the work tree, `.git` included,
//! into the workspace's root through the engine (`archive.rs`). The directory is removed
//! on every path; dropping the checkout (a cancel, the run's deadline) kills git and
//! everything it started.

mod archive;
mod credentials;
mod git;
mod plan;
mod scratch;

use std::time::Instant;

use conveyor_sdk::LogHandle;

use crate::engine::error::EngineError;
use crate::settings::Settings;
use crate::spec::Source;
use crate::workspace::{Workspace, WorkspacePath};

use self::credentials::Credentials;
use self::git::{Git, Output};
use self::scratch::Scratch;

/// How the name of a checkout's directory on the runner's host starts, in its
/// temporary directory (`$TMPDIR`, else `/tmp`): `conveyor-source-<run id>-<random>`.
/// The directory is removed when the checkout ends, however it ends; one left behind
/// by a runner that was killed can be removed once no run of that id is running.
///
/// ```
/// assert_eq!(simple_runner::source::SCRATCH_PREFIX, "conveyor-source-");
/// ```
pub const SCRATCH_PREFIX: &str = "conveyor-source-";

/// What a checkout came to.
///
/// ```
/// let checkout = simple_runner::source::Checkout { commit: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".into() };
/// assert_eq!(checkout.commit.len(), 40);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The commit checked out, in full.
    pub commit: String,
}

/// Why a checkout failed.
///
/// ```
/// let error = simple_runner::source::SourceError::Git("Remote branch nosuch not found in upstream origin".into());
/// assert_eq!(error.to_string(), "Remote branch nosuch not found in upstream origin");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// git failed, and said why (its `fatal:` lines, credentials removed): a
    /// repository that does not exist, a ref it does not have, a host that does not
    /// answer, credentials it refused.
    #[error("{0}")]
    Git(String),
    /// git could not be started or waited for.
    #[error("git could not be run on the runner's host (is git installed?)")]
    NoGit(#[source] std::io::Error),
    /// The operator's credentials file (`--git-credentials`) could not be read.
    #[error("the runner's git credentials file cannot be read")]
    Credentials(#[source] std::io::Error),
    /// The runner's directory of the checkout could not be made or written.
    #[error("the runner cannot write the checkout in its temporary directory")]
    Scratch(#[source] std::io::Error),
    /// The `source` asks for what git would read as an option.
    #[error("{0} starts with '-'")]
    Refused(&'static str),
    /// The checkout could not be read to be copied.
    #[error("the checkout could not be read")]
    Read(#[source] std::io::Error),
    /// The checkout could not be written into the workspace.
    #[error("the checkout could not be copied into the workspace")]
    Workspace(#[source] EngineError),
}

/// Checks `source` out into `workspace`'s root for run `run_id`, with the
/// credentials of `settings`, saying in `log` what it does; cancelled by dropping it.
pub(crate) async fn checkout(
    workspace: &Workspace,
    source: &Source,
    settings: &Settings,
    run_id: &str,
    log: &LogHandle,
) -> Result<Checkout, SourceError> {
    if source.git.starts_with('-') {
        return Err(SourceError::Refused("the repository's URL"));
    }
    if source.reference.as_deref().is_some_and(|reference| reference.starts_with('-')) {
        return Err(SourceError::Refused("the ref"));
    }
    log.log(format!("checking out {} {}", source.git, plan::described(source))).await;
    let credentials = Credentials::read(settings.files.git_credentials.as_deref()).await?;
    credentials.mask_in(log);
    let scratch = Scratch::create(run_id).map_err(SourceError::Scratch)?;
    let checked_out = check_out(&scratch, workspace, source, settings, &credentials, log).await;
    scratch.remove().await;
    checked_out
}

/// The checkout in `scratch`, then its copy into `workspace`.
async fn check_out(
    scratch: &Scratch,
    workspace: &Workspace,
    source: &Source,
    settings: &Settings,
    credentials: &Credentials,
    log: &LogHandle,
) -> Result<Checkout, SourceError> {
    let started = Instant::now();
    let credentials_file = match credentials.store() {
        Some(store) => Some(scratch.write_credentials(store).map_err(SourceError::Scratch)?),
        None => None,
    };
    let git = Git::new(scratch.path(), scratch.home(), credentials_file, credentials, log);
    for args in plan::commands(source) {
        git.run(&args, Output::Log).await?;
    }
    let commit = git.run(&plan::commit_command(), Output::Capture).await?.trim().to_owned();
    if !plan::is_commit_id(&commit) {
        return Err(SourceError::Git(format!("git gave no commit for HEAD: {commit:?}")));
    }
    log.log(format!(
        "checked out {} at commit {commit} in {:.2}s",
        source.git,
        started.elapsed().as_secs_f64()
    ))
    .await;

    let started = Instant::now();
    let owner = archive::Owner::of(settings.container.user.as_deref());
    let (stream, packing) = archive::stream(scratch.checkout(), owner);
    let copied = workspace.put_tar(&WorkspacePath::root(), stream).await;
    let packed = match packing.await {
        Ok(packed) => packed,
        Err(join) => Err(std::io::Error::other(join.to_string())),
    };
    let packed = match (copied, packed) {
        (Ok(()), Ok(packed)) => packed,
        (Ok(()), Err(error)) => return Err(SourceError::Read(error)),
        (Err(error), Err(read)) if read.kind() != std::io::ErrorKind::BrokenPipe => {
            tracing::debug!(error = %conveyor_sdk::error_text(&error), "the copy broke off as the checkout could not be read");
            return Err(SourceError::Read(read));
        }
        (Err(error), _) => return Err(SourceError::Workspace(error)),
    };
    log.log(format!(
        "copied the checkout into {}: {} entries, {:.1} MB in {:.2}s",
        workspace.root(),
        packed.entries,
        packed.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    ))
    .await;
    Ok(Checkout { commit })
}
