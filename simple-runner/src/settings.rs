//! What the operator decides for every run, where a resource has no say.

use std::time::Duration;

/// The driver's default name: its consumer, its subjects, the `driver` of its logs and
/// results.
pub const DRIVER_NAME: &str = "command-runner";

/// The default of [`Settings::run_timeout`]: 1 hour.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(60 * 60);

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
    /// How this process owns its containers, and so whether other runners may ever
    /// remove them (default [`Mode::Run`]: never).
    pub mode: Mode,
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

impl Default for Settings {
    fn default() -> Self {
        Self {
            name: DRIVER_NAME.into(),
            instance: uuid::Uuid::new_v4().to_string(),
            container: ContainerSettings::default(),
            run_timeout: DEFAULT_RUN_TIMEOUT,
            default_image: None,
            mode: Mode::Run,
        }
    }
}

/// How a runner process owns its containers, on their `conveyor.mode` label.
///
/// Only the containers of a [`Serve`](Mode::Serve) runner are ever removed by another
/// runner's sweep, and only once that runner's liveness record is gone (see
/// [`crate::liveness`] and [`crate::cleanup`]).
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
    /// are reaped by the other replicas once the record has expired.
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

/// How run containers are made.
///
/// ```
/// use std::time::Duration;
/// use simple_runner::ContainerSettings;
///
/// let limited = ContainerSettings {
///     memory_bytes: Some(512 << 20),
///     cpus: Some(1.5),
///     ..ContainerSettings::default()
/// };
/// assert_eq!(limited.network, "bridge");
/// assert_eq!(limited.stop_grace, Duration::from_secs(2));
/// ```
#[derive(Debug, Clone)]
pub struct ContainerSettings {
    /// The network of run containers (`bridge`, `none`, …; default `bridge`).
    pub network: String,
    /// A memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// A CPU limit, in CPUs.
    pub cpus: Option<f64>,
    /// How long a stopped container has between SIGTERM and SIGKILL (default 2 s).
    pub stop_grace: Duration,
}

impl Default for ContainerSettings {
    fn default() -> Self {
        Self { network: "bridge".into(), memory_bytes: None, cpus: None, stop_grace: Duration::from_secs(2) }
    }
}
