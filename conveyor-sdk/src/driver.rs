//! The [`Driver`] trait: the domain logic a driver author writes.

use std::fmt;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::log::LogHandle;
use crate::protocol::{DriverResult, Event, Resource, ResourceDefinition};

/// The error a reconcile may return: any error, boxed. It becomes a failed result
/// whose message is the error's text (with its sources).
///
/// `?` converts any error into it, and a string works too:
///
/// ```
/// use conveyor_sdk::{DriverResult, ReconcileError};
///
/// fn checkout(path: &str) -> Result<DriverResult, ReconcileError> {
///     if path.is_empty() {
///         return Err("no path given".into());
///     }
///     let _meta = std::fs::metadata(path)?; // an io::Error becomes a ReconcileError
///     Ok(DriverResult::success("checked out"))
/// }
/// let error = checkout("").unwrap_err();
/// assert_eq!(error.to_string(), "no path given");
/// ```
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
    ///
    /// ```
    /// # use conveyor_sdk::{Driver, DriverResult, ReconcileError, ResourceType, Run};
    /// struct Greeter;
    ///
    /// #[async_trait::async_trait]
    /// impl Driver for Greeter {
    ///     type Spec = serde_json::Value;
    ///     fn name(&self) -> &str {
    ///         "greeter" // consumer `greeter`, subjects `drivers.greeter.resources.<type>`
    ///     }
    ///     # fn resources(&self) -> Vec<ResourceType> { vec![ResourceType::foreign("greeting")] }
    ///     # async fn reconcile(&self, _: Run<serde_json::Value>) -> Result<DriverResult, ReconcileError> {
    ///     #     Ok(DriverResult::success("ok"))
    ///     # }
    /// }
    /// assert_eq!(Greeter.name(), "greeter");
    /// ```
    fn name(&self) -> &str;

    /// The resource types this driver handles.
    ///
    /// ```
    /// # use conveyor_sdk::{Driver, DriverResult, ReconcileError, ResourceType, Run};
    /// #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// struct Greeting { who: String }
    ///
    /// struct Greeter;
    ///
    /// #[async_trait::async_trait]
    /// impl Driver for Greeter {
    ///     type Spec = Greeting;
    ///     # fn name(&self) -> &str { "greeter" }
    ///     fn resources(&self) -> Vec<ResourceType> {
    ///         // Owned: its definition is registered and every spec is checked against it.
    ///         vec![ResourceType::owned_from::<Greeting>("greeting")]
    ///     }
    ///     # async fn reconcile(&self, _: Run<Greeting>) -> Result<DriverResult, ReconcileError> {
    ///     #     Ok(DriverResult::success("ok"))
    ///     # }
    /// }
    /// assert_eq!(Greeter.resources()[0].name(), "greeting");
    /// ```
    fn resources(&self) -> Vec<ResourceType>;

    /// Does the work for one resource event.
    ///
    /// An `Err` or a panic becomes a failed result. When `run` is cancelled
    /// ([`Run::cancelled`]) the driver is shutting down: stop, clean up and return
    /// soon; whatever is returned then is discarded and the event is delivered again
    /// later.
    ///
    /// Outside the runtime, call it yourself with a [`Run::new`], e.g. in a unit test:
    ///
    /// ```
    /// # use conveyor_sdk::{Driver, DriverResult, LogHandle, ReconcileError, Resource, ResourceType, Run};
    /// struct Greeter;
    ///
    /// #[async_trait::async_trait]
    /// impl Driver for Greeter {
    ///     type Spec = serde_json::Value;
    ///     # fn name(&self) -> &str { "greeter" }
    ///     # fn resources(&self) -> Vec<ResourceType> { vec![ResourceType::foreign("greeting")] }
    ///     async fn reconcile(&self, run: Run<serde_json::Value>) -> Result<DriverResult, ReconcileError> {
    ///         let who = run.spec()["who"].as_str().ok_or("spec.who is missing")?;
    ///         run.log().log(format!("hello, {who}")).await;
    ///         Ok(DriverResult::success("greeted"))
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), ReconcileError> {
    /// let resource = Resource::new("hi", "greeting", serde_json::json!({"who": "you"}));
    /// let (log, lines) = LogHandle::memory();
    /// let result = Greeter.reconcile(Run::new(resource.clone(), resource.spec).with_log(log)).await?;
    /// assert!(result.success);
    /// assert_eq!(lines.lines(), ["hello, you"]);
    /// # Ok(()) }
    /// ```
    async fn reconcile(&self, run: Run<Self::Spec>) -> Result<DriverResult, ReconcileError>;

    /// Whether the driver can take runs now, beside the runtime's own conditions (NATS
    /// connected, consumer bound): `/readyz` answers 503 with the error's text while
    /// this fails (feature `metrics`, [`Config::metrics_listen`](crate::Config)). The
    /// default is always ready. Called only by `/readyz`, never on the way of a run;
    /// one that takes longer than 5 s counts as not ready.
    ///
    /// ```
    /// # use conveyor_sdk::{Driver, DriverResult, ReconcileError, ResourceType, Run};
    /// struct Builder {
    ///     workspace: std::path::PathBuf,
    /// }
    ///
    /// #[async_trait::async_trait]
    /// impl Driver for Builder {
    ///     type Spec = serde_json::Value;
    ///     # fn name(&self) -> &str { "builder" }
    ///     # fn resources(&self) -> Vec<ResourceType> { vec![ResourceType::foreign("build")] }
    ///     # async fn reconcile(&self, _: Run<serde_json::Value>) -> Result<DriverResult, ReconcileError> {
    ///     #     Ok(DriverResult::success("ok"))
    ///     # }
    ///     async fn ready(&self) -> Result<(), ReconcileError> {
    ///         tokio::fs::metadata(&self.workspace).await?; // e.g. a volume that must be mounted
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let builder = Builder { workspace: "/no/such/volume".into() };
    /// assert!(builder.ready().await.is_err());
    /// # }
    /// ```
    async fn ready(&self) -> Result<(), ReconcileError> {
        Ok(())
    }
}

