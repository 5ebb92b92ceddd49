//! The pod up, or preparing a run: its image present, its container started, the
//! container's shell attached. A run that cannot be prepared ends here with its report.

use std::collections::HashMap;

use conveyor_sdk::driver::CancelReason;
use conveyor_sdk::{LogHandle, Run};

use crate::engine::image::{PullOptions, PullProgress};
use crate::engine::Engine;
use crate::housekeeping::pool::{PoolKey, Warm, WarmPool};
use crate::pod::down::{ContainerGuard, Removals};
use crate::pod::{container_name, labels};
use crate::report::{Refusal, RunReport};
use crate::settings::secrets::valid_name;
use crate::settings::Settings;
use crate::spec::PipelineSpec;
use crate::steps::session::Session;
use crate::steps::Shell;

/// A run ready for its steps.
pub(crate) struct Prepared {
    /// The container, removed when this goes.
    pub(crate) container: ContainerGuard,
    /// What the steps need of it.
    pub(crate) shell: Shell,
}

/// Where a run's container comes from.
pub(crate) struct Containers<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) removals: &'a Removals,
    pub(crate) pool: &'a WarmPool,
}

/// Prepares `run`, in the order a failure is reported: the image named, every secret
/// it names known (their values masked in its log from then on), the image present
/// (the only wait a cancellation cuts short), the environment valid, a container
/// taken from the warm ones or else started, its shell attached; the warm containers
/// of its image and settings are then topped up. A failure is logged before it is
/// returned.
pub(crate) async fn prepare(
    containers: Containers<'_>,
    settings: &Settings,
    run: &Run<PipelineSpec>,
    progress: PullProgress<'_>,
) -> Result<Prepared, RunReport> {
    let Containers { engine, removals, pool } = containers;
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
    let image_id = match pulled {
        Ok(image_id) => image_id,
        Err(error) => return Err(logged(log, RunReport::NoContainer { image, error }).await),
    };
    if let Some(name) = invalid_env_name(spec) {
        return Err(logged(log, RunReport::Refused(Refusal::InvalidEnvName(name))).await);
    }

    let workdir = spec.workdir.as_deref();
    let key = PoolKey::new(&image, workdir, &container_settings);
    let warm = pool.take(&key, &image_id).await;
    engine.metrics().run_started(warm.is_some());
    let taken = match warm {
        Some(warm) => {
            tracing::debug!(container = %warm.id, "the run takes a warm container");
            Ok(warm)
        }
        None => {
            let name = container_name(&run.resource().name, run.run_id());
            let labels = container_labels(run, settings);
            cold(engine, removals, &image, &name, workdir, labels, &container_settings).await
        }
    };
    // The next run of this image and settings finds one ready.
    pool.refill(&key, &image, &image_id, &container_settings, workdir);
    match taken {
        Ok(Warm { id, guard, session }) => Ok(Prepared {
            container: guard,
            shell: Shell {
                image,
                container_id: id,
                session: session.limit_output(settings.max_log_bytes),
                memory_bytes: container_settings.memory_bytes,
                env: env(run),
            },
        }),
        Err(error) => Err(logged(log, RunReport::NoContainer { image, error }).await),
    }
}

/// A container made for the run, started, its shell attached.
async fn cold(
    engine: &Engine,
    removals: &Removals,
    image: &str,
    name: &str,
    workdir: Option<&str>,
    labels: HashMap<String, String>,
    settings: &crate::settings::ContainerSettings,
) -> Result<Warm, crate::engine::error::EngineError> {
    // The environment reaches the steps through the steps, as for a warm container.
    let container = engine.start_run_container(image, name, workdir, Vec::new(), labels, settings).await?;
    // From here the container goes with the guard, even if this future is dropped.
    let guard = removals.guard(container.id.clone());
    let session = Session::attach(engine.docker(), &container.id).await?;
    Ok(Warm { id: container.id, guard, session })
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
fn env(run: &Run<PipelineSpec>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("CI".into(), "true".into()),
        ("CONVEYOR_RUN_ID".into(), run.run_id().to_owned()),
        ("CONVEYOR_RESOURCE".into(), run.resource().name.clone()),
        ("CONVEYOR_ATTEMPT".into(), run.attempt().to_string()),
    ];
    env.extend(run.spec().env.iter().map(|(k, v)| (k.clone(), v.clone())));
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
        let env: Vec<String> = env(&run).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            env,
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
