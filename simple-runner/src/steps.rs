//! Running a prepared run's steps one after the other, each within its limit, into the
//! run's report.

use std::time::Duration;

use conveyor_sdk::Run;
use tokio::time::Instant;

use crate::docker::Engine;
use crate::error::EngineError;
use crate::report::{RunReport, StepRecord, StepsEnd};
use crate::session::{quote, Session};
use crate::settings::Settings;
use crate::spec::PipelineSpec;

/// Runs the steps of `run` through `session`, the shell of container `container`;
/// logs each step's start and end. After the first failure, only the steps that run
/// `always` or `on_failure` run; the report names that first failure. A step over
/// its limit stops the container and ends the run; a cancelled run ends at once with
/// [`RunReport::Cancelled`]. `memory_bytes` is the run's memory limit.
pub(crate) async fn run_steps(
    run: &Run<PipelineSpec>,
    mut session: Session,
    engine: &Engine,
    container: &str,
    image: String,
    settings: &Settings,
    memory_bytes: Option<i64>,
) -> RunReport {
    let spec = run.spec();
    let log = run.log();
    let run_timeout = spec.timeout.map(|t| t.as_duration()).or(settings.default_timeout);
    let run_deadline = run_timeout.map(|timeout| (Instant::now() + timeout, timeout));
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
        let run_left = run_deadline
            .map(|(deadline, timeout)| (deadline.saturating_duration_since(Instant::now()), timeout));
        let limit = Limit::of(step.timeout.map(|t| t.as_duration()), run_left);
        let started = Instant::now();
        let script = script(&step.command, step.workdir.as_deref());
        let env = step_env(run, step, settings);
        let exec = session.run(&script, &env, log);
        let outcome = tokio::select! {
            outcome = within(limit, exec) => outcome,
            _ = run.cancelled() => {
                log.log(format!("<== step {number}/{total} {} cancelled: the runner is shutting down", step.name)).await;
                return RunReport::Cancelled;
            }
        };
        let duration = started.elapsed();
        let exit_code = match &outcome {
            Ok(Ok(exit)) => Some(exit.code),
            Ok(Err(_)) | Err(_) => None,
        };
        records.push(StepRecord { name: step.name.clone(), exit_code, duration });
        match outcome {
            Ok(Ok(exit)) => {
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
            Ok(Err(EngineError::ContainerStopped)) if engine.oom_killed(container).await => {
                // The kernel killed the container's own shell for memory.
                let killed = StepsEnd::KilledForMemory {
                    step: step.name.clone(),
                    exit_code: 137,
                    limit: memory_bytes,
                };
                if let Some(text) = killed.failure() {
                    log.log(text).await;
                }
                if !failed {
                    end = killed;
                }
                break;
            }
            Ok(Err(error)) => {
                let broken = StepsEnd::Broken { step: step.name.clone(), error };
                if let Some(text) = broken.failure() {
                    log.log(text).await;
                }
                if !failed {
                    end = broken;
                }
                break;
            }
            Err(limit) => {
                engine.stop(container, settings.container.stop_grace).await;
                let reached = limit.reached_during(step.name.clone());
                if let Some(text) = reached.failure() {
                    log.log(format!("<== step {number}/{total} {}: {text}", step.name)).await;
                }
                if !failed {
                    end = reached;
                }
                break;
            }
        }
    }
    drop(session);
    let report = RunReport::Ran { image, steps: records, end };
    log.log(if report.succeeded() { "run succeeded" } else { "run failed" }).await;
    report
}

/// What stops a step: its own timeout, or what is left of the run's, whichever comes
/// first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// The step's timeout.
    Step(Duration),
    /// What is `left` of the run's `timeout`.
    Run { left: Duration, timeout: Duration },
}

impl Limit {
    /// The limit of a step with timeout `step`, when `run` is what is left of the run's
    /// timeout and the timeout itself.
    fn of(step: Option<Duration>, run: Option<(Duration, Duration)>) -> Option<Self> {
        match (step, run) {
            (Some(step), Some((left, timeout))) if left < step => Some(Limit::Run { left, timeout }),
            (Some(step), _) => Some(Limit::Step(step)),
            (None, Some((left, timeout))) => Some(Limit::Run { left, timeout }),
            (None, None) => None,
        }
    }

    fn duration(self) -> Duration {
        match self {
            Limit::Step(limit) => limit,
            Limit::Run { left, .. } => left,
        }
    }

    /// How the steps end when this limit is reached during `step`.
    fn reached_during(self, step: String) -> StepsEnd {
        match self {
            Limit::Step(after) => StepsEnd::StepTimedOut { step, after },
            Limit::Run { timeout, .. } => StepsEnd::RunTimedOut { step, after: timeout },
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

/// The environment a step adds to the container's: its own `env`, then the values of
/// the run's and its own secrets (checked to exist while the run was prepared).
fn step_env(run: &Run<PipelineSpec>, step: &crate::spec::Step, settings: &Settings) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = step.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for name in run.spec().secrets.iter().chain(&step.secrets) {
        if let Some(value) = settings.secrets.get(name) {
            env.push((name.clone(), value.to_owned()));
        }
    }
    env
}

/// `work`'s output, or the limit it reached first.
async fn within<F: std::future::Future>(limit: Option<Limit>, work: F) -> Result<F::Output, Limit> {
    match limit {
        Some(limit) => tokio::time::timeout(limit.duration(), work).await.map_err(|_| limit),
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
    fn a_step_gets_the_tighter_of_its_timeout_and_what_is_left_of_the_runs() {
        let secs = Duration::from_secs;
        assert_eq!(Limit::of(None, None), None);
        assert_eq!(Limit::of(Some(secs(5)), None), Some(Limit::Step(secs(5))));
        assert_eq!(Limit::of(Some(secs(5)), Some((secs(9), secs(60)))), Some(Limit::Step(secs(5))));
        let run = Limit::Run { left: secs(3), timeout: secs(60) };
        assert_eq!(Limit::of(Some(secs(5)), Some((secs(3), secs(60)))), Some(run));
        assert_eq!(Limit::of(None, Some((secs(3), secs(60)))), Some(run));
    }

    #[test]
    fn a_reached_limit_names_whose_timeout_it_was() {
        let secs = Duration::from_secs;
        let step = Limit::Step(secs(1)).reached_during("sleepy".into());
        assert_eq!(step.failure().as_deref(), Some("step sleepy timed out after 1s"));
        let run = Limit::Run { left: secs(1), timeout: secs(2) }.reached_during("slow".into());
        assert_eq!(run.failure().as_deref(), Some("the run timed out after 2s during step slow"));
    }
}
