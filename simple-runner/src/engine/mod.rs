//! The Docker engine, as the runner uses it.
//!
//! A connection ([`Engine`], this file) and what the runner does to any container
//! (stop, signal, inspect, remove, list); images made present ([`image`]), a container
//! watched until it ends (`watch.rs`), and what can go wrong ([`error`]). What a run's
//! container is: [`crate::pod`].

pub mod error;
mod exec;
pub mod image;
mod volume;
mod watch;

use std::collections::HashMap;
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecOptions};
use bollard::query_parameters::{
    ListContainersOptions, RemoveContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

use crate::metrics::RunnerMetrics;
use crate::pod::labels;
use error::EngineError;

pub(crate) use exec::ExecOutput;
pub(crate) use watch::ContainerWatch;

pub(crate) fn docker_error(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> EngineError {
    let action = action.into();
    move |source| EngineError::Docker { action, source }
}

/// A Docker engine connection (from `DOCKER_HOST`, the local socket by default).
///
/// ```no_run
/// # async fn demo() -> Result<(), simple_runner::EngineError> {
/// let engine = simple_runner::Engine::connect().await?;
/// let version = engine.docker().version().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    metrics: RunnerMetrics,
    /// Whether the engine is Podman, once asked.
    podman: std::sync::Arc<tokio::sync::OnceCell<bool>>,
}

impl Engine {
    /// Connects as the Docker CLI does: `DOCKER_HOST`, else the local socket. The API
    /// version is negotiated with the engine when it can be reached.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), simple_runner::EngineError> {
    /// let engine = simple_runner::Engine::connect().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect() -> Result<Self, EngineError> {
        let docker =
            Docker::connect_with_defaults().map_err(docker_error("cannot connect to the Docker engine"))?;
        Ok(Self::negotiated(docker).await)
    }

    /// Connects to the engine at `host` (`unix:///var/run/docker.sock`,
    /// `tcp://127.0.0.1:2375`, …), as `DOCKER_HOST` would.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), simple_runner::EngineError> {
    /// let engine = simple_runner::Engine::connect_to("tcp://127.0.0.1:2375").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_to(host: &str) -> Result<Self, EngineError> {
        let docker = Docker::connect_with_host(host)
            .map_err(docker_error(format!("cannot connect to the Docker engine at {host}")))?;
        Ok(Self::negotiated(docker).await)
    }

    async fn negotiated(docker: Docker) -> Self {
        // An engine down now is tried again at the first run; keep the default version.
        let docker = match docker.clone().negotiate_version().await {
            Ok(negotiated) => negotiated,
            Err(error) => {
                tracing::warn!(%error, "cannot reach the Docker engine yet");
                docker
            }
        };
        Self { docker, metrics: RunnerMetrics::default(), podman: Default::default() }
    }

    /// Whether the engine is Podman (through its Docker-compatible API), asked once;
    /// an engine that does not say counts as Docker and is asked again next time.
    pub(crate) async fn is_podman(&self) -> bool {
        let asked = self
            .podman
            .get_or_try_init(|| async {
                let version = self.docker.version().await?;
                Ok::<_, bollard::errors::Error>(
                    version.components.unwrap_or_default().iter().any(|c| c.name == "Podman Engine"),
                )
            })
            .await;
        asked.copied().unwrap_or(false)
    }

    /// What this engine has counted: pulls, container starts, removals, orphans.
    ///
    /// ```no_run
    /// # async fn demo(engine: simple_runner::Engine) {
    /// let metrics = conveyor_sdk::runtime::Metrics::new();
    /// engine.metrics().register(&metrics); // served with the runtime's
    /// # }
    /// ```
    pub fn metrics(&self) -> &RunnerMetrics {
        &self.metrics
    }

    /// The bollard client, for what the runner does not do itself.
    ///
    /// ```no_run
    /// # async fn demo(engine: simple_runner::Engine) {
    /// let present = engine.docker().inspect_image("alpine:3.20").await.is_ok();
    /// # }
    /// ```
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Stops a container: SIGTERM, then SIGKILL after `grace`. A failure is only
    /// traced: removing the container is what counts.
    ///
    /// ```no_run
    /// # async fn demo(engine: simple_runner::Engine, id: &str) {
    /// engine.stop(id, std::time::Duration::from_secs(2)).await;
    /// # }
    /// ```
    pub async fn stop(&self, container: &str, grace: Duration) {
        let options = StopContainerOptions { t: Some(grace.as_secs().max(1) as i32), signal: None };
        if let Err(error) = self.docker.stop_container(container, Some(options)).await {
            tracing::debug!(%error, container, "stopping the container failed");
        }
    }

    /// Sends `signal` (`TERM`, `KILL`, …) to every process of a run container but its
    /// init: the running step and whatever it started. The container's own shell traps
    /// SIGTERM, so `TERM` stops the step and the shell goes on to report its exit;
    /// `KILL` ends the shell too, and with it the container. Returns whether the engine
    /// ran the signal; a failure is traced.
    ///
    /// ```no_run
    /// # async fn demo(engine: simple_runner::Engine, id: &str) {
    /// engine.signal_processes(id, "TERM").await;
    /// # }
    /// ```
    pub async fn signal_processes(&self, container: &str, signal: &str) -> bool {
        let kill = format!("kill -{signal} -1");
        let options =
            CreateExecOptions { cmd: Some(vec!["/bin/sh", "-c", kill.as_str()]), ..Default::default() };
        let started = match self.docker.create_exec(container, options).await {
            Ok(exec) => {
                let detached = StartExecOptions { detach: true, ..Default::default() };
                self.docker.start_exec(&exec.id, Some(detached)).await.map(drop)
            }
            Err(error) => Err(error),
        };
        match started {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(%error, container, signal, "signalling the run container's processes failed");
                false
            }
        }
    }

    /// Whether the engine saw the kernel kill a process of `container` for memory:
    /// its `OOMKilled` state. An engine that cannot say counts as no.
    ///
    /// ```no_run
    /// # async fn demo(engine: simple_runner::Engine, id: &str) {
    /// if engine.oom_killed(id).await {
    ///     eprintln!("{id} ran out of memory");
    /// }
    /// # }
    /// ```
    pub async fn oom_killed(&self, container: &str) -> bool {
        match self.docker.inspect_container(container, None).await {
            Ok(inspected) => inspected.state.and_then(|state| state.oom_killed).unwrap_or(false),
            Err(error) => {
                tracing::debug!(%error, container, "inspecting the container failed");
                false
            }
        }
    }

    /// Removes a container whatever its state; returns whether it is gone (a container
    /// already gone is fine).
    ///
    /// ```no_run
    /// # async fn demo(engine: simple_runner::Engine, id: &str) {
    /// if !engine.remove(id).await {
    ///     eprintln!("container {id} is still there");
    /// }
    /// # }
    /// ```
    pub async fn remove(&self, container: &str) -> bool {
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.docker.remove_container(container, Some(options)).await {
            Ok(()) => {
                self.metrics.container_removed();
                true
            }
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => true,
            Err(error) => {
                tracing::warn!(%error, container, "removing the container failed");
                false
            }
        }
    }

    /// Removes a container once it has exited by itself, as a run's does when its
    /// session ends, waiting at most `within` before it is removed anyway: removing an
    /// exited container costs the engine less than killing a running one first.
    /// Returns whether it is gone.
    pub(crate) async fn remove_once_exited(&self, container: &str, within: Duration) -> bool {
        let mut exited = self.docker.wait_container(container, None::<WaitContainerOptions>);
        if let Ok(Some(Err(error))) = tokio::time::timeout(within, exited.next()).await {
            // Already gone, or an exit status the engine reports as an error: either
            // way the removal below settles it.
            tracing::trace!(%error, container, "waiting for the container to exit");
        }
        self.remove(container).await
    }

    /// The containers of driver `driver`, running or not: id and labels. A list the
    /// engine answers but that does not decode, as Podman's does for a moment while a
    /// container exits, is asked again for up to 10 s.
    ///
    /// ```no_run
    /// # async fn demo(engine: simple_runner::Engine) -> Result<(), simple_runner::EngineError> {
    /// for (id, labels) in engine.containers_of("command-runner").await? {
    ///     println!("{id}: run {:?}", labels.get(simple_runner::pod::labels::RUN_ID));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn containers_of(
        &self,
        driver: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>, EngineError> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{}={driver}", labels::DRIVER)])]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let deadline = tokio::time::Instant::now() + LIST_UNDECODED_FOR;
        let list = loop {
            match self.docker.list_containers(Some(options.clone())).await {
                // Podman's Docker-compatible API lists a container that has just exited
                // as `stopped` (a state the Docker API does not have) until Podman has
                // cleaned up after it, and then as `exited` (containers/podman#28359):
                // the whole list does not decode meanwhile. Ask again.
                Err(bollard::errors::Error::JsonDataError { .. })
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(LIST_RETRY).await;
                }
                listed => break listed.map_err(docker_error("cannot list containers"))?,
            }
        };
        Ok(list.into_iter().filter_map(|c| Some((c.id?, c.labels.unwrap_or_default()))).collect())
    }
}

/// How long a list of containers the engine answers but that does not decode is asked
/// again: Podman's transient `stopped` state lasts well under a second.
const LIST_UNDECODED_FOR: Duration = Duration::from_secs(10);

/// How long the runner waits before it asks again for such a list.
const LIST_RETRY: Duration = Duration::from_millis(100);
