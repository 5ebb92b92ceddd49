//! The Docker engine, as the runner uses it: a connection, and one container per run.
//! Images are in [`crate::image`]; a run container's steps go through its own shell,
//! see [`crate::session`].

use std::collections::HashMap;
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecOptions};
use bollard::models::{ContainerCreateBody, ContainerStateStatusEnum, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
    WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{ContainerEnd, EngineError};
use crate::metrics::RunnerMetrics;
use crate::settings::ContainerSettings;

/// Labels every run container carries.
///
/// ```
/// use simple_runner::docker::labels;
///
/// let filter = format!("{}=command-runner", labels::DRIVER);
/// assert_eq!(filter, "conveyor.driver=command-runner");
/// ```
pub mod labels {
    /// The run id.
    pub const RUN_ID: &str = "conveyor.run_id";
    /// The driver's name.
    pub const DRIVER: &str = "conveyor.driver";
    /// The resource's name.
    pub const RESOURCE: &str = "conveyor.resource";
    /// The identity of the runner process that owns the container.
    pub const INSTANCE: &str = "conveyor.instance";
    /// How that process owns it: `serve` (reaped once the process is gone) or `run`
    /// (never reaped), see [`crate::Mode`].
    pub const MODE: &str = "conveyor.mode";
    /// `true` on a warm container, made before its run: it has no run's labels (see
    /// [`crate::WarmSettings`]).
    pub const WARM: &str = "conveyor.warm";
    /// The identity of the installation whose runner made the container (see
    /// [`crate::installation`]): a sweep looks only at containers with its own.
    pub const INSTALLATION: &str = "conveyor.installation";
}

pub(crate) fn docker_error(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> EngineError {
    let action = action.into();
    move |source| EngineError::Docker { action, source }
}

/// A run's container, as [`Engine::start_run_container`] started it.
///
/// ```no_run
/// # async fn demo(engine: simple_runner::Engine, settings: simple_runner::ContainerSettings)
/// # -> Result<(), simple_runner::EngineError> {
/// let container = engine
///     .start_run_container("alpine:3.20", "conveyor-demo", None, vec![], Default::default(), &settings)
///     .await?;
/// println!("{} is {}", container.name, container.id);
/// engine.remove(&container.id).await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RunContainer {
    /// The container's id.
    pub id: String,
    /// Its name.
    pub name: String,
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
        Self { docker, metrics: RunnerMetrics::default() }
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

    /// Creates and starts the container of a run: kept alive by a shell waiting on its
    /// open stdin (any image with `/bin/sh` works) until the one client attached to it
    /// ([`Session`](crate::session::Session)) goes: then the shell reads the end of its
    /// input and the container exits by itself. With an init process, labelled,
    /// never privileged, with `no-new-privileges`, a pids limit and no host mounts,
    /// and the network, limits, user and read-only root of `settings`. Its working
    /// directory is `workdir`, created when missing, or else the image's own. Labelled
    /// `labels`, and [`labels::INSTALLATION`] when `settings` name an installation. A
    /// container that does not start is removed.
    ///
    /// ```no_run
    /// use std::collections::HashMap;
    /// use simple_runner::docker::labels;
    /// use simple_runner::ContainerSettings;
    ///
    /// # async fn demo(engine: simple_runner::Engine) -> Result<(), simple_runner::EngineError> {
    /// let labels = HashMap::from([(labels::DRIVER.to_owned(), "command-runner".to_owned())]);
    /// let env = vec!["CI=true".to_owned()];
    /// let settings = ContainerSettings { network: "none".into(), ..ContainerSettings::default() };
    /// let container =
    ///     engine.start_run_container("alpine:3.20", "conveyor-demo", Some("/src"), env, labels, &settings).await?;
    /// engine.remove(&container.id).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_run_container(
        &self,
        image: &str,
        name: &str,
        workdir: Option<&str>,
        env: Vec<String>,
        labels: HashMap<String, String>,
        settings: &ContainerSettings,
    ) -> Result<RunContainer, EngineError> {
        let labels = with_installation(labels, settings);
        let host_config = host_config(settings);
        let config = ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: Some(vec!["/bin/sh".to_owned()]),
            cmd: Some(Vec::new()),
            open_stdin: Some(true),
            // Its end is the shell's: a container that exited is removed faster than
            // one the engine must kill first.
            stdin_once: Some(true),
            tty: Some(false),
            working_dir: workdir.map(str::to_owned),
            user: settings.user.clone(),
            env: Some(env),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.to_owned()),
            platform: settings.platform.clone().unwrap_or_default(),
        };
        let starting = std::time::Instant::now();
        let created = self
            .docker
            .create_container(Some(options), config)
            .await
            .map_err(docker_error(format!("cannot create a container of image {image}")))?;
        let container = RunContainer { id: created.id, name: name.to_owned() };
        if let Err(error) = self.docker.start_container(&container.id, None).await {
            self.remove(&container.id).await;
            return Err(docker_error(format!("cannot start the container of image {image}"))(error));
        }
        self.metrics.container_started(starting.elapsed());
        Ok(container)
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
    ///     println!("{id}: run {:?}", labels.get(simple_runner::docker::labels::RUN_ID));
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

