//! Running a prepared run's steps one after the other, each within its limit, into the
//! run's report.

use std::time::Duration;

use conveyor_sdk::Run;
use tokio::time::Instant;

use crate::docker::Engine;
use crate::report::{RunReport, StepRecord, StepsEnd};
use crate::session::Session;
use crate::settings::Settings;
use crate::spec::PipelineSpec;

/// Runs the steps of `run` through `session`, the shell of container `container`, until
/// one ends the run; logs each step's start and end. A step over its limit stops the
/// container; a cancelled run ends at once with [`RunReport::Cancelled`].
pub(crate) async fn run_steps(
    run: &Run<PipelineSpec>,
    mut session: Session,
    engine: &Engine,
    container: &str,
    image: String,
    settings: &Settings,
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
        log.log(format!("==> step {number}/{total} {}: {}", step.name, step.command)).await;
        let run_left = run_deadline
            .map(|(deadline, timeout)| (deadline.saturating_duration_since(Instant::now()), timeout));
        let limit = Limit::of(step.timeout.map(|t| t.as_duration()), run_left);
        let started = Instant::now();
        let script = script(&step.command);
        let env: Vec<(String, String)> = step.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
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
                if exit.code != 0 {
                    if !step.continue_on_error {
                        end = StepsEnd::Failed { step: step.name.clone(), exit_code: exit.code };
                        break;
                    }
                    log.log(format!("step {} may fail: going on", step.name)).await;
                }
            }
            Ok(Err(error)) => {
                end = StepsEnd::Broken { step: step.name.clone(), error };
                if let Some(text) = end.failure() {
                    log.log(text).await;
                }
                break;
            }
            Err(limit) => {
                engine.stop(container, settings.container.stop_grace).await;
                end = limit.reached_during(step.name.clone());
                if let Some(text) = end.failure() {
                    log.log(format!("<== step {number}/{total} {}: {text}", step.name)).await;
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

/// The script of a step: stop at the first failing command, and let a pipeline fail
/// when any part fails where the shell knows `pipefail`.
fn script(command: &str) -> String {
    format!("set -e\n(set -o pipefail) 2>/dev/null && set -o pipefail\n{command}")
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
        let s = script("false\necho after");
        assert!(s.starts_with("set -e\n"));
        assert!(s.ends_with("false\necho after"));
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
