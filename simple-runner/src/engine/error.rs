//! What can go wrong between the runner and the Docker engine.

/// Errors of the Docker engine and of the shell session in a run container.
///
/// A cause is in [`source`](std::error::Error::source), not in the text;
/// [`conveyor_sdk::error_text`] writes the whole chain.
///
/// ```
/// use simple_runner::EngineError;
///
/// let error = EngineError::ImageMissing("alpine:3.20".into());
/// assert_eq!(
///     conveyor_sdk::error_text(&error),
///     "image alpine:3.20 is not present and the pull policy is `never`"
/// );
/// ```
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
    /// The engine's answer to a pull broke off.
    #[error("pulling image {image} failed")]
    Pull {
        /// The image.
        image: String,
        /// What broke.
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine reported that a pull failed, in words: the only form it gives.
    #[error("pulling image {image} failed: {message}")]
    PullRefused {
        /// The image.
        image: String,
        /// The engine's message.
        message: String,
    },
    /// A step ended without an exit code.
    #[error("the engine reported no exit code for the step")]
    NoExitCode,
    /// The step could not be written to the run container's shell.
    #[error("cannot send the step to the container's shell")]
    ShellInput {
        /// What the connection said.
        #[source]
        source: std::io::Error,
    },
    /// The run container's shell ended before the step did.
    #[error("the container stopped during the step")]
    ContainerStopped,
    /// A service names no command and its image has none to start.
    #[error("image {0} has no entrypoint or command to start; give the service a `command`")]
    NoCommand(String),
    /// The run's container stopped or went while a step ran, not by the runner's
    /// doing: how, as the engine tells it.
    #[error("the run's container {0}")]
    ContainerEnded(ContainerEnd),
}

/// How a run's container ended while the runner used it, as the engine tells it: the
/// runner keeps a watch on each container it uses (see
/// [`Session`](crate::steps::session::Session)), so a step whose container is removed or
/// killed from outside ends at once, saying so.
///
/// ```
/// use simple_runner::engine::error::ContainerEnd;
///
/// assert_eq!(ContainerEnd::Removed.to_string(), "was removed from outside");
/// let killed = ContainerEnd::Exited { exit_code: 137, oom_killed: false };
/// assert_eq!(killed.to_string(), "was killed (exit code 137)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContainerEnd {
    /// It was removed: `docker rm -f`, or another program.
    Removed,
    /// Its main process ended: killed (`docker kill`, `docker stop`, an engine that
    /// stopped) or, rarely, exited.
    Exited {
        /// The container's exit code: 128 + the signal when it was killed (137:
        /// SIGKILL).
        exit_code: i64,
        /// Whether the engine saw the kernel kill it for memory.
        oom_killed: bool,
    },
    /// The engine stopped answering about it: stopped or restarted, or the
    /// connection to it broke.
    EngineLost {
        /// What the connection said.
        reason: String,
    },
}

impl std::fmt::Display for ContainerEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContainerEnd::Removed => f.write_str("was removed from outside"),
            ContainerEnd::Exited { exit_code, oom_killed: true } => {
                write!(f, "was killed for memory (exit code {exit_code})")
            }
            ContainerEnd::Exited { exit_code, .. } if *exit_code > 128 => {
                write!(f, "was killed (exit code {exit_code})")
            }
            ContainerEnd::Exited { exit_code, .. } => write!(f, "stopped (exit code {exit_code})"),
            ContainerEnd::EngineLost { reason } => {
                write!(f, "was lost: the Docker engine stopped answering ({reason})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn how_a_container_ended_is_said_in_words() {
        let exited = |exit_code, oom_killed| ContainerEnd::Exited { exit_code, oom_killed };
        assert_eq!(exited(137, false).to_string(), "was killed (exit code 137)");
        assert_eq!(exited(143, false).to_string(), "was killed (exit code 143)");
        assert_eq!(exited(137, true).to_string(), "was killed for memory (exit code 137)");
        assert_eq!(exited(2, false).to_string(), "stopped (exit code 2)");
        let lost = ContainerEnd::EngineLost { reason: "connection refused".into() };
        assert_eq!(lost.to_string(), "was lost: the Docker engine stopped answering (connection refused)");
        let error = EngineError::ContainerEnded(ContainerEnd::Removed);
        assert_eq!(conveyor_sdk::error_text(&error), "the run's container was removed from outside");
    }
}
