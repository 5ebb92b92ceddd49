//! The REST contract's own types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// Metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
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
