//! A run's steps, one after the other, each within its timeout, into its report.
//!
//! Running them is this file's job; the run's own timeout is its deadline: the runtime
//! (or, for a local run, `simple-runner run`) cancels the run when it passes. Each step
//! goes through the container's own shell ([`session`]), whose end markers are found in
//! its output by `marker.rs`.

pub(crate) mod cap;
mod marker;
pub mod session;

use std::future::Future;
use std::time::Duration;

use conveyor_sdk::driver::CancelReason;
use conveyor_sdk::Run;
use tokio::time::Instant;

use crate::engine::error::{ContainerEnd, EngineError};
use crate::engine::Engine;
use crate::pod::{Member, RunningService};
use crate::report::{human, RunReport, StepRecord, StepsEnd};
use crate::settings::Settings;
use crate::spec::PipelineSpec;
use session::{quote, StepExit};

/// A run's pod as its steps need it.
pub(crate) struct Shell {
    /// The run's image: the spec's, else the runner's default, else the first step's.
    pub(crate) image: String,
    /// The containers steps run in, one per image, each with its shell.
    pub(crate) members: Vec<Member>,
    /// The services, quieted once the last step has ended.
    pub(crate) services: Vec<RunningService>,
    /// The run's memory limit, in bytes.
    pub(crate) memory_bytes: Option<i64>,
    /// The environment of every step: the run's identity, then the spec's.
    pub(crate) env: Vec<(String, String)>,
}

impl Shell {
    /// Which member `step` runs in: the one of its image, else the run's.
    fn member_of(&self, step: &crate::spec::Step) -> usize {
        let image = step.image.as_deref().unwrap_or(&self.image);
        self.members.iter().position(|m| m.image == image).unwrap_or(0)
    }
}

/// Runs the steps of `run`, each through the shell of its image's container;
/// logs each step's start and end. After the first failure, only the steps that run
/// `always` or `on_failure` run; the report names that first failure. A step over its
/// timeout is stopped (SIGTERM, SIGKILL after the stop grace); a run cancelled by its
/// deadline or on request has its step stopped the same way and ends; a run cancelled
/// by a shutdown ends at once with [`RunReport::Cancelled`].
pub(crate) async fn run_steps(
    run: &Run<PipelineSpec>,
    shell: &mut Shell,
    engine: &Engine,
    settings: &Settings,
) -> RunReport {
    let report = steps_through(run, shell, engine, settings).await;
    // After the last step, even `always` ones: their output is no longer the run's.
    for service in &mut shell.services {
        service.quiet().await;
    }
    report
}

