//! A run's container: labelled with whose it is, named after its resource and run,
//! hardened whatever its settings, limited by them, and started
//! ([`Engine::start_run_container`]). Its steps go through its own shell, see
//! [`crate::steps::session`].

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::CreateContainerOptions;

use crate::engine::error::EngineError;
use crate::engine::{docker_error, Engine};
use crate::settings::ContainerSettings;

/// Labels every run container carries.
///
/// ```
/// use simple_runner::pod::labels;
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
    /// [`crate::housekeeping::installation`]): a sweep looks only at containers with
    /// its own.
    pub const INSTALLATION: &str = "conveyor.installation";
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

impl Engine {
    /// Creates and starts the container of a run: kept alive by a shell waiting on its
    /// open stdin (any image with `/bin/sh` works) until the one client attached to it
    /// ([`Session`](crate::steps::session::Session)) goes: then the shell reads the end of its
    /// input and the container exits by itself. With an init process, labelled,
    /// never privileged, with `no-new-privileges`, a pids limit and no host mounts,
    /// and the network, limits, user and read-only root of `settings`. Its working
    /// directory is `workdir`, created when missing, or else the image's own. Labelled
    /// `labels`, and [`labels::INSTALLATION`] when `settings` name an installation. A
    /// container that does not start is removed.
    ///
    /// ```no_run
    /// use std::collections::HashMap;
    /// use simple_runner::pod::labels;
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
        self.start_pod_container(image, name, workdir, env, labels, settings, &Placement::default()).await
    }

    /// [`start_run_container`](Self::start_run_container), placed in a pod: in the
    /// network namespace `placement` says, with its workspace mounted.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start_pod_container(
        &self,
        image: &str,
        name: &str,
        workdir: Option<&str>,
        env: Vec<String>,
        labels: HashMap<String, String>,
        settings: &ContainerSettings,
        placement: &Placement,
    ) -> Result<RunContainer, EngineError> {
        let labels = with_installation(labels, settings);
        let host_config = host_config(settings, placement);
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
            .docker()
            .create_container(Some(options), config)
            .await
            .map_err(docker_error(format!("cannot create a container of image {image}")))?;
        let container = RunContainer { id: created.id, name: name.to_owned() };
        if let Err(error) = self.docker().start_container(&container.id, None).await {
            self.remove(&container.id).await;
            return Err(docker_error(format!("cannot start the container of image {image}"))(error));
        }
        self.metrics().container_started(starting.elapsed());
        Ok(container)
    }
}

/// Where a container of a pod goes: the network namespace it owns or joins, and the
/// workspace volume it mounts. The default is a run's own container: the network of
/// its settings, no workspace.
#[derive(Debug, Clone, Default)]
pub(crate) struct Placement {
    /// The container whose network namespace it joins; `None`: it has its own, of the
    /// settings' network.
    pub(crate) join: Option<String>,
    /// `NAME:ADDRESS` entries of its `/etc/hosts`; only the owner of a namespace has
    /// them, the containers joining it share its file.
    pub(crate) extra_hosts: Vec<String>,
    /// The workspace volume and where it is mounted.
    pub(crate) workspace: Option<(String, String)>,
    /// The owner's `/etc/hosts` on the engine's host, mounted read-only as this
    /// container's: Podman gives a container that joins another's namespace a hosts
    /// file of its own, without the owner's entries (Docker shares the owner's).
    pub(crate) hosts_file: Option<String>,
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
/// `no-new-privileges`, a pids limit, no host mounts (a pod's own workspace volume at
/// most), no swap beyond the memory limit, the limits and read-only root of
/// `settings`, and the network of `settings` unless it joins another container's.
fn host_config(settings: &ContainerSettings, placement: &Placement) -> HostConfig {
    let network = match &placement.join {
        Some(owner) => format!("container:{owner}"),
        None => settings.network.clone(),
    };
    let mounts = placement.workspace.as_ref().map(|(volume, path)| {
        vec![Mount {
            target: Some(path.clone()),
            source: Some(volume.clone()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }]
    });
    let binds = placement.hosts_file.as_ref().map(|hosts| vec![format!("{hosts}:/etc/hosts:ro")]);
    HostConfig {
        init: Some(true),
        network_mode: Some(network),
        binds,
        extra_hosts: (!placement.extra_hosts.is_empty()).then(|| placement.extra_hosts.clone()),
        mounts,
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
/// let name = simple_runner::pod::container_name("my pipeline", "fbdf5edf-66d4");
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
        let host = host_config(&settings, &Placement::default());
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.security_opt, Some(vec!["no-new-privileges".to_owned()]));
        assert_eq!((host.binds, host.mounts, host.volumes_from), (None, None, None), "no host mounts");
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!((host.memory, host.memory_swap), (Some(64 << 20), Some(64 << 20)));
        assert_eq!((host.nano_cpus, host.pids_limit), (Some(500_000_000), Some(100)));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert!(host.tmpfs.unwrap().contains_key("/tmp"));
        assert_eq!(host_config(&ContainerSettings::default(), &Placement::default()).pids_limit, Some(1024));
    }

    #[test]
    fn a_container_of_a_pod_joins_its_owner_and_mounts_only_the_workspace_volume() {
        let settings = ContainerSettings { network: "ci-net".into(), ..ContainerSettings::default() };
        let owner = Placement {
            extra_hosts: vec!["db:127.0.0.1".into()],
            workspace: Some(("conveyor-w".into(), "/workspace".into())),
            ..Placement::default()
        };
        let host = host_config(&settings, &owner);
        assert_eq!(host.network_mode.as_deref(), Some("ci-net"), "the owner has the operator's network");
        assert_eq!(host.extra_hosts, Some(vec!["db:127.0.0.1".to_owned()]));
        let mounts = host.mounts.unwrap_or_default();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].typ, Some(MountType::VOLUME), "never a host path");
        assert_eq!(
            (mounts[0].source.as_deref(), mounts[0].target.as_deref()),
            (Some("conveyor-w"), Some("/workspace"))
        );
        assert_eq!((host.binds, host.volumes_from), (None, None));

        let joining = Placement { join: Some("abc".into()), ..Placement::default() };
        let host = host_config(&settings, &joining);
        assert_eq!(host.network_mode.as_deref(), Some("container:abc"));
        assert_eq!((host.extra_hosts, host.mounts, host.binds), (None, None, None));
        let on_podman = Placement { hosts_file: Some("/run/owner/hosts".into()), ..joining };
        let binds = host_config(&settings, &on_podman).binds;
        assert_eq!(
            binds,
            Some(vec!["/run/owner/hosts:/etc/hosts:ro".to_owned()]),
            "the owner's hosts file, read-only"
        );
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_owned()]),
            "hardened as every container"
        );
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
