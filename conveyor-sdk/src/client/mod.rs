//! A client of the Conveyor API server: resources, resource definitions, pipelines,
//! stored and live logs, health.
//!
//! ```no_run
//! # async fn demo() -> Result<(), conveyor_sdk::client::ClientError> {
//! use conveyor_sdk::client::Client;
//! use conveyor_sdk::Resource;
//! use futures_util::StreamExt;
//!
//! let client = Client::new("http://localhost:8080")?;
//! let resource = Resource::new("hello", "pipeline", serde_json::json!({"steps": []}));
//! let created = client.create_resource(&resource).await?;
//! let mut lines = client.stream_logs("command-runner", &created.runid).await?;
//! while let Some(line) = lines.next().await {
//!     let line = line?;
//!     println!("{} {}", line.timestamp, line.message);
//! }
//! # Ok(()) }
//! ```

mod error;
mod logs;
mod types;

#[cfg(feature = "auth")]
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;

pub use error::ClientError;
pub use logs::{LogStream, Transport};
pub use types::{CreatedResource, Health, LogQuery, Pipeline, PipelineStep};

#[cfg(feature = "auth")]
use crate::auth::ClientIdentity;
use crate::client::error::{server_error, transport_error};
use crate::protocol::{Log, Resource, ResourceDefinition};

/// A client of one Conveyor API server: one connection pool, reused for every request.
///
/// ```no_run
/// # async fn demo() -> Result<(), conveyor_sdk::client::ClientError> {
/// let client = conveyor_sdk::client::Client::new("http://localhost:8080")?;
/// println!("{:?}", client.health().await?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    #[cfg(feature = "auth")]
    identity: Option<Arc<ClientIdentity>>,
}

/// Settings of a [`Client`], from [`Client::builder`].
///
/// ```
/// use std::time::Duration;
/// let client = conveyor_sdk::client::Client::builder("http://localhost:8080")
///     .timeout(Duration::from_secs(10))
///     .connect_timeout(Duration::from_secs(2))
///     .build()?;
/// assert_eq!(client.base_url(), "http://localhost:8080");
/// # Ok::<(), conveyor_sdk::client::ClientError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base: String,
    timeout: Duration,
    connect_timeout: Duration,
    #[cfg(feature = "auth")]
    identity: Option<ClientIdentity>,
}

impl ClientBuilder {
    /// The longest one request may take, streams excepted (default 30 s).
    ///
    /// ```
    /// let client = conveyor_sdk::client::Client::builder("http://localhost:8080")
    ///     .timeout(std::time::Duration::from_secs(120)) // a slow server
    ///     .build()?;
    /// # Ok::<(), conveyor_sdk::client::ClientError>(())
    /// ```
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest connecting may take (default 5 s).
    ///
    /// ```
    /// let client = conveyor_sdk::client::Client::builder("http://localhost:8080")
    ///     .connect_timeout(std::time::Duration::from_millis(500))
    ///     .build()?;
    /// # Ok::<(), conveyor_sdk::client::ClientError>(())
    /// ```
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Signs every request with a fresh certificate-bound token of `identity`, for a
    /// server that runs with `auth_enabled` (default: no authentication).
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let identity = conveyor_sdk::auth::ClientIdentity::from_files("chain.pem", "key.pem")?;
    /// let client = conveyor_sdk::client::Client::builder("https://conveyor.example").identity(identity).build()?;
    /// # let _ = client;
    /// # Ok(()) }
    /// ```
    #[must_use]
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    pub fn identity(mut self, identity: ClientIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The client; fails when the base URL is not `http://…` or `https://…`.
    ///
    /// ```
    /// use conveyor_sdk::client::{Client, ClientError};
    /// let client = Client::builder("https://conveyor.example/").build()?;
    /// assert_eq!(client.base_url(), "https://conveyor.example");
    /// assert!(matches!(Client::builder("ftp://x").build(), Err(ClientError::InvalidUrl(_))));
    /// # Ok::<(), ClientError>(())
    /// ```
    pub fn build(self) -> Result<Client, ClientError> {
        let base = self.base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::InvalidUrl(self.base));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|source| ClientError::Http { url: base.clone(), source })?;
        Ok(Client {
            http,
            base,
            #[cfg(feature = "auth")]
            identity: self.identity.map(Arc::new),
        })
    }
}

impl Client {
    /// A client of the server at `base_url` (e.g. `http://localhost:8080`) with default
    /// timeouts. Nothing is sent until the first request.
    ///
    /// ```
    /// let client = conveyor_sdk::client::Client::new("http://localhost:8080")?;
    /// assert_eq!(client.base_url(), "http://localhost:8080");
    /// # Ok::<(), conveyor_sdk::client::ClientError>(())
    /// ```
    pub fn new(base_url: impl Into<String>) -> Result<Self, ClientError> {
        Self::builder(base_url).build()
    }

