//! Preparing a run: its image present, its container started, the container's shell
//! attached. A run that cannot be prepared ends here with its report.

use std::collections::HashMap;

use conveyor_sdk::driver::CancelReason;
use conveyor_sdk::{LogHandle, Run};

use crate::docker::{container_name, labels, Engine};
use crate::image::{PullOptions, PullProgress};
use crate::removal::{ContainerGuard, Removals};
use crate::report::{Refusal, RunReport};
use crate::secrets::valid_name;
use crate::session::Session;
use crate::settings::Settings;
use crate::spec::PipelineSpec;

/// A run ready for its steps.
pub(crate) struct Prepared {
    /// The image the container runs.
    pub(crate) image: String,
    /// The container's id.
    pub(crate) container_id: String,
    /// The container, removed when this goes.
    pub(crate) container: ContainerGuard,
    /// The container's shell.
    pub(crate) session: Session,
    /// The run's memory limit, in bytes.
    pub(crate) memory_bytes: Option<i64>,
}

/// Prepares `run`, in the order a failure is reported: the image named, every secret
/// it names known (their values masked in its log from then on), the image present
/// (the only wait a cancellation cuts short), the environment valid, the container
/// started, its shell attached. A failure is logged before it is returned.
pub(crate) async fn prepare(
    engine: &Engine,
    settings: &Settings,
    removals: &Removals,
    run: &Run<PipelineSpec>,
    progress: PullProgress<'_>,
) -> Result<Prepared, RunReport> {
    let spec = run.spec();
    let log = run.log();
    let Some(image) = spec.image.clone().or_else(|| settings.default_image.clone()) else {
        return Err(logged(log, RunReport::Refused(Refusal::NoImage)).await);
    };
    for name in secret_names(spec) {
        match settings.secrets.get(name) {
            Some(value) => log.mask(value),
            None => {
                return Err(logged(log, RunReport::Refused(Refusal::UnknownSecret(name.to_owned()))).await)
            }
        }
    }
    let (container_settings, notes) = settings.container.for_run(spec);
    for note in notes {
        log.log(note).await;
    }
    let pull = PullOptions {
        platform: container_settings.platform.clone(),
        credentials: settings.registry_auth.for_image(&image),
    };
    let pulled = tokio::select! {
        pulled = engine.ensure_image(&image, spec.pull, &pull, progress) => pulled,
        _ = run.cancelled() => return Err(interrupted(run)),
    };
    if let Err(error) = pulled {
        return Err(logged(log, RunReport::NoContainer { image, error }).await);
    }
    if let Some(name) = invalid_env_name(spec) {
        return Err(logged(log, RunReport::Refused(Refusal::InvalidEnvName(name))).await);
    }

    let name = container_name(&run.resource().name, run.run_id());
    let started = engine
        .start_run_container(
            &image,
            &name,
            spec.workdir.as_deref(),
            env(run),
            container_labels(run, settings),
            &container_settings,
        )
        .await;
    let container = match started {
        Ok(container) => container,
        Err(error) => return Err(logged(log, RunReport::NoContainer { image, error }).await),
    };
    // From here the container goes with the guard, even if this future is dropped.
    let guard = removals.guard(container.id.clone());
    match Session::attach(engine.docker(), &container.id).await {
        Ok(session) => Ok(Prepared {
            image,
            container_id: container.id,
            container: guard,
            session: session.limit_output(settings.max_log_bytes),
            memory_bytes: container_settings.memory_bytes,
        }),
        Err(error) => Err(logged(log, RunReport::NoContainer { image, error }).await),
    }
}

/// The report of a run cancelled before its steps: a shutdown gives it back, a
/// deadline or a cancel request ends it.
fn interrupted(run: &Run<PipelineSpec>) -> RunReport {
    match run.cancel_reason() {
        Some(CancelReason::Shutdown) | None => RunReport::Cancelled,
        Some(reason) => RunReport::Stopped(reason),
    }
}

async fn logged(log: &LogHandle, report: RunReport) -> RunReport {
    log.log(report.message()).await;
    report
}

/// The environment of every step: the run's identity, then the spec's.
fn env(run: &Run<PipelineSpec>) -> Vec<String> {
    let mut env: Vec<String> = vec![
        "CI=true".into(),
        format!("CONVEYOR_RUN_ID={}", run.run_id()),
        format!("CONVEYOR_RESOURCE={}", run.resource().name),
        format!("CONVEYOR_ATTEMPT={}", run.attempt()),
    ];
    env.extend(run.spec().env.iter().map(|(k, v)| format!("{k}={v}")));
    env
}

fn container_labels(run: &Run<PipelineSpec>, settings: &Settings) -> HashMap<String, String> {
    HashMap::from([
        (labels::RUN_ID.to_owned(), run.run_id().to_owned()),
        (labels::DRIVER.to_owned(), settings.name.clone()),
        (labels::RESOURCE.to_owned(), run.resource().name.clone()),
        (labels::INSTANCE.to_owned(), settings.instance.clone()),
        (labels::MODE.to_owned(), settings.mode.label().to_owned()),
    ])
}

/// The first environment variable name, of the run or of a step, that is not a shell
/// name.
fn invalid_env_name(spec: &PipelineSpec) -> Option<String> {
    spec.env.keys().chain(spec.steps.iter().flat_map(|s| s.env.keys())).find(|k| !valid_name(k)).cloned()
}

/// The secrets the run names, of the run and of its steps.
fn secret_names(spec: &PipelineSpec) -> impl Iterator<Item = &str> {
    spec.secrets.iter().chain(spec.steps.iter().flat_map(|s| s.secrets.iter())).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_sdk::Resource;
    use serde_json::json;

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
    fn the_runs_identity_comes_before_the_specs_environment() {
        let spec: PipelineSpec =
            serde_json::from_value(json!({"steps": [], "env": {"CI": "false", "A": "1"}})).unwrap();
        let run = Run::new(Resource::new("web", "pipeline", json!({})), spec).with_run_id("r-1");
        assert_eq!(
            env(&run),
            [
                "CI=true",
                "CONVEYOR_RUN_ID=r-1",
                "CONVEYOR_RESOURCE=web",
                "CONVEYOR_ATTEMPT=1",
                "A=1",
                "CI=false"
            ]
        );
        let labels = container_labels(&run, &Settings { instance: "me".into(), ..Settings::default() });
        assert_eq!(labels[labels::RUN_ID], "r-1");
        assert_eq!(labels[labels::INSTANCE], "me");
        assert_eq!(labels[labels::DRIVER], "command-runner");
        assert_eq!(labels[labels::MODE], "run", "never reaped unless the runner says it serves");
        let serving = Settings { mode: crate::Mode::Serve, ..Settings::default() };
        assert_eq!(container_labels(&run, &serving)[labels::MODE], "serve");
    }
}
