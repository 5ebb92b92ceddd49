//! The messages of the Conveyor CI wire protocol, exactly as the server sends and reads them.
//!
//! Every type here round-trips with the real server's JSON: see the fixtures in the
//! repository's `conveyor-sdk/tests/fixtures/` and the tests at the bottom of this file.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The event value of the result a driver publishes, [`PipelineEvent::event`].
pub const DRIVER_RESULT_EVENT: &str = "driver.result";

/// The prefix of the metadata key under which the server stores a driver's result.
pub const DRIVER_RESULTS_PREFIX: &str = "driverresults.";

/// A Conveyor resource: what a user creates and a driver works on.
///
/// ```
/// let resource: conveyor_sdk::Resource = serde_json::from_str(
///     r#"{"name":"hello","resource":"pipeline","spec":{"steps":[]}}"#,
/// )?;
/// assert_eq!(resource.resource, "pipeline");
/// assert_eq!(resource.pipeline(), None);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// The resource's id, set by the server (empty in a resource not yet created).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The resource's name.
    pub name: String,
    /// The resource type, the name of its resource definition (e.g. `pipeline`).
    pub resource: String,
    /// The pipeline the resource belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Metadata; values are always strings (`version`, `driverresults.<driver>`, …).
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The specification, whatever the resource definition's schema allows.
    #[serde(default)]
    pub spec: Value,
}

impl Resource {
    /// A resource of type `resource` named `name` with the given spec and no metadata.
    ///
    /// ```
    /// let r = conveyor_sdk::Resource::new("hello", "pipeline", serde_json::json!({"steps": []}));
    /// assert_eq!(r.name, "hello");
    /// ```
    pub fn new(name: impl Into<String>, resource: impl Into<String>, spec: Value) -> Self {
        Self {
            id: String::new(),
            name: name.into(),
            resource: resource.into(),
            pipeline: None,
            metadata: BTreeMap::new(),
            spec,
        }
    }

    /// The pipeline this resource belongs to; `None` also when the server sent `""`.
    ///
    /// ```
    /// let mut r = conveyor_sdk::Resource::new("hello", "pipeline", serde_json::Value::Null);
    /// assert_eq!(r.pipeline(), None);
    /// r.pipeline = Some(String::new()); // what the server sends outside a pipeline
    /// assert_eq!(r.pipeline(), None);
    /// r.pipeline = Some("node-pipeline".into());
    /// assert_eq!(r.pipeline(), Some("node-pipeline"));
    /// ```
    pub fn pipeline(&self) -> Option<&str> {
        self.pipeline.as_deref().filter(|p| !p.is_empty())
    }