async fn steps_through(
    run: &Run<PipelineSpec>,
    shell: &mut Shell,
    engine: &Engine,
    settings: &Settings,
) -> RunReport {
    let (image, memory_bytes) = (shell.image.clone(), shell.memory_bytes);
    let spec = run.spec();
    let log = run.log();
    let grace = settings.container.stop_grace;
    let total = spec.steps.len();
    let mut records: Vec<StepRecord> = Vec::with_capacity(total);
    let mut end = StepsEnd::Completed;
    for (index, step) in spec.steps.iter().enumerate() {
        let number = index + 1;
        let failed = !matches!(end, StepsEnd::Completed);
        if !step.when.runs(failed) {
            let why = if failed { "a step before it failed" } else { "no step before it failed" };
            log.log(format!("--- step {number}/{total} {} skipped: {why}", step.name)).await;
            continue;
        }
        log.log(format!("==> step {number}/{total} {}: {}", step.name, step.command)).await;
        let started = Instant::now();
        let script = script(&step.command, step.workdir.as_deref());
        let env = step_env(&shell.env, run, step, settings);
        let member_index = shell.member_of(step);
        let member = &mut shell.members[member_index];
        let container = member.container_id.clone();
        let container = container.as_str();
        let exec = member.session.run(&script, &env, log);
        tokio::pin!(exec);
        let limit = step.timeout.map(|t| t.as_duration());
        let interrupted = tokio::select! {
            biased;
            _ = run.cancelled() => match run.cancel_reason() {
                Some(CancelReason::Deadline(after)) => Err(Interruption::RunTimeout(after)),
                Some(CancelReason::Shutdown) | None => {
                    log.log(format!("<== step {number}/{total} {} cancelled: the runner is shutting down", step.name)).await;
                    return RunReport::Cancelled;
                }
                Some(_) => Err(Interruption::Cancelled),
            },
            outcome = within(limit, &mut exec) => match outcome {
                Ok(outcome) => Ok(outcome),
                Err(after) => Err(Interruption::StepTimeout(after)),
            },
        };
        let outcome = match interrupted {
            Ok(outcome) => outcome,
            Err(why) => {
                log.log(format!(
                    "<== step {number}/{total} {}: {}; stopping it (SIGTERM, SIGKILL after {})",
                    step.name,
                    why.text(),
                    human(grace)
                ))
                .await;
                let exit = stop_step(engine, container, grace, &mut exec).await;
                let exit_code = exit.map(|e| e.code);
                records.push(StepRecord { name: step.name.clone(), exit_code, duration: started.elapsed() });
                let stopped = why.end(step.name.clone());
                if let Some(text) = stopped.failure() {
                    let code = exit_code.map(|c| format!(" (exit code {c})")).unwrap_or_default();
                    log.log(format!("<== step {number}/{total} {}: {text}{code}", step.name)).await;
                }
                if !failed {
                    end = stopped;
                }
                // A step stopped for its own timeout leaves the shell: the steps that
                // run after a failure still run. A killed shell or a run that is over
                // ends here.
                if why.ends_the_run() || exit.is_none() {
                    break;
                }
                continue;
            }
        };
        let duration = started.elapsed();
        let exit_code = outcome.as_ref().ok().map(|exit| exit.code);
        records.push(StepRecord { name: step.name.clone(), exit_code, duration });
        match outcome {
            Ok(exit) => {
                log.log(format!(
                    "<== step {number}/{total} {} exited with code {} after {:.2}s",
                    step.name,
                    exit.code,
                    duration.as_secs_f64()
                ))
                .await;
                if exit.oom_killed {
                    log.log(format!("step {} had a process killed for memory", step.name)).await;
                }
                if exit.code != 0 {
                    if !step.continue_on_error {
                        if !failed {
                            let (name, exit_code) = (step.name.clone(), exit.code);
                            end = match exit.oom_killed {
                                true => {
                                    StepsEnd::KilledForMemory { step: name, exit_code, limit: memory_bytes }
                                }
                                false => StepsEnd::Failed { step: name, exit_code },
                            };
                        }
                        continue;
                    }
                    log.log(format!("step {} may fail: going on", step.name)).await;
                }
            }
            Err(error) => {
                let name = step.name.clone();
                let stopped = match error {
                    // The kernel killed the container's own shell for memory.
                    EngineError::ContainerEnded(ContainerEnd::Exited { oom_killed: true, .. }) => {
                        StepsEnd::KilledForMemory { step: name, exit_code: 137, limit: memory_bytes }
                    }
                    EngineError::ContainerStopped if engine.oom_killed(container).await => {
                        StepsEnd::KilledForMemory { step: name, exit_code: 137, limit: memory_bytes }
                    }
                    // Removed or killed from outside, or its engine went.
                    EngineError::ContainerEnded(how) => StepsEnd::ContainerLost { step: name, end: how },
                    error => StepsEnd::Broken { step: name, error },
                };
                if let Some(text) = stopped.failure() {
                    log.log(text).await;
                }
                if !failed {
                    end = stopped;
                }
                // The shell is gone or unusable: no step can run after it.
                break;
            }
        }
    }
    RunReport::Ran { image, steps: records, end, outputs: Default::default() }
}

/// What stopped a step before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interruption {
    /// Its own timeout.
    StepTimeout(Duration),
    /// The run's deadline, the run's timeout.
    RunTimeout(Duration),
    /// A cancel request.
    Cancelled,
}

