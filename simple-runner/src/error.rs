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
}