    /// The result an earlier pipeline step's driver left in the metadata
    /// (`metadata["driverresults.<driver>"]`), decoded.
    ///
    /// `None` when that driver left no result; `Some(Err(_))` when the stored text is
    /// not a result.
    ///
    /// ```
    /// let mut r = conveyor_sdk::Resource::new("hello", "pipeline", serde_json::Value::Null);
    /// r.metadata.insert(
    ///     "driverresults.git-cloner".into(),
    ///     r#"{"success":true,"message":"cloned","data":{"commit":"9f2c1e7"},"driver":"git-cloner"}"#.into(),
    /// );
    /// let cloned = r.driver_result("git-cloner").ok_or("git-cloner left no result")??;
    /// assert!(cloned.success);
    /// assert_eq!(cloned.data["commit"], "9f2c1e7");
    /// assert!(r.driver_result("tester").is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn driver_result(&self, driver: &str) -> Option<Result<DriverResultEvent, serde_json::Error>> {
        self.metadata.get(&format!("{DRIVER_RESULTS_PREFIX}{driver}")).map(|text| serde_json::from_str(text))
    }

    /// Every earlier driver result in the metadata, by driver name, each decoded.
    ///
    /// ```
    /// let mut r = conveyor_sdk::Resource::new("hello", "pipeline", serde_json::Value::Null);
    /// r.metadata.insert("version".into(), "2".into());
    /// r.metadata.insert(
    ///     "driverresults.git-cloner".into(),
    ///     r#"{"success":true,"message":"cloned","driver":"git-cloner"}"#.into(),
    /// );
    /// for (driver, result) in r.driver_results() {
    ///     assert_eq!(driver, "git-cloner");
    ///     assert!(result?.success);
    /// }
    /// assert_eq!(r.driver_results().count(), 1);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn driver_results(
        &self,
    ) -> impl Iterator<Item = (&str, Result<DriverResultEvent, serde_json::Error>)> + '_ {
        self.metadata.iter().filter_map(|(key, text)| {
            key.strip_prefix(DRIVER_RESULTS_PREFIX).map(|driver| (driver, serde_json::from_str(text)))
        })
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A resource definition: a resource type's name, version and the JSON Schema of its spec.
///
/// ```
/// let def: conveyor_sdk::ResourceDefinition = serde_json::from_str(
///     r#"{"name":"pipeline","version":"1.0.0","schema":{"type":"object"}}"#,
/// )?;
/// assert_eq!(def.name, "pipeline");
/// assert!(def.id.is_empty(), "the server sets the id");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceDefinition {
    /// The definition's id, set by the server.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The resource type this defines (e.g. `pipeline`).
    pub name: String,
    /// A human-readable description.
    #[serde(default)]
    pub description: String,
    /// The definition's version (e.g. `1.0.0`).
    #[serde(default)]
    pub version: String,
    /// The JSON Schema a resource's `spec` must satisfy.
    #[serde(default)]
    pub schema: Value,
}

impl ResourceDefinition {
    /// A definition of type `name` with the given JSON Schema, version `1.0.0`.
    ///
    /// ```
    /// let def = conveyor_sdk::ResourceDefinition::new("pipeline", serde_json::json!({"type": "object"}))
    ///     .description("Pipeline resource definition");
    /// assert_eq!(def.version, "1.0.0");
    /// ```
    pub fn new(name: impl Into<String>, schema: Value) -> Self {
        Self {
            id: String::new(),
            name: name.into(),
            description: String::new(),
            version: "1.0.0".into(),
            schema,
        }
    }

    /// A definition of type `name` whose schema is derived from the Rust type `S`:
    /// JSON Schema draft 7 with every subschema inlined (no `$ref`), which every
    /// validator, the server's included, understands.
    ///
    /// ```
    /// #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// struct Spec { image: Option<String>, steps: Vec<String> }
    ///
    /// let def = conveyor_sdk::ResourceDefinition::from_type::<Spec>("pipeline");
    /// assert_eq!(def.schema["required"], serde_json::json!(["steps"]));
    /// assert!(!def.schema.to_string().contains("$ref"));
    /// ```
    pub fn from_type<S: schemars::JsonSchema>(name: impl Into<String>) -> Self {
        let generator = schemars::generate::SchemaSettings::draft07()
            .with(|settings| settings.inline_subschemas = true)
            .into_generator();
        Self::new(name, generator.into_root_schema_for::<S>().to_value())
    }

    /// Sets the description (default: empty).
    ///
    /// ```
    /// let def = conveyor_sdk::ResourceDefinition::new("pipeline", serde_json::json!({}))
    ///     .description("Steps run in a container");
    /// assert_eq!(def.description, "Steps run in a container");
    /// ```
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets the version (default: `1.0.0`).
    ///
    /// ```
    /// let def = conveyor_sdk::ResourceDefinition::new("pipeline", serde_json::json!({})).version("2.1.0");
    /// assert_eq!(def.version, "2.1.0");
    /// ```
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }
}

