//! What a run came to, and the one place where that becomes the result the driver
//! publishes: [`RunReport::into_result`].

use std::time::Duration;

use conveyor_sdk::driver::CancelReason;
use conveyor_sdk::validate::Violation;
use conveyor_sdk::{error_text, DriverResult};
use serde_json::{json, Value};

use crate::engine::error::{ContainerEnd, EngineError};

/// What a run came to.
///
/// ```
/// use std::time::Duration;
/// use simple_runner::report::{RunReport, StepRecord, StepsEnd};
///
/// let report = RunReport::Ran {
///     image: "alpine:3.20".into(),
///     steps: vec![
///         StepRecord { name: "build".into(), exit_code: Some(0), duration: Duration::from_millis(1520) },
///         StepRecord { name: "test".into(), exit_code: Some(2), duration: Duration::from_millis(310) },
///     ],
///     end: StepsEnd::Failed { step: "test".into(), exit_code: 2 },
///     outputs: Default::default(),
/// };
/// assert!(!report.succeeded());
/// let result = report.into_result();
/// assert_eq!(result.message, "step test failed with exit code 2");
/// assert_eq!(result.data["steps"][0]["duration_seconds"], 1.52);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum RunReport {
    /// The resource cannot run as it is; no container was made.
    Refused(Refusal),
    /// The engine gave the run no usable container: the image is missing or its pull
    /// failed, or the container could not be created, started or attached to.
    NoContainer {
        /// The run's image.
        image: String,
        /// What the engine said.
        error: EngineError,
    },
    /// The steps ran: all of them, or until one ended the run.
    Ran {
        /// The run's image.
        image: String,
        /// Every step that started, in order.
        steps: Vec<StepRecord>,
        /// How the steps ended.
        end: StepsEnd,
        /// What the run kept besides its log: its source's commit, its artifacts.
        outputs: RunOutputs,
    },
    /// The run's `source` could not be checked out: no step ran.
    SourceFailed {
        /// The repository's URL.
        repository: String,
        /// Why, in git's words where it gave some.
        reason: String,
    },
    /// A service of the run was not ready in time, or its process ended, before the
    /// first step: no step ran.
    ServiceNotReady {
        /// The service's name.
        service: String,
        /// Why, in words: `exited with code 1 before the steps began`.
        reason: String,
    },
    /// The runner is shutting down: the run was stopped, to be delivered again.
    Cancelled,
    /// The run's deadline passed, or it was cancelled on request, before its steps
    /// began (while its image was pulled or its container started).
    Stopped(CancelReason),
}

/// Why a resource cannot run, though its spec is valid JSON for the definition.
///
/// ```
/// use simple_runner::report::Refusal;
///
/// let refusal = Refusal::UnknownSecret("DEPLOY_KEY".into());
/// assert!(refusal.to_string().starts_with("the spec names secret DEPLOY_KEY, which the runner does not have"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The spec names no image and the runner has no default image.
    #[error("the spec names no image and the runner has no default image")]
    NoImage,
    /// The spec names a secret the runner's operator has not given it.
    #[error("the spec names secret {0}, which the runner does not have (see --secret and --secrets-file)")]
    UnknownSecret(String),
    /// The spec breaks rules its JSON Schema cannot say
    /// ([`PipelineSpec::violations`](crate::PipelineSpec::violations)); every violation
    /// is listed with its path, as the SDK's
    /// [`SpecError::Invalid`](conveyor_sdk::validate::SpecError::Invalid) lists the
    /// schema's.
    ///
    /// ```
    /// use conveyor_sdk::validate::Violation;
    /// use simple_runner::report::Refusal;
    ///
    /// let refusal = Refusal::InvalidSpec(vec![Violation {
    ///     path: "/spec/services/1/name".into(),
    ///     message: "\"db\" is already the name of /spec/services/0: two services cannot share a host name".into(),
    /// }]);
    /// assert!(refusal.to_string().starts_with("invalid spec: /spec/services/1/name: \"db\" is already"));
    /// ```
    #[error("invalid spec: {}", joined(.0))]
    InvalidSpec(Vec<Violation>),
}

