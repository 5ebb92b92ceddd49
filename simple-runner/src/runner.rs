//! The `command-runner` driver: a run is prepared, its steps run, and its report
//! becomes its result.

use conveyor_sdk::driver::CancelReason;
use conveyor_sdk::liveness::Replicas;
use conveyor_sdk::{
    error_text, Config, Driver, DriverResult, ReconcileError, ResourceDefinition, ResourceType, Run, Runtime,
};

use std::time::Duration;

use crate::housekeeping::cleanup;
use crate::housekeeping::installation::identify;

use crate::engine::error::EngineError;
use crate::engine::image::PullProgress;
use crate::engine::Engine;
use crate::housekeeping::pool::WarmPool;
use crate::objects::{artifacts, caches};
use crate::pod::down::Removals;
use crate::pod::up::interrupted;
use crate::pod::up::{prepare, Containers, Prepared};
use crate::report::{RunOutputs, RunReport, StepsEnd};
use crate::settings::{Mode, Settings, DEFAULT_LIVENESS_TTL};
use crate::source;
use crate::spec::{PipelineSpec, RESOURCE_TYPE};
use crate::steps::run_steps;
use crate::steps::Shell;
use crate::workspace::Workspace;

/// The reference driver: runs a `pipeline` resource's steps in a container of its image.
///
/// Serving it ([`serve`](Self::serve)) is one call: the runtime keeps its liveness
/// record, sweeps for containers of runners that are gone (its
/// [`housekeeping`](Driver::housekeeping)) and, at the end, waits until the containers
/// of its runs are removed (its [`shutdown`](Driver::shutdown)).
///
/// ```no_run
/// use simple_runner::{CommandRunner, Engine, Mode, Settings};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let settings = Settings { mode: Mode::Serve, ..Settings::default() };
/// let runner = CommandRunner::new(Engine::connect().await?, settings);
/// runner.serve(conveyor_sdk::Config::default(), conveyor_sdk::runtime::shutdown_signal()).await?;
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
    /// The JetStream of the object store buckets of caches and artifacts, when the
    /// runner has one ([`with_jetstream`](Self::with_jetstream)).
    objects: Option<async_nats::jetstream::Context>,
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
        Self { engine, settings, removals, pool, objects: None }
    }

    /// This runner, keeping caches and artifacts in the object store of `jetstream`
    /// (a serving runner uses its own NATS connection's, see [`serve`](Self::serve));
    /// without it, a run's caches are neither restored nor saved and its artifacts not
    /// kept, each with a warning in its log.
    ///
    /// ```no_run
    /// # async fn demo(runner: simple_runner::CommandRunner) -> Result<(), async_nats::ConnectError> {
    /// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    /// let runner = runner.with_jetstream(async_nats::jetstream::new(client));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_jetstream(mut self, jetstream: async_nats::jetstream::Context) -> Self {
        self.objects = Some(jetstream);
        self
    }

    /// Serves with `config` until `shutdown` completes, as this runner's
    /// [`Settings::mode`] calls for; returns once every container it made is removed.
    /// A serving runner ([`Mode::Serve`]) keeps a liveness record under its
    /// [`Settings::instance`] (TTL [`DEFAULT_LIVENESS_TTL`] unless `config` sets one)
    /// and sweeps for the containers of runners that are gone every
    /// [`Config::housekeeping_interval`](conveyor_sdk::Config::housekeeping_interval).
    ///
    /// Before it takes a run, a serving runner reads the identity of its installation
    /// from its NATS ([`identify`], asked again every 2 s until NATS answers), unless
    /// its [`ContainerSettings::installation`](crate::ContainerSettings::installation)
    /// names one already: every container it makes carries it, and its sweeps look
    /// only at containers that carry it. That connection of its own is also where it
    /// keeps caches and artifacts, unless [`with_jetstream`](Self::with_jetstream) gave
    /// it another.
    ///
    /// ```no_run
    /// # async fn demo(runner: simple_runner::CommandRunner) -> Result<(), conveyor_sdk::runtime::Error> {
    /// let config = conveyor_sdk::Config::default().nats_url("nats://127.0.0.1:4222");
    /// runner.serve(config, conveyor_sdk::runtime::shutdown_signal()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn serve(
        mut self,
        config: Config,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), conveyor_sdk::runtime::Error> {
        let mut config = config.instance(self.settings.instance.clone());
        let mut shutdown = Box::pin(shutdown);
        let serving = self.settings.mode == Mode::Serve;
        if serving && config.get_liveness_ttl().is_none() {
            config = config.liveness_ttl(DEFAULT_LIVENESS_TTL);
        }
        let identify_installation = serving && self.settings.container.installation.is_none();
        if identify_installation || self.objects.is_none() {
            let js = tokio::select! {
                js = jetstream_of(&config) => js?,
                () = &mut shutdown => return Ok(()),
            };
            if identify_installation {
                let installation = tokio::select! {
                    installation = installation_of(&js) => installation,
                    () = &mut shutdown => return Ok(()),
                };
                tracing::info!(%installation, "this runner serves its installation: its sweeps look only at the containers labelled with it");
                self.settings.container.installation = Some(installation);
            }
            self.objects.get_or_insert(js);
        }
        Runtime::with_config(self, config).run_until(shutdown).await
    }

    /// Removes the warm containers ([`Settings::warm`]), and waits until they and the
    /// containers of finished runs are removed. A finished run's container is removed
    /// in the background so that its result is not delayed; the runtime calls this
    /// when serving ends ([`Driver::shutdown`]), and a program that calls
    /// [`execute`](Self::execute) itself calls it before it exits. Runs after it start
    /// cold.
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
    /// use simple_runner::engine::image::PullProgress;
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
        let Prepared { container, mut shell, workspace } = match prepared {
            Ok(prepared) => prepared,
            Err(report) => return report,
        };
        let report = match &workspace {
            Some(workspace) => self.with_files(run, &mut shell, workspace).await,
            None => run_steps(run, &mut shell, &self.engine, &self.settings).await,
        };
        if let RunReport::Ran { .. } = report {
            run.log().log(if report.succeeded() { "run succeeded" } else { "run failed" }).await;
        }
        drop(shell);
        if let RunReport::Cancelled = report {
            // The run goes back to the queue: its containers go now.
            container.remove_now(self.settings.container.stop_grace).await;
        }
        // Otherwise the guard removes them in the background while the result goes out.
        report
    }

    /// The steps of a run with a workspace, between what the runner moves in and out
    /// of it: before them its source checked out and its caches restored (cut short by
    /// a cancellation), after them its artifacts kept and, when they succeeded, its
    /// new caches saved; not when the run was cancelled or its deadline passed.
    async fn with_files(
        &self,
        run: &Run<PipelineSpec>,
        shell: &mut Shell,
        workspace: &Workspace,
    ) -> RunReport {
        let (spec, log, store) = (run.spec(), run.log(), self.objects.as_ref());
        let mut outputs = RunOutputs::default();
        if let Some(source) = &spec.source {
            let checked_out = tokio::select! {
                checked_out = source::checkout(workspace, source, &self.settings, run.run_id(), log) => checked_out,
                _ = run.cancelled() => return interrupted(run),
            };
            match checked_out {
                Ok(checkout) => outputs.commit = Some(checkout.commit),
                Err(error) => {
                    let report = RunReport::SourceFailed {
                        repository: source.git.clone(),
                        reason: error_text(&error),
                    };
                    log.log(report.message()).await;
                    return report;
                }
            }
        }
        tokio::select! {
            () = caches::restore(store, workspace, run, &self.settings) => {}
            _ = run.cancelled() => return interrupted(run),
        }
        let mut report = run_steps(run, shell, &self.engine, &self.settings).await;
        let RunReport::Ran { end, outputs: kept, .. } = &mut report else { return report };
        *kept = outputs;
        if run.is_cancelled() {
            return report;
        }
        let succeeded = matches!(end, StepsEnd::Completed);
        let keeping = artifacts::keep(store, workspace, run, &self.settings, succeeded).await;
        if let Some(CancelReason::Shutdown) = run.cancel_reason() {
            // Cut short by a shutdown: the run goes back to the queue, as during a step.
            return RunReport::Cancelled;
        }
        match keeping {
            Ok(stored) => kept.artifacts = stored,
            Err(why) => {
                log.log(&why).await;
                kept.failure = Some(why);
            }
        }
        if succeeded && kept.failure.is_none() {
            caches::save(store, workspace, run, &self.settings).await;
        }
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

    /// A deleted resource starts no container: the runtime has cancelled the run of the
    /// resource in flight, if there was one, wherever it ran ([`Config::supersede`]),
    /// and its container is removed with it; this says which.
    ///
    /// [`Config::supersede`]: conveyor_sdk::Config::supersede
    async fn cleanup(&self, run: Run<Option<PipelineSpec>>) -> Result<DriverResult, ReconcileError> {
        Ok(DriverResult::success(match run.superseded_run() {
            Some(older) => format!("deleted; cancelled run {older}"),
            None => "deleted; nothing was running".to_owned(),
        }))
    }

    /// The run's timeout ([`Settings::run_timeout_for`]) covers it all: pull, start and
    /// steps.
    fn deadline(&self, run: &Run<PipelineSpec>) -> Option<std::time::Duration> {
        Some(self.settings.run_timeout_for(run.spec()))
    }

    /// A serving runner ([`Mode::Serve`]) with a liveness record removes the
    /// containers of runners of its installation and driver that have none
    /// ([`cleanup::sweep`]).
    async fn housekeeping(&self, replicas: &Replicas) {
        let Some(bucket) = replicas.bucket() else { return };
        if self.settings.mode != Mode::Serve {
            return;
        }
        if replicas.instance() != self.settings.instance {
            tracing::error!(
                runtime_instance = %replicas.instance(),
                runner_instance = %self.settings.instance,
                "the runtime's instance is not this runner's: no sweep, and other replicas may take this \
                 runner's containers for orphans; serve with CommandRunner::serve"
            );
            return;
        }
        let Some(installation) = &self.settings.container.installation else {
            tracing::error!(
                "this runner knows no installation: no sweep, and its containers are never removed by one; \
                 serve with CommandRunner::serve"
            );
            return;
        };
        let scope = cleanup::Scope {
            installation: installation.clone(),
            driver: replicas.driver().to_owned(),
            instance: replicas.instance().to_owned(),
        };
        if let Err(error) = cleanup::sweep(&self.engine, bucket, &scope).await {
            tracing::warn!(error = %error_text(&error), "the sweep for containers of runners that are gone failed");
        }
    }

    /// Waits until the containers of its runs and its warm containers are removed
    /// ([`finish_removals`](CommandRunner::finish_removals)).
    async fn shutdown(&self) {
        self.finish_removals().await;
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

/// How long a runner waits before it connects to NATS, or asks for its installation's
/// identity, again.
const IDENTIFY_RETRY: Duration = Duration::from_secs(2);

/// A JetStream context of the NATS `config` reaches, on a connection of the runner's
/// own (for its installation's identity and its object store); connecting is tried
/// again every [`IDENTIFY_RETRY`] while NATS does not answer.
async fn jetstream_of(
    config: &Config,
) -> Result<async_nats::jetstream::Context, conveyor_sdk::runtime::Error> {
    let servers = config.nats_servers()?;
    let client = loop {
        let options = config.nats_connect_options().await?.max_reconnects(None);
        match options.connect(servers.clone()).await {
            Ok(client) => break client,
            Err(error) => tracing::warn!(
                url = %config.get_nats_url(),
                %error,
                "cannot reach NATS; no run is taken until it answers, trying again in 2s"
            ),
        }
        tokio::time::sleep(IDENTIFY_RETRY).await;
    };
    Ok(async_nats::jetstream::new(client))
}

/// The identity of the installation whose JetStream `js` is, asked again every
/// [`IDENTIFY_RETRY`] while NATS does not give it.
async fn installation_of(js: &async_nats::jetstream::Context) -> String {
    loop {
        match identify(js).await {
            Ok(installation) => return installation,
            Err(error) => tracing::warn!(
                error = %error_text(&error),
                "cannot tell which installation this runner belongs to; no run is taken until it can, trying again in 2s"
            ),
        }
        tokio::time::sleep(IDENTIFY_RETRY).await;
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

    #[test]
    fn the_definition_registers_step_images_and_services() {
        let def = CommandRunner::definition();
        let properties = &def.schema["properties"];
        let step_image = &properties["steps"]["items"]["properties"]["image"];
        assert_eq!(step_image["pattern"].as_str(), Some(crate::spec::IMAGE_REFERENCE), "{step_image}");
        let service = &properties["services"]["items"];
        assert_eq!(properties["services"]["type"], "array", "{}", properties["services"]);
        assert_eq!(service["required"], json!(["name", "image"]));
        for field in ["name", "image", "command", "env", "secrets", "ready", "ready_timeout"] {
            assert!(service["properties"].get(field).is_some(), "services[].{field} missing from {service}");
        }
    }
}
