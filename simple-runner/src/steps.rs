//! Running a prepared run's steps one after the other, each within its timeout, into
//! the run's report. The run's own timeout is its deadline: the runtime (or, for a
//! local run, `simple-runner run`) cancels the run when it passes.

use std::future::Future;
use std::time::Duration;

use conveyor_sdk::driver::CancelReason;
use conveyor_sdk::Run;
use tokio::time::Instant;

use crate::docker::Engine;
use crate::error::EngineError;
use crate::report::{human, RunReport, StepRecord, StepsEnd};
use crate::session::{Session, StepExit};
use crate::settings::Settings;
use crate::spec::PipelineSpec;

/// Runs the steps of `run` through `session`, the shell of container `container`, until
/// one ends the run; logs each step's start and end. A step over its timeout, or a run
/// cancelled by its deadline or on request, has its step stopped (SIGTERM, SIGKILL
/// after the stop grace); a run cancelled by a shutdown ends at once with
/// [`RunReport::Cancelled`].
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
    let grace = settings.container.stop_grace;
    let total = spec.steps.len();
    let mut records: Vec<StepRecord> = Vec::with_capacity(total);
    let mut end = StepsEnd::Completed;
    for (index, step) in spec.steps.iter().enumerate() {
        let number = index + 1;
        log.log(format!("==> step {number}/{total} {}: {}", step.name, step.command)).await;
        let started = Instant::now();
        let script = script(&step.command);
        let env: Vec<(String, String)> = step.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let exec = session.run(&script, &env, log);
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
                end = why.end(step.name.clone());
                if let Some(text) = end.failure() {
                    let code = exit_code.map(|c| format!(" (exit code {c})")).unwrap_or_default();
                    log.log(format!("<== step {number}/{total} {}: {text}{code}", step.name)).await;
                }
                break;
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
                if exit.code != 0 {
                    if !step.continue_on_error {
                        end = StepsEnd::Failed { step: step.name.clone(), exit_code: exit.code };
                        break;
                    }
                    log.log(format!("step {} may fail: going on", step.name)).await;
                }
            }
            Err(error) => {
                end = StepsEnd::Broken { step: step.name.clone(), error };
                if let Some(text) = end.failure() {
                    log.log(text).await;
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

/// The script of a step: stop at the first failing command, and let a pipeline fail
/// when any part fails where the shell knows `pipefail`.
fn script(command: &str) -> String {
    format!("set -e\n(set -o pipefail) 2>/dev/null && set -o pipefail\n{command}")
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
        let s = script("false\necho after");
        assert!(s.starts_with("set -e\n"));
        assert!(s.ends_with("false\necho after"));
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
