//! The server's engine side: a resource event sent to the drivers over NATS, alone on
//! its type's subject or as a run of its pipeline; each run sent on to its next step
//! when the engine takes a step's result, with the operation itself (`create`,
//! `update` or `delete`) at every step, and each step's result kept in the resource's
//! metadata.
//!
//! As today's engine does, it keeps what a run needs in the resource's metadata:
//! `current_pipeline_run`, `current_pipeline_event` and `current_pipeline_step`; the
//! results by driver in the object `driverresults`; and, while a resource in a
//! pipeline is deleted, `deleting`, `deletion_runid` and, when a step's cleanup
//! failed, `deletion_failed`. Such a resource is forgotten only once every step's
//! driver has cleaned up.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::store::{StoreError, Stored};
use super::ServerState;
use crate::client::types::{Pipeline, PipelineStep};
use crate::protocol::{DriverResultEvent, Event, PipelineEvent, Resource, DRIVER_RESULT_EVENT};
use crate::testing::TestingError;

/// The run of its pipeline a resource is in (metadata key).
pub(super) const CURRENT_RUN: &str = "current_pipeline_run";
/// The operation its pipeline run carries: `create`, `update` or `delete`.
pub(super) const CURRENT_EVENT: &str = "current_pipeline_event";
/// The id of the step its pipeline run is at.
pub(super) const CURRENT_STEP: &str = "current_pipeline_step";
/// `true` while a resource in a pipeline is being deleted.
pub(super) const DELETING: &str = "deleting";
/// The run of the deletion.
pub(super) const DELETION_RUNID: &str = "deletion_runid";
/// `true` once a step's cleanup failed; the resource is kept.
pub(super) const DELETION_FAILED: &str = "deletion_failed";
/// Every step's result, by driver: `{"<driver>": {"success", "message", "data", "driver"}}`.
pub(super) const DRIVER_RESULTS: &str = "driverresults";

/// The metadata the server keeps: what a client sends under these keys is not taken.
pub(super) const KEPT_BY_THE_SERVER: [&str; 7] =
    [CURRENT_RUN, CURRENT_EVENT, CURRENT_STEP, DELETING, DELETION_RUNID, DELETION_FAILED, DRIVER_RESULTS];

/// Sends a resource event to the drivers as the server does, and returns its run id:
/// outside a pipeline, `event` on `resources.<type>`; in `pipeline`, a run of it that
/// carries `event` from its first step to its last. A deletion in a pipeline marks the
/// resource `deleting`, with the run as `deletion_runid`.
pub(super) async fn dispatch(
    state: &ServerState,
    resource: Resource,
    event: Event,
    pipeline: Option<&Pipeline>,
) -> Result<String, ApiError> {
    let run_id = uuid::Uuid::new_v4().to_string();
    match pipeline {
        None => {
            state.harness.send(event, resource, Some(&run_id)).await.map_err(ApiError::Dispatch)?;
        }
        Some(pipeline) => start_run(state, &resource.key(), event, pipeline, &run_id).await?,
    }
    Ok(run_id)
}

/// The first step of `pipeline`; a pipeline without steps cannot run.
pub(super) fn first_step(pipeline: &Pipeline) -> Result<&PipelineStep, ApiError> {
    pipeline
        .steps
        .first()
        .ok_or_else(|| ApiError::BadRequest(format!("pipeline {:?} has no steps", pipeline.name)))
}

/// Whether the resource is being deleted (or its deletion failed): it takes no new
/// version then.
pub(super) fn refuse_while_deleting(latest: &Resource) -> Result<(), StoreError> {
    if !flag(&latest.metadata, DELETING) {
        return Ok(());
    }
    let reason = if flag(&latest.metadata, DELETION_FAILED) {
        "could not be deleted (a step's cleanup failed); delete it again to retry"
    } else {
        "is being deleted"
    };
    Err(StoreError::Conflict {
        kind: Resource::KIND,
        key: Resource::show(&latest.key()),
        reason: reason.into(),
    })
}

