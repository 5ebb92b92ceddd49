//! Resources (`/resources/…`): creating, updating and deleting one each start a run.

use reqwest::Method;

use crate::client::error::ClientError;
use crate::client::types::{CreatedResource, UpdatedResource};
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

    /// `PUT /resources/{type}/{name}`: keeps `resource` as the resource's next version;
    /// the server sends its drivers `update` with a new run id, and the answer carries
    /// that id ([`UpdatedResource::runid`]) beside the version kept. A driver on this
    /// SDK ends a run of the resource still in progress as superseded (a failure
    /// `superseded by run <id> (version N)`). A 0.6.x server names no run: `runid` is
    /// `None`.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use futures_util::StreamExt;
    /// let mut resource = client.get_resource("pipeline", "hello").await?;
    /// resource.spec["image"] = "alpine:3".into();
    /// let updated = client.update_resource(&resource).await?;
    /// println!("version {:?}", updated.resource.version());
    /// let run = updated.runid.ok_or("the server did not say which run the update started")?;
    /// let mut lines = client.stream_logs("command-runner", &run).await?;
    /// while let Some(line) = lines.next().await {
    ///     println!("{}", line?.message);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn update_resource(&self, resource: &Resource) -> Result<UpdatedResource, ClientError> {
        let path = format!("/resources/{}/{}", seg(&resource.resource), seg(&resource.name));
        self.json(Method::PUT, &path, Some(resource), &[]).await
    }

    /// `DELETE /resources/{type}/{name}`: the server sends the resource's drivers
    /// `delete` with the resource as it was. A resource outside any pipeline is gone at
    /// once; a resource in a pipeline stays, marked `deleting` (its
    /// `metadata.deletion_runid` names the run), until every step's driver has cleaned
    /// up, and stays with `deletion_failed` when one could not (deleting it again
    /// retries). The server answers no run id (`204`).
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
