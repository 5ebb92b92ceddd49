//! The server's engine side: a created resource sent to the drivers over NATS, alone
//! or to its pipeline's first step; then each pipeline run sent on to its next step
//! when a step succeeds, and each step's result kept in the resource's metadata.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::store::StoreError;
use super::ServerState;
use crate::client::types::Pipeline;
use crate::protocol::{Event, PipelineEvent, Resource, DRIVER_RESULTS_PREFIX};
use crate::testing::TestingError;

/// The pipeline runs in progress, by run id.
pub(super) type Runs = RwLock<HashMap<String, PipelineRun>>;

/// A pipeline run in progress: which step it is at.
pub(super) struct PipelineRun {
    pipeline: String,
    step: usize,
    /// The resource's type and name.
    resource: (String, String),
}

/// Sends a created resource to the drivers as the server does: alone on its type's
/// subject, or to the first step of `pipeline`, whose run it starts. Returns the run id.
pub(super) async fn dispatch(
    state: &ServerState,
    resource: Resource,
    pipeline: Option<&Pipeline>,
) -> Result<String, ApiError> {
    let run_id = uuid::Uuid::new_v4().to_string();
    let dispatched = match pipeline {
        Some(pipeline) => {
            let Some(first) = pipeline.steps.first() else {
                return Err(ApiError::BadRequest(format!("pipeline {:?} has no steps", pipeline.name)));
            };
            let run = PipelineRun {
                pipeline: pipeline.name.clone(),
                step: 0,
                resource: (resource.resource.clone(), resource.name.clone()),
            };
            state.runs.write().map_err(|_| StoreError::Poisoned)?.insert(run_id.clone(), run);
            state.harness.step(&first.driver, Event::Create, resource, Some(&run_id)).await
        }
        None => state.harness.create_with_run_id(resource, &run_id).await,
    };
    dispatched.map_err(ApiError::Dispatch)?;
    Ok(run_id)
}

/// Why a pipeline run could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
enum StepError {
    /// The run's resource is gone, or the state is unusable.
    #[error("the run's state")]
    Store(#[from] StoreError),
    /// The step's result could not be written into the metadata.
    #[error("cannot encode the step's result")]
    Encode(#[source] serde_json::Error),
    /// The next step could not be sent to its driver.
    #[error("cannot dispatch the next step")]
    Dispatch(#[source] TestingError),
}

/// Sends each pipeline run on to its next step when a step succeeds, and keeps each
/// step's result in the resource's metadata.
pub(super) async fn pipeline_engine(
    state: Arc<ServerState>,
    mut results: broadcast::Receiver<PipelineEvent>,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = results.recv() => match event {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "the dev server's pipeline engine fell behind");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if let Err(error) = advance(&state, event).await {
            let cause = std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default();
            tracing::warn!(%error, %cause, "a pipeline could not go on");
        }
    }
}

async fn advance(state: &ServerState, event: PipelineEvent) -> Result<(), StepError> {
    let next = {
        let mut runs = state.runs.write().map_err(|_| StoreError::Poisoned)?;
        let Some(run) = runs.get_mut(&event.run_id) else {
            return Ok(()); // a resource outside any pipeline: read and dropped
        };
        let result = &event.driverresult;
        let text = serde_json::to_string(result).map_err(StepError::Encode)?;
        let resource = state.resources.change_latest(&run.resource, |latest| {
            latest.metadata.insert(format!("{DRIVER_RESULTS_PREFIX}{}", result.driver), text.into());
        })?;
        let pipeline = state.pipelines.find(&run.pipeline)?;
        run.step += 1;
        let next_step = pipeline.and_then(|p| p.steps.get(run.step).cloned());
        match next_step {
            Some(step) if result.success => Some((step.driver, resource)),
            _ => {
                runs.remove(&event.run_id);
                None
            }
        }
    };
    if let Some((driver, resource)) = next {
        state
            .harness
            .step(&driver, Event::Process, resource, Some(&event.run_id))
            .await
            .map_err(StepError::Dispatch)?;
    }
    Ok(())
}
