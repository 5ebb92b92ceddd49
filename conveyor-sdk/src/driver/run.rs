//! [`Run`]: one resource event as [`Driver::reconcile`](crate::Driver::reconcile) gets it,
//! and [`RunCancellation`]: how a run is asked to stop, and why.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::log::LogHandle;
use crate::protocol::{Event, Resource};

/// Why a run was asked to stop ([`Run::cancel_reason`]).
///
/// ```
/// use conveyor_sdk::driver::{CancelReason, RunCancellation};
/// let cancel = RunCancellation::new();
/// cancel.cancel(CancelReason::Requested);
/// assert_eq!(cancel.reason(), Some(CancelReason::Requested));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelReason {
    /// The driver is shutting down and its grace period is over: whatever the run
    /// returns is discarded and the event is delivered again later.
    Shutdown,
    /// The run's deadline passed; it had this long. The run ends with a failure
    /// result saying it timed out.
    Deadline(Duration),
    /// Someone asked to cancel this run (a cancel request on NATS, see
    /// `docs/run-lifecycle.md`). The run ends with a failure result `cancelled`.
    Requested,
    /// A newer version of the resource arrived ([`Event::Update`]): the run ends with
    /// a failure result `superseded by run <run id> (version N)`, and the newer
    /// version runs next. See [`Config::supersede`](crate::Config::supersede).
    Superseded {
        /// The run of the newer version.
        run_id: String,
        /// The newer version's `metadata.version`, when it is a number.
        version: Option<u64>,
    },
    /// The resource was deleted ([`Event::Delete`]): the run ends with a failure
    /// result `the resource was deleted`, and the deletion is handled next.
    Deleted {
        /// The run of the deletion.
        run_id: String,
    },
}

impl fmt::Display for CancelReason {
    /// What the run's failure result says of it.
    ///
    /// ```
    /// use conveyor_sdk::driver::CancelReason;
    /// let newer = CancelReason::Superseded { run_id: "0b8e5a57".into(), version: Some(2) };
    /// assert_eq!(newer.to_string(), "superseded by run 0b8e5a57 (version 2)");
    /// let deleted = CancelReason::Deleted { run_id: "c2d7f1e4".into() };
    /// assert_eq!(deleted.to_string(), "the resource was deleted");
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelReason::Shutdown => f.write_str("the driver is shutting down"),
            CancelReason::Deadline(after) => {
                write!(f, "timed out after {}", humantime::format_duration(*after))
            }
            CancelReason::Requested => f.write_str("cancelled"),
            CancelReason::Superseded { run_id, version: Some(version) } => {
                write!(f, "superseded by run {run_id} (version {version})")
            }
            CancelReason::Superseded { run_id, version: None } => write!(f, "superseded by run {run_id}"),
            CancelReason::Deleted { .. } => f.write_str("the resource was deleted"),
        }
    }
}

/// How a run is asked to stop: a [`CancellationToken`] and the [`CancelReason`] of the
/// first request. The runtime makes one per run; make one yourself to run
/// [`Driver::reconcile`](crate::Driver::reconcile) with a deadline or a Ctrl-C of your own.
///
/// ```
/// use conveyor_sdk::driver::{CancelReason, RunCancellation};
/// use conveyor_sdk::{Resource, Run};
///
/// let cancel = RunCancellation::new();
/// let run = Run::new(Resource::new("a", "pipeline", serde_json::Value::Null), ())
///     .with_run_cancellation(cancel.clone());
/// cancel.cancel(CancelReason::Deadline(std::time::Duration::from_secs(60)));
/// cancel.cancel(CancelReason::Requested); // the first reason stays
/// assert!(run.is_cancelled());
/// assert_eq!(run.cancel_reason(), Some(CancelReason::Deadline(std::time::Duration::from_secs(60))));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RunCancellation {
    token: CancellationToken,
    reason: Arc<OnceLock<CancelReason>>,
}

impl RunCancellation {
    /// A cancellation not yet asked for.
    ///
    /// ```
    /// let cancel = conveyor_sdk::driver::RunCancellation::new();
    /// assert!(!cancel.is_cancelled());
    /// assert_eq!(cancel.reason(), None);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// One that is also cancelled, as [`CancelReason::Shutdown`], when `token` is: the
    /// runtime's runs follow its shutdown this way.
    ///
    /// ```
    /// use conveyor_sdk::driver::{CancelReason, RunCancellation};
    /// let shutdown = conveyor_sdk::CancellationToken::new();
    /// let cancel = RunCancellation::child_of(&shutdown);
    /// shutdown.cancel();
    /// assert_eq!(cancel.reason(), Some(CancelReason::Shutdown));
    /// ```
    pub fn child_of(token: &CancellationToken) -> Self {
        Self { token: token.child_token(), reason: Arc::default() }
    }