/// Violations as one line: `/spec/a: …; /spec/b: …`.
fn joined(violations: &[Violation]) -> String {
    violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// One step that started: its line in the result's data.
///
/// ```
/// use std::time::Duration;
/// use simple_runner::report::StepRecord;
///
/// let timed_out = StepRecord { name: "slow".into(), exit_code: None, duration: Duration::from_secs(600) };
/// assert_eq!(timed_out.exit_code, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    /// The step's name.
    pub name: String,
    /// Its exit code; none when it timed out or could not run.
    pub exit_code: Option<i64>,
    /// How long it took.
    pub duration: Duration,
}

/// How a run's steps ended.
///
/// ```
/// use std::time::Duration;
/// use simple_runner::report::StepsEnd;
///
/// let end = StepsEnd::StepTimedOut { step: "build".into(), after: Duration::from_secs(600) };
/// assert_eq!(end.failure().as_deref(), Some("step build timed out after 10m"));
/// assert_eq!(StepsEnd::Completed.failure(), None);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum StepsEnd {
    /// Every step ran; those that failed were allowed to.
    Completed,
    /// A step that may not fail exited with another code than 0.
    Failed {
        /// The step's name.
        step: String,
        /// Its exit code.
        exit_code: i64,
    },
    /// A step that may not fail was killed for memory: a process of it went over the
    /// run's memory limit.
    KilledForMemory {
        /// The step's name.
        step: String,
        /// Its exit code.
        exit_code: i64,
        /// The run's memory limit in bytes, if it had one.
        limit: Option<i64>,
    },
    /// The run's container stopped or went during a step, not by the runner's doing:
    /// removed or killed from outside, or its engine stopped.
    ContainerLost {
        /// The step's name.
        step: String,
        /// How the container ended.
        end: ContainerEnd,
    },
    /// A step could not run: the engine or the container's shell failed.
    Broken {
        /// The step's name.
        step: String,
        /// What failed.
        error: EngineError,
    },
    /// A step went over its own timeout.
    StepTimedOut {
        /// The step's name.
        step: String,
        /// The step's timeout.
        after: Duration,
    },
    /// The run went over its timeout during a step.
    RunTimedOut {
        /// The step's name.
        step: String,
        /// The run's timeout.
        after: Duration,
    },
    /// The run was cancelled on request during a step.
    Cancelled {
        /// The step's name.
        step: String,
    },
}

impl StepsEnd {
    /// Why the steps ended before the last, as the result and the log say it; `None`
    /// when every step ran.
    ///
    /// ```
    /// use simple_runner::report::StepsEnd;
    ///
    /// let end = StepsEnd::Failed { step: "lint".into(), exit_code: 1 };
    /// assert_eq!(end.failure().as_deref(), Some("step lint failed with exit code 1"));
    /// ```
    pub fn failure(&self) -> Option<String> {
        Some(match self {
            StepsEnd::Completed => return None,
            StepsEnd::Failed { step, exit_code } => format!("step {step} failed with exit code {exit_code}"),
            StepsEnd::KilledForMemory { step, exit_code, limit } => match limit {
                Some(limit) => format!(
                    "step {step} was killed for memory (exit code {exit_code}): it went over the run's limit of {}",
                    crate::spec::ByteSize::new(u64::try_from(*limit).unwrap_or(0))
                ),
                None => format!("step {step} was killed for memory (exit code {exit_code})"),
            },
            StepsEnd::ContainerLost { step, end } => format!("the run's container {end} during step {step}"),
            StepsEnd::Broken { step, error } => format!("step {step} could not run: {}", error_text(error)),
            StepsEnd::StepTimedOut { step, after } => {
                format!("step {step} timed out after {}", human(*after))
            }
            StepsEnd::RunTimedOut { step, after } => {
                format!("timed out after {} during step {step}", human(*after))
            }
            StepsEnd::Cancelled { step } => format!("cancelled during step {step}"),
        })
    }
}

impl RunReport {
    /// Whether the run succeeded: every step ran, and those that failed were allowed to.
    ///
    /// ```
    /// use simple_runner::report::RunReport;
    ///
    /// assert!(!RunReport::Cancelled.succeeded());
    /// ```
    pub fn succeeded(&self) -> bool {
        matches!(self, RunReport::Ran { end: StepsEnd::Completed, outputs, .. } if outputs.failure.is_none())
    }

