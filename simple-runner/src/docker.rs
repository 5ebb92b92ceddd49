//! The Docker engine, as the runner uses it: images, and one container per run (its
//! steps go through the container's own shell, see [`crate::session`]).

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions,
};
use bollard::Docker;
use conveyor_sdk::LogHandle;
use futures_util::StreamExt;

use crate::spec::PullPolicy;

/// Labels every run container carries.
pub mod labels {
    /// The run id.
    pub const RUN_ID: &str = "conveyor.run_id";
    /// The driver's name.
    pub const DRIVER: &str = "conveyor.driver";
    /// The resource's name.
    pub const RESOURCE: &str = "conveyor.resource";
    /// The identity of the runner process that owns the container.
    pub const INSTANCE: &str = "conveyor.instance";
}

/// Errors of the Docker engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The engine could not be reached or refused a request.
    #[error("{action}")]
    Docker {
        /// What was being done.
        action: String,
        /// What the engine or the connection said.
        #[source]
        source: bollard::errors::Error,
    },
    /// The image is missing and the pull policy forbids pulling it.
    #[error("image {0} is not present and the pull policy is `never`")]
    ImageMissing(String),
    /// Pulling the image failed.
    #[error("pulling image {image} failed: {reason}")]
    Pull {
        /// The image.
        image: String,
        /// What the engine said.
        reason: String,
    },
    /// A step ended without an exit code.
    #[error("the engine reported no exit code for the step")]
    NoExitCode,
    /// The shell session in the run container failed.
    #[error("{0}")]
    Session(String),
}

fn docker_error(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> EngineError {
    let action = action.into();
    move |source| EngineError::Docker { action, source }
}

/// What a pull tells whoever watches it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PullUpdate {
    /// A line worth reading: the pull starts, or a layer reaches a new stage.
    Line(String),
    /// A layer's status changed, shown or not: the pull is alive.
    Tick,
    /// The image is there, or will not be: nothing more comes.
    Finished,
}

/// Where a pull's progress goes.
pub enum PullProgress<'a> {
    /// Condensed lines in the run's log.
    Log(&'a LogHandle),
    /// Every update to a function, e.g. one that draws a spinner on a terminal.
    Callback(&'a (dyn Fn(PullUpdate) + Send + Sync)),
}

impl PullProgress<'_> {
    async fn line(&self, text: String) {
        match self {
            PullProgress::Log(log) => log.log(text).await,
            PullProgress::Callback(callback) => callback(PullUpdate::Line(text)),
        }
    }

    fn update(&self, update: PullUpdate) {
        if let PullProgress::Callback(callback) = self {
            callback(update);
        }
    }
}

/// How run containers are made: what a resource must not decide.
#[derive(Debug, Clone)]
pub struct ContainerSettings {
    /// The network of run containers (`bridge`, `none`, …).
    pub network: String,
    /// A memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// A CPU limit, in CPUs.
    pub cpus: Option<f64>,
    /// How long a stopped container has between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
}

impl Default for ContainerSettings {
    fn default() -> Self {
        Self { network: "bridge".into(), memory_bytes: None, cpus: None, stop_grace: Duration::from_secs(2) }
    }
}

/// What the runner needs of a container for one run.
pub struct RunContainer {
    /// The container's id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// The exit of one step's command.
pub struct StepExit {
    /// The exit code.
    pub code: i64,
}

/// A Docker engine connection (from `DOCKER_HOST`, the local socket by default).
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

impl Engine {
    /// Connects as the Docker CLI does: `DOCKER_HOST`, else the local socket. The API
    /// version is negotiated with the engine when it can be reached.
    pub async fn connect() -> Result<Self, EngineError> {
        let docker =
            Docker::connect_with_defaults().map_err(docker_error("cannot connect to the Docker engine"))?;
        Ok(Self::negotiated(docker).await)
    }

    /// Connects to the engine at `host` (`unix:///var/run/docker.sock`,
    /// `tcp://127.0.0.1:2375`, …), as `DOCKER_HOST` would.
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
        Self { docker }
    }

