//! Pipelines (`/pipelines…`): the drivers a resource goes through, step by step.

use reqwest::Method;

use crate::client::error::ClientError;
use crate::client::types::Pipeline;
use crate::client::{seg, Client};

impl Client {
    /// `POST /pipelines`: creates a pipeline.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use conveyor_sdk::client::{Pipeline, PipelineStep};
    /// let pipeline = Pipeline::new("build-and-report", "pipeline")
    ///     .step(PipelineStep::new("build", "command-runner"))
    ///     .step(PipelineStep::new("report", "reporter"));
    /// client.create_pipeline(&pipeline).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_pipeline(&self, pipeline: &Pipeline) -> Result<Pipeline, ClientError> {
        self.json(Method::POST, "/pipelines", Some(pipeline), &[]).await
    }

    /// `GET /pipelines/{name}`.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let pipeline = client.get_pipeline("build-and-report").await?;
    /// let drivers: Vec<&str> = pipeline.steps.iter().map(|s| s.driver.as_str()).collect();
    /// # Ok(()) }
    /// ```
    pub async fn get_pipeline(&self, name: &str) -> Result<Pipeline, ClientError> {
        self.json(Method::GET, &format!("/pipelines/{}", seg(name)), None, &[]).await
    }

    /// `PUT /pipelines/{name}`.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use conveyor_sdk::client::PipelineStep;
    /// let pipeline = client.get_pipeline("build-and-report").await?.step(PipelineStep::new("notify", "notifier"));
    /// client.update_pipeline(&pipeline).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update_pipeline(&self, pipeline: &Pipeline) -> Result<Pipeline, ClientError> {
        self.json(Method::PUT, &format!("/pipelines/{}", seg(&pipeline.name)), Some(pipeline), &[]).await
    }

    /// `DELETE /pipelines/{name}`.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// client.delete_pipeline("build-and-report").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_pipeline(&self, name: &str) -> Result<(), ClientError> {
        self.send(Method::DELETE, &format!("/pipelines/{}", seg(name)), None, &[]).await?;
        Ok(())
    }
}