    /// The result's message: what happened, or what went wrong first.
    ///
    /// ```
    /// use simple_runner::report::{Refusal, RunReport};
    ///
    /// let report = RunReport::Refused(Refusal::NoImage);
    /// assert_eq!(report.message(), "the spec names no image and the runner has no default image");
    /// ```
    pub fn message(&self) -> String {
        match self {
            RunReport::Refused(refusal) => refusal.to_string(),
            RunReport::NoContainer { error, .. } => error_text(error),
            RunReport::Ran { steps, end, outputs, .. } => {
                end.failure().or_else(|| outputs.failure.clone()).unwrap_or_else(|| {
                    let failed = steps.iter().filter(|s| s.exit_code != Some(0)).count();
                    match failed {
                        0 => format!("{} steps succeeded", steps.len()),
                        _ => format!("{} steps ran; {failed} failed and were allowed to", steps.len()),
                    }
                })
            }
            RunReport::ServiceNotReady { service, reason } => format!("service {service} {reason}"),
            RunReport::SourceFailed { repository, reason } => {
                format!("checking out {repository} failed: {reason}")
            }
            RunReport::Cancelled => "cancelled: the runner is shutting down".into(),
            RunReport::Stopped(CancelReason::Deadline(after)) => {
                format!("timed out after {} before the steps began", human(*after))
            }
            RunReport::Stopped(_) => "cancelled before the steps began".into(),
        }
    }

    /// The result the driver publishes: success, the message, and as data the image
    /// and every step that started (`name`, `exit_code`, `duration_seconds`), as far as
    /// the run got.
    ///
    /// ```
    /// use simple_runner::report::RunReport;
    /// use simple_runner::EngineError;
    ///
    /// let report = RunReport::NoContainer {
    ///     image: "alpine:3.20".into(),
    ///     error: EngineError::ImageMissing("alpine:3.20".into()),
    /// };
    /// let result = report.into_result();
    /// assert!(!result.success);
    /// assert_eq!(result.data, serde_json::json!({"image": "alpine:3.20"}));
    /// ```
    pub fn into_result(self) -> DriverResult {
        let message = self.message();
        let result =
            if self.succeeded() { DriverResult::success(message) } else { DriverResult::failure(message) };
        let data = match self {
            RunReport::Refused(_) | RunReport::Cancelled | RunReport::Stopped(_) => Value::Null,
            RunReport::NoContainer { image, .. } => json!({"image": image}),
            RunReport::ServiceNotReady { service, .. } => json!({"service": service}),
            RunReport::SourceFailed { repository, .. } => json!({"source": {"git": repository}}),
            RunReport::Ran { image, steps, outputs, .. } => {
                let mut data = json!({
                    "image": image,
                    "steps": steps.iter().map(|s| json!({
                        "name": s.name,
                        "exit_code": s.exit_code,
                        "duration_seconds": (s.duration.as_secs_f64() * 1000.0).round() / 1000.0,
                    })).collect::<Vec<_>>(),
                });
                if let Some(commit) = outputs.commit {
                    data["source"] = json!({"commit": commit});
                }
                if !outputs.artifacts.is_empty() {
                    data["artifacts"] = json!(outputs
                        .artifacts
                        .iter()
                        .map(|a| json!({"name": a.name, "size": a.size, "sha256": a.sha256}))
                        .collect::<Vec<_>>());
                }
                data
            }
        };
        result.with_data(data)
    }
}

/// What a run kept besides its log: the commit its source checked out, the artifacts
/// it stored.
///
/// ```
/// use simple_runner::report::{RunOutputs, StoredArtifact};
///
/// let outputs = RunOutputs {
///     commit: Some("4b825dc642cb6eb9a060e54bf8d69288fbee4904".into()),
///     artifacts: vec![StoredArtifact { name: "binary".into(), size: 1024, sha256: "ab…".into() }],
///     ..RunOutputs::default()
/// };
/// assert!(outputs.failure.is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutputs {
    /// The commit its `source` checked out.
    pub commit: Option<String>,
    /// The artifacts it stored, in the order of the spec.
    pub artifacts: Vec<StoredArtifact>,
    /// Why what the run had to keep could not be kept (an artifact's missing path, the
    /// size cap, the store): the run fails with it though its steps succeeded.
    pub failure: Option<String>,
}