    /// The bollard client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Makes sure the engine has `image`, pulling it as `policy` says; `progress` hears
    /// [`PullUpdate::Finished`] last, whether a pull was needed or not.
    pub async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: PullProgress<'_>,
    ) -> Result<(), EngineError> {
        let ensured = self.ensure_image_with(image, policy, &progress).await;
        progress.update(PullUpdate::Finished);
        ensured
    }

    async fn ensure_image_with(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: &PullProgress<'_>,
    ) -> Result<(), EngineError> {
        let present = match self.docker.inspect_image(image).await {
            Ok(_) => true,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => false,
            Err(e) => return Err(docker_error(format!("cannot inspect image {image}"))(e)),
        };
        match (policy, present) {
            (PullPolicy::Never, false) => Err(EngineError::ImageMissing(image.to_owned())),
            (PullPolicy::Never, true) | (PullPolicy::IfNotPresent, true) => Ok(()),
            (PullPolicy::Always, _) | (PullPolicy::IfNotPresent, false) => self.pull(image, progress).await,
        }
    }

    async fn pull(&self, image: &str, progress: &PullProgress<'_>) -> Result<(), EngineError> {
        progress.line(format!("pulling image {image}")).await;
        let options = CreateImageOptions { from_image: Some(image.to_owned()), ..Default::default() };
        let mut stream = self.docker.create_image(Some(options), None, None);
        // Only changes of a layer's status, not every progress tick.
        let mut last_status: HashMap<String, String> = HashMap::new();
        while let Some(item) = stream.next().await {
            let info =
                item.map_err(|e| EngineError::Pull { image: image.to_owned(), reason: error_text(&e) })?;
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(EngineError::Pull { image: image.to_owned(), reason: detail });
            }
            let Some(status) = info.status else { continue };
            let key = info.id.clone().unwrap_or_default();
            if last_status.get(&key) == Some(&status) {
                continue;
            }
            last_status.insert(key.clone(), status.clone());
            progress.update(PullUpdate::Tick);
            if status.starts_with("Downloading") || status.starts_with("Extracting") || status == "Waiting" {
                continue;
            }
            let line = if key.is_empty() { status } else { format!("{key}: {status}") };
            progress.line(line).await;
        }
        Ok(())
    }

    /// Creates and starts the container of a run: kept alive by a shell waiting on its
    /// open stdin (any image with `/bin/sh` works), with an init process, labelled, no
    /// privileges and no host mounts.
    pub async fn start_run_container(
        &self,
        image: &str,
        name: &str,
        workdir: &str,
        env: Vec<String>,
        labels: HashMap<String, String>,
        settings: &ContainerSettings,
    ) -> Result<RunContainer, EngineError> {
        let host_config = HostConfig {
            init: Some(true),
            network_mode: Some(settings.network.clone()),
            memory: settings.memory_bytes,
            nano_cpus: settings.cpus.map(|c| (c * 1e9) as i64),
            privileged: Some(false),
            ..Default::default()
        };
        let config = ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: Some(vec!["/bin/sh".to_owned()]),
            cmd: Some(Vec::new()),
            open_stdin: Some(true),
            stdin_once: Some(false),
            tty: Some(false),
            working_dir: Some(workdir.to_owned()),
            env: Some(env),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptions { name: Some(name.to_owned()), ..Default::default() };
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
        Ok(container)
    }

    /// Stops a container: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, container: &str, grace: Duration) {
        let options = StopContainerOptions { t: Some(grace.as_secs().max(1) as i32), signal: None };
        if let Err(error) = self.docker.stop_container(container, Some(options)).await {
            tracing::debug!(%error, container, "stopping the container failed");
        }
    }

    /// Removes a container whatever its state; a container already gone is fine.
    pub async fn remove(&self, container: &str) -> bool {
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.docker.remove_container(container, Some(options)).await {
            Ok(()) => true,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => true,
            Err(error) => {
                tracing::warn!(%error, container, "removing the container failed");
                false
            }
        }
    }

    /// The containers of driver `driver`: id and labels.
    pub async fn containers_of(
        &self,
        driver: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>, EngineError> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{}={driver}", labels::DRIVER)])]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(docker_error("cannot list containers"))?;
        Ok(list.into_iter().filter_map(|c| Some((c.id?, c.labels.unwrap_or_default()))).collect())
    }
}

pub use conveyor_sdk::error_text;

/// A container name derived from a resource name: `conveyor-<name>-<run>-<random>`,
/// with anything but `[a-zA-Z0-9_.-]` replaced and the name shortened.
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
    fn container_names_are_safe_for_docker() {
        let name = container_name("../etc/passwd; rm -rf /", "fbdf5edf-66d4");
        assert!(name.starts_with("conveyor-..-etc-passwd--rm--rf---fbdf5edf-"), "{name}");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
        assert!(container_name("", "x").starts_with("conveyor-run-x-"));
        assert!(container_name(&"a".repeat(500), "r").len() < 70);
        assert_ne!(container_name("same", "run"), container_name("same", "run"));
    }
}
