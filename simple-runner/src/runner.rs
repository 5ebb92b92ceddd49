//! The `command-runner` driver: a run is one container, a step is one exec in it.

use std::collections::HashMap;
use std::time::Duration;

use conveyor_sdk::{Driver, DriverResult, ReconcileError, ResourceDefinition, ResourceType, Run};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::docker::{container_name, error_text, labels, ContainerSettings, Engine, PullProgress};
use crate::session::Session;
use crate::spec::PipelineSpec;

/// The driver's default name.
pub const DRIVER_NAME: &str = "command-runner";
/// The resource type it owns.
pub const RESOURCE_TYPE: &str = "pipeline";
/// Where steps run when the spec names no `workdir`.
pub const DEFAULT_WORKDIR: &str = "/workspace";

/// What the operator decides for every run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The driver's name (default `command-runner`).
    pub name: String,
    /// This process's identity, on the containers it owns.
    pub instance: String,
    /// How containers are made.
    pub container: ContainerSettings,
    /// The timeout of a run whose spec sets none.
    pub default_timeout: Option<Duration>,
    /// The image of a run whose spec names none.
    pub default_image: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            name: DRIVER_NAME.into(),
            instance: uuid::Uuid::new_v4().to_string(),
            container: ContainerSettings::default(),
            default_timeout: None,
            default_image: None,
        }
    }
}

/// The reference driver: runs a `pipeline` resource's steps in a container of its image.
#[derive(Clone)]
pub struct CommandRunner {
    engine: Engine,
    settings: Settings,
    /// Containers being removed after their run's result.
    removals: TaskTracker,
}

/// How a run ended before its result.
enum Ended {
    Done(DriverResult),
    Cancelled,
}

/// One step's line in the result data.
struct StepRecord {
    name: String,
    exit_code: Option<i64>,
    seconds: f64,
}

impl CommandRunner {
    /// A runner on `engine` with `settings`.
    pub fn new(engine: Engine, settings: Settings) -> Self {
        Self { engine, settings, removals: TaskTracker::new() }
    }

    /// Waits until the containers of finished runs are removed. A finished run's
    /// container is removed in the background so that its result is not delayed; call
    /// this before the process exits.
    pub async fn finish_removals(&self) {
        self.removals.close();
        self.removals.wait().await;
        self.removals.reopen();
    }

