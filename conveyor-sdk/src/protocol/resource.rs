//! Resources and resource definitions.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::result::DriverResultEvent;
use super::DRIVER_RESULTS_PREFIX;

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
    /// Metadata, any JSON by key. The server keeps `version` (a string, `"1"`, `"2"`,
    /// …); a 0.6.x engine keeps earlier steps' results as strings under
    /// `driverresults.<driver>`, newer engines keep booleans (`deleting`), strings
    /// (`current_pipeline_step`) and objects (`driverresults`). Read them with
    /// [`version`](Self::version), [`metadata_str`](Self::metadata_str) and
    /// [`driver_result`](Self::driver_result).
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Value>,
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

    /// The metadata value under `key` when it is a string.
    ///
    /// ```
    /// let mut r = conveyor_sdk::Resource::new("hello", "pipeline", serde_json::Value::Null);
    /// r.metadata.insert("current_pipeline_step".into(), "build".into());
    /// r.metadata.insert("deleting".into(), true.into());
    /// assert_eq!(r.metadata_str("current_pipeline_step"), Some("build"));
    /// assert_eq!(r.metadata_str("deleting"), None, "not a string");
    /// ```
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }

    /// The resource's version, `metadata.version`, when it is a whole number (the server
    /// writes it as a string, `"2"`; a number is read too).
    ///
    /// ```
    /// let mut r = conveyor_sdk::Resource::new("hello", "pipeline", serde_json::Value::Null);
    /// assert_eq!(r.version(), None);
    /// r.metadata.insert("version".into(), "3".into());
    /// assert_eq!(r.version(), Some(3));
    /// r.metadata.insert("version".into(), 4.into());
    /// assert_eq!(r.version(), Some(4));
    /// r.metadata.insert("version".into(), "v1.2".into());
    /// assert_eq!(r.version(), None);
    /// ```
    pub fn version(&self) -> Option<u64> {
        match self.metadata.get(VERSION_KEY)? {
            Value::String(text) => text.trim().parse().ok(),
            Value::Number(number) => number.as_u64(),
            _ => None,
        }
    }

    /// The result an earlier pipeline step's driver left in the metadata, decoded: from
    /// the `driverresults` object of newer engines (`{"<driver>": {…}}`), else from the
    /// `driverresults.<driver>` string of 0.6.x.
    ///
    /// `None` when that driver left no result; `Some(Err(_))` when what is stored is
    /// not a result.
    ///
    /// ```
    /// let mut r = conveyor_sdk::Resource::new("hello", "pipeline", serde_json::Value::Null);
    /// // As a 0.6.x engine keeps it: a JSON text.
    /// r.metadata.insert(
    ///     "driverresults.git-cloner".into(),
    ///     r#"{"success":true,"message":"cloned","data":{"commit":"9f2c1e7"},"driver":"git-cloner"}"#.into(),
    /// );
    /// // As newer engines keep it: an object by driver.
    /// r.metadata.insert(
    ///     "driverresults".into(),
    ///     serde_json::json!({"tester": {"success": false, "message": "2 failed", "driver": "tester"}}),
    /// );
    /// let cloned = r.driver_result("git-cloner").ok_or("git-cloner left no result")??;
    /// assert_eq!(cloned.data["commit"], "9f2c1e7");
    /// let tested = r.driver_result("tester").ok_or("tester left no result")??;
    /// assert!(!tested.success);
    /// assert!(r.driver_result("deployer").is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn driver_result(&self, driver: &str) -> Option<Result<DriverResultEvent, serde_json::Error>> {
        let newer = self.metadata.get(DRIVER_RESULTS_KEY).and_then(|all| all.get(driver));
        newer
            .or_else(|| self.metadata.get(&format!("{DRIVER_RESULTS_PREFIX}{driver}")))
            .map(decode_driver_result)
    }

    /// Every earlier driver result in the metadata, by driver name, each decoded: those of
    /// the `driverresults` object first, then the `driverresults.<driver>` strings of
    /// drivers not in it.
    ///
    /// ```
    /// let mut r = conveyor_sdk::Resource::new("hello", "pipeline", serde_json::Value::Null);
    /// r.metadata.insert("version".into(), "2".into());
    /// r.metadata.insert(
    ///     "driverresults.git-cloner".into(),
    ///     r#"{"success":true,"message":"cloned","driver":"git-cloner"}"#.into(),
    /// );
    /// r.metadata.insert(
    ///     "driverresults".into(),
    ///     serde_json::json!({"tester": {"success": true, "message": "ok", "driver": "tester"}}),
    /// );
    /// let drivers: Vec<&str> = r.driver_results().map(|(driver, _)| driver).collect();
    /// assert_eq!(drivers, ["tester", "git-cloner"]);
    /// for (_, result) in r.driver_results() {
    ///     assert!(result?.success);
    /// }
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn driver_results(
        &self,
    ) -> impl Iterator<Item = (&str, Result<DriverResultEvent, serde_json::Error>)> + '_ {
        let newer = self.metadata.get(DRIVER_RESULTS_KEY).and_then(Value::as_object);
        let in_newer = move |driver: &str| newer.is_some_and(|all| all.contains_key(driver));
        let objects =
            newer.into_iter().flatten().map(|(driver, value)| (driver.as_str(), decode_driver_result(value)));
        let texts = self.metadata.iter().filter_map(move |(key, value)| {
            let driver = key.strip_prefix(DRIVER_RESULTS_PREFIX)?;
            (!in_newer(driver)).then(|| (driver, decode_driver_result(value)))
        });
        objects.chain(texts)
    }
}

/// The metadata key of a resource's version.
const VERSION_KEY: &str = "version";

/// The metadata key under which newer engines keep every earlier step's result, by driver.
const DRIVER_RESULTS_KEY: &str = "driverresults";

/// A stored driver result: a JSON text (0.6.x) or an object (newer engines).
fn decode_driver_result(value: &Value) -> Result<DriverResultEvent, serde_json::Error> {
    match value {
        Value::String(text) => serde_json::from_str(text),
        other => DriverResultEvent::deserialize(other),
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
