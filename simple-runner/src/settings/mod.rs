//! What the operator decides for every run, where a resource has no say.
//!
//! The settings (this file), the limits a run's spec may ask for within their maxima
//! (`limits.rs`), the secrets a resource may name ([`secrets`]), the registry
//! credentials of pulls ([`registry`]) and the files a run moves ([`files`]: source
//! credentials, cache and artifact limits).

pub mod files;
mod limits;
pub mod registry;
pub mod secrets;

use std::time::Duration;

use registry::RegistryAuth;
use secrets::Secrets;

/// The driver's default name: its consumer, its subjects, the `driver` of its logs and
/// results.
pub const DRIVER_NAME: &str = "command-runner";

/// The default of [`Settings::run_timeout`]: 1 hour.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// How long a serving runner's liveness record lasts without being written again,
/// unless the runtime's config says otherwise: 30 s.
pub const DEFAULT_LIVENESS_TTL: Duration = Duration::from_secs(30);

/// What the operator decides for every run.
///
/// ```
/// use std::time::Duration;
/// use simple_runner::{ContainerSettings, Settings};
///
/// let settings = Settings {
///     container: ContainerSettings { network: "none".into(), ..ContainerSettings::default() },
///     run_timeout: Duration::from_secs(30 * 60),
///     ..Settings::default()
/// };
/// assert_eq!(settings.name, "command-runner");
/// ```
#[derive(Debug, Clone)]
pub struct Settings {
    /// The driver's name (default `command-runner`).
    pub name: String,
    /// This process's identity, on the containers it owns (default: a new UUID).
    pub instance: String,
    /// How containers are made.
    pub container: ContainerSettings,
    /// The timeout of a run whose spec sets none, and the most a spec may set: image
    /// pull, container start and steps (default 1 hour). When it passes, the step is
    /// stopped and the run fails saying it timed out.
    pub run_timeout: Duration,
    /// The image of a run whose spec names none.
    pub default_image: Option<String>,
    /// The values of the secrets a resource may name (default: none).
    pub secrets: Secrets,
    /// The most bytes of step output one run logs (default [`DEFAULT_MAX_LOG_BYTES`]);
    /// past it further output is dropped, with one line saying so.
    pub max_log_bytes: u64,
    /// Registry credentials for pulls (default: none, anonymous pulls).
    pub registry_auth: RegistryAuth,
    /// How this process owns its containers, and so whether other runners may ever
    /// remove them (default [`Mode::Run`]: never).
    pub mode: Mode,
    /// The warm containers kept ready for the images run recently (default: none).
    /// Only a [`Mode::Serve`] runner keeps them: its containers are reaped when it
    /// dies, a local run's are not.
    pub warm: WarmSettings,
    /// The files a run moves: its source's credentials, its caches' and artifacts'
    /// limits.
    pub files: files::FileSettings,
}

impl Settings {
    /// How long a run of `spec` may take: its `timeout`, at most
    /// [`run_timeout`](Self::run_timeout); that when it sets none.
    ///
    /// ```
    /// use std::time::Duration;
    /// use simple_runner::{PipelineSpec, Settings};
    ///
    /// let settings = Settings { run_timeout: Duration::from_secs(600), ..Settings::default() };
    /// let spec = |timeout: &str| -> PipelineSpec {
    ///     serde_json::from_value(serde_json::json!({"timeout": timeout, "steps": []})).unwrap()
    /// };
    /// assert_eq!(settings.run_timeout_for(&spec("90s")), Duration::from_secs(90));
    /// assert_eq!(settings.run_timeout_for(&spec("2h")), Duration::from_secs(600), "capped");
    /// ```
    pub fn run_timeout_for(&self, spec: &crate::spec::PipelineSpec) -> Duration {
        spec.timeout.map(|t| t.as_duration().min(self.run_timeout)).unwrap_or(self.run_timeout)
    }
}

/// The default of [`Settings::max_log_bytes`]: 16 MiB.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 16 << 20;

/// The default of [`ContainerSettings::pids_limit`].
pub const DEFAULT_PIDS_LIMIT: i64 = 1024;

impl Default for Settings {
    fn default() -> Self {
        Self {
            name: DRIVER_NAME.into(),
            instance: uuid::Uuid::new_v4().to_string(),
            container: ContainerSettings::default(),
            run_timeout: DEFAULT_RUN_TIMEOUT,
            default_image: None,
            secrets: Secrets::default(),
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            registry_auth: RegistryAuth::default(),
            mode: Mode::Run,
            warm: WarmSettings::default(),
            files: files::FileSettings::default(),
        }
    }
}

/// The default of [`WarmSettings::max_images`].
pub const DEFAULT_WARM_IMAGES: usize = 4;

/// The default of [`WarmSettings::idle`]: 10 minutes.
pub const DEFAULT_WARM_IDLE: Duration = Duration::from_secs(10 * 60);

