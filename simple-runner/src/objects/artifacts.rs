//! A run's artifacts: kept after its steps, under its run id, in the object store
//! bucket [`BUCKET`](conveyor_sdk::artifacts::BUCKET) (`conveyor_artifacts`).
//!
//! An artifact is one object, named by the SDK ([`ArtifactKey`]) as
//! `<driver>/<run_id>/<name>`, holding a tar of its paths named from the workspace's
//! root (`bundle.rs`). Every path of every artifact the steps' end calls for is looked
//! up first (`paths.rs`): a missing one fails the run before anything is put. Then
//! each artifact streams from the engine through the tar into the store, counted
//! against the run's `--artifact-max-size`. When the run fails to keep one it had to
//! keep, what it had put is deleted again: an artifact the result does not list is
//! not in the store.

mod bundle;
mod paths;

use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use conveyor_sdk::artifacts::{ArtifactError, ArtifactInfo, ArtifactKey, ArtifactStore, BUCKET};
use conveyor_sdk::driver::CancelReason;
use conveyor_sdk::{error_text, LogHandle, Run};

use crate::report::StoredArtifact;
use crate::settings::Settings;
use crate::spec::{Artifact, ByteSize, PipelineSpec};
use crate::workspace::{Workspace, WorkspacePath};

pub(crate) use paths::violations;

/// Stores the artifacts of `run` from `workspace` that its steps' end calls for
/// (`succeeded`); why not, when one that must be kept cannot be.
pub(crate) async fn keep(
    store: Option<&Context>,
    workspace: &Workspace,
    run: &Run<PipelineSpec>,
    settings: &Settings,
    succeeded: bool,
) -> Result<Vec<StoredArtifact>, String> {
    let log = run.log();
    let mut chosen = Vec::new();
    for (index, artifact) in run.spec().artifacts.iter().enumerate() {
        if !artifact.when.keeps(succeeded) {
            continue;
        }
        let present = paths::present(workspace, artifact, index).await?;
        match present.is_empty() {
            true => {
                log.log(format!(
                    "artifact {} not kept: none of its paths exist (it is optional)",
                    artifact.name
                ))
                .await
            }
            false => chosen.push((artifact, present)),
        }
    }
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    let store = match open(store, settings).await {
        Ok(store) => store,
        Err(why) => return unkept(log, chosen.iter().map(|(artifact, _)| *artifact), &why).await,
    };
    let mut kept: Vec<(ArtifactKey, StoredArtifact)> = Vec::with_capacity(chosen.len());
    let mut left = settings.files.artifact_max_size;
    for (artifact, present) in chosen {
        let failure = match ArtifactKey::new(&settings.name, run.run_id(), &artifact.name) {
            Ok(key) => match put(&store, workspace, &key, present, left, run).await {
                Ok(stored) => {
                    left = left.saturating_sub(stored.size);
                    kept.push((key, stored));
                    continue;
                }
                Err(failure) => failure,
            },
            Err(error) => Failure::Refused(error_text(&error)),
        };
        let why = match failure {
            Failure::Store(why) if artifact.optional => {
                log.log(format!("artifact {} not kept (it is optional): {why}", artifact.name)).await;
                continue;
            }
            Failure::TooLarge => format!(
                "artifact {} not kept: the run's artifacts hold more than the runner's limit of {} (--artifact-max-size)",
                artifact.name,
                ByteSize::new(settings.files.artifact_max_size)
            ),
            Failure::Store(why) | Failure::Refused(why) => format!("artifact {} not kept: {why}", artifact.name),
            Failure::Stopped(reason) => format!("artifact {} not kept: {}", artifact.name, stopped(reason)),
        };
        forget(&store, log, kept.iter().map(|(key, _)| key)).await;
        return Err(why);
    }
    Ok(kept.into_iter().map(|(_, stored)| stored).collect())
}

/// Why one artifact was not kept.
enum Failure {
    /// The run's artifacts went over the runner's limit.
    TooLarge,
    /// The store, the engine or the workspace failed: why.
    Store(String),
    /// The artifact cannot be named: why.
    Refused(String),
    /// The run was cancelled or its deadline passed while it was put.
    Stopped(Option<CancelReason>),
}

/// The bucket of artifacts on `store`, created when missing with the runner's TTL;
/// why not.
async fn open(store: Option<&Context>, settings: &Settings) -> Result<ArtifactStore, String> {
    let Some(js) = store else {
        return Err("the runner has no object store (a local run keeps artifacts with --nats-url)".to_owned());
    };
    ArtifactStore::create(js, BUCKET, settings.files.artifact_ttl)
        .await
        .map_err(|error| format!("the object store cannot be reached: {}", error_text(&error)))
}

