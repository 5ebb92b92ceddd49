//! Resources (`/resources/…`): creating one starts a run.

use reqwest::Method;

use crate::client::error::ClientError;
use crate::client::types::CreatedResource;
use crate::client::{seg, Client};
use crate::protocol::Resource;

impl Client {
    /// `POST /resources/`: creates a resource; the server validates its spec and
    /// starts a run.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), conveyor_sdk::client::ClientError> {
    /// let resource = conveyor_sdk::Resource::new("hello", "pipeline", serde_json::json!({"steps": []}));
    /// let created = client.create_resource(&resource).await?;
    /// println!("run {}", created.runid);
    /// # Ok(()) }
    /// ```
    pub async fn create_resource(&self, resource: &Resource) -> Result<CreatedResource, ClientError> {
        self.json(Method::POST, "/resources/", Some(resource), &[]).await
    }

    /// `GET /resources/{type}/{name}`: the latest version of a resource.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let resource = client.get_resource("pipeline", "hello").await?;
    /// println!("version {:?}: {}", resource.metadata.get("version"), resource.spec);
    /// # Ok(()) }
    /// ```
    pub async fn get_resource(&self, resource_type: &str, name: &str) -> Result<Resource, ClientError> {
        self.json(Method::GET, &format!("/resources/{}/{}", seg(resource_type), seg(name)), None, &[]).await
    }

    /// `GET /resources/{type}/{name}/{version}`: one version of a resource.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let first = client.get_resource_version("pipeline", "hello", "1").await?;
    /// assert_eq!(first.name, "hello");
    /// # Ok(()) }
    /// ```
    pub async fn get_resource_version(
        &self,
        resource_type: &str,
        name: &str,
        version: &str,
    ) -> Result<Resource, ClientError> {
        let path = format!("/resources/{}/{}/{}", seg(resource_type), seg(name), seg(version));
        self.json(Method::GET, &path, None, &[]).await
    }

    /// `GET /resources/`: every resource.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// for resource in client.list_resources().await? {
    ///     println!("{} {}", resource.resource, resource.name);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_resources(&self) -> Result<Vec<Resource>, ClientError> {
        self.json::<Option<Vec<Resource>>>(Method::GET, "/resources/", None, &[])
            .await
            .map(Option::unwrap_or_default)
    }

    /// `GET /resources/{type}`: the resources of one type.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let pipelines = client.list_resources_of("pipeline").await?;
    /// assert!(pipelines.iter().all(|r| r.resource == "pipeline"));
    /// # Ok(()) }
    /// ```
    pub async fn list_resources_of(&self, resource_type: &str) -> Result<Vec<Resource>, ClientError> {
        self.json::<Option<Vec<Resource>>>(
            Method::GET,
            &format!("/resources/{}", seg(resource_type)),
            None,
            &[],
        )
        .await
        .map(Option::unwrap_or_default)
    }

    /// `PUT /resources/{type}/{name}`: updates a resource.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut resource = client.get_resource("pipeline", "hello").await?;
    /// resource.spec["image"] = "alpine:3".into();
    /// let updated = client.update_resource(&resource).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update_resource(&self, resource: &Resource) -> Result<Resource, ClientError> {
        let path = format!("/resources/{}/{}", seg(&resource.resource), seg(&resource.name));
        self.json(Method::PUT, &path, Some(resource), &[]).await
    }

    /// `DELETE /resources/{type}/{name}`.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// client.delete_resource("pipeline", "hello").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_resource(&self, resource_type: &str, name: &str) -> Result<(), ClientError> {
        self.send(Method::DELETE, &format!("/resources/{}/{}", seg(resource_type), seg(name)), None, &[])
            .await?;
        Ok(())
    }
}