    /// The resource definition it registers: upstream's, extended, derived from
    /// [`PipelineSpec`].
    pub fn definition() -> ResourceDefinition {
        ResourceDefinition::from_type::<PipelineSpec>(RESOURCE_TYPE)
            .description("Pipeline resource definition")
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs the resource of `run`; `progress` hears how a pull goes (the run's log, as
    /// the driver does, or a function of the caller). The container is removed on every
    /// path.
    pub async fn execute(&self, run: &Run<PipelineSpec>, progress: PullProgress<'_>) -> DriverResult {
        match self.execute_inner(run, progress).await {
            Ended::Done(result) => result,
            Ended::Cancelled => DriverResult::failure("cancelled: the runner is shutting down"),
        }
    }

    async fn execute_inner(&self, run: &Run<PipelineSpec>, progress: PullProgress<'_>) -> Ended {
        let spec = run.spec();
        let log = run.log();
        let Some(image) = spec.image.clone().or_else(|| self.settings.default_image.clone()) else {
            let text = "the spec names no image and the runner has no default image";
            log.log(text).await;
            return Ended::Done(DriverResult::failure(text));
        };
        let pulled = tokio::select! {
            pulled = self.engine.ensure_image(&image, spec.pull, progress) => pulled,
            _ = run.cancelled() => return Ended::Cancelled,
        };
        if let Err(error) = pulled {
            let text = error_text(&error);
            log.log(&text).await;
            return Ended::Done(DriverResult::failure(text).with_data(json!({"image": image})));
        }

        if let Some(name) = invalid_env_name(spec) {
            let text = format!("{name:?} is not a valid environment variable name (letters, digits and _, not first a digit)");
            log.log(&text).await;
            return Ended::Done(DriverResult::failure(text));
        }
        let workdir = spec.workdir.clone().unwrap_or_else(|| DEFAULT_WORKDIR.to_owned());
        let name = container_name(&run.resource().name, run.run_id());
        let labels = HashMap::from([
            (labels::RUN_ID.to_owned(), run.run_id().to_owned()),
            (labels::DRIVER.to_owned(), self.settings.name.clone()),
            (labels::RESOURCE.to_owned(), run.resource().name.clone()),
            (labels::INSTANCE.to_owned(), self.settings.instance.clone()),
        ]);
        let mut env: Vec<String> = vec![
            "CI=true".into(),
            format!("CONVEYOR_RUN_ID={}", run.run_id()),
            format!("CONVEYOR_RESOURCE={}", run.resource().name),
            format!("CONVEYOR_ATTEMPT={}", run.attempt()),
        ];
        env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
        let started = self
            .engine
            .start_run_container(&image, &name, &workdir, env, labels, &self.settings.container)
            .await;
        let container = match started {
            Ok(container) => container,
            Err(error) => {
                let text = error_text(&error);
                log.log(&text).await;
                return Ended::Done(DriverResult::failure(text).with_data(json!({"image": image})));
            }
        };
        // Removes the container even if this future is dropped half-way.
        let guard = RemoveOnDrop {
            engine: self.engine.clone(),
            removals: self.removals.clone(),
            id: Some(container.id.clone()),
        };
        let ended = self.steps(run, &container.id, &image).await;
        if matches!(ended, Ended::Cancelled) {
            // The run goes back to the queue: its container goes now.
            self.engine.stop(&container.id, self.settings.container.stop_grace).await;
            if self.engine.remove(&container.id).await {
                guard.disarm();
            }
        }
        // Otherwise the guard removes it in the background while the result goes out.
        ended
    }

    async fn steps(&self, run: &Run<PipelineSpec>, container: &str, image: &str) -> Ended {
        let spec = run.spec();
        let log = run.log();
        let mut session = match Session::attach(self.engine.docker(), container).await {
            Ok(session) => session,
            Err(error) => {
                let text = error_text(&error);
                log.log(&text).await;
                return Ended::Done(DriverResult::failure(text).with_data(json!({"image": image})));
            }
        };
        let run_timeout = spec.timeout.map(|t| t.as_duration()).or(self.settings.default_timeout);
        let run_deadline = run_timeout.map(|t| Instant::now() + t);
        let total = spec.steps.len();
        let mut records: Vec<StepRecord> = Vec::with_capacity(total);
        let mut failure: Option<String> = None;
        let mut allowed_failures = 0;
        for (index, step) in spec.steps.iter().enumerate() {
            let number = index + 1;
            log.log(format!("==> step {number}/{total} {}: {}", step.name, step.command)).await;
            let step_limit = step.timeout.map(|t| t.as_duration());
            let run_left = run_deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let (limit, whole_run) = match (step_limit, run_left) {
                (Some(s), Some(r)) if r < s => (Some(r), true),
                (Some(s), _) => (Some(s), false),
                (None, Some(r)) => (Some(r), true),
                (None, None) => (None, false),
            };
            let started = Instant::now();
            let script = script(&step.command);
            let env: Vec<(String, String)> = step.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let exec = session.run(&script, &env, log);
            let outcome = tokio::select! {
                outcome = with_limit(limit, exec) => outcome,
                _ = run.cancelled() => {
                    log.log(format!("<== step {number}/{total} {} cancelled: the runner is shutting down", step.name)).await;
                    return Ended::Cancelled;
                }
            };
            let seconds = started.elapsed().as_secs_f64();
            match outcome {
                Some(Ok(exit)) => {
                    records.push(StepRecord { name: step.name.clone(), exit_code: Some(exit.code), seconds });
                    log.log(format!(
                        "<== step {number}/{total} {} exited with code {} after {seconds:.2}s",
                        step.name, exit.code
                    ))
                    .await;
                    if exit.code != 0 {
                        if step.continue_on_error {
                            allowed_failures += 1;
                            log.log(format!("step {} may fail: going on", step.name)).await;
                        } else {
                            failure = Some(format!("step {} failed with exit code {}", step.name, exit.code));
                            break;
                        }
                    }
                }
                Some(Err(error)) => {
                    records.push(StepRecord { name: step.name.clone(), exit_code: None, seconds });
                    let text = format!("step {} could not run: {}", step.name, error_text(&error));
                    log.log(&text).await;
                    failure = Some(text);
                    break;
                }
                None => {
                    records.push(StepRecord { name: step.name.clone(), exit_code: None, seconds });
                    self.engine.stop(container, self.settings.container.stop_grace).await;
                    let text = match (whole_run, run_timeout, step_limit) {
                        (true, Some(t), _) => {
                            format!("the run timed out after {} during step {}", human(t), step.name)
                        }
                        (_, _, Some(t)) => format!("step {} timed out after {}", step.name, human(t)),
                        _ => format!("step {} timed out", step.name),
                    };
                    log.log(format!("<== step {number}/{total} {}: {text}", step.name)).await;
                    failure = Some(text);
                    break;
                }
            }
        }
        let data = json!({
            "image": image,
            "steps": records.iter().map(|r| json!({
                "name": r.name,
                "exit_code": r.exit_code,
                "duration_seconds": (r.seconds * 1000.0).round() / 1000.0,
            })).collect::<Vec<_>>(),
        });
        let result = match failure {
            Some(message) => DriverResult::failure(message),
            None if allowed_failures > 0 => DriverResult::success(format!(
                "{total} steps ran; {allowed_failures} failed and were allowed to"
            )),
            None => DriverResult::success(format!("{total} steps succeeded")),
        };
        log.log(if result.success { "run succeeded" } else { "run failed" }).await;
        Ended::Done(result.with_data(data))
    }
}

#[conveyor_sdk::async_trait]
impl Driver for CommandRunner {
    type Spec = PipelineSpec;

    fn name(&self) -> &str {
        &self.settings.name
    }

    fn resources(&self) -> Vec<ResourceType> {
        vec![ResourceType::owned(Self::definition())]
    }

    async fn reconcile(&self, run: Run<PipelineSpec>) -> Result<DriverResult, ReconcileError> {
        Ok(self.execute(&run, PullProgress::Log(run.log())).await)
    }
}

/// The script of a step: stop at the first failing command, and let a pipeline fail
/// when any part fails where the shell knows `pipefail`.
fn script(command: &str) -> String {
    format!("set -e\n(set -o pipefail) 2>/dev/null && set -o pipefail\n{command}")
}

fn invalid_env_name(spec: &PipelineSpec) -> Option<String> {
    let valid = |name: &str| {
        let mut chars = name.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    spec.env.keys().chain(spec.steps.iter().flat_map(|s| s.env.keys())).find(|k| !valid(k)).cloned()
}

async fn with_limit<F: std::future::Future>(limit: Option<Duration>, work: F) -> Option<F::Output> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, work).await.ok(),
        None => Some(work.await),
    }
}