/// The end of a run whose artifacts cannot be kept at all (`why`): a failure naming
/// the first one that is not optional, else a line in the log for each.
async fn unkept<'a>(
    log: &LogHandle,
    artifacts: impl Iterator<Item = &'a Artifact>,
    why: &str,
) -> Result<Vec<StoredArtifact>, String> {
    for artifact in artifacts {
        if !artifact.optional {
            return Err(format!("artifact {} not kept: {why}", artifact.name));
        }
        log.log(format!("artifact {} not kept (it is optional): {why}", artifact.name)).await;
    }
    Ok(Vec::new())
}

/// Puts artifact `key`: the tar of `paths`, at most `limit` bytes, ended early when
/// `run` is cancelled. Whatever was put of it is deleted again when it fails.
async fn put(
    store: &ArtifactStore,
    workspace: &Workspace,
    key: &ArtifactKey,
    paths: Vec<WorkspacePath>,
    limit: u64,
    run: &Run<PipelineSpec>,
) -> Result<StoredArtifact, Failure> {
    let started = Instant::now();
    let (tar, maker) = bundle::tar_of(workspace, paths);
    let mut content = bundle::EndOnCancel::new(tar, run.cancellation_token());
    let put = store.put(key, &mut content, limit).await;
    let stopped = content.ended();
    // The tar is read to its end, or no more: its maker ends either way.
    drop(content);
    let made = match maker.await {
        Ok(made) => made.map_err(|error| error.to_string()),
        Err(error) => Err(format!("the thread making its tar failed: {error}")),
    };
    let failure = match (put, made) {
        (Err(ArtifactError::TooLarge { .. }), _) => return Err(Failure::TooLarge),
        (Err(error), _) if !stopped => return Err(Failure::Store(error_text(&error))),
        (Err(_), _) => Failure::Stopped(run.cancel_reason()),
        (Ok(_), _) if stopped => Failure::Stopped(run.cancel_reason()),
        (Ok(_), Err(why)) => Failure::Store(format!("cannot read it from the workspace: {why}")),
        (Ok(info), Ok(())) => {
            let stored =
                StoredArtifact { name: info.name.clone(), size: info.size, sha256: info.sha256.clone() };
            run.log().log(kept_line(&info, started.elapsed())).await;
            return Ok(stored);
        }
    };
    let _ = store.delete(key).await;
    Err(failure)
}

/// Deletes the artifacts of `keys`, kept by a run that then failed to keep another;
/// what cannot be deleted is said in the log (it goes with the bucket's TTL).
async fn forget<'a>(store: &ArtifactStore, log: &LogHandle, keys: impl Iterator<Item = &'a ArtifactKey>) {
    for key in keys {
        match store.delete(key).await {
            Ok(()) | Err(ArtifactError::NotFound { .. }) => {}
            Err(error) => {
                log.log(format!(
                    "artifact {} could not be deleted again: {}",
                    key.name(),
                    error_text(&error)
                ))
                .await;
            }
        }
    }
}

/// The log's line for an artifact kept.
fn kept_line(info: &ArtifactInfo, took: Duration) -> String {
    format!(
        "artifact {} kept: {}, sha256 {}, in {:.3}s",
        info.name,
        human_bytes(info.size),
        info.sha256,
        took.as_secs_f64()
    )
}

/// Why a run stopped, as the reason of an artifact not kept.
fn stopped(reason: Option<CancelReason>) -> String {
    match reason {
        Some(CancelReason::Deadline(after)) => {
            format!("the run timed out after {}", crate::report::human(after))
        }
        Some(reason) => format!("the run was stopped: {reason}"),
        None => "the run was stopped".to_owned(),
    }
}

/// A number of bytes as a person reads it: `512 B`, `3.4 KiB`, `476.8 MiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_the_log_read_as_a_person_would() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_bytes(500_000_000), "476.8 MiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
    }

    #[test]
    fn a_stopped_run_says_why_its_artifact_was_not_kept() {
        assert_eq!(
            stopped(Some(CancelReason::Deadline(Duration::from_secs(60)))),
            "the run timed out after 1m"
        );
        assert_eq!(stopped(Some(CancelReason::Requested)), "the run was stopped: cancelled");
    }
}
