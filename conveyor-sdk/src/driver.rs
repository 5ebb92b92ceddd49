//! The [`Driver`] trait: the domain logic a driver author writes.

use std::fmt;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::log::LogHandle;
use crate::protocol::{DriverResult, Event, Resource, ResourceDefinition};

/// The error a reconcile may return: any error, boxed. It becomes a failed result
/// whose message is the error's text (with its sources).
pub type ReconcileError = Box<dyn std::error::Error + Send + Sync>;

/// A Conveyor driver: a name, the resource types it handles, and what it does with
/// one resource.
///
/// `Spec` is the type a resource's `spec` is decoded into before
/// [`reconcile`](Driver::reconcile) is called; use [`serde_json::Value`] to take it
/// as it comes. Derive [`schemars::JsonSchema`] on it and
/// [`ResourceType::owned_from`] registers a schema that matches it.
///
/// ```no_run
/// use conveyor_sdk::{Driver, DriverResult, ReconcileError, ResourceType, Run};
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Greeting { who: String }
///
/// struct Greeter;
///
/// #[async_trait::async_trait]
/// impl Driver for Greeter {
///     type Spec = Greeting;
///
///     fn name(&self) -> &str {
///         "greeter"
///     }
///
///     fn resources(&self) -> Vec<ResourceType> {
///         vec![ResourceType::owned_from::<Greeting>("greeting")]
///     }
///
///     async fn reconcile(&self, run: Run<Greeting>) -> Result<DriverResult, ReconcileError> {
///         run.log().log(format!("hello, {}", run.spec().who)).await;
///         Ok(DriverResult::success("greeted"))
///     }
/// }
/// ```
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// The type of a resource's `spec`.
    type Spec: DeserializeOwned + Send + Sync + 'static;

    /// The driver's name: its consumer, its subjects, and the `driver` of its logs and
    /// results. A single NATS subject token (no `.`, `*`, `>` or white space).
    fn name(&self) -> &str;

    /// The resource types this driver handles.
    fn resources(&self) -> Vec<ResourceType>;

    /// Does the work for one resource event.
    ///
    /// An `Err` or a panic becomes a failed result. When `run` is cancelled
    /// ([`Run::cancelled`]) the driver is shutting down: stop, clean up and return
    /// soon; whatever is returned then is discarded and the event is delivered again
    /// later.
    async fn reconcile(&self, run: Run<Self::Spec>) -> Result<DriverResult, ReconcileError>;
}

/// A resource type a driver handles, with the definition it registers if it owns it.
#[derive(Debug, Clone)]
pub struct ResourceType {
    name: String,
    definition: Option<ResourceDefinition>,
}

impl ResourceType {
    /// A type this driver owns, with its definition: the runtime registers it with the
    /// API server and validates every spec against its schema.
    ///
    /// ```
    /// use conveyor_sdk::{ResourceDefinition, ResourceType};
    /// let t = ResourceType::owned(ResourceDefinition::new("pipeline", serde_json::json!({"type": "object"})));
    /// assert_eq!(t.name(), "pipeline");
    /// ```
    pub fn owned(definition: ResourceDefinition) -> Self {
        Self { name: definition.name.clone(), definition: Some(definition) }
    }

    /// A type this driver owns, whose schema is derived from the spec type `S`.
    ///
    /// ```
    /// #[derive(schemars::JsonSchema)]
    /// struct Spec { steps: Vec<String> }
    /// let t = conveyor_sdk::ResourceType::owned_from::<Spec>("pipeline");
    /// assert!(t.definition().is_some());
    /// ```
    pub fn owned_from<S: schemars::JsonSchema>(name: impl Into<String>) -> Self {
        Self::owned(ResourceDefinition::from_type::<S>(name))
    }

    /// A type whose definition another driver owns: this driver receives its events
    /// but registers nothing and validates only by decoding into its `Spec`.
    ///
    /// ```
    /// let t = conveyor_sdk::ResourceType::foreign("pipeline");
    /// assert!(t.definition().is_none());
    /// ```
    pub fn foreign(name: impl Into<String>) -> Self {
        Self { name: name.into(), definition: None }
    }

    /// The type's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The definition, when this driver owns the type.
    pub fn definition(&self) -> Option<&ResourceDefinition> {
        self.definition.as_ref()
    }
}

/// One resource event handed to [`Driver::reconcile`]: the resource (raw and its typed
/// spec), the event, the run, a log handle and a cancellation signal.
pub struct Run<S> {
    spec: S,
    resource: Resource,
    event: Event,
    run_id: String,
    message_id: String,
    attempt: u64,
    log: LogHandle,
    cancel: CancellationToken,
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
    /// A run of `resource`, for calling [`Driver::reconcile`] yourself (a local run, a
    /// test): event `create`, a new run id, attempt 1, logging to standard output.
    ///
    /// ```
    /// use conveyor_sdk::{LogHandle, Resource, Run};
    /// let resource = Resource::new("hello", "greeting", serde_json::json!({"who": "you"}));
    /// let (log, lines) = LogHandle::memory();
    /// let run = Run::new(resource.clone(), resource.spec.clone()).with_log(log);
    /// assert_eq!(run.attempt(), 1);
    /// ```
    pub fn new(resource: Resource, spec: S) -> Self {
        Self {
            spec,
            resource,
            event: Event::Create,
            run_id: uuid::Uuid::new_v4().to_string(),
            message_id: String::new(),
            attempt: 1,
            log: LogHandle::stdout(),
            cancel: CancellationToken::new(),
        }
    }

    /// Sets the log handle (default: standard output).
    #[must_use]
    pub fn with_log(mut self, log: LogHandle) -> Self {
        self.log = log;
        self
    }

    /// Sets the event (default: `create`).
    #[must_use]
    pub fn with_event(mut self, event: Event) -> Self {
        self.event = event;
        self
    }

    /// Sets the run id (default: a new UUID v4).
    #[must_use]
    pub fn with_run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = run_id.into();
        self
    }

    /// Sets the cancellation signal (default: one that is never cancelled).
    #[must_use]
    pub fn with_cancellation(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    pub(crate) fn with_delivery(mut self, message_id: String, attempt: u64) -> Self {
        self.message_id = message_id;
        self.attempt = attempt;
        self
    }

    /// The resource's spec, decoded.
    pub fn spec(&self) -> &S {
        &self.spec
    }

    /// The resource as received, spec included as JSON.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// The event.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The run id; every log line and the result carry it.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The id of the message that delivered this event (empty outside the runtime).
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// Which delivery of the event this is: 1 the first time, more after a redelivery.
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    /// The run's log.
    pub fn log(&self) -> &LogHandle {
        &self.log
    }

    /// Whether the run has been asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the run is asked to stop (the driver is shutting down).
    ///
    /// ```no_run
    /// # async fn demo(run: conveyor_sdk::Run<serde_json::Value>) {
    /// tokio::select! {
    ///     _ = run.cancelled() => { /* clean up */ }
    ///     _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
    /// }
    /// # }
    /// ```
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// The cancellation token itself, to hand to other tasks.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Splits the run into its spec and the rest.
    pub fn into_spec(self) -> (S, Run<()>) {
        let Run { spec, resource, event, run_id, message_id, attempt, log, cancel } = self;
        (spec, Run { spec: (), resource, event, run_id, message_id, attempt, log, cancel })
    }
}
