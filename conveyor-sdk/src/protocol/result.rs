//! What a driver reports: [`DriverResult`] and the `driver.result` event that carries it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::resource::Resource;
use super::DRIVER_RESULT_EVENT;

/// The outcome of a reconcile: `{"success", "message", "data"}`.
///
/// ```
/// use conveyor_sdk::DriverResult;
/// let ok = DriverResult::success("built").with_data(serde_json::json!({"artifacts": 2}));
/// assert!(ok.success);
/// let failed = DriverResult::failure("step test failed with exit code 1");
/// assert!(!failed.success);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverResult {
    /// Whether the work succeeded; a pipeline goes on to its next step only if it did.
    pub success: bool,
    /// A human-readable summary.
    pub message: String,
    /// Anything the driver wants to hand to later steps (`null` when nothing).
    #[serde(default)]
    pub data: Value,
}

impl DriverResult {
    /// A successful result with the given message and no data.
    ///
    /// ```
    /// let result = conveyor_sdk::DriverResult::success("built");
    /// assert!(result.success);
    /// assert!(result.data.is_null());
    /// ```
    pub fn success(message: impl Into<String>) -> Self {
        Self { success: true, message: message.into(), data: Value::Null }
    }

    /// A failed result with the given message and no data.
    ///
    /// ```
    /// let result = conveyor_sdk::DriverResult::failure("step test failed with exit code 1");
    /// assert!(!result.success);
    /// assert_eq!(result.message, "step test failed with exit code 1");
    /// ```
    pub fn failure(message: impl Into<String>) -> Self {
        Self { success: false, message: message.into(), data: Value::Null }
    }

    /// Sets the result's data (default: `null`); later pipeline steps read it with
    /// [`Resource::driver_result`].
    ///
    /// ```
    /// let result = conveyor_sdk::DriverResult::success("cloned")
    ///     .with_data(serde_json::json!({"commit": "9f2c1e7"}));
    /// assert_eq!(result.data["commit"], "9f2c1e7");
    /// ```
    #[must_use]
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    /// The result as published by driver `driver`.
    ///
    /// ```
    /// let event = conveyor_sdk::DriverResult::success("built").into_event("command-runner");
    /// assert_eq!(event.driver, "command-runner");
    /// assert!(event.success);
    /// ```
    pub fn into_event(self, driver: impl Into<String>) -> DriverResultEvent {
        DriverResultEvent {
            success: self.success,
            message: self.message,
            data: self.data,
            driver: driver.into(),
        }
    }
}

/// A [`DriverResult`] with the name of the driver that produced it.
///
/// ```
/// let event: conveyor_sdk::DriverResultEvent = serde_json::from_str(
///     r#"{"success":false,"message":"exit code 2","data":null,"driver":"command-runner"}"#,
/// )?;
/// assert!(!event.success);
/// assert_eq!(event.driver, "command-runner");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverResultEvent {
    /// Whether the work succeeded.
    pub success: bool,
    /// A human-readable summary.
    pub message: String,
    /// The driver's data.
    #[serde(default)]
    pub data: Value,
    /// The driver's name; the pipeline engine finds the current step by it.
    pub driver: String,
}

/// What a driver publishes on `pipelines.driver.result` when it has finished a run.
///
/// ```
/// use conveyor_sdk::protocol::{PipelineEvent, DRIVER_RESULT_EVENT};
/// use conveyor_sdk::{DriverResult, Resource};
///
/// let resource = Resource::new("hello", "pipeline", serde_json::json!({"steps": []}));
/// let event = PipelineEvent::driver_result("run-1", resource, DriverResult::success("ok").into_event("greeter"));
/// let json = serde_json::to_value(&event)?;
/// assert_eq!(json["event"], DRIVER_RESULT_EVENT);
/// assert_eq!(json["driverresult"]["driver"], "greeter");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineEvent {
    /// Always [`DRIVER_RESULT_EVENT`].
    pub event: String,
    /// The run.
    pub run_id: String,
    /// The resource as the driver received it.
    pub resource: Resource,
    /// The result.
    pub driverresult: DriverResultEvent,
}

impl PipelineEvent {
    /// The `driver.result` event for a run.
    ///
    /// ```
    /// use conveyor_sdk::{DriverResult, PipelineEvent, Resource};
    /// let resource = Resource::new("hello", "pipeline", serde_json::Value::Null);
    /// let event = PipelineEvent::driver_result("run-1", resource, DriverResult::failure("no").into_event("greeter"));
    /// assert_eq!(event.event, "driver.result");
    /// assert_eq!(event.run_id, "run-1");
    /// ```
    pub fn driver_result(run_id: impl Into<String>, resource: Resource, result: DriverResultEvent) -> Self {
        Self { event: DRIVER_RESULT_EVENT.to_owned(), run_id: run_id.into(), resource, driverresult: result }
    }
}