/// How long a watch waits before it asks the engine again, when its wait on a
/// container that still runs broke off.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// A watch on a container a run uses: it learns, from the engine's wait endpoint and
/// no polling, when the container stops or goes, whoever did it, and how. The watch
/// ends when this is dropped.
pub(crate) struct ContainerWatch {
    end: watch::Receiver<Option<ContainerEnd>>,
    watching: Option<JoinHandle<()>>,
}

impl ContainerWatch {
    /// Watches `container` from now on.
    pub(crate) fn start(docker: Docker, container: String) -> Self {
        let (sender, end) = watch::channel(None);
        let watching = tokio::spawn(watch_container(docker, container, sender));
        Self { end, watching: Some(watching) }
    }

    /// A watch that learns how its container ended from `end`.
    #[cfg(test)]
    pub(crate) fn of(end: watch::Receiver<Option<ContainerEnd>>) -> Self {
        Self { end, watching: None }
    }

    /// How the container ended, once it has; at once if it had already. Cancel-safe.
    pub(crate) async fn ended(&mut self) -> ContainerEnd {
        if let Ok(end) = self.end.wait_for(Option::is_some).await {
            if let Some(end) = end.as_ref() {
                return end.clone();
            }
        }
        // The watch itself ended without a word: nothing more will be learnt.
        std::future::pending().await
    }

    /// How the container ended, if it did within `within`.
    pub(crate) async fn ended_within(&mut self, within: Duration) -> Option<ContainerEnd> {
        tokio::time::timeout(within, self.ended()).await.ok()
    }
}

impl Drop for ContainerWatch {
    fn drop(&mut self) {
        if let Some(watching) = &self.watching {
            watching.abort();
        }
    }
}

/// Waits until `container` is no longer running, then tells `end` how it ended.
async fn watch_container(docker: Docker, container: String, end: watch::Sender<Option<ContainerEnd>>) {
    loop {
        let waited = docker.wait_container(&container, None::<WaitContainerOptions>).next().await;
        let broke_off = match waited {
            // It exited; the engine reports an exit code other than 0 as an error.
            Some(Ok(_)) | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) => None,
            Some(Err(error)) => Some(error.to_string()),
            None => Some("the engine closed the wait".to_owned()),
        };
        let inspected = docker.inspect_container(&container, None).await;
        let state = match inspected {
            Ok(inspected) => inspected.state.unwrap_or_default(),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                end.send_replace(Some(ContainerEnd::Removed));
                return;
            }
            Err(error) => {
                let reason = broke_off.unwrap_or_else(|| error.to_string());
                end.send_replace(Some(ContainerEnd::EngineLost { reason }));
                return;
            }
        };
        if state.status == Some(ContainerStateStatusEnum::REMOVING) {
            end.send_replace(Some(ContainerEnd::Removed));
            return;
        }
        if state.running == Some(true) {
            // The wait broke off while the container runs on: wait again.
            tracing::debug!(container, reason = ?broke_off, "the wait on a run container broke off; waiting again");
            tokio::time::sleep(WATCH_RETRY).await;
            continue;
        }
        let exited = ContainerEnd::Exited {
            exit_code: state.exit_code.unwrap_or(-1),
            oom_killed: state.oom_killed.unwrap_or(false),
        };
        end.send_replace(Some(exited));
        return;
    }
}

