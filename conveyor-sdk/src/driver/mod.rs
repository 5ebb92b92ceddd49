//! The [`Driver`] trait: the domain logic a driver author writes (this file), the
//! [`Run`] it is handed (`run.rs`) and the [`ReconcileError`] it may return
//! (`error.rs`).

mod error;
mod run;

use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

pub use error::{BoxError, ReconcileError};
pub use run::{CancelReason, Run, RunCancellation};

use crate::protocol::{DriverResult, ResourceDefinition};

/// The message of [`Driver::cleanup`]'s default result.
pub const NOTHING_TO_CLEAN_UP: &str = "deleted; there was nothing to clean up";

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
    /// An `Err` or a panic becomes a failed result;
    /// [`ReconcileError::retry_after`] asks for another attempt later instead. When `run`
    /// is cancelled ([`Run::cancelled`]), stop, clean up and return within
    /// [`Config::cancel_timeout`](crate::Config::cancel_timeout);
    /// [`Run::cancel_reason`] says why: the driver shuts down (whatever is returned is
    /// discarded and the event is delivered again later), the run's
    /// [`deadline`](Driver::deadline) passed (a failure result says it timed out), or
    /// someone cancelled the run (a failure result says `cancelled`).
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

    /// Cleans up after a deleted resource ([`Event::Delete`](crate::Event::Delete)),
    /// in the spirit of a Kubernetes finalizer: remove what [`reconcile`](Driver::reconcile)
    /// left outside (deployments, caches, records). The server waits for the result of
    /// every deletion, so answer promptly; a failure keeps the resource (in a pipeline,
    /// the engine marks the deletion failed).
    ///
    /// The spec is `None` when the deleted resource's spec does not validate (a spec
    /// older than today's schema): a deletion is answered all the same. When the
    /// deletion cancelled a run of the same resource ([`Config::supersede`](crate::Config::supersede)),
    /// [`Run::superseded_run`] names it.
    ///
    /// Default: success at once, saying there was nothing to clean up.
    ///
    /// ```no_run
    /// # use conveyor_sdk::{Driver, DriverResult, ReconcileError, ResourceType, Run};
    /// # struct Deployer;
    /// # #[derive(serde::Deserialize)] struct Spec { target: String }
    /// #[async_trait::async_trait]
    /// impl Driver for Deployer {
    ///     type Spec = Spec;
    /// #   fn name(&self) -> &str { "deployer" }
    /// #   fn resources(&self) -> Vec<ResourceType> { vec![ResourceType::foreign("app")] }
    /// #   async fn reconcile(&self, run: Run<Spec>) -> Result<DriverResult, ReconcileError> {
    /// #       Ok(DriverResult::success("deployed"))
    /// #   }
    ///     // reconcile deploys to `spec.target` …
    ///
    ///     async fn cleanup(&self, run: Run<Option<Spec>>) -> Result<DriverResult, ReconcileError> {
    ///         let Some(spec) = run.spec() else {
    ///             return Ok(DriverResult::success("deleted; its spec named no target"));
    ///         };
    ///         run.log().log(format!("undeploying from {}", spec.target)).await;
    ///         Ok(DriverResult::success(format!("undeployed from {}", spec.target)))
    ///     }
    /// }
    /// ```
    async fn cleanup(&self, run: Run<Option<Self::Spec>>) -> Result<DriverResult, ReconcileError> {
        let _ = run;
        Ok(DriverResult::success(NOTHING_TO_CLEAN_UP))
    }

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

    /// How long `run` may take, from the start of its reconcile; `None` (the default)
    /// for [`Config::run_deadline`](crate::Config::run_deadline) (1 hour unless set).
    /// When it passes the run is cancelled with [`CancelReason::Deadline`], has
    /// [`Config::cancel_timeout`](crate::Config::cancel_timeout) to clean up, and
    /// ends with a failure result `timed out after …`. Called once per delivery, before
    /// reconcile.
    ///
    /// ```
    /// # use conveyor_sdk::{Driver, DriverResult, ReconcileError, ResourceType, Run};
    /// use std::time::Duration;
    ///
    /// #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// struct Build { timeout_seconds: Option<u64> }
    ///
    /// struct Builder;
    ///
    /// #[async_trait::async_trait]
    /// impl Driver for Builder {
    ///     type Spec = Build;
    ///     # fn name(&self) -> &str { "builder" }
    ///     # fn resources(&self) -> Vec<ResourceType> { vec![ResourceType::owned_from::<Build>("build")] }
    ///     # async fn reconcile(&self, _: Run<Build>) -> Result<DriverResult, ReconcileError> {
    ///     #     Ok(DriverResult::success("ok"))
    ///     # }
    ///     fn deadline(&self, run: &Run<Build>) -> Option<Duration> {
    ///         run.spec().timeout_seconds.map(Duration::from_secs)
    ///     }
    /// }
    /// let resource = conveyor_sdk::Resource::new("b", "build", serde_json::json!({}));
    /// let run = Run::new(resource, Build { timeout_seconds: Some(600) });
    /// assert_eq!(Builder.deadline(&run), Some(Duration::from_secs(600)));
    /// ```
    fn deadline(&self, run: &Run<Self::Spec>) -> Option<Duration> {
        let _ = run;
        None
    }

    /// Housekeeping beside the runs, every
    /// [`Config::housekeeping_interval`](crate::Config::housekeeping_interval) (30 s
    /// unless set), the first time when serving begins: for example removing what
    /// replicas that are gone left behind, told by
    /// [`Replicas::alive`](crate::liveness::Replicas::alive) (with
    /// [`Config::liveness_ttl`](crate::Config::liveness_ttl) set). The default does
    /// nothing. A slow housekeeping delays the next one, never a run; one in progress
    /// when serving ends is stopped.
    ///
    /// ```
    /// # use conveyor_sdk::{Driver, DriverResult, ReconcileError, ResourceType, Run};
    /// use conveyor_sdk::liveness::{record_key, Replicas};
    ///
    /// struct Builder;
    ///
    /// #[async_trait::async_trait]
    /// impl Driver for Builder {
    ///     type Spec = serde_json::Value;
    ///     # fn name(&self) -> &str { "builder" }
    ///     # fn resources(&self) -> Vec<ResourceType> { vec![ResourceType::foreign("build")] }
    ///     # async fn reconcile(&self, _: Run<serde_json::Value>) -> Result<DriverResult, ReconcileError> {
    ///     #     Ok(DriverResult::success("ok"))
    ///     # }
    ///     async fn housekeeping(&self, replicas: &Replicas) {
    ///         let Ok(alive) = replicas.alive().await else { return };
    ///         for owner in ["a-replica-that-made-something"] {
    ///             if owner != replicas.instance() && !alive.contains(&record_key(replicas.driver(), owner)) {
    ///                 // remove what `owner` left behind
    ///             }
    ///         }
    ///     }
    /// }
    /// ```
    async fn housekeeping(&self, replicas: &crate::liveness::Replicas) {
        let _ = replicas;
    }

    /// Called once when serving ends, after the last run ended (or was cancelled at
    /// the end of the grace period) and before this replica's liveness record is
    /// deleted: wait here for the driver's own background work (removals, uploads).
    /// The runtime returns after it, so nothing is left for the caller to call before
    /// the process exits. The default does nothing.
    ///
    /// ```
    /// # use conveyor_sdk::{Driver, DriverResult, ReconcileError, ResourceType, Run};
    /// struct Builder {
    ///     uploads: tokio::sync::Mutex<tokio::task::JoinSet<()>>,
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
    ///     async fn shutdown(&self) {
    ///         let mut uploads = self.uploads.lock().await;
    ///         while uploads.join_next().await.is_some() {}
    ///     }
    /// }
    /// ```
    async fn shutdown(&self) {}
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
