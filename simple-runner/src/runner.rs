//! The `command-runner` driver: a run is prepared, its steps run, and its report
//! becomes its result.

use conveyor_sdk::{Driver, DriverResult, ReconcileError, ResourceDefinition, ResourceType, Run};

use crate::docker::Engine;
use crate::error::EngineError;
use crate::image::PullProgress;
use crate::pool::WarmPool;
use crate::prepare::{prepare, Containers, Prepared};
use crate::removal::Removals;
use crate::report::RunReport;
use crate::settings::Settings;
use crate::spec::{PipelineSpec, RESOURCE_TYPE};
use crate::steps::run_steps;

/// The reference driver: runs a `pipeline` resource's steps in a container of its image.
///
/// ```no_run
/// use simple_runner::{CommandRunner, Engine, Settings};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let runner = CommandRunner::new(Engine::connect().await?, Settings::default());
/// let served = conveyor_sdk::Runtime::new(runner.clone()).run().await;
/// runner.finish_removals().await;
/// served?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CommandRunner {
    engine: Engine,
    settings: Settings,
    /// Containers being removed after their run's result.
    removals: Removals,
    /// The warm containers.
    pool: WarmPool,
}

impl CommandRunner {
    /// A runner on `engine` with `settings`.
    ///
    /// ```no_run
    /// use simple_runner::{CommandRunner, ContainerSettings, Engine, Settings};
    ///
    /// # async fn demo() -> Result<(), simple_runner::EngineError> {
    /// let settings = Settings {
    ///     container: ContainerSettings { network: "none".into(), ..ContainerSettings::default() },
    ///     ..Settings::default()
    /// };
    /// let runner = CommandRunner::new(Engine::connect().await?, settings);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(engine: Engine, settings: Settings) -> Self {
        let removals = Removals::new(engine.clone());
        let pool = WarmPool::new(engine.clone(), removals.clone(), &settings);
        Self { engine, settings, removals, pool }
    }

    /// Removes the warm containers ([`Settings::warm`]), and waits until they and the
    /// containers of finished runs are removed. A finished run's container is removed
    /// in the background so that its result is not delayed; call this before the
    /// process exits. Runs after it start cold.
    ///
    /// ```no_run
    /// # async fn demo(runner: simple_runner::CommandRunner) {
    /// // … runs …
    /// runner.finish_removals().await;
    /// # }
    /// ```
    pub async fn finish_removals(&self) {
        self.pool.close().await;
        self.removals.finish().await;
    }

    /// How many warm containers are ready ([`Settings::warm`]), as it changes: to wait
    /// for the next run of an image to start warm.
    ///
    /// ```no_run
    /// # async fn demo(runner: simple_runner::CommandRunner) -> Result<(), tokio::sync::watch::error::RecvError> {
    /// let mut ready = runner.warm_containers();
    /// ready.wait_for(|ready| *ready >= 1).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn warm_containers(&self) -> tokio::sync::watch::Receiver<usize> {
        self.pool.ready()
    }

    /// The resource definition it registers: upstream's, extended, derived from
    /// [`PipelineSpec`].
    ///
    /// ```
    /// let definition = simple_runner::CommandRunner::definition();
    /// assert_eq!(definition.name, "pipeline");
    /// ```
    pub fn definition() -> ResourceDefinition {
        ResourceDefinition::from_type::<PipelineSpec>(RESOURCE_TYPE)
            .description("Pipeline resource definition")
    }

    /// The settings.
    ///
    /// ```no_run
    /// # fn demo(runner: simple_runner::CommandRunner) {
    /// println!("instance {}", runner.settings().instance);
    /// # }
    /// ```
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The engine.
    ///
    /// ```no_run
    /// # async fn demo(runner: simple_runner::CommandRunner) -> Result<(), simple_runner::EngineError> {
    /// let ours = runner.engine().containers_of(&runner.settings().name).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs the resource of `run` and reports what it came to; `progress` hears how a
    /// pull goes (the run's log, as the driver does, or a function of the caller). The
    /// container is removed on every path: at once when the run is cancelled, else in
    /// the background (see [`finish_removals`](Self::finish_removals)).
    ///
    /// ```no_run
    /// use conveyor_sdk::{LogHandle, Resource, Run};
    /// use simple_runner::image::PullProgress;
    /// use simple_runner::{CommandRunner, PipelineSpec};
    ///
    /// # async fn demo(runner: CommandRunner) -> Result<(), serde_json::Error> {
    /// let resource = Resource::new("hello", "pipeline", serde_json::json!({
    ///     "image": "alpine:3.20",
    ///     "steps": [{"name": "greet", "command": "echo hello"}]
    /// }));
    /// let spec: PipelineSpec = serde_json::from_value(resource.spec.clone())?;
    /// let (log, lines) = LogHandle::memory();
    /// let run = Run::new(resource, spec).with_log(log);
    /// let report = runner.execute(&run, PullProgress::Log(run.log())).await;
    /// runner.finish_removals().await;
    /// assert!(report.succeeded(), "{}", report.message());
    /// assert!(lines.lines().contains(&"hello".to_owned()));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn execute(&self, run: &Run<PipelineSpec>, progress: PullProgress<'_>) -> RunReport {
        let containers = Containers { engine: &self.engine, removals: &self.removals, pool: &self.pool };
        let prepared = prepare(containers, &self.settings, run, progress).await;
        let Prepared { container, shell } = match prepared {
            Ok(prepared) => prepared,
            Err(report) => return report,
        };
        let report = run_steps(run, shell, &self.engine, &self.settings).await;
        if let RunReport::Cancelled = report {
            // The run goes back to the queue: its container goes now.
            container.remove_now(self.settings.container.stop_grace).await;
        }
        // Otherwise the guard removes it in the background while the result goes out.
        report
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
        Ok(self.execute(&run, PullProgress::Log(run.log())).await.into_result())
    }

    /// The run's timeout ([`Settings::run_timeout_for`]) covers it all: pull, start and
    /// steps.
    fn deadline(&self, run: &Run<PipelineSpec>) -> Option<std::time::Duration> {
        Some(self.settings.run_timeout_for(run.spec()))
    }

    /// Ready while the Docker engine answers a ping (`/readyz`).
    async fn ready(&self) -> Result<(), ReconcileError> {
        match self.engine.docker().ping().await {
            Ok(_) => Ok(()),
            Err(source) => {
                Err(EngineError::Docker { action: "the Docker engine does not answer".into(), source }.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_definition_keeps_upstreams_shape() {
        let def = CommandRunner::definition();
        assert_eq!(def.name, "pipeline");
        assert_eq!(def.schema["required"], json!(["steps"]));
        assert_eq!(def.schema["properties"]["steps"]["items"]["required"], json!(["name", "command"]));
    }
}