    /// Asks the run to stop because of `reason`. Only the first request counts: a run
    /// cancelled already keeps its first reason.
    ///
    /// ```
    /// use conveyor_sdk::driver::{CancelReason, RunCancellation};
    /// let cancel = RunCancellation::new();
    /// cancel.cancel(CancelReason::Requested);
    /// assert!(cancel.token().is_cancelled());
    /// ```
    pub fn cancel(&self, reason: CancelReason) {
        if !self.token.is_cancelled() {
            let _ = self.reason.set(reason);
        }
        self.token.cancel();
    }

    /// Why the run was asked to stop; `None` while it was not. A token cancelled from
    /// outside (its parent, or [`Run::with_cancellation`]) counts as a shutdown.
    ///
    /// ```
    /// let cancel = conveyor_sdk::driver::RunCancellation::new();
    /// cancel.token().cancel();
    /// assert_eq!(cancel.reason(), Some(conveyor_sdk::driver::CancelReason::Shutdown));
    /// ```
    pub fn reason(&self) -> Option<CancelReason> {
        match self.reason.get() {
            Some(reason) => Some(reason.clone()),
            None => self.token.is_cancelled().then_some(CancelReason::Shutdown),
        }
    }

    /// Whether the run was asked to stop.
    ///
    /// ```
    /// assert!(!conveyor_sdk::driver::RunCancellation::new().is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The token, cancelled on the first request.
    ///
    /// ```
    /// # async fn demo(cancel: conveyor_sdk::driver::RunCancellation) {
    /// cancel.token().cancelled().await;
    /// # }
    /// ```
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// One resource event handed to [`Driver::reconcile`](crate::Driver::reconcile): the resource (raw and its typed
/// spec), the event, the run, a log handle and a cancellation signal.
///
/// The runtime makes one per delivery; [`Run::new`] makes one for a local run or a test.
///
/// ```
/// use conveyor_sdk::{Event, Resource, Run};
/// let resource = Resource::new("hello", "greeting", serde_json::json!({"who": "you"}));
/// let run = Run::new(resource, "you".to_string()).with_event(Event::Process).with_run_id("run-1");
/// assert_eq!(run.spec(), "you");
/// assert_eq!(run.run_id(), "run-1");
/// assert_eq!(run.event(), &Event::Process);
/// ```
pub struct Run<S> {
    spec: S,
    resource: Resource,
    event: Event,
    run_id: String,
    message_id: String,
    attempt: u64,
    retries: u32,
    log: LogHandle,
    cancel: RunCancellation,
    superseded_run: Option<String>,
}

impl<S: fmt::Debug> fmt::Debug for Run<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("run_id", &self.run_id)
            .field("event", &self.event)
            .field("resource", &self.resource.name)
            .field("attempt", &self.attempt)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl<S> Run<S> {
    /// A run of `resource`, for calling [`Driver::reconcile`](crate::Driver::reconcile) yourself (a local run, a
    /// test): event `create`, a new run id, attempt 1, logging to standard output.
    ///
    /// ```
    /// use conveyor_sdk::{LogHandle, Resource, Run};
    /// let resource = Resource::new("hello", "greeting", serde_json::json!({"who": "you"}));
    /// let (log, lines) = LogHandle::memory();
    /// let run = Run::new(resource.clone(), resource.spec.clone()).with_log(log);
    /// assert_eq!(run.attempt(), 1);
    /// assert_eq!(run.event(), &conveyor_sdk::Event::Create);
    /// assert!(lines.lines().is_empty());
    /// ```
    pub fn new(resource: Resource, spec: S) -> Self {
        Self {
            spec,
            resource,
            event: Event::Create,
            run_id: uuid::Uuid::new_v4().to_string(),
            message_id: String::new(),
            attempt: 1,
            retries: 0,
            log: LogHandle::stdout(),
            cancel: RunCancellation::new(),
            superseded_run: None,
        }
    }

    /// Sets the log handle (default: standard output).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use conveyor_sdk::{LogHandle, Resource, Run};
    /// let (log, lines) = LogHandle::memory();
    /// let run = Run::new(Resource::new("a", "greeting", serde_json::Value::Null), ()).with_log(log);
    /// run.log().log("kept in memory").await;
    /// assert_eq!(lines.lines(), ["kept in memory"]);
    /// # }
    /// ```
    #[must_use]
    pub fn with_log(mut self, log: LogHandle) -> Self {
        self.log = log;
        self
    }

    /// Sets the event (default: `create`).
    ///
    /// ```
    /// use conveyor_sdk::{Event, Resource, Run};
    /// let run = Run::new(Resource::new("a", "pipeline", serde_json::Value::Null), ()).with_event(Event::Process);
    /// assert_eq!(run.event(), &Event::Process);
    /// ```
    #[must_use]
    pub fn with_event(mut self, event: Event) -> Self {
        self.event = event;
        self
    }

    /// Sets the run id (default: a new UUID v4).
    ///
    /// ```
    /// use conveyor_sdk::{Resource, Run};
    /// let run = Run::new(Resource::new("a", "pipeline", serde_json::Value::Null), ())
    ///     .with_run_id("fbdf5edf-66d4-46ce-859a-8ee44d6c9463");
    /// assert_eq!(run.run_id(), "fbdf5edf-66d4-46ce-859a-8ee44d6c9463");
    /// ```
    #[must_use]
    pub fn with_run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = run_id.into();
        self
    }