/// `labels`, and the installation's of `settings` if they name one: the labels every
/// container the runner makes carries.
pub(crate) fn with_installation(
    mut labels: HashMap<String, String>,
    settings: &ContainerSettings,
) -> HashMap<String, String> {
    if let Some(installation) = &settings.installation {
        labels.insert(labels::INSTALLATION.to_owned(), installation.clone());
    }
    labels
}

/// The host side of a run container: an init process, never privileged,
/// `no-new-privileges`, a pids limit, no host mounts, no swap beyond the memory
/// limit, and the network, limits and read-only root of `settings`.
fn host_config(settings: &ContainerSettings) -> HostConfig {
    HostConfig {
        init: Some(true),
        network_mode: Some(settings.network.clone()),
        memory: settings.memory_bytes,
        // No swap beyond the memory limit: over it, a step is killed.
        memory_swap: settings.memory_bytes,
        nano_cpus: settings.cpus.map(|c| (c * 1e9) as i64),
        pids_limit: Some(settings.pids_limit),
        privileged: Some(false),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        readonly_rootfs: Some(settings.read_only),
        tmpfs: settings.read_only.then(|| HashMap::from([("/tmp".to_owned(), "rw,nosuid,nodev".to_owned())])),
        ..Default::default()
    }
}

/// A container name derived from a resource name: `conveyor-<name>-<run>-<random>`,
/// with anything but `[a-zA-Z0-9_.-]` replaced and the name shortened.
///
/// ```
/// let name = simple_runner::docker::container_name("my pipeline", "fbdf5edf-66d4");
/// assert!(name.starts_with("conveyor-my-pipeline-fbdf5edf-"));
/// ```
pub fn container_name(resource: &str, run_id: &str) -> String {
    let mut safe: String = resource
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' })
        .take(40)
        .collect();
    if safe.is_empty() {
        safe.push_str("run");
    }
    let run: String = run_id.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("conveyor-{safe}-{run}-{}", &random[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_containers_are_hardened_whatever_the_settings() {
        let settings = ContainerSettings {
            memory_bytes: Some(64 << 20),
            cpus: Some(0.5),
            pids_limit: 100,
            read_only: true,
            ..ContainerSettings::default()
        };
        let host = host_config(&settings);
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.security_opt, Some(vec!["no-new-privileges".to_owned()]));
        assert_eq!((host.binds, host.mounts, host.volumes_from), (None, None, None), "no host mounts");
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!((host.memory, host.memory_swap), (Some(64 << 20), Some(64 << 20)));
        assert_eq!((host.nano_cpus, host.pids_limit), (Some(500_000_000), Some(100)));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert!(host.tmpfs.unwrap().contains_key("/tmp"));
        assert_eq!(host_config(&ContainerSettings::default()).pids_limit, Some(1024));
    }

    #[test]
    fn container_names_are_safe_for_docker() {
        let name = container_name("../etc/passwd; rm -rf /", "fbdf5edf-66d4");
        assert!(name.starts_with("conveyor-..-etc-passwd--rm--rf---fbdf5edf-"), "{name}");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
        assert!(container_name("", "x").starts_with("conveyor-run-x-"));
        assert!(container_name(&"a".repeat(500), "r").len() < 70);
        assert_ne!(container_name("same", "run"), container_name("same", "run"));
    }
}
