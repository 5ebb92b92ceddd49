//! The REST contract's own types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::protocol::Resource;

/// The answer to `POST /resources/`, from [`Client::create_resource`](super::Client::create_resource).
///
/// ```
/// let created: conveyor_sdk::client::CreatedResource = serde_json::from_str(
///     r#"{"message":"Resource created successfully","name":"hello","runid":"fbdf5edf","version":"1"}"#,
/// )?;
/// assert_eq!(created.runid, "fbdf5edf");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedResource {
    /// `Resource created successfully`.
    pub message: String,
    /// The resource's name.
    pub name: String,
    /// The run the resource started.
    pub runid: String,
    /// The resource's version.
    #[serde(default)]
    pub version: String,
}

/// The answer to `PUT /resources/{type}/{name}`, from
/// [`Client::update_resource`](super::Client::update_resource): the version the server
/// kept and the run its `update` started.
///
/// Today's servers (and the dev server) answer as to a create, with the resource
/// beside the run id: `{"message", "name", "runid", "version", "resource": {…}}`.
/// 0.6.x servers answer the resource alone and name no run (they start one all the
/// same): `runid` is then `None`. A resource with `runid` among its own fields is read
/// as well.
///
/// ```
/// use conveyor_sdk::client::UpdatedResource;
/// let today: UpdatedResource = serde_json::from_str(
///     r#"{"message":"Resource updated successfully","name":"hello","runid":"0b8e5a57","version":"2",
///        "resource":{"id":"3a6f","name":"hello","resource":"pipeline","metadata":{"version":"2"},"spec":{}}}"#,
/// )?;
/// assert_eq!(today.runid.as_deref(), Some("0b8e5a57"));
/// assert_eq!(today.resource.version(), Some(2));
///
/// let older: UpdatedResource = serde_json::from_str(
///     r#"{"id":"3a6f","name":"hello","resource":"pipeline","metadata":{"version":"2"},"spec":{}}"#,
/// )?;
/// assert_eq!(older.runid, None, "a 0.6.x server does not say which run the update started");
/// assert_eq!(older.resource.name, "hello");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct UpdatedResource {
    /// The version kept (its number in `metadata.version`).
    pub resource: Resource,
    /// The run the update started; `None` when the server did not say (0.6.x).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runid: Option<String>,
    /// `Resource updated successfully`; empty when the server said nothing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl TryFrom<serde_json::Value> for UpdatedResource {
    type Error = serde_json::Error;

    fn try_from(answer: serde_json::Value) -> Result<Self, Self::Error> {
        use serde::de::Error as _;
        use serde_json::Value;
        let Value::Object(mut fields) = answer else {
            return Err(Self::Error::custom("the answer to an update is not a JSON object"));
        };
        let runid = match fields.remove("runid") {
            Some(Value::String(runid)) if !runid.is_empty() => Some(runid),
            None | Some(Value::Null | Value::String(_)) => None,
            Some(other) => return Err(Self::Error::custom(format!("runid is not a string: {other}"))),
        };
        let message = fields.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
        // Beside the run id, `resource` is the resource; in a resource, its type's name.
        let resource = match fields.remove("resource") {
            Some(nested @ Value::Object(_)) => serde_json::from_value(nested)?,
            type_name => {
                if let Some(type_name) = type_name {
                    fields.insert("resource".into(), type_name);
                }
                serde_json::from_value(Value::Object(fields))?
            }
        };
        Ok(Self { resource, runid, message })
    }
}

/// The answer to `GET /health`, from [`Client::health`](super::Client::health).
///
/// ```
/// let health: conveyor_sdk::client::Health = serde_json::from_str(r#"{"status":"healthy","time":1764324646}"#)?;
/// assert_eq!(health.status, "healthy");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `healthy`.
    pub status: String,
    /// The server's clock, Unix seconds.
    #[serde(default)]
    pub time: i64,
}

/// A pipeline: the drivers a resource of its type goes through, in order.
///
/// ```
/// use conveyor_sdk::client::{Pipeline, PipelineStep};
/// let pipeline = Pipeline::new("build-and-report", "pipeline")
///     .step(PipelineStep::new("build", "command-runner"))
///     .step(PipelineStep::new("report", "reporter"));
/// assert_eq!(pipeline.steps.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// The pipeline's name.
    pub name: String,
    /// A description.
    #[serde(default)]
    pub description: String,
    /// Its version.
    #[serde(default)]
    pub version: String,
    /// The resource type it runs.
    #[serde(default)]
    pub resource: String,
    /// The steps, in order.
    #[serde(default)]
    pub steps: Vec<PipelineStep>,
    /// Metadata, any JSON by key.
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