impl Interruption {
    fn text(self) -> String {
        match self {
            Interruption::StepTimeout(after) => format!("the step's timeout of {} is over", human(after)),
            Interruption::RunTimeout(after) => format!("the run's timeout of {} is over", human(after)),
            Interruption::Cancelled => "the run was cancelled".into(),
        }
    }

    /// Whether the run is over: its deadline passed or it was cancelled.
    fn ends_the_run(self) -> bool {
        matches!(self, Interruption::RunTimeout(_) | Interruption::Cancelled)
    }

    /// How the steps end when this happens during `step`.
    fn end(self, step: String) -> StepsEnd {
        match self {
            Interruption::StepTimeout(after) => StepsEnd::StepTimedOut { step, after },
            Interruption::RunTimeout(after) => StepsEnd::RunTimedOut { step, after },
            Interruption::Cancelled => StepsEnd::Cancelled { step },
        }
    }
}

/// Stops the step that `exec` is running: SIGTERM to it and what it started, then, if
/// it has not ended within `grace`, SIGKILL. Its exit, when it reported one.
async fn stop_step<F>(
    engine: &Engine,
    container: &str,
    grace: Duration,
    exec: &mut std::pin::Pin<&mut F>,
) -> Option<StepExit>
where
    F: Future<Output = Result<StepExit, EngineError>>,
{
    engine.signal_processes(container, "TERM").await;
    match tokio::time::timeout(grace, exec.as_mut()).await {
        Ok(Ok(exit)) => Some(exit),
        Ok(Err(_)) => None,
        Err(_) => {
            engine.signal_processes(container, "KILL").await;
            engine.stop(container, Duration::ZERO).await;
            None
        }
    }
}

/// The script of a step: in its `workdir` (created when missing) if it has one, stop
/// at the first failing command, and let a pipeline fail when any part fails where
/// the shell knows `pipefail`.
fn script(command: &str, workdir: Option<&str>) -> String {
    let cd = match workdir {
        Some(dir) => {
            let dir = quote(dir);
            format!("cd -- {dir} 2>/dev/null || {{ mkdir -p -- {dir} && cd -- {dir}; }} || exit 1\n")
        }
        None => String::new(),
    };
    format!("{cd}set -e\n(set -o pipefail) 2>/dev/null && set -o pipefail\n{command}")
}

/// The environment of a step, given to it alone (never to its container, which may
/// have been made before its run): the run's, its own `env`, then the values of the
/// run's and its own secrets (checked to exist while the run was prepared); a later
/// value of a name wins.
fn step_env(
    run_env: &[(String, String)],
    run: &Run<PipelineSpec>,
    step: &crate::spec::Step,
    settings: &Settings,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = run_env.to_vec();
    env.extend(step.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    for name in run.spec().secrets.iter().chain(&step.secrets) {
        if let Some(value) = settings.secrets.get(name) {
            env.push((name.clone(), value.to_owned()));
        }
    }
    env
}

/// `work`'s output, or the limit it reached first.
async fn within<F: Future>(limit: Option<Duration>, work: F) -> Result<F::Output, Duration> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, work).await.map_err(|_| limit),
        None => Ok(work.await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_stops_at_the_first_failure() {
        let s = script("false\necho after", None);
        assert!(s.starts_with("set -e\n"));
        assert!(s.ends_with("false\necho after"));
        let s = script("pwd", Some("it's/here"));
        assert!(s.starts_with(r"cd -- 'it'\''s/here' 2>/dev/null || { mkdir -p -- 'it'\''s/here' &&"), "{s}");
    }

    #[test]
    fn an_interruption_names_whose_timeout_it_was_or_the_cancel() {
        let secs = Duration::from_secs;
        let step = Interruption::StepTimeout(secs(1)).end("sleepy".into());
        assert_eq!(step.failure().as_deref(), Some("step sleepy timed out after 1s"));
        let run = Interruption::RunTimeout(secs(2)).end("slow".into());
        assert_eq!(run.failure().as_deref(), Some("timed out after 2s during step slow"));
        let cancelled = Interruption::Cancelled.end("long".into());
        assert_eq!(cancelled.failure().as_deref(), Some("cancelled during step long"));
    }
}