    /// Sets the cancellation signal (default: one that is never cancelled).
    ///
    /// ```
    /// use conveyor_sdk::{CancellationToken, Resource, Run};
    /// let stop = CancellationToken::new();
    /// let run = Run::new(Resource::new("a", "pipeline", serde_json::Value::Null), ())
    ///     .with_cancellation(stop.clone());
    /// stop.cancel();
    /// assert!(run.is_cancelled());
    /// ```
    #[must_use]
    pub fn with_cancellation(mut self, cancel: CancellationToken) -> Self {
        self.cancel = RunCancellation { token: cancel, reason: Arc::default() };
        self
    }

    /// Sets the cancellation, with its reason (default: one never asked for).
    ///
    /// ```
    /// use conveyor_sdk::driver::{CancelReason, RunCancellation};
    /// use conveyor_sdk::{Resource, Run};
    /// let cancel = RunCancellation::new();
    /// let run = Run::new(Resource::new("a", "pipeline", serde_json::Value::Null), ())
    ///     .with_run_cancellation(cancel.clone());
    /// cancel.cancel(CancelReason::Requested);
    /// assert_eq!(run.cancel_reason(), Some(CancelReason::Requested));
    /// ```
    #[must_use]
    pub fn with_run_cancellation(mut self, cancel: RunCancellation) -> Self {
        self.cancel = cancel;
        self
    }

    pub(crate) fn with_delivery(mut self, message_id: String, attempt: u64, retries: u32) -> Self {
        self.message_id = message_id;
        self.attempt = attempt;
        self.retries = retries;
        self
    }

    /// Names the run of an older version of the resource that this event cancelled.
    pub(crate) fn with_superseded_run(mut self, run_id: Option<String>) -> Self {
        self.superseded_run = run_id;
        self
    }

    /// The run of an older version of this resource that this event cancelled before
    /// it was handed over (an update or a deletion arriving while that run was in
    /// flight; see [`Config::supersede`](crate::Config::supersede)); `None` when
    /// nothing was running.
    ///
    /// ```
    /// use conveyor_sdk::{Resource, Run};
    /// let run = Run::new(Resource::new("a", "pipeline", serde_json::Value::Null), ());
    /// assert_eq!(run.superseded_run(), None);
    /// ```
    pub fn superseded_run(&self) -> Option<&str> {
        self.superseded_run.as_deref()
    }

    /// The resource's spec, decoded.
    ///
    /// ```
    /// #[derive(serde::Deserialize)]
    /// struct Greeting { who: String }
    ///
    /// let resource = conveyor_sdk::Resource::new("a", "greeting", serde_json::json!({"who": "you"}));
    /// let spec: Greeting = serde_json::from_value(resource.spec.clone())?;
    /// let run = conveyor_sdk::Run::new(resource, spec);
    /// assert_eq!(run.spec().who, "you");
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn spec(&self) -> &S {
        &self.spec
    }