/// Starts run `run_id` of `pipeline` for the resource `key`: stamps the run into its
/// metadata and sends `operation` to the first step's driver.
async fn start_run(
    state: &ServerState,
    key: &(String, String),
    operation: Event,
    pipeline: &Pipeline,
    run_id: &str,
) -> Result<(), ApiError> {
    let first = first_step(pipeline)?;
    let resource = state.resources.change_latest(key, |latest| {
        let metadata = &mut latest.metadata;
        metadata.insert(CURRENT_RUN.into(), run_id.into());
        metadata.insert(CURRENT_EVENT.into(), operation.as_str().into());
        metadata.insert(CURRENT_STEP.into(), step_id(first).into());
        if operation == Event::Delete {
            metadata.insert(DELETING.into(), true.into());
            metadata.insert(DELETION_RUNID.into(), run_id.into());
            metadata.remove(DELETION_FAILED);
        } else {
            metadata.insert(DELETING.into(), false.into());
        }
    })?;
    let sent = state.harness.step(&first.driver, operation.clone(), resource, Some(run_id)).await;
    if let Err(error) = sent {
        if operation == Event::Delete {
            deletion_failed(state, key, run_id)?;
        }
        return Err(ApiError::Dispatch(error));
    }
    Ok(())
}

/// Marks the deletion `run_id` of `key` failed, unless another run took its place.
fn deletion_failed(state: &ServerState, key: &(String, String), run_id: &str) -> Result<(), StoreError> {
    state.resources.settle(key, |latest| {
        if latest.metadata.get(DELETION_RUNID).and_then(Value::as_str) == Some(run_id) {
            latest.metadata.insert(DELETION_FAILED.into(), true.into());
        }
        (true, ())
    })?;
    Ok(())
}

/// The id a step goes by in the metadata: its id, or its name when it has none.
fn step_id(step: &PipelineStep) -> &str {
    if step.id.is_empty() {
        &step.name
    } else {
        &step.id
    }
}

/// Whether the metadata holds `true` under `key`.
fn flag(metadata: &BTreeMap<String, Value>, key: &str) -> bool {
    metadata.get(key) == Some(&Value::Bool(true))
}

