//! What the operator decides for every run, where a resource has no say.

use std::time::Duration;

/// The driver's default name: its consumer, its subjects, the `driver` of its logs and
/// results.
pub const DRIVER_NAME: &str = "command-runner";

/// What the operator decides for every run.
///
/// ```
/// use std::time::Duration;
/// use simple_runner::{ContainerSettings, Settings};
///
/// let settings = Settings {
///     container: ContainerSettings { network: "none".into(), ..ContainerSettings::default() },
///     default_timeout: Some(Duration::from_secs(30 * 60)),
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
    /// The timeout of a run whose spec sets none.
    pub default_timeout: Option<Duration>,
    /// The image of a run whose spec names none.
    pub default_image: Option<String>,
    /// How this process owns its containers, and so whether other runners may ever
    /// remove them (default [`Mode::Run`]: never).
    pub mode: Mode,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            name: DRIVER_NAME.into(),
            instance: uuid::Uuid::new_v4().to_string(),
            container: ContainerSettings::default(),
            default_timeout: None,
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