/// An artifact a run stored, as its result lists it.
///
/// ```
/// let artifact = simple_runner::report::StoredArtifact { name: "logs".into(), size: 0, sha256: String::new() };
/// assert_eq!(artifact.name, "logs");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    /// Its name, from the spec.
    pub name: String,
    /// How many bytes it holds, as stored.
    pub size: u64,
    /// The SHA-256 of what is stored, in hex.
    pub sha256: String,
}

/// A timeout in words, in whole seconds and at least one.
pub(crate) fn human(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs().max(1))).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, exit_code: Option<i64>) -> StepRecord {
        StepRecord { name: name.into(), exit_code, duration: Duration::from_millis(1234) }
    }

    fn ran(steps: Vec<StepRecord>, end: StepsEnd) -> DriverResult {
        RunReport::Ran { image: "alpine:3.20".into(), steps, end, outputs: RunOutputs::default() }
            .into_result()
    }

    #[test]
    fn a_service_not_ready_fails_the_run_naming_it() {
        let report = RunReport::ServiceNotReady {
            service: "db".into(),
            reason: "was not ready within 5s: nothing listened on port 5432".into(),
        };
        assert!(!report.succeeded());
        let result = report.into_result();
        assert!(!result.success);
        assert_eq!(result.message, "service db was not ready within 5s: nothing listened on port 5432");
        assert_eq!(result.data, json!({"service": "db"}));
    }

    #[test]
    fn every_step_succeeding_is_a_success_that_counts_them() {
        let result = ran(vec![step("a", Some(0)), step("b", Some(0))], StepsEnd::Completed);
        assert!(result.success);
        assert_eq!(result.message, "2 steps succeeded");
    }

    #[test]
    fn steps_allowed_to_fail_are_counted_in_a_success() {
        let result = ran(vec![step("lint", Some(3)), step("build", Some(0))], StepsEnd::Completed);
        assert!(result.success);
        assert_eq!(result.message, "2 steps ran; 1 failed and were allowed to");
    }

    #[test]
    fn the_first_failing_step_names_the_result() {
        let result = ran(
            vec![step("may-fail", Some(3)), step("errexit", Some(1))],
            StepsEnd::Failed { step: "errexit".into(), exit_code: 1 },
        );
        assert!(!result.success);
        assert_eq!(result.message, "step errexit failed with exit code 1");
    }

    #[test]
    fn the_data_lists_every_started_step_with_its_code_and_milliseconds() {
        let result = ran(
            vec![step("ok", Some(0)), step("slow", None)],
            StepsEnd::StepTimedOut { step: "slow".into(), after: Duration::from_secs(1) },
        );
        assert_eq!(
            result.data,
            json!({"image": "alpine:3.20", "steps": [
                {"name": "ok", "exit_code": 0, "duration_seconds": 1.234},
                {"name": "slow", "exit_code": null, "duration_seconds": 1.234},
            ]})
        );
    }

    #[test]
    fn a_timeout_says_whose_it_was_in_whole_seconds() {
        let step_end = StepsEnd::StepTimedOut { step: "sleepy".into(), after: Duration::from_millis(1500) };
        assert_eq!(ran(vec![step("sleepy", None)], step_end).message, "step sleepy timed out after 1s");
        let run_end = StepsEnd::RunTimedOut { step: "slow".into(), after: Duration::from_millis(300) };
        let result = ran(vec![step("slow", None)], run_end);
        assert!(!result.success);
        assert_eq!(result.message, "timed out after 1s during step slow");
    }

    #[test]
    fn a_step_killed_for_memory_says_so_with_the_limit() {
        let end = StepsEnd::KilledForMemory { step: "hog".into(), exit_code: 137, limit: Some(32 << 20) };
        assert_eq!(
            ran(vec![step("hog", Some(137))], end).message,
            "step hog was killed for memory (exit code 137): it went over the run's limit of 32m"
        );
    }

    #[test]
    fn a_step_that_could_not_run_gives_the_engines_cause() {
        let error = EngineError::ShellInput { source: std::io::Error::other("broken pipe") };
        let result = ran(vec![step("s", None)], StepsEnd::Broken { step: "s".into(), error });
        assert!(!result.success);
        assert_eq!(
            result.message,
            "step s could not run: cannot send the step to the container's shell: broken pipe"
        );
    }

    #[test]
    fn a_container_lost_during_a_step_says_how_and_during_which_step() {
        let lost = |end| ran(vec![step("slow", None)], StepsEnd::ContainerLost { step: "slow".into(), end });
        let removed = lost(ContainerEnd::Removed);
        assert!(!removed.success);
        assert_eq!(removed.message, "the run's container was removed from outside during step slow");
        let killed = lost(ContainerEnd::Exited { exit_code: 137, oom_killed: false });
        assert_eq!(killed.message, "the run's container was killed (exit code 137) during step slow");
        let engine = lost(ContainerEnd::EngineLost { reason: "connection reset".into() });
        assert_eq!(
            engine.message,
            "the run's container was lost: the Docker engine stopped answering (connection reset) during step slow"
        );
    }

    #[test]
    fn a_run_without_a_container_fails_with_the_engines_words_and_its_image() {
        let image = "127.0.0.1:1/missing:0";
        let error = EngineError::PullRefused { image: image.into(), message: "connection refused".into() };
        let result = RunReport::NoContainer { image: image.into(), error }.into_result();
        assert!(!result.success);
        assert_eq!(result.message, format!("pulling image {image} failed: connection refused"));
        assert_eq!(result.data, json!({"image": image}));
    }

    #[test]
    fn a_refused_run_fails_with_the_reason_and_no_data() {
        let result = RunReport::Refused(Refusal::UnknownSecret("DEPLOY_KEY".into())).into_result();
        assert!(!result.success);
        assert_eq!(
            result.message,
            "the spec names secret DEPLOY_KEY, which the runner does not have (see --secret and --secrets-file)"
        );
        assert_eq!(result.data, Value::Null);
    }

    #[test]
    fn a_spec_breaking_rules_is_refused_listing_every_violation_with_its_path() {
        let violation = |path: &str, message: &str| Violation { path: path.into(), message: message.into() };
        let refusal = Refusal::InvalidSpec(vec![
            violation("/spec/services/1/name", "\"db\" is already the name of /spec/services/0"),
            violation("/spec/services/1/env/1A", "\"1A\" is not a valid environment variable name"),
        ]);
        let result = RunReport::Refused(refusal).into_result();
        assert!(!result.success);
        assert_eq!(
            result.message,
            "invalid spec: /spec/services/1/name: \"db\" is already the name of /spec/services/0; \
             /spec/services/1/env/1A: \"1A\" is not a valid environment variable name"
        );
        assert_eq!(result.data, Value::Null);
    }

    #[test]
    fn a_spec_refusal_reads_like_the_sdks_schema_refusal() {
        let violations = vec![
            Violation { path: "/spec/a".into(), message: "one".into() },
            Violation { path: "/spec/b".into(), message: "two".into() },
        ];
        let sdk = conveyor_sdk::validate::SpecError::Invalid(violations.clone()).to_string();
        assert_eq!(Refusal::InvalidSpec(violations).to_string(), sdk);
    }

    #[test]
    fn a_run_stopped_before_its_steps_says_why() {
        let timed_out = RunReport::Stopped(CancelReason::Deadline(Duration::from_secs(90))).into_result();
        assert_eq!(
            (timed_out.success, timed_out.message.as_str()),
            (false, "timed out after 1m 30s before the steps began")
        );
        let cancelled = RunReport::Stopped(CancelReason::Requested).into_result();
        assert_eq!(cancelled.message, "cancelled before the steps began");
    }

    #[test]
    fn a_cancelled_run_fails_saying_the_runner_is_shutting_down() {
        let result = RunReport::Cancelled.into_result();
        assert!(!result.success);
        assert_eq!(result.message, "cancelled: the runner is shutting down");
        assert_eq!(result.data, Value::Null);
    }
}
