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
//!
//! A session watches its container through the engine's wait endpoint from the
//! moment it attaches. When the container stops or goes from outside while a step
//! runs (`docker rm -f`, `docker kill`, an engine that stops), the step ends at once
//! with [`EngineError::ContainerEnded`] saying how, after the output already on its
//! way has been logged, whether or not the attached stream ends by itself.

use std::pin::Pin;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::AttachContainerOptions;
use bollard::Docker;
use conveyor_sdk::log::LineSplitter;
use conveyor_sdk::LogHandle;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::cap::OutputCap;
use super::marker::MarkerScanner;
use crate::engine::error::EngineError;
use crate::engine::ContainerWatch;

/// How long, once the container has ended, the output already on its way may still
/// take to arrive.
const DRAIN: Duration = Duration::from_millis(500);

/// How long, once the attached stream has ended, the watch may take to say how the
/// container ended.
const END_KNOWN_WITHIN: Duration = Duration::from_secs(2);

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// The exit of one step's command.
///
/// ```no_run
/// # async fn demo(session: &mut simple_runner::steps::session::Session, log: &conveyor_sdk::LogHandle)
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

/// An attached shell session in a run container.
///
/// ```no_run
/// use simple_runner::steps::session::Session;
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
    budget: OutputCap,
    watch: ContainerWatch,
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

    /// Feeds a chunk; logs the lines it completes, all in one go; returns the marker's
    /// trailer (the text after it on its line) once the marker has come.
    async fn feed(&mut self, chunk: &[u8], log: &LogHandle, budget: &OutputCap) -> Option<String> {
        let scan = self.scanner.push(chunk);
        let mut lines = self.lines.push(&scan.output);
        if scan.trailer.is_some() {
            lines.extend(self.lines.finish());
        }
        budget.admit(&mut lines);
        if !lines.is_empty() {
            log.log_lines(&lines).await;
        }
        scan.trailer
    }

    /// Logs the last, partial line, if any: the stream has ended.
    async fn finish(&mut self, log: &LogHandle, budget: &OutputCap) {
        let mut last: Vec<String> = self.lines.finish().into_iter().collect();
        budget.admit(&mut last);
        if !last.is_empty() {
            log.log_lines(&last).await;
        }
    }
}

