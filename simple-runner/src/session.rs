//! Steps through the run container's own shell.
//!
//! The container's main process is `/bin/sh` reading its stdin. The runner attaches to
//! it once and, for each step, writes one line that starts the step as
//! `/bin/sh -c '<script>' </dev/null` (with the step's environment) and then prints an
//! end marker with the exit code on stdout and an end marker on stderr. Output before
//! a marker that does not end with a line break is the step's last, partial line. Starting a
//! process this way costs a fork, where a Docker exec costs tens of milliseconds.
//! The markers carry a random nonce per run, so no output can fake them. The stdout
//! marker also carries how many processes the kernel killed for memory during the
//! step, read from the container's cgroup (`memory.events` on cgroup v2,
//! `memory.oom_control` on v1) by the shell itself, before and after.
//!
//! A session may cap the output it logs ([`Session::limit_output`]): past the cap,
//! lines are dropped, with one line saying so, and the steps go on.
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
/// if exit.oom_killed {
///     eprintln!("a process of the tests was killed for memory");
/// } else if exit.code != 0 {
///     eprintln!("the tests failed with exit code {}", exit.code);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepExit {
    /// The exit code.
    pub code: i64,
    /// Whether the kernel killed a process of the container for memory during the
    /// step.
    pub oom_killed: bool,
}

/// How much output a session still logs.
struct Budget {
    /// Bytes left; `None`: no cap.
    left: Option<u64>,
    limit: u64,
    /// The line saying output is dropped has been logged.
    exhausted: bool,
}

impl Budget {
    /// Logs `line` if it fits, else the one line saying that output is dropped.
    async fn log(&mut self, line: String, log: &LogHandle) {
        let Some(left) = self.left.as_mut() else {
            return log.log(line).await;
        };
        let cost = line.len() as u64 + 1;
        if cost <= *left && !self.exhausted {
            *left -= cost;
            log.log(line).await;
        } else if !self.exhausted {
            self.exhausted = true;
            log.log(format!(
                "[output truncated: the run's output reached {} bytes, the runner's limit; further output is dropped]",
                self.limit
            ))
            .await;
        }
    }
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
    budget: Budget,
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
    async fn feed(&mut self, chunk: &[u8], log: &LogHandle, budget: &mut Budget) -> Option<String> {
        let scan = self.scanner.push(chunk);
        for line in self.lines.push(&scan.output) {
            budget.log(line, log).await;
        }
        if scan.trailer.is_some() {
            if let Some(last) = self.lines.finish() {
                budget.log(last, log).await;
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
            budget: Budget { left: None, limit: 0, exhausted: false },
        })
    }

    /// Caps the output this session logs, over all its steps, at `max_bytes` (each
    /// line counting its length and a line break); past it, further lines are
    /// dropped, with one line saying so. The steps are not stopped.
    ///
    /// ```no_run
    /// # async fn demo(engine: simple_runner::Engine, container: &str) -> Result<(), simple_runner::EngineError> {
    /// let session = simple_runner::session::Session::attach(engine.docker(), container)
    ///     .await?
    ///     .limit_output(16 << 20);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn limit_output(mut self, max_bytes: u64) -> Self {
        self.budget = Budget { left: Some(max_bytes), limit: max_bytes, exhausted: false };
        self
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
        let mut line = format!("{OOM_COUNT}; __conveyor_oom; __conveyor_before=$__conveyor_kills; {line}");
        line.push_str(&format!(
            "/bin/sh -c {} </dev/null; __conveyor_status=$?; __conveyor_oom; \
             printf '%s %s %s\\n' {marker} \"$__conveyor_status\" \"$((__conveyor_kills - __conveyor_before))\"; \
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
                    if let Some(trailer) = self.stdout.feed(&message, log, &mut self.budget).await {
                        code = Some(trailer);
                    }
                }
                LogOutput::StdErr { message } => {
                    if self.stderr.feed(&message, log, &mut self.budget).await.is_some() {
                        stderr_done = true;
                    }
                }
                LogOutput::StdIn { .. } => {}
            }
        }
        code.as_deref().and_then(parse_trailer).ok_or(EngineError::NoExitCode)
    }
}

/// A shell function that sets `__conveyor_kills` to the number of processes the
/// kernel has killed for memory in the container's cgroup (0 where it cannot tell),
/// with builtins only.
const OOM_COUNT: &str = "__conveyor_oom() { __conveyor_kills=0; \
    for __conveyor_f in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do \
    [ -r \"$__conveyor_f\" ] || continue; \
    while read -r __conveyor_k __conveyor_v; do [ \"$__conveyor_k\" = oom_kill ] && __conveyor_kills=$__conveyor_v; done < \"$__conveyor_f\"; \
    break; done; }";

/// The exit of a step from its marker's trailer: ` <exit code> <processes killed for memory>`.
fn parse_trailer(trailer: &str) -> Option<StepExit> {
    let mut fields = trailer.split_whitespace();
    let code = fields.next()?.parse().ok()?;
    let kills: i64 = fields.next().and_then(|k| k.parse().ok()).unwrap_or(0);
    Some(StepExit { code, oom_killed: kills > 0 })
}

/// Quotes `text` for the shell: `'…'`, with `'` written as `'\''`.
pub(crate) fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trailer_gives_the_exit_code_and_whether_memory_ran_out() {
        assert_eq!(parse_trailer(" 0 0"), Some(StepExit { code: 0, oom_killed: false }));
        assert_eq!(parse_trailer(" 137 1"), Some(StepExit { code: 137, oom_killed: true }));
        assert_eq!(parse_trailer(" 2"), Some(StepExit { code: 2, oom_killed: false }));
        assert_eq!(parse_trailer(" x 0"), None);
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