/// What happened to a resource: the `event` field of a [`DriverMessage`].
///
/// ```
/// use conveyor_sdk::Event;
/// let event: Event = serde_json::from_str(r#""process""#)?;
/// assert_eq!(event, Event::Process);
/// let later: Event = serde_json::from_str(r#""delete""#)?;
/// assert_eq!(later, Event::Other("delete".into()), "unknown events keep their name");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// A new resource, or the first step of a pipeline.
    Create,
    /// A later pipeline step.
    Process,
    /// An event this version of the SDK does not know.
    Other(String),
}

impl Event {
    /// The event's name on the wire.
    ///
    /// ```
    /// use conveyor_sdk::Event;
    /// assert_eq!(Event::Create.as_str(), "create");
    /// assert_eq!(Event::from("delete").as_str(), "delete");
    /// ```
    pub fn as_str(&self) -> &str {
        match self {
            Event::Create => "create",
            Event::Process => "process",
            Event::Other(name) => name,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Event {
    fn from(name: &str) -> Self {
        match name {
            "create" => Event::Create,
            "process" => Event::Process,
            other => Event::Other(other.to_owned()),
        }
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(Event::from(name.as_str()))
    }
}

/// The message the server sends a driver over JetStream.
///
/// The server sends `payload` as the resource serialized into a JSON **string**; the
/// design document describes an object. Both decode; encoding writes a string, as the
/// server does.
///
/// ```
/// let text = r#"{"event":"create","payload":"{\"name\":\"a\",\"resource\":\"pipeline\",\"spec\":{}}","id":"1","run_id":"r"}"#;
/// let message: conveyor_sdk::DriverMessage = serde_json::from_str(text)?;
/// assert_eq!(message.payload.name, "a");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverMessage {
    /// The event.
    pub event: Event,
    /// The resource the event is about.
    #[serde(serialize_with = "payload_as_string", deserialize_with = "payload_from_either")]
    pub payload: Resource,
    /// The message id (24 hex characters on the real server).
    #[serde(default)]
    pub id: String,
    /// The run this message starts or continues.
    pub run_id: String,
}

impl DriverMessage {
    /// Decodes a message as the server sends it on a driver's subjects: the one
    /// decoder of the wire message, used by the runtime.
    ///
    /// When the bytes are not a valid message but name a run, the error keeps that
    /// run id, so that the run can be named in error reports.
    ///
    /// ```
    /// use conveyor_sdk::DriverMessage;
    /// let text = br#"{"event":"create","payload":"{\"name\":\"a\",\"resource\":\"pipeline\"}","id":"1","run_id":"r-1"}"#;
    /// let message = DriverMessage::decode(text)?;
    /// assert_eq!(message.run_id, "r-1");
    ///
    /// let error = DriverMessage::decode(br#"{"event":"create","payload":"[1]","run_id":"r-2"}"#).unwrap_err();
    /// assert_eq!(error.run_id(), Some("r-2"));
    /// # Ok::<(), conveyor_sdk::protocol::DecodeError>(())
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(bytes).map_err(|source| {
            // Only on failure: read the run id alone, to name the run in the report.
            #[derive(Deserialize)]
            struct RunId {
                run_id: String,
            }
            let run_id = serde_json::from_slice::<RunId>(bytes).ok().map(|r| r.run_id);
            DecodeError { run_id, source }
        })
    }
}

/// Bytes that are not a [`DriverMessage`]; the cause is in [`source`](std::error::Error::source).
///
/// ```
/// let error = conveyor_sdk::DriverMessage::decode(b"not json").unwrap_err();
/// assert_eq!(error.run_id(), None);
/// assert_eq!(error.to_string(), "not a DriverMessage");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{}", match .run_id {
    Some(run_id) => format!("the message of run {run_id} is not a DriverMessage"),
    None => "not a DriverMessage".to_owned(),
})]
pub struct DecodeError {
    run_id: Option<String>,
    #[source]
    source: serde_json::Error,
}

