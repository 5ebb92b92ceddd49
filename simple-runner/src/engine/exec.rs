//! Processes started in a running container through the engine's exec endpoint: a
//! probe whose output and exit the runner reads, or a long-lived process whose output
//! it follows (a service's).

use std::pin::Pin;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::{Stream, StreamExt};

use super::error::EngineError;
use super::{docker_error, Engine};

/// The most output of a probe the runner keeps; the rest is read and dropped.
const PROBE_OUTPUT_CAP: usize = 256 << 10;

/// The output of a process started with [`Engine::exec_attached`].
pub(crate) type ExecOutput = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// What a probe came to: its exit code and its output, stdout and stderr as they came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probed {
    /// The exit code; `None` when the engine gave none.
    pub(crate) code: Option<i64>,
    /// Its output, cut at [`PROBE_OUTPUT_CAP`].
    pub(crate) output: String,
}

impl Engine {
    /// Starts `cmd` in `container` with `env` (`NAME=value`, given to this process
    /// alone: the container's configuration never holds them), its output attached.
    /// Returns the exec's id, to ask for its exit code once the output ends, and the
    /// output.
    pub(crate) async fn exec_attached(
        &self,
        container: &str,
        cmd: Vec<String>,
        env: Vec<String>,
    ) -> Result<(String, ExecOutput), EngineError> {
        let options = CreateExecOptions {
            cmd: Some(cmd),
            env: Some(env),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = self
            .docker()
            .create_exec(container, options)
            .await
            .map_err(docker_error("cannot start a process in the container"))?;
        match self.docker().start_exec(&exec.id, None::<StartExecOptions>).await {
            Ok(StartExecResults::Attached { output, .. }) => Ok((exec.id, output)),
            Ok(StartExecResults::Detached) => Ok((exec.id, Box::pin(futures_util::stream::empty()))),
            Err(error) => Err(docker_error("cannot start a process in the container")(error)),
        }
    }

    /// The exit code of an exec whose output has ended, if the engine gives one.
    pub(crate) async fn exec_exit_code(&self, exec: &str) -> Option<i64> {
        match self.docker().inspect_exec(exec).await {
            Ok(inspected) => inspected.exit_code,
            Err(error) => {
                tracing::debug!(%error, exec, "inspecting an exec failed");
                None
            }
        }
    }

    /// Runs `cmd` in `container` with `env` to its end: its exit code and output.
    pub(crate) async fn probe(
        &self,
        container: &str,
        cmd: Vec<String>,
        env: Vec<String>,
    ) -> Result<Probed, EngineError> {
        let (exec, mut output) = self.exec_attached(container, cmd, env).await?;
        let mut text = Vec::new();
        while let Some(chunk) = output.next().await {
            let chunk = chunk.map_err(docker_error("the output of a process in the container broke off"))?;
            let bytes = chunk.into_bytes();
            let room = PROBE_OUTPUT_CAP.saturating_sub(text.len());
            text.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        let code = self.exec_exit_code(&exec).await;
        Ok(Probed { code, output: String::from_utf8_lossy(&text).into_owned() })
    }
}
