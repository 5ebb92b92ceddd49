//! The server's engine side: each pipeline run sent on to its next step when a step
//! succeeds, and each step's result kept in the resource's metadata.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::error::{internal, not_found, ApiError};
use super::ServerState;
use crate::protocol::{Event, PipelineEvent};

/// A pipeline run in progress: which step it is at.
pub(super) struct PipelineRun {
    pub(super) pipeline: String,
    pub(super) step: usize,
    pub(super) resource_type: String,
    pub(super) name: String,
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
            tracing::warn!(error = %error.1, "a pipeline could not go on");
        }
    }
}

pub(super) async fn advance(state: &ServerState, event: PipelineEvent) -> Result<(), ApiError> {
    let next = {
        let mut runs = state.runs.write().map_err(|_| internal("state poisoned"))?;
        let Some(run) = runs.get_mut(&event.run_id) else {
            return Ok(()); // a resource outside any pipeline: read and dropped
        };
        let result = &event.driverresult;
        let text = serde_json::to_string(result).map_err(|e| internal(e.to_string()))?;
        let key = (run.resource_type.clone(), run.name.clone());
        let resource = {
            let mut resources = state.resources.write().map_err(|_| internal("state poisoned"))?;
            let latest = resources
                .get_mut(&key)
                .and_then(|v| v.last_mut())
                .ok_or_else(|| not_found("resource gone"))?;
            latest
                .metadata
                .insert(format!("{}{}", crate::protocol::DRIVER_RESULTS_PREFIX, result.driver), text);
            latest.clone()
        };
        let pipeline =
            state.pipelines.read().map_err(|_| internal("state poisoned"))?.get(&run.pipeline).cloned();
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
            .map_err(|e| internal(e.to_string()))?;
    }
    Ok(())
}