impl DecodeError {
    /// The run the message names, when it names one.
    ///
    /// ```
    /// let error = conveyor_sdk::DriverMessage::decode(br#"{"run_id":"r-9"}"#).unwrap_err();
    /// assert_eq!(error.run_id(), Some("r-9"));
    /// ```
    pub fn run_id(&self) -> Option<&str> {
        self.run_id.as_deref()
    }
}

fn payload_as_string<S: Serializer>(resource: &Resource, serializer: S) -> Result<S::Ok, S::Error> {
    let text = serde_json::to_string(resource).map_err(serde::ser::Error::custom)?;
    serializer.serialize_str(&text)
}

fn payload_from_either<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Resource, D::Error> {
    decode_payload(Value::deserialize(deserializer)?).map_err(D::Error::custom)
}

/// Decodes a `payload` value: a resource as a JSON string or as an object.
pub(crate) fn decode_payload(value: Value) -> Result<Resource, serde_json::Error> {
    match value {
        Value::String(text) => serde_json::from_str(&text),
        other => serde_json::from_value(other),
    }
}

/// One log line of a run, as stored by the server and relayed to live viewers.
///
/// The key is `runid` (no underscore), unlike [`DriverMessage::run_id`].
///
/// ```
/// let line: conveyor_sdk::Log = serde_json::from_str(
///     r#"{"runid":"r-1","driver":"command-runner","pipeline":"","timestamp":"2026-11-23T21:30:46.123456789Z","message":"total 4"}"#,
/// )?;
/// assert_eq!(line.message, "total 4");
/// assert_eq!(line.pipeline, None, "the server's empty pipeline means none");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Log {
    /// The run the line belongs to.
    pub runid: String,
    /// The driver that wrote it.
    pub driver: String,
    /// The resource's pipeline; omitted when it has none (the server reads `""`).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "empty_as_none")]
    pub pipeline: Option<String>,
    /// RFC 3339 UTC with nine fractional digits; sorts in emission order within a run.
    pub timestamp: String,
    /// The line, without its line break.
    pub message: String,
}

fn empty_as_none<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.filter(|s| !s.is_empty()))
}

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

/// The NATS subjects and stream names of the protocol.
pub mod subjects {
    /// The stream of resource events, created by the server (Interest retention).
    pub const MESSAGES_STREAM: &str = "messages";
    /// The stream of pipeline results, read by the server (WorkQueue retention).
    pub const PIPELINE_STREAM: &str = "pipeline-engine";
    /// The stream of stored log lines, read by the server (WorkQueue retention).
    pub const LOGS_STREAM: &str = "logs-engine";
    /// The subject a driver publishes its results to.
    pub const DRIVER_RESULT: &str = "pipelines.driver.result";

    /// `resources.<type>`: a resource created outside any pipeline.
    ///
    /// ```
    /// assert_eq!(conveyor_sdk::protocol::subjects::resource("pipeline"), "resources.pipeline");
    /// ```
    pub fn resource(resource_type: &str) -> String {
        format!("resources.{resource_type}")
    }

    /// `drivers.<driver>.resources.<type>`: a pipeline step addressed to a driver.
    ///
    /// ```
    /// use conveyor_sdk::protocol::subjects;
    /// assert_eq!(subjects::driver_resource("command-runner", "pipeline"), "drivers.command-runner.resources.pipeline");
    /// ```
    pub fn driver_resource(driver: &str, resource_type: &str) -> String {
        format!("drivers.{driver}.resources.{resource_type}")
    }

    /// `logs.<run_id>`: where log lines are stored (JetStream).
    ///
    /// ```
    /// assert_eq!(conveyor_sdk::protocol::subjects::logs("fbdf5edf"), "logs.fbdf5edf");
    /// ```
    pub fn logs(run_id: &str) -> String {
        format!("logs.{run_id}")
    }