fn human(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs().max(1))).to_string()
}

/// Removes the container in the background when dropped while still armed: after a
/// run, or when a run is abandoned half-way.
struct RemoveOnDrop {
    engine: Engine,
    removals: TaskTracker,
    id: Option<String>,
}

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.id = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let (Some(id), Ok(handle)) = (self.id.take(), tokio::runtime::Handle::try_current()) {
            let engine = self.engine.clone();
            self.removals.spawn_on(
                async move {
                    engine.remove(&id).await;
                },
                &handle,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_stops_at_the_first_failure() {
        let s = script("false\necho after");
        assert!(s.starts_with("set -e\n"));
        assert!(s.ends_with("false\necho after"));
    }

    #[test]
    fn environment_names_must_be_shell_names() {
        let spec = |env: serde_json::Value| -> PipelineSpec {
            serde_json::from_value(json!({"steps": [{"name": "s", "command": "c", "env": env}]})).unwrap()
        };
        assert_eq!(invalid_env_name(&spec(json!({"GOOD_1": "x", "_ok": "y"}))), None);
        assert_eq!(invalid_env_name(&spec(json!({"A; rm -rf /": "x"}))).as_deref(), Some("A; rm -rf /"));
        assert_eq!(invalid_env_name(&spec(json!({"1A": "x"}))).as_deref(), Some("1A"));
    }

    #[test]
    fn the_definition_keeps_upstreams_shape() {
        let def = CommandRunner::definition();
        assert_eq!(def.name, "pipeline");
        assert_eq!(def.schema["required"], json!(["steps"]));
        assert_eq!(def.schema["properties"]["steps"]["items"]["required"], json!(["name", "command"]));
    }
}