impl Pipeline {
    /// A pipeline named `name` for resources of type `resource`, without steps.
    ///
    /// ```
    /// let pipeline = conveyor_sdk::client::Pipeline::new("build-and-report", "pipeline");
    /// assert_eq!(pipeline.resource, "pipeline");
    /// assert!(pipeline.steps.is_empty());
    /// ```
    pub fn new(name: impl Into<String>, resource: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            version: "1".into(),
            resource: resource.into(),
            steps: Vec::new(),
            metadata: BTreeMap::new(),
        }
    }

    /// Adds a step at the end.
    ///
    /// ```
    /// use conveyor_sdk::client::{Pipeline, PipelineStep};
    /// let pipeline = Pipeline::new("p", "pipeline")
    ///     .step(PipelineStep::new("build", "command-runner"))
    ///     .step(PipelineStep::new("report", "reporter"));
    /// assert_eq!(pipeline.steps[1].driver, "reporter");
    /// ```
    #[must_use]
    pub fn step(mut self, step: PipelineStep) -> Self {
        self.steps.push(step);
        self
    }
}

/// One step of a [`Pipeline`]: a driver.
///
/// ```
/// let step: conveyor_sdk::client::PipelineStep =
///     serde_json::from_str(r#"{"id":"s1","name":"build","driver":"command-runner"}"#)?;
/// assert_eq!(step.driver, "command-runner");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineStep {
    /// The step's id.
    #[serde(default)]
    pub id: String,
    /// The step's name.
    pub name: String,
    /// The driver that runs it.
    pub driver: String,
}

impl PipelineStep {
    /// A step `name` run by `driver`; its id is its name.
    ///
    /// ```
    /// let step = conveyor_sdk::client::PipelineStep::new("build", "command-runner");
    /// assert_eq!(step.id, "build");
    /// ```
    pub fn new(name: impl Into<String>, driver: impl Into<String>) -> Self {
        let name = name.into();
        Self { id: name.clone(), name, driver: driver.into() }
    }
}

/// Which stored log lines `GET /logs` returns.
///
/// ```
/// let query = conveyor_sdk::client::LogQuery::run("fbdf5edf").driver("command-runner");
/// assert_eq!(query.runid.as_deref(), Some("fbdf5edf"));
/// assert_eq!(query.pipeline, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Lines of this pipeline.
    pub pipeline: Option<String>,
    /// Lines of this driver.
    pub driver: Option<String>,
    /// Lines of this run.
    pub runid: Option<String>,
}

impl LogQuery {
    /// The lines of one run.
    ///
    /// ```
    /// let query = conveyor_sdk::client::LogQuery::run("fbdf5edf");
    /// assert_eq!(query.runid.as_deref(), Some("fbdf5edf"));
    /// ```
    pub fn run(run_id: impl Into<String>) -> Self {
        Self { runid: Some(run_id.into()), ..Self::default() }
    }

    /// Only the lines of `driver`.
    ///
    /// ```
    /// let query = conveyor_sdk::client::LogQuery::default().driver("command-runner");
    /// assert_eq!(query.driver.as_deref(), Some("command-runner"));
    /// ```
    #[must_use]
    pub fn driver(mut self, driver: impl Into<String>) -> Self {
        self.driver = Some(driver.into());
        self
    }

    /// Only the lines of `pipeline`.
    ///
    /// ```
    /// let query = conveyor_sdk::client::LogQuery::default().pipeline("node-pipeline");
    /// assert_eq!(query.pipeline.as_deref(), Some("node-pipeline"));
    /// ```
    #[must_use]
    pub fn pipeline(mut self, pipeline: impl Into<String>) -> Self {
        self.pipeline = Some(pipeline.into());
        self
    }

    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        for (key, value) in [("pipeline", &self.pipeline), ("driver", &self.driver), ("runid", &self.runid)] {
            if let Some(value) = value {
                pairs.push((key, value.clone()));
            }
        }
        pairs
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_update_answer_reads_the_resource_beside_the_run_id_flattened_or_alone() {
        let resource = json!({"id": "3a6f", "name": "app", "resource": "job", "metadata": {"version": "2"}, "spec": {"v": 2}});
        let beside = json!({"message": "Resource updated successfully", "name": "app", "runid": "r-2", "version": "2", "resource": resource});
        let mut flattened = resource.clone();
        flattened["runid"] = "r-2".into();
        for answer in [beside, flattened] {
            let updated: UpdatedResource = serde_json::from_value(answer.clone()).unwrap();
            assert_eq!(updated.runid.as_deref(), Some("r-2"), "{answer}");
            assert_eq!((updated.resource.resource.as_str(), updated.resource.version()), ("job", Some(2)));
            assert_eq!(updated.resource.spec, json!({"v": 2}));
        }
        let alone: UpdatedResource = serde_json::from_value(resource.clone()).unwrap();
        assert_eq!((alone.runid, alone.message.as_str()), (None, ""));
        let written = serde_json::to_value(UpdatedResource { runid: Some("r-3".into()), ..alone }).unwrap();
        let again: UpdatedResource = serde_json::from_value(written).unwrap();
        assert_eq!(again.runid.as_deref(), Some("r-3"), "what it writes it reads");
        for wrong in
            [json!("text"), json!({"runid": 7, "name": "app", "resource": "job"}), json!({"runid": "r"})]
        {
            assert!(serde_json::from_value::<UpdatedResource>(wrong.clone()).is_err(), "{wrong}");
        }
    }
}
