//! A service: a container started beside the steps, in the run's network namespace.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::image::IMAGE_REFERENCE;
use super::Timeout;

/// How long a service has to become ready when its spec says nothing
/// ([`Service::ready_timeout`]).
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A service the steps talk to, such as a database or a web server: started before
/// the first step, ready before it begins, stopped after the last.
///
/// It shares the run's network namespace, as the containers of a Kubernetes pod do:
/// the steps reach it at `localhost:PORT` and at `NAME:PORT`, and it has no network
/// beyond the run's unless the runner's operator gives one.
///
/// ```
/// let service: simple_runner::spec::Service = serde_json::from_value(serde_json::json!({
///     "name": "db",
///     "image": "postgres:16",
///     "env": {"POSTGRES_PASSWORD": "test"},
///     "ready": {"tcp": 5432},
///     "ready_timeout": "2m"
/// }))?;
/// assert_eq!(service.ready, Some(simple_runner::spec::Ready::Tcp(5432)));
/// assert_eq!(service.ready_timeout().as_secs(), 120);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    description = "A container started beside the steps in the run's network namespace, ready before \
                          the first step begins, stopped after the last: reachable at localhost:PORT and NAME:PORT."
)]
pub struct Service {
    /// Its name: the host name the steps reach it at, and the prefix of its lines in
    /// the run's log. Lower-case letters, digits and `-`, as a host name.
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// Its image, pulled as the run's are (pull policy, platform, credentials). It
    /// needs `/bin/sh`.
    #[schemars(regex(pattern = IMAGE_REFERENCE))]
    pub image: String,
    /// The shell command (`sh -c`) that runs it (default: the image's own entrypoint
    /// and command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub command: Option<String>,
    /// Its environment variables, over the run's identity (`CI`, `CONVEYOR_RUN_ID`…);
    /// the run's `env` is the steps', not the services'.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The names of the secrets it gets as environment variables, from the runner's
    /// operator, as a step's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")))]
    pub secrets: Vec<String>,
    /// When it is ready (default: when the image's own `HEALTHCHECK` says healthy, if
    /// it has one, else as soon as it has started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Ready>,
    /// How long it has to become ready: seconds, or a duration like `"2m"` (default
    /// 60 s). A service not ready in time fails the run before its first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_timeout: Option<Timeout>,
}

impl Service {
    /// How long it has to become ready: its `ready_timeout`, else
    /// [`DEFAULT_READY_TIMEOUT`].
    ///
    /// ```
    /// let service: simple_runner::spec::Service =
    ///     serde_json::from_value(serde_json::json!({"name": "web", "image": "nginx"}))?;
    /// assert_eq!(service.ready_timeout(), simple_runner::spec::DEFAULT_READY_TIMEOUT);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn ready_timeout(&self) -> Duration {
        self.ready_timeout.map_or(DEFAULT_READY_TIMEOUT, |t| t.as_duration())
    }
}

/// When a service is ready: exactly one of `{"tcp": PORT}` and `{"command": "…"}`.
///
/// ```
/// use simple_runner::spec::Ready;
///
/// let tcp: Ready = serde_json::from_value(serde_json::json!({"tcp": 8080}))?;
/// assert_eq!(tcp, Ready::Tcp(8080));
/// let command: Ready = serde_json::from_value(serde_json::json!({"command": "pg_isready"}))?;
/// assert_eq!(command, Ready::Command("pg_isready".into()));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(
    description = "When the service is ready: exactly one of {\"tcp\": PORT} (something listens on the \
                          port) and {\"command\": \"...\"} (the command exits 0 inside the service)."
)]
pub enum Ready {
    /// A TCP connection to this port succeeds from inside the run's network
    /// namespace: something listens on it.
    Tcp(#[schemars(range(min = 1, max = 65535))] u16),
    /// This shell command exits 0 inside the service's container.
    Command(#[schemars(length(min = 1))] String),
}