    /// The resource as received, spec included as JSON.
    ///
    /// ```
    /// let resource = conveyor_sdk::Resource::new("a", "greeting", serde_json::json!({"who": "you"}));
    /// let run = conveyor_sdk::Run::new(resource, ());
    /// assert_eq!(run.resource().name, "a");
    /// assert_eq!(run.resource().spec["who"], "you");
    /// ```
    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// The event.
    ///
    /// ```
    /// let run = conveyor_sdk::Run::new(conveyor_sdk::Resource::new("a", "pipeline", serde_json::Value::Null), ());
    /// assert_eq!(run.event(), &conveyor_sdk::Event::Create);
    /// ```
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The run id; every log line and the result carry it.
    ///
    /// ```
    /// let run = conveyor_sdk::Run::new(conveyor_sdk::Resource::new("a", "pipeline", serde_json::Value::Null), ());
    /// assert!(uuid::Uuid::parse_str(run.run_id()).is_ok(), "a new UUID by default");
    /// ```
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The id of the message that delivered this event (empty outside the runtime).
    ///
    /// ```
    /// let run = conveyor_sdk::Run::new(conveyor_sdk::Resource::new("a", "pipeline", serde_json::Value::Null), ());
    /// assert_eq!(run.message_id(), "");
    /// ```
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// Which delivery of the event this is: 1 the first time, more after a redelivery.
    ///
    /// ```
    /// # async fn demo(run: conveyor_sdk::Run<serde_json::Value>) {
    /// if run.attempt() > 1 {
    ///     run.log().log("cleaning up what an earlier attempt left").await;
    /// }
    /// # }
    /// ```
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    /// How many earlier attempts ended asking to try again
    /// ([`ReconcileError::retry_after`](crate::ReconcileError::retry_after)) or could not
    /// store their log or result: 0 on the first try. Deliveries after a shutdown or a
    /// crash do not count.
    ///
    /// ```
    /// let run = conveyor_sdk::Run::new(conveyor_sdk::Resource::new("a", "pipeline", serde_json::Value::Null), ());
    /// assert_eq!(run.retries(), 0);
    /// ```
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The run's log.
    ///
    /// ```
    /// # async fn demo(run: conveyor_sdk::Run<serde_json::Value>) {
    /// run.log().log(format!("run {} started", run.run_id())).await;
    /// # }
    /// ```
    pub fn log(&self) -> &LogHandle {
        &self.log
    }

    /// Whether the run has been asked to stop.
    ///
    /// ```
    /// # async fn demo(run: conveyor_sdk::Run<Vec<String>>) {
    /// for step in run.spec() {
    ///     if run.is_cancelled() {
    ///         break; // shutting down: the event is delivered again later
    ///     }
    ///     run.log().log(format!("step {step}")).await;
    /// }
    /// # }
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the run is asked to stop (the driver is shutting down).
    ///
    /// ```
    /// # async fn demo(run: conveyor_sdk::Run<serde_json::Value>) {
    /// tokio::select! {
    ///     _ = run.cancelled() => { /* clean up */ }
    ///     _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
    /// }
    /// # }
    /// ```
    pub async fn cancelled(&self) {
        self.cancel.token().cancelled().await
    }

    /// The cancellation token itself, to hand to other tasks.
    ///
    /// ```
    /// # async fn demo(run: conveyor_sdk::Run<serde_json::Value>) {
    /// let stop = run.cancellation_token().clone();
    /// tokio::spawn(async move {
    ///     stop.cancelled().await; // e.g. kill a child process here
    /// });
    /// # }
    /// ```
    pub fn cancellation_token(&self) -> &CancellationToken {
        self.cancel.token()
    }

    /// Why the run was asked to stop: a shutdown (the event comes again), its deadline,
    /// or a cancel request (the run ends with a failure result either way); `None`
    /// while it was not.
    ///
    /// ```
    /// use conveyor_sdk::driver::CancelReason;
    /// # async fn demo(run: conveyor_sdk::Run<serde_json::Value>) {
    /// run.cancelled().await;
    /// match run.cancel_reason() {
    ///     Some(CancelReason::Shutdown) => run.log().log("stopping: the driver shuts down").await,
    ///     Some(CancelReason::Deadline(after)) => run.log().log(format!("out of time after {after:?}")).await,
    ///     _ => run.log().log("stopping on request").await,
    /// }
    /// # }
    /// ```
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.cancel.reason()
    }

    /// Splits the run into its spec and the rest.
    ///
    /// ```
    /// let resource = conveyor_sdk::Resource::new("a", "pipeline", serde_json::Value::Null);
    /// let run = conveyor_sdk::Run::new(resource, vec!["build".to_string(), "test".to_string()]);
    /// let (steps, run) = run.into_spec();
    /// assert_eq!(steps.len(), 2);
    /// assert_eq!(run.resource().name, "a");
    /// ```
    pub fn into_spec(self) -> (S, Run<()>) {
        let Run { spec, resource, event, run_id, message_id, attempt, retries, log, cancel, superseded_run } =
            self;
        let run = Run {
            spec: (),
            resource,
            event,
            run_id,
            message_id,
            attempt,
            retries,
            log,
            cancel,
            superseded_run,
        };
        (spec, run)
    }

    /// The same run with another spec.
    pub(crate) fn with_spec<T>(self, spec: T) -> Run<T> {
        let (_, run) = self.into_spec();
        let Run {
            resource, event, run_id, message_id, attempt, retries, log, cancel, superseded_run, ..
        } = run;
        Run { spec, resource, event, run_id, message_id, attempt, retries, log, cancel, superseded_run }
    }
}