    /// `live.logs.<run_id>.<driver>`: where log lines are relayed live (core NATS).
    ///
    /// ```
    /// use conveyor_sdk::protocol::subjects;
    /// assert_eq!(subjects::live_logs("fbdf5edf", "command-runner"), "live.logs.fbdf5edf.command-runner");
    /// ```
    pub fn live_logs(run_id: &str, driver: &str) -> String {
        format!("live.logs.{run_id}.{driver}")
    }

    /// `driver:<driver>:logs:<run_id>`: the live subject of servers before 2026-01-21.
    ///
    /// ```
    /// use conveyor_sdk::protocol::subjects;
    /// assert_eq!(subjects::legacy_live_logs("fbdf5edf", "command-runner"), "driver:command-runner:logs:fbdf5edf");
    /// ```
    pub fn legacy_live_logs(run_id: &str, driver: &str) -> String {
        format!("driver:{driver}:logs:{run_id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CREATE: &str = include_str!("../tests/fixtures/driver-message.create.json");
    const PROCESS: &str = include_str!("../tests/fixtures/driver-message.process.json");
    const RESULT: &str = include_str!("../tests/fixtures/pipeline-event.driver-result.json");
    const LOG: &str = include_str!("../tests/fixtures/log.json");
    const LOG_PIPELINE: &str = include_str!("../tests/fixtures/log.pipeline.json");
    const DEFINITION: &str = include_str!("../tests/fixtures/resource-definition.pipeline.json");
    const SEED: &str = include_str!("../tests/fixtures/resource.seed.json");

    #[test]
    fn create_fixture_decodes_with_payload_as_string() {
        let message: DriverMessage = serde_json::from_str(CREATE).unwrap();
        assert_eq!(message.event, Event::Create);
        assert_eq!(message.run_id, "fbdf5edf-66d4-46ce-859a-8ee44d6c9463");
        assert_eq!(message.id, "5f0c2a9e1b7d4c3e8a6f0b1d");
        assert_eq!(message.payload.name, "ubuntu-pipeline-6");
        assert_eq!(message.payload.pipeline(), None);
        assert_eq!(message.payload.spec["steps"][1]["command"], "ls -l && echo done");
    }

    #[test]
    fn process_fixture_exposes_earlier_driver_results() {
        let message: DriverMessage = serde_json::from_str(PROCESS).unwrap();
        assert_eq!(message.event, Event::Process);
        assert_eq!(message.payload.pipeline(), Some("node-pipeline"));
        let cloner = message.payload.driver_result("git-cloner").unwrap().unwrap();
        assert_eq!(cloner.driver, "git-cloner");
        assert_eq!(cloner.data, json!({"commit": "9f2c1e7"}));
        let all: Vec<_> = message.payload.driver_results().map(|(d, _)| d).collect();
        assert_eq!(all, ["git-cloner"]);
        assert!(message.payload.driver_result("other").is_none());
    }

    #[test]
    fn payload_as_object_decodes_too() {
        let mut value: Value = serde_json::from_str(CREATE).unwrap();
        let inner: Value = serde_json::from_str(value["payload"].as_str().unwrap()).unwrap();
        value["payload"] = inner;
        let message: DriverMessage = serde_json::from_value(value).unwrap();
        assert_eq!(message.payload.resource, "pipeline");
    }

    #[test]
    fn encoding_a_message_writes_payload_as_string_like_the_server() {
        let message: DriverMessage = serde_json::from_str(CREATE).unwrap();
        let encoded: Value = serde_json::to_value(&message).unwrap();
        let original: Value = serde_json::from_str(CREATE).unwrap();
        let payload = encoded["payload"].as_str().expect("payload is a string");
        let ours: Value = serde_json::from_str(payload).unwrap();
        let theirs: Value = serde_json::from_str(original["payload"].as_str().unwrap()).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(encoded["run_id"], original["run_id"]);
        assert_eq!(encoded["event"], "create");
    }

    #[test]
    fn payload_that_is_not_a_resource_is_an_error() {
        let text = r#"{"event":"create","payload":"{\"spec\":{}}","id":"1","run_id":"r"}"#;
        let error = serde_json::from_str::<DriverMessage>(text).unwrap_err();
        assert!(error.to_string().contains("name"), "{error}");
    }

    #[test]
    fn decodes_the_servers_message() {
        let message = DriverMessage::decode(CREATE.as_bytes()).unwrap();
        assert_eq!(message.event, Event::Create);
        assert_eq!(message.payload.name, "ubuntu-pipeline-6");
        assert_eq!(message.id, "5f0c2a9e1b7d4c3e8a6f0b1d");
    }

    #[test]
    fn rejects_what_is_not_a_driver_message() {
        for bytes in [&b"not json"[..], br#"{"event":"create"}"#] {
            let error = DriverMessage::decode(bytes).unwrap_err();
            assert_eq!(error.run_id(), None);
            assert_eq!(error.to_string(), "not a DriverMessage");
        }
        let error = DriverMessage::decode(br#"{"event":"create","payload":"[1,2]","id":"x","run_id":"r-1"}"#)
            .unwrap_err();
        assert_eq!(error.run_id(), Some("r-1"));
        assert!(error.to_string().contains("run r-1"), "{error}");
        let cause = std::error::Error::source(&error).expect("the JSON error is the source").to_string();
        assert!(cause.contains("invalid type"), "{cause}");
    }

    #[test]
    fn result_event_round_trips_exactly() {
        let event: PipelineEvent = serde_json::from_str(RESULT).unwrap();
        assert_eq!(event.event, DRIVER_RESULT_EVENT);
        assert!(!event.driverresult.success);
        assert_eq!(event.driverresult.driver, "command-runner");
        let original: Value = serde_json::from_str(RESULT).unwrap();
        assert_eq!(serde_json::to_value(&event).unwrap(), original);
    }

    #[test]
    fn result_event_built_from_a_driver_result_matches_the_fixture() {
        let fixture: Value = serde_json::from_str(RESULT).unwrap();
        let resource: Resource = serde_json::from_value(fixture["resource"].clone()).unwrap();
        let result = DriverResult::failure("step list-files failed with exit code 2")
            .with_data(fixture["driverresult"]["data"].clone());
        let event = PipelineEvent::driver_result(
            "fbdf5edf-66d4-46ce-859a-8ee44d6c9463",
            resource,
            result.into_event("command-runner"),
        );
        assert_eq!(serde_json::to_value(&event).unwrap(), fixture);
    }

    #[test]
    fn logs_round_trip_with_and_without_pipeline() {
        for text in [LOG, LOG_PIPELINE] {
            let log: Log = serde_json::from_str(text).unwrap();
            let original: Value = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_value(&log).unwrap(), original);
        }
        let log: Log = serde_json::from_str(LOG).unwrap();
        assert_eq!(log.pipeline, None);
        let with_empty: Log = serde_json::from_value(json!({
            "runid": "r", "driver": "d", "pipeline": "", "timestamp": "t", "message": "m"
        }))
        .unwrap();
        assert_eq!(with_empty.pipeline, None, "the server's empty pipeline means none");
    }

    #[test]
    fn definition_and_seed_resource_round_trip() {
        let def: ResourceDefinition = serde_json::from_str(DEFINITION).unwrap();
        assert_eq!(def.name, "pipeline");
        assert_eq!(serde_json::to_value(&def).unwrap(), serde_json::from_str::<Value>(DEFINITION).unwrap());
        let seed: Resource = serde_json::from_str(SEED).unwrap();
        assert!(seed.id.is_empty());
        assert_eq!(serde_json::to_value(&seed).unwrap(), serde_json::from_str::<Value>(SEED).unwrap());
    }

    #[test]
    fn unknown_events_are_kept_by_name() {
        let event: Event = serde_json::from_value(json!("delete")).unwrap();
        assert_eq!(event, Event::Other("delete".into()));
        assert_eq!(serde_json::to_value(&event).unwrap(), json!("delete"));
    }
}
