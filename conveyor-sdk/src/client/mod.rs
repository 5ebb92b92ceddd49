//! A client of the Conveyor API server: resources, resource definitions, pipelines,
//! stored and live logs, messages to drivers, health; over HTTP or HTTPS (rustls,
//! trusting the system's root CAs and any given to
//! [`ClientBuilder::root_certificate`]).
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

// One file per API area, each with its own `impl Client` block; this file holds the
// client, its builder and the request plumbing they share.
mod definitions;
mod drivers;
mod error;
mod logs;
mod pipelines;
mod resources;
mod tls;
pub(crate) mod types;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;

pub use error::ClientError;
pub use logs::{LogStream, Transport};
pub use types::{CreatedResource, Health, LogQuery, Pipeline, PipelineStep, UpdatedResource};

#[cfg(feature = "auth")]
use crate::auth::ClientIdentity;
use crate::client::error::{server_error, transport_error};

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
    /// The TLS setup of the HTTP client, for the WebSocket streams too.
    tls: Arc<rustls::ClientConfig>,
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
    root_certificates: Vec<Vec<u8>>,
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

    /// Trusts the root CA certificates in `pem` (PEM text, one or more certificates)
    /// besides the system's, for an `https://` server whose certificate a CA of its
    /// own signed (default: the system's root CAs only). The live log streams over
    /// WSS trust the same. A text without a certificate fails [`build`](Self::build).
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let ca = std::fs::read("conveyor-ca.pem")?;
    /// let client = conveyor_sdk::client::Client::builder("https://conveyor.internal:8443")
    ///     .root_certificate(ca)
    ///     .build()?;
    /// # let _ = client;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates.push(pem.into());
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

    /// The client; fails when the base URL is not `http://…` or `https://…`, or a
    /// root certificate is not PEM.
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
        let tls = tls::client_config(&self.root_certificates)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(rustls::ClientConfig::clone(&tls))
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|source| ClientError::Http { url: base.clone(), source })?;
        Ok(Client {
            http,
            base,
            tls,
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
            root_certificates: Vec::new(),
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

    #[test]
    fn a_root_certificate_that_is_not_pem_fails_the_build() {
        let built = Client::builder("https://localhost:8443").root_certificate("not a certificate").build();
        assert!(matches!(built, Err(ClientError::RootCertificate(_))), "{built:?}");
    }
}
