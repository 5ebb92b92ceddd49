//! Steps through the run container's own shell.
//!
//! The container's main process is `/bin/sh` reading its stdin. The runner attaches to
//! it once and, for each step, writes one line that starts the step as
//! `/bin/sh -c '<script>' </dev/null` (with the step's environment) and then prints an
//! end marker with the exit code on stdout and an end marker on stderr. Output before
//! a marker that does not end with a line break is the step's last, partial line. Starting a
//! process this way costs a fork, where a Docker exec costs tens of milliseconds.
//! The markers carry a random nonce per run, so no output can fake them.
//!
//! The shell traps SIGTERM, so that stopping a step (SIGTERM to every process of the
//! container, [`Engine::signal_processes`](crate::Engine::signal_processes)) ends the
//! step and not the shell: the step's exit is still reported.

use std::pin::Pin;

use bollard::container::LogOutput;
use bollard::query_parameters::AttachContainerOptions;
use bollard::Docker;
use conveyor_sdk::log::LineSplitter;
use conveyor_sdk::LogHandle;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::EngineError;
use crate::marker::MarkerScanner;

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// The exit of one step's command.
///
/// ```no_run
/// # async fn demo(session: &mut simple_runner::session::Session, log: &conveyor_sdk::LogHandle)
/// # -> Result<(), simple_runner::EngineError> {
/// let exit = session.run("make test", &[], log).await?;
/// if exit.code != 0 {
///     eprintln!("the tests failed with exit code {}", exit.code);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepExit {
    /// The exit code.
    pub code: i64,
}

/// An attached shell session in a run container.
///
/// ```no_run
/// use simple_runner::session::Session;
///
/// # async fn demo(engine: simple_runner::Engine, container: &str) -> Result<(), simple_runner::EngineError> {
/// let (log, lines) = conveyor_sdk::LogHandle::memory();
/// let mut session = Session::attach(engine.docker(), container).await?;
/// let exit = session.run("echo \"$GREETING\"", &[("GREETING".into(), "hello".into())], &log).await?;
/// assert_eq!((exit.code, lines.lines()), (0, vec!["hello".to_owned()]));
/// # Ok(())
/// # }
/// ```
pub struct Session {
    input: Pin<Box<dyn AsyncWrite + Send>>,
    output: Output,
    marker: String,
    stdout: Channel,
    stderr: Channel,
}

/// One output stream: its marker scanner and its line splitter.
struct Channel {
    scanner: MarkerScanner,
    lines: LineSplitter,
}

impl Channel {
    fn new(marker: &str) -> Self {
        Self { scanner: MarkerScanner::new(marker.to_owned()), lines: LineSplitter::new() }
    }

    /// Feeds a chunk; logs the lines it completes; returns the marker's trailer (the
    /// text after it on its line) once the marker has come.
    async fn feed(&mut self, chunk: &[u8], log: &LogHandle) -> Option<String> {
        let scan = self.scanner.push(chunk);
        for line in self.lines.push(&scan.output) {
            log.log(line).await;
        }
        if scan.trailer.is_some() {
            if let Some(last) = self.lines.finish() {
                log.log(last).await;
            }
        }
        scan.trailer
    }
}

impl Session {
    /// Attaches to the shell of `container`, a container started by
    /// [`Engine::start_run_container`](crate::docker::Engine::start_run_container).
    ///
    /// ```no_run
    /// # async fn demo(engine: simple_runner::Engine, container: &str) -> Result<(), simple_runner::EngineError> {
    /// let session = simple_runner::session::Session::attach(engine.docker(), container).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn attach(docker: &Docker, container: &str) -> Result<Self, EngineError> {
        let options = AttachContainerOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            stream: true,
            ..Default::default()
        };
        let attached = docker.attach_container(container, Some(options)).await.map_err(|source| {
            EngineError::Docker { action: "cannot attach to the run container".into(), source }
        })?;
        let marker = format!("__CONVEYOR_STEP_END_{}__", uuid::Uuid::new_v4().simple());
        let mut input = attached.input;
        // The shell outlives a SIGTERM meant for its step (a handler, not an ignored
        // signal: the step gets the default again), and reports the step's exit.
        let trap = async {
            input.write_all(b"trap : TERM\n").await?;
            input.flush().await
        };
        trap.await.map_err(|source| EngineError::ShellInput { source })?;
        Ok(Self {
            input,
            output: attached.output,
            stdout: Channel::new(&marker),
            stderr: Channel::new(&marker),
            marker,
        })
    }

    /// Runs `script` through `sh -c` with `env`, without stdin, logging its output line
    /// by line; returns when both output streams have ended the step.
    ///
    /// ```no_run
    /// # async fn demo(session: &mut simple_runner::session::Session) -> Result<(), simple_runner::EngineError> {
    /// let log = conveyor_sdk::LogHandle::stdout();
    /// let exit = session.run("set -e\nls -l", &[], &log).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run(
        &mut self,
        script: &str,
        env: &[(String, String)],
        log: &LogHandle,
    ) -> Result<StepExit, EngineError> {
        let mut line = String::new();
        for (key, value) in env {
            line.push_str(&format!("{key}={} ", quote(value)));
        }
        line.push_str(&format!(
            "/bin/sh -c {} </dev/null; __conveyor_status=$?; printf '%s %s\\n' {marker} \"$__conveyor_status\"; \
             printf '%s\\n' {marker} >&2\n",
            quote(script),
            marker = self.marker
        ));
        let written = async {
            self.input.write_all(line.as_bytes()).await?;
            self.input.flush().await
        };
        written.await.map_err(|source| EngineError::ShellInput { source })?;

        let (mut code, mut stderr_done) = (None::<String>, false);
        while code.is_none() || !stderr_done {
            let Some(chunk) = self.output.next().await else {
                return Err(EngineError::ContainerStopped);
            };
            let chunk = chunk.map_err(|source| EngineError::Docker {
                action: "the step's output stream broke".into(),
                source,
            })?;
            match chunk {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    if let Some(trailer) = self.stdout.feed(&message, log).await {
                        code = Some(trailer);
                    }
                }
                LogOutput::StdErr { message } => {
                    if self.stderr.feed(&message, log).await.is_some() {
                        stderr_done = true;
                    }
                }
                LogOutput::StdIn { .. } => {}
            }
        }
        code.and_then(|c| c.trim().parse().ok()).map(|code| StepExit { code }).ok_or(EngineError::NoExitCode)
    }
}

/// Quotes `text` for the shell: `'…'`, with `'` written as `'\''`.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