impl Session {
    /// Attaches to the shell of `container`, a container started by
    /// [`Engine::start_run_container`](crate::engine::Engine::start_run_container),
    /// and watches the container from now on until the session is dropped.
    ///
    /// ```no_run
    /// # async fn demo(engine: simple_runner::Engine, container: &str) -> Result<(), simple_runner::EngineError> {
    /// let session = simple_runner::steps::session::Session::attach(engine.docker(), container).await?;
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
        let mut input = attached.input;
        // The shell outlives a SIGTERM meant for its step (a handler, not an ignored
        // signal: the step gets the default again), and reports the step's exit.
        let trap = async {
            input.write_all(b"trap : TERM\n").await?;
            input.flush().await
        };
        trap.await.map_err(|source| EngineError::ShellInput { source })?;
        let watch = ContainerWatch::start(docker.clone(), container.to_owned());
        Ok(Self::of(input, attached.output, watch))
    }

    /// The session of a shell reached through `input` and `output`, its container
    /// watched by `watch`.
    fn of(input: Pin<Box<dyn AsyncWrite + Send>>, output: Output, watch: ContainerWatch) -> Self {
        let marker = format!("__CONVEYOR_STEP_END_{}__", uuid::Uuid::new_v4().simple());
        Self {
            input,
            output,
            stdout: Channel::new(&marker),
            stderr: Channel::new(&marker),
            marker,
            budget: OutputCap::default(),
            watch,
        }
    }

    /// Caps the output this session logs, over all its steps, at `max_bytes` (each
    /// line counting its length and a line break); past it, further lines are
    /// dropped, with one line saying so. The steps are not stopped.
    ///
    /// ```no_run
    /// # async fn demo(engine: simple_runner::Engine, container: &str) -> Result<(), simple_runner::EngineError> {
    /// let session = simple_runner::steps::session::Session::attach(engine.docker(), container)
    ///     .await?
    ///     .limit_output(16 << 20);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn limit_output(mut self, max_bytes: u64) -> Self {
        self.budget = OutputCap::new(max_bytes);
        self
    }

    /// Logs this session's output under `cap`, shared with the other containers of
    /// its pod.
    #[must_use]
    pub(crate) fn with_output_cap(mut self, cap: OutputCap) -> Self {
        self.budget = cap;
        self
    }

    /// Runs `script` through `sh -c` with `env`, without stdin, logging its output line
    /// by line; returns when both output streams have ended the step, or with
    /// [`EngineError::ContainerEnded`] as soon as the container has stopped or gone.
    ///
    /// ```no_run
    /// # async fn demo(session: &mut simple_runner::steps::session::Session) -> Result<(), simple_runner::EngineError> {
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
        if let Err(source) = written.await {
            return Err(match self.watch.ended_within(END_KNOWN_WITHIN).await {
                Some(end) => EngineError::ContainerEnded(end),
                None => EngineError::ShellInput { source },
            });
        }

        let (mut code, mut stderr_done) = (None::<String>, false);
        while code.is_none() || !stderr_done {
            let next = tokio::select! {
                // What has arrived is logged first.
                biased;
                next = self.output.next() => next,
                end = self.watch.ended() => {
                    self.drain(log).await;
                    return Err(EngineError::ContainerEnded(end));
                }
            };
            let Some(chunk) = next else {
                self.finish_lines(log).await;
                return Err(match self.watch.ended_within(END_KNOWN_WITHIN).await {
                    Some(end) => EngineError::ContainerEnded(end),
                    None => EngineError::ContainerStopped,
                });
            };
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(source) => {
                    self.finish_lines(log).await;
                    return Err(match self.watch.ended_within(END_KNOWN_WITHIN).await {
                        Some(end) => EngineError::ContainerEnded(end),
                        None => {
                            EngineError::Docker { action: "the step's output stream broke".into(), source }
                        }
                    });
                }
            };
            match chunk {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    if let Some(trailer) = self.stdout.feed(&message, log, &self.budget).await {
                        code = Some(trailer);
                    }
                }
                LogOutput::StdErr { message } => {
                    if self.stderr.feed(&message, log, &self.budget).await.is_some() {
                        stderr_done = true;
                    }
                }
                LogOutput::StdIn { .. } => {}
            }
        }
        code.as_deref().and_then(parse_trailer).ok_or(EngineError::NoExitCode)
    }

    /// Logs the output still on its way from a container that has ended, for at most
    /// [`DRAIN`], and the last partial lines.
    async fn drain(&mut self, log: &LogHandle) {
        let draining = async {
            while let Some(Ok(chunk)) = self.output.next().await {
                match chunk {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        self.stdout.feed(&message, log, &self.budget).await;
                    }
                    LogOutput::StdErr { message } => {
                        self.stderr.feed(&message, log, &self.budget).await;
                    }
                    LogOutput::StdIn { .. } => {}
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN, draining).await;
        self.finish_lines(log).await;
    }

    /// Logs the last partial line of each output stream: the streams have ended.
    async fn finish_lines(&mut self, log: &LogHandle) {
        self.stdout.finish(log, &self.budget).await;
        self.stderr.finish(log, &self.budget).await;
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
    use crate::engine::error::ContainerEnd;

    #[test]
    fn the_trailer_gives_the_exit_code_and_whether_memory_ran_out() {
        assert_eq!(parse_trailer(" 0 0"), Some(StepExit { code: 0, oom_killed: false }));
        assert_eq!(parse_trailer(" 137 1"), Some(StepExit { code: 137, oom_killed: true }));
        assert_eq!(parse_trailer(" 2"), Some(StepExit { code: 2, oom_killed: false }));
        assert_eq!(parse_trailer(" x 0"), None);
    }

    /// A session whose shell takes any input and answers with `output`, then nothing,
    /// its stream never ending; and the sender that tells how its container ended.
    fn session_with(output: Vec<LogOutput>) -> (Session, tokio::sync::watch::Sender<Option<ContainerEnd>>) {
        let output =
            futures_util::stream::iter(output.into_iter().map(Ok)).chain(futures_util::stream::pending());
        let (ended, watched) = tokio::sync::watch::channel(None);
        let session = Session::of(Box::pin(tokio::io::sink()), Box::pin(output), ContainerWatch::of(watched));
        (session, ended)
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_ends_when_its_container_ends_though_the_output_stream_stays_open() {
        let (mut session, ended) = session_with(vec![]);
        let (log, _) = LogHandle::memory();
        let step = session.run("sleep 600", &[], &log);
        tokio::pin!(step);
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), &mut step).await.is_err(),
            "the step runs on"
        );

        ended.send_replace(Some(ContainerEnd::Removed));
        let at = tokio::time::Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(1), step).await.expect("the step ends");
        assert!(matches!(outcome, Err(EngineError::ContainerEnded(ContainerEnd::Removed))), "{outcome:?}");
        assert!(at.elapsed() <= DRAIN, "ended after {:?}", at.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn the_output_that_came_before_the_container_ended_is_logged() {
        let message = |text: &str| bytes::Bytes::from(text.to_owned());
        let (mut session, ended) = session_with(vec![
            LogOutput::StdOut { message: message("started\nhalf a li") },
            LogOutput::StdErr { message: message("warning\n") },
        ]);
        let (log, lines) = LogHandle::memory();
        ended.send_replace(Some(ContainerEnd::Exited { exit_code: 137, oom_killed: false }));
        let outcome = session.run("echo started; sleep 600", &[], &log).await;
        let killed = ContainerEnd::Exited { exit_code: 137, oom_killed: false };
        assert!(
            matches!(outcome, Err(EngineError::ContainerEnded(ref end)) if *end == killed),
            "{outcome:?}"
        );
        assert_eq!(lines.lines(), ["started", "warning", "half a li"]);
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