/// How many started, never used containers a serving runner keeps ready, so that a
/// run of an image it ran recently starts without waiting for a container to start.
///
/// Containers are kept per image and container settings (the run's limits, user,
/// platform, network and working directory): a run takes one only when all of these
/// match, and only if the image's tag still names the image the container was made
/// of. Every run still gets a container no run has used; after its run it is removed,
/// whatever the outcome, and a new one is started in the background to take its place.
///
/// ```
/// use std::time::Duration;
/// use simple_runner::{Mode, Settings, WarmSettings};
///
/// let settings = Settings {
///     mode: Mode::Serve,
///     warm: WarmSettings { per_image: 2, ..WarmSettings::default() },
///     ..Settings::default()
/// };
/// assert_eq!(settings.warm.max_images, 4);
/// assert_eq!(settings.warm.idle, Duration::from_secs(600));
/// assert_eq!(WarmSettings::default().per_image, 0, "off unless asked for");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmSettings {
    /// Ready containers per image and settings (default 0: none; `simple-runner
    /// serve` keeps 1, see its `--warm`).
    pub per_image: usize,
    /// The most images (with their settings) kept warm at once; past it, the least
    /// recently run one's containers are removed (default [`DEFAULT_WARM_IMAGES`]).
    pub max_images: usize,
    /// An image (with its settings) not run for this long has its containers removed
    /// (default [`DEFAULT_WARM_IDLE`]).
    pub idle: Duration,
}

impl Default for WarmSettings {
    fn default() -> Self {
        Self { per_image: 0, max_images: DEFAULT_WARM_IMAGES, idle: DEFAULT_WARM_IDLE }
    }
}

/// How a runner process owns its containers, on their `conveyor.mode` label.
///
/// Only the containers of a [`Serve`](Mode::Serve) runner are ever removed by another
/// runner's sweep, only by a runner of the same installation (the containers'
/// [`ContainerSettings::installation`]), and only once that runner's liveness record is
/// gone (see [`crate::housekeeping::liveness`] and [`crate::housekeeping::cleanup`]).
///
/// ```
/// use simple_runner::{Mode, Settings};
///
/// let serving = Settings { mode: Mode::Serve, ..Settings::default() };
/// assert_eq!(serving.mode.label(), "serve");
/// assert_eq!(Settings::default().mode, Mode::Run);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// A serving runner that keeps a liveness record while it lives: its containers
    /// are reaped by the other replicas of its installation once the record has
    /// expired.
    Serve,
    /// Anything else (a local `simple-runner run`, a program of its own): its
    /// containers are never removed by a sweep.
    #[default]
    Run,
}

impl Mode {
    /// The value of the `conveyor.mode` label.
    ///
    /// ```
    /// assert_eq!(simple_runner::Mode::Run.label(), "run");
    /// ```
    pub fn label(self) -> &'static str {
        match self {
            Mode::Serve => "serve",
            Mode::Run => "run",
        }
    }
}

/// How run containers are made. Every container has `no-new-privileges`, is never
/// privileged and has no host mounts, whatever these say.
///
/// The limits here are the operator's: `memory_bytes`, `cpus` and `pids_limit` are
/// those of a run whose spec sets none, the `max_` fields cap what a spec asks for
/// (see [`ContainerSettings::for_run`]).
///
/// ```
/// use std::time::Duration;
/// use simple_runner::ContainerSettings;
///
/// let limited = ContainerSettings {
///     memory_bytes: Some(512 << 20),
///     cpus: Some(1.5),
///     max_memory_bytes: Some(2 << 30),
///     ..ContainerSettings::default()
/// };
/// assert_eq!(limited.network, "none");
/// assert_eq!(limited.pids_limit, 1024);
/// assert_eq!(limited.stop_grace, Duration::from_secs(2));
/// ```
#[derive(Debug, Clone)]
pub struct ContainerSettings {
    /// The network of run containers (`none`, `bridge`, or a network's name; default
    /// `none`: no network unless the operator allows one).
    pub network: String,
    /// The memory limit in bytes of a run that sets none (default: none).
    pub memory_bytes: Option<i64>,
    /// The CPU limit, in CPUs, of a run that sets none (default: none).
    pub cpus: Option<f64>,
    /// The process limit of a run that sets none (default [`DEFAULT_PIDS_LIMIT`]).
    pub pids_limit: i64,
    /// The most memory a spec may ask for, in bytes (default: no maximum).
    pub max_memory_bytes: Option<i64>,
    /// The most CPUs a spec may ask for (default: no maximum).
    pub max_cpus: Option<f64>,
    /// The most processes a spec may ask for (default: no maximum).
    pub max_pids: Option<i64>,
    /// The user steps run as, `uid[:gid]` or a name of the image (default: the
    /// image's).
    pub user: Option<String>,
    /// Whether the container's root filesystem is read-only; `/tmp` is then a tmpfs
    /// (default `false`).
    pub read_only: bool,
    /// The platform of the container's image, e.g. `linux/arm64` (default: the
    /// engine's); set from a run's spec.
    pub platform: Option<String>,
    /// How long a stopped container has between SIGTERM and SIGKILL (default 2 s).
    pub stop_grace: Duration,
    /// The identity of the installation the containers belong to, on their
    /// `conveyor.installation` label: only the sweeps of that installation's runners
    /// ever remove them (default: none, and no sweep removes them).
    /// [`CommandRunner::serve`](crate::CommandRunner::serve) sets it to the identity kept
    /// in its NATS (see [`crate::housekeeping::installation`]) when it is none.
    pub installation: Option<String>,
}

impl Default for ContainerSettings {
    fn default() -> Self {
        Self {
            network: "none".into(),
            memory_bytes: None,
            cpus: None,
            pids_limit: DEFAULT_PIDS_LIMIT,
            max_memory_bytes: None,
            max_cpus: None,
            max_pids: None,
            user: None,
            read_only: false,
            platform: None,
            stop_grace: Duration::from_secs(2),
            installation: None,
        }
    }
}