/// A resource type a driver handles, with the definition it registers if it owns it.
///
/// ```
/// use conveyor_sdk::ResourceType;
/// let owned = ResourceType::owned_from::<serde_json::Value>("greeting");
/// let foreign = ResourceType::foreign("pipeline");
/// assert!(owned.definition().is_some());
/// assert!(foreign.definition().is_none());
/// ```
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
    ///
    /// ```
    /// assert_eq!(conveyor_sdk::ResourceType::foreign("pipeline").name(), "pipeline");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The definition, when this driver owns the type.
    ///
    /// ```
    /// use conveyor_sdk::{ResourceDefinition, ResourceType};
    /// let t = ResourceType::owned(ResourceDefinition::new("pipeline", serde_json::json!({})).version("2.0.0"));
    /// assert_eq!(t.definition().map(|d| d.version.as_str()), Some("2.0.0"));
    /// ```
    pub fn definition(&self) -> Option<&ResourceDefinition> {
        self.definition.as_ref()
    }
}

/// One resource event handed to [`Driver::reconcile`]: the resource (raw and its typed
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
            log: LogHandle::stdout(),
            cancel: CancellationToken::new(),
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
        self.cancel = cancel;
        self
    }

    pub(crate) fn with_delivery(mut self, message_id: String, attempt: u64) -> Self {
        self.message_id = message_id;
        self.attempt = attempt;
        self
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
        self.cancel.cancelled().await
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
        &self.cancel
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
        let Run { spec, resource, event, run_id, message_id, attempt, log, cancel } = self;
        (spec, Run { spec: (), resource, event, run_id, message_id, attempt, log, cancel })
    }
}
