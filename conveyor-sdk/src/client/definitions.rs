//! Resource definitions (`/resource-definitions/…`): the types of resources and their schemas.

use reqwest::Method;

use crate::client::error::ClientError;
use crate::client::{seg, Client};
use crate::protocol::ResourceDefinition;

impl Client {
    /// `POST /resource-definitions/`: creates a resource definition.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use conveyor_sdk::ResourceDefinition;
    /// let definition = ResourceDefinition::new("greeting", serde_json::json!({"type": "object"}));
    /// let created = client.create_definition(&definition).await?;
    /// println!("definition id {}", created.id);
    /// # Ok(()) }
    /// ```
    pub async fn create_definition(
        &self,
        definition: &ResourceDefinition,
    ) -> Result<ResourceDefinition, ClientError> {
        self.json(Method::POST, "/resource-definitions/", Some(definition), &[]).await
    }

    /// `POST /resource-definitions/apply`: creates or updates a resource definition.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// #[derive(schemars::JsonSchema)]
    /// struct Greeting { who: String }
    /// let definition = conveyor_sdk::ResourceDefinition::from_type::<Greeting>("greeting").version("1.1.0");
    /// client.apply_definition(&definition).await?; // the same call at every start-up
    /// # Ok(()) }
    /// ```
    pub async fn apply_definition(
        &self,
        definition: &ResourceDefinition,
    ) -> Result<ResourceDefinition, ClientError> {
        self.json(Method::POST, "/resource-definitions/apply", Some(definition), &[]).await
    }

    /// `GET /resource-definitions/{name}`.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let definition = client.get_definition("pipeline").await?;
    /// println!("{} {}: {}", definition.name, definition.version, definition.schema);
    /// # Ok(()) }
    /// ```
    pub async fn get_definition(&self, name: &str) -> Result<ResourceDefinition, ClientError> {
        self.json(Method::GET, &format!("/resource-definitions/{}", seg(name)), None, &[]).await
    }

    /// `PUT /resource-definitions/{name}`.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let definition = client.get_definition("pipeline").await?.description("Steps run in a container");
    /// client.update_definition(&definition).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update_definition(
        &self,
        definition: &ResourceDefinition,
    ) -> Result<ResourceDefinition, ClientError> {
        let path = format!("/resource-definitions/{}", seg(&definition.name));
        self.json(Method::PUT, &path, Some(definition), &[]).await
    }

    /// `DELETE /resource-definitions/{name}`.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// client.delete_definition("greeting").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_definition(&self, name: &str) -> Result<(), ClientError> {
        self.send(Method::DELETE, &format!("/resource-definitions/{}", seg(name)), None, &[]).await?;
        Ok(())
    }
}