/// Why a pipeline run could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
enum StepError {
    /// The state is unusable.
    #[error("the run's state")]
    Store(#[from] StoreError),
    /// The step's result could not be written into the metadata.
    #[error("cannot encode the step's result")]
    Encode(#[source] serde_json::Error),
    /// The next step could not be sent to its driver.
    #[error("cannot dispatch the next step")]
    Dispatch(#[source] TestingError),
}

/// Takes each driver result of a pipeline run: keeps it in the resource's metadata and
/// sends the run on to its next step, or ends it.
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

/// What the engine makes of a driver result.
#[derive(Debug, PartialEq)]
enum Decision {
    /// Not a result of the step the resource's current run is at; the text says why.
    Ignored(&'static str),
    /// The run ends here; the text says how.
    Ended(String),
    /// The run goes on: `operation` to `driver`, with the resource as it is now.
    Next {
        /// The next step's driver.
        driver: String,
        /// The run's operation.
        operation: Event,
        /// The resource, its metadata naming the next step.
        resource: Box<Resource>,
    },
}

async fn advance(state: &ServerState, event: PipelineEvent) -> Result<(), StepError> {
    let Some(name) = event.resource.pipeline() else {
        return Ok(()); // a resource outside any pipeline: read and dropped
    };
    let Some(pipeline) = state.pipelines.find(&name.to_owned())? else {
        tracing::warn!(pipeline = name, run_id = %event.run_id, "a result of a pipeline that is not kept");
        return Ok(());
    };
    let result = serde_json::to_value(&event.driverresult).map_err(StepError::Encode)?;
    let key = event.resource.key();
    let decided = state.resources.settle(&key, |latest| decide(latest, &event, &pipeline, result))?;
    let (run_id, driver) = (event.run_id.as_str(), event.driverresult.driver.as_str());
    match decided.unwrap_or(Decision::Ignored("the resource is not kept")) {
        Decision::Ignored(why) => tracing::debug!(run_id, driver, why, "a driver result not taken"),
        Decision::Ended(how) => tracing::info!(run_id, resource = %Resource::show(&key), "{how}"),
        Decision::Next { driver, operation, resource } => {
            let sent = state.harness.step(&driver, operation.clone(), *resource, Some(run_id)).await;
            if let Err(error) = sent {
                if operation == Event::Delete {
                    deletion_failed(state, &key, run_id)?;
                }
                return Err(StepError::Dispatch(error));
            }
        }
    }
    Ok(())
}

/// Takes `event`, a driver result, into `latest`, the resource's latest version, when
/// it is the result of the step its current run is at: same resource (id), same run,
/// the step sent (the result echoes the resource as delivered), that step's driver,
/// and event `driver.result` or the run's operation. Answers whether the resource
/// stays, and what comes next.
fn decide(
    latest: &mut Resource,
    event: &PipelineEvent,
    pipeline: &Pipeline,
    result: Value,
) -> (bool, Decision) {
    let ignored = |why| (true, Decision::Ignored(why));
    if latest.id != event.resource.id {
        return ignored("the resource of that name is another one now");
    }
    if latest.pipeline() != Some(pipeline.name.as_str()) {
        return ignored("the resource is in no pipeline, or another one, now");
    }
    let metadata = &latest.metadata;
    if metadata.get(CURRENT_RUN).and_then(Value::as_str) != Some(event.run_id.as_str()) {
        return ignored("not the resource's current run (superseded, or never started)");
    }
    let Some(operation) = metadata.get(CURRENT_EVENT).and_then(Value::as_str).map(Event::from) else {
        return ignored("the run carries no operation");
    };
    if event.event != DRIVER_RESULT_EVENT && event.event != operation.as_str() {
        return ignored("the event is neither driver.result nor the run's operation");
    }
    if flag(metadata, DELETING)
        && (operation != Event::Delete
            || metadata.get(DELETION_RUNID).and_then(Value::as_str) != Some(event.run_id.as_str()))
    {
        return ignored("the resource is being deleted by another run");
    }
    let Some(step) = metadata.get(CURRENT_STEP).and_then(Value::as_str).map(str::to_owned) else {
        return ignored("the run is at no step");
    };
    if event.resource.metadata_str(CURRENT_STEP) != Some(step.as_str()) {
        return ignored("a result of another step than the one the run is at");
    }
    let steps = &pipeline.steps;
    let Some(index) = steps.iter().position(|s| step_id(s) == step && s.driver == event.driverresult.driver)
    else {
        return ignored("not the driver of the step the run is at");
    };

    let results =
        latest.metadata.entry(DRIVER_RESULTS.into()).or_insert_with(|| Value::Object(Default::default()));
    if !results.is_object() {
        *results = Value::Object(Default::default());
    }
    if let Value::Object(results) = results {
        results.insert(event.driverresult.driver.clone(), result);
    }
    let next = steps.get(index + 1);
    let outcome = &event.driverresult;
    if operation == Event::Delete {
        if !cleaned_up(outcome) {
            latest.metadata.insert(DELETION_FAILED.into(), true.into());
            let how =
                format!("the deletion failed at step {step:?} ({}); the resource is kept", outcome.message);
            return (true, Decision::Ended(how));
        }
        if next.is_none() {
            return (false, Decision::Ended("every step cleaned up; the resource is deleted".into()));
        }
    } else if !outcome.success {
        return (true, Decision::Ended(format!("the run failed at step {step:?}: {}", outcome.message)));
    }
    let Some(next) = next else {
        return (true, Decision::Ended("the run succeeded at every step".into()));
    };
    latest.metadata.insert(CURRENT_STEP.into(), step_id(next).into());
    let next = Decision::Next { driver: next.driver.clone(), operation, resource: Box::new(latest.clone()) };
    (true, next)
}

/// Whether a step's driver cleaned up after a deletion: its result succeeded, and its
/// data does not say otherwise (`"success": false`, as drivers that carry the outcome
/// of the operation in their data say it).
fn cleaned_up(result: &DriverResultEvent) -> bool {
    result.success && result.data.get("success") != Some(&Value::Bool(false))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::DriverResult;

    fn pipeline() -> Pipeline {
        Pipeline::new("ci", "job")
            .step(PipelineStep::new("build", "builder"))
            .step(PipelineStep::new("report", "reporter"))
    }

    /// A resource of pipeline `ci` whose run `run-1` carries `operation` and is at `step`.
    fn in_run(operation: &str, step: &str) -> Resource {
        let mut resource = Resource::new("app", "job", json!({}));
        resource.id = "id-1".into();
        resource.pipeline = Some("ci".into());
        let metadata = &mut resource.metadata;
        metadata.insert("version".into(), "1".into());
        metadata.insert(CURRENT_RUN.into(), "run-1".into());
        metadata.insert(CURRENT_EVENT.into(), operation.into());
        metadata.insert(CURRENT_STEP.into(), step.into());
        if operation == "delete" {
            metadata.insert(DELETING.into(), true.into());
            metadata.insert(DELETION_RUNID.into(), "run-1".into());
        }
        resource
    }

    /// The result `driver` publishes for `delivered` in run `run-1`.
    fn result_of(delivered: &Resource, driver: &str, result: DriverResult) -> PipelineEvent {
        PipelineEvent::driver_result("run-1", delivered.clone(), result.into_event(driver))
    }

    fn take(latest: &mut Resource, event: &PipelineEvent) -> (bool, Decision) {
        let result = serde_json::to_value(&event.driverresult).unwrap();
        decide(latest, event, &pipeline(), result)
    }

    #[test]
    fn a_step_s_result_sends_the_run_s_own_operation_to_the_next_step_and_is_kept_as_an_object() {
        for operation in ["create", "update"] {
            let mut latest = in_run(operation, "build");
            let event =
                result_of(&latest, "builder", DriverResult::success("built").with_data(json!({"n": 1})));
            let (kept, decision) = take(&mut latest, &event);
            let Decision::Next { driver, operation: sent, resource } = decision else {
                panic!("{operation}: the run did not go on: {decision:?}");
            };
            assert!(kept);
            assert_eq!((driver.as_str(), sent.as_str()), ("reporter", operation), "not process");
            assert_eq!(resource.metadata_str(CURRENT_STEP), Some("report"));
            assert_eq!(
                latest.metadata[DRIVER_RESULTS],
                json!({"builder": {"success": true, "message": "built", "data": {"n": 1}, "driver": "builder"}})
            );
            assert_eq!(*resource, latest, "the next step gets the resource as kept");
        }
    }

    #[test]
    fn a_result_named_after_the_operation_is_taken_like_driver_result() {
        let mut latest = in_run("update", "build");
        let mut event = result_of(&latest, "builder", DriverResult::success("built"));
        event.event = "update".into();
        assert!(matches!(take(&mut latest, &event).1, Decision::Next { .. }));
        let mut latest = in_run("update", "build");
        event.event = "create".into();
        assert!(matches!(take(&mut latest, &event).1, Decision::Ignored(_)), "another operation's name");
    }

    #[test]
    fn results_of_another_run_step_resource_or_driver_change_nothing() {
        let latest = in_run("create", "report");
        let delivered_at_build = in_run("create", "build");
        let mut other_id = latest.clone();
        other_id.id = "id-0".into();
        let mut older_run = result_of(&latest, "reporter", DriverResult::success("ok"));
        older_run.run_id = "run-0".into();
        let cases = [
            (
                "an earlier step's result",
                result_of(&delivered_at_build, "builder", DriverResult::success("ok")),
            ),
            ("another driver", result_of(&latest, "builder", DriverResult::success("ok"))),
            (
                "a resource of the same name before it was created again",
                result_of(&other_id, "reporter", DriverResult::success("ok")),
            ),
            ("a superseded run", older_run),
        ];
        for (case, event) in cases {
            let mut kept = latest.clone();
            let (stays, decision) = take(&mut kept, &event);
            assert!(stays && matches!(decision, Decision::Ignored(_)), "{case}: {decision:?}");
            assert_eq!(kept, latest, "{case}: the metadata changed");
        }
    }

    #[test]
    fn a_failed_step_ends_its_run_and_the_last_step_completes_it() {
        let mut latest = in_run("create", "build");
        let event = result_of(&latest, "builder", DriverResult::failure("exit code 2"));
        let (kept, decision) = take(&mut latest, &event);
        assert!(kept && matches!(decision, Decision::Ended(_)), "{decision:?}");
        assert_eq!(latest.metadata[DRIVER_RESULTS]["builder"]["success"], false);
        assert_eq!(latest.metadata_str(CURRENT_STEP), Some("build"));

        let mut latest = in_run("update", "report");
        let event = result_of(&latest, "reporter", DriverResult::success("reported"));
        let (kept, decision) = take(&mut latest, &event);
        assert!(kept && matches!(decision, Decision::Ended(_)), "{decision:?}");
    }

    #[test]
    fn a_deletion_goes_to_every_step_and_forgets_the_resource_only_after_the_last_cleaned_up() {
        let mut latest = in_run("delete", "build");
        let event = result_of(&latest, "builder", DriverResult::success("cleaned"));
        let (kept, decision) = take(&mut latest, &event);
        let Decision::Next { driver, operation, .. } = decision else { panic!("{decision:?}") };
        assert!(kept, "not before the last step");
        assert_eq!((driver.as_str(), operation), ("reporter", Event::Delete));

        let event = result_of(&latest, "reporter", DriverResult::success("cleaned"));
        let (kept, decision) = take(&mut latest, &event);
        assert!(!kept && matches!(decision, Decision::Ended(_)), "{decision:?}");
    }

    #[test]
    fn a_deletion_fails_and_keeps_the_resource_when_a_step_fails_or_its_data_says_so() {
        let failures = [
            DriverResult::failure("cannot undeploy"),
            DriverResult::success("ran").with_data(json!({"success": false})),
        ];
        for failure in failures {
            let mut latest = in_run("delete", "build");
            let event = result_of(&latest, "builder", failure.clone());
            let (kept, decision) = take(&mut latest, &event);
            assert!(kept && matches!(decision, Decision::Ended(_)), "{failure:?}: {decision:?}");
            assert_eq!(latest.metadata[DELETION_FAILED], true, "{failure:?}");
        }
        let mut latest = in_run("delete", "build");
        let ok = DriverResult::success("ran").with_data(json!({"success": true}));
        let event = result_of(&latest, "builder", ok);
        assert!(matches!(take(&mut latest, &event).1, Decision::Next { .. }), "data saying it succeeded");
    }

    #[test]
    fn while_a_resource_is_deleted_only_results_of_its_deletion_run_are_taken() {
        let mut latest = in_run("delete", "build");
        latest.metadata.insert(DELETION_RUNID.into(), "run-2".into());
        let before = latest.clone();
        let event = result_of(&latest, "builder", DriverResult::success("built"));
        assert!(matches!(take(&mut latest, &event).1, Decision::Ignored(_)));
        assert_eq!(latest, before);
    }

    #[test]
    fn a_new_version_is_refused_while_the_resource_is_deleted() {
        let deleting = in_run("delete", "build");
        let refused = refuse_while_deleting(&deleting).unwrap_err();
        assert_eq!(refused.to_string(), "resource job/app is being deleted");
        let mut failed = deleting;
        failed.metadata.insert(DELETION_FAILED.into(), true.into());
        assert!(refuse_while_deleting(&failed).unwrap_err().to_string().contains("delete it again to retry"));
        assert!(refuse_while_deleting(&in_run("update", "build")).is_ok());
    }
}