    /// Settings for a client of the server at `base_url`.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), conveyor_sdk::client::ClientError> {
    /// let client = conveyor_sdk::client::Client::builder("http://localhost:8080")
    ///     .timeout(std::time::Duration::from_secs(10))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base: base_url.into(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            #[cfg(feature = "auth")]
            identity: None,
        }
    }

    /// The server's base URL, without a trailing `/`.
    ///
    /// ```
    /// let client = conveyor_sdk::client::Client::new("http://localhost:8080/")?;
    /// assert_eq!(client.base_url(), "http://localhost:8080");
    /// # Ok::<(), conveyor_sdk::client::ClientError>(())
    /// ```
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The `Authorization` header value of a request, when the client has an identity.
    #[cfg(feature = "auth")]
    fn authorization(&self) -> Result<Option<String>, ClientError> {
        match &self.identity {
            Some(identity) => Ok(Some(format!("Bearer {}", identity.token().map_err(ClientError::Auth)?))),
            None => Ok(None),
        }
    }

    /// Without the `auth` feature, requests carry no token.
    #[cfg(not(feature = "auth"))]
    fn authorization(&self) -> Result<Option<String>, ClientError> {
        Ok(None)
    }

    /// Sends a request and returns the response of a success status.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&dyn erased::Body>,
        query: &[(&str, &str)],
    ) -> Result<reqwest::Response, ClientError> {
        let url = self.url(path);
        let mut request = self.http.request(method, &url);
        if let Some(authorization) = self.authorization()? {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            let json = body.to_json().map_err(|source| ClientError::Decode { url: url.clone(), source })?;
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(json);
        }
        let response = request.send().await.map_err(|source| transport_error(url.clone(), source))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        Err(server_error(status, &text))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&dyn erased::Body>,
        query: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let response = self.send(method, path, body, query).await?;
        let bytes =
            response.bytes().await.map_err(|source| ClientError::Http { url: url.clone(), source })?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode { url, source })
    }

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

    /// `GET /logs`: stored log lines, in the server's order (by timestamp within a run).
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), conveyor_sdk::client::ClientError> {
    /// use conveyor_sdk::client::LogQuery;
    /// let lines = client.logs(&LogQuery::run("fbdf5edf-66d4-46ce-859a-8ee44d6c9463")).await?;
    /// for line in &lines {
    ///     println!("{} [{}] {}", line.timestamp, line.driver, line.message);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn logs(&self, query: &LogQuery) -> Result<Vec<Log>, ClientError> {
        let pairs = query.pairs();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.json::<Option<Vec<Log>>>(Method::GET, "/logs", None, &pairs).await.map(Option::unwrap_or_default)
    }

    /// `GET /health`.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let health = client.health().await?;
    /// assert_eq!(health.status, "healthy");
    /// # Ok(()) }
    /// ```
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.json(Method::GET, "/health", None, &[]).await
    }

    /// The live log of one driver's run (`/logs/streams/{driver}/{runid}`): stored lines
    /// first, then new ones as they come, over whichever transport the server speaks
    /// (Server-Sent Events on newer servers, WebSocket on older ones).
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use futures_util::StreamExt;
    /// let mut lines = client.stream_logs("command-runner", "fbdf5edf-66d4-46ce-859a-8ee44d6c9463").await?;
    /// while let Some(line) = lines.next().await {
    ///     println!("{}", line?.message);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn stream_logs(&self, driver: &str, run_id: &str) -> Result<LogStream, ClientError> {
        self.stream_logs_with(driver, run_id, Transport::Auto).await
    }

    /// [`stream_logs`](Self::stream_logs) over a chosen transport.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), conveyor_sdk::client::ClientError> {
    /// use conveyor_sdk::client::Transport;
    /// use futures_util::StreamExt;
    /// let stream = client.stream_logs_with("command-runner", "run-id", Transport::WebSocket).await?;
    /// let lines: Vec<_> = stream.collect().await;
    /// # Ok(()) }
    /// ```
    pub async fn stream_logs_with(
        &self,
        driver: &str,
        run_id: &str,
        transport: Transport,
    ) -> Result<LogStream, ClientError> {
        let path = format!("/logs/streams/{}/{}", seg(driver), seg(run_id));
        logs::open(self, &path, driver, run_id, transport).await
    }

    /// The live log of every driver of a run (`/logs/pipeline/{runid}`, Server-Sent
    /// Events).
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use futures_util::StreamExt;
    /// let mut lines = client.stream_run_logs("fbdf5edf-66d4-46ce-859a-8ee44d6c9463").await?;
    /// while let Some(line) = lines.next().await {
    ///     let line = line?;
    ///     println!("[{}] {}", line.driver, line.message);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn stream_run_logs(&self, run_id: &str) -> Result<LogStream, ClientError> {
        let path = format!("/logs/pipeline/{}", seg(run_id));
        logs::open(self, &path, "", run_id, Transport::ServerSentEvents).await
    }
}

/// A path segment, percent-encoded.
fn seg(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Request bodies of any serializable type, behind one reference type.
mod erased {
    pub(super) trait Body: Sync {
        fn to_json(&self) -> Result<Vec<u8>, serde_json::Error>;
    }

    impl<T: serde::Serialize + Sync> Body for T {
        fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
            serde_json::to_vec(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("ubuntu-pipeline-6"), "ubuntu-pipeline-6");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(matches!(Client::new("localhost:8080"), Err(ClientError::InvalidUrl(_))));
        assert_eq!(Client::new("http://localhost:8080/").unwrap().base_url(), "http://localhost:8080");
    }
}
