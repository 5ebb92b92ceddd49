//! A local Conveyor API server, for developing drivers and clients without the Go
//! server: the REST contract over HTTP or HTTPS, and the server's part of the
//! protocol through the [`Harness`] (one reader of the work queues).

mod auth;
mod definitions;
mod drivers;
mod engine;
mod error;
mod logs;
mod pipelines;
mod resources;
mod store;
mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post, MethodRouter};
use axum::serve::{Listener, ListenerExt, TapIo};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use self::definitions::Definition;
use self::store::Store;
use crate::auth::TokenVerifier;
use crate::client::types::Pipeline;
use crate::protocol::Resource;
use crate::testing::server_side::Harness;
use crate::testing::TestingError;

/// A local Conveyor API server on a real NATS server.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let listen = "127.0.0.1:8080".parse()?;
/// let server = conveyor_sdk::testing::DevServer::start("nats://127.0.0.1:4222", listen).await?;
/// println!("listening on {}", server.url());
/// server.serve_forever().await;
/// # Ok(()) }
/// ```
pub struct DevServer {
    addr: SocketAddr,
    /// `http` or `https`.
    scheme: &'static str,
    state: Arc<ServerState>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for DevServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// What the handlers share: the server's side of the protocol and what it keeps.
struct ServerState {
    harness: Harness,
    definitions: Store<Definition>,
    /// Every version of every resource, by type and name.
    resources: Store<Resource>,
    pipelines: Store<Pipeline>,
}

impl DevServer {
    /// Connects to NATS at `nats_url`, creates the server's streams and listens on
    /// `listen` (port 0 picks a free port).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use conveyor_sdk::testing::DevServer;
    /// let server = DevServer::start("nats://127.0.0.1:4222", "127.0.0.1:0".parse()?).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(nats_url: &str, listen: SocketAddr) -> Result<Self, TestingError> {
        Self::start_with(Harness::start(nats_url).await?, listen, None).await
    }

    /// [`start`](Self::start) on a harness of the caller's (a NATS connection with TLS,
    /// say), and, with a verifier, with authentication as the server's `auth_enabled`:
    /// every request but `/health` needs a valid certificate-bound token, else `401`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use conveyor_sdk::testing::{DevServer, Harness};
    /// let verifier = conveyor_sdk::auth::TokenVerifier::from_pem(&std::fs::read("ca.pem")?)?;
    /// let harness = Harness::start("nats://127.0.0.1:4222").await?;
    /// let server = DevServer::start_with(harness, "127.0.0.1:8080".parse()?, Some(verifier)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_with(
        harness: Harness,
        listen: SocketAddr,
        verifier: Option<TokenVerifier>,
    ) -> Result<Self, TestingError> {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(TestingError::Spawn)?;
        Self::serve_on(plain(listener), "http", harness, verifier)
    }

    /// [`start_with`](Self::start_with), serving HTTPS (and WSS) with the certificate
    /// chain in `cert` (PEM, leaf first) and its private key in `key` (PEM); clients
    /// trust it through its CA, e.g. with
    /// [`ClientBuilder::root_certificate`](crate::client::ClientBuilder::root_certificate).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use conveyor_sdk::testing::{DevServer, Harness};
    /// let harness = Harness::start("nats://127.0.0.1:4222").await?;
    /// let listen = "127.0.0.1:8443".parse()?;
    /// let server =
    ///     DevServer::start_with_tls(harness, listen, None, "server.pem".as_ref(), "server.key".as_ref()).await?;
    /// assert_eq!(server.url(), "https://127.0.0.1:8443");
    /// let client = conveyor_sdk::client::Client::builder(server.url())
    ///     .root_certificate(std::fs::read("ca.pem")?)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub async fn start_with_tls(
        harness: Harness,
        listen: SocketAddr,
        verifier: Option<TokenVerifier>,
        cert: &Path,
        key: &Path,
    ) -> Result<Self, TestingError> {
        let config = tls::server_config(cert, key)?;
        let tcp = tokio::net::TcpListener::bind(listen).await.map_err(TestingError::Spawn)?;
        let listener = tls::TlsListener::new(tcp, config).map_err(TestingError::Spawn)?;
        Self::serve_on(listener, "https", harness, verifier)
    }

    /// Serves the API on `listener` until [`shutdown`](Self::shutdown).
    fn serve_on<L>(
        listener: L,
        scheme: &'static str,
        harness: Harness,
        verifier: Option<TokenVerifier>,
    ) -> Result<Self, TestingError>
    where
        L: Listener<Addr = SocketAddr>,
    {
        let addr = listener.local_addr().map_err(TestingError::Spawn)?;
        let state = Arc::new(ServerState {
            harness,
            definitions: Store::default(),
            resources: Store::default(),
            pipelines: Store::default(),
        });
        let stop = CancellationToken::new();
        let engine = tokio::spawn(engine::pipeline_engine(
            state.clone(),
            state.harness.subscribe_results(),
            stop.clone(),
        ));
        let mut app = router(state.clone());
        if let Some(verifier) = verifier {
            app = app.layer(axum::middleware::from_fn_with_state(Arc::new(verifier), auth::authenticate));
        }
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
            if let Err(error) = served {
                tracing::error!(%error, "the dev server stopped");
            }
            engine.abort();
        });
        Ok(Self { addr, scheme, state, stop, task })
    }

    /// `http://<address>`, or `https://<address>` when it serves HTTPS.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use conveyor_sdk::testing::DevServer;
    /// let server = DevServer::start("nats://127.0.0.1:4222", "127.0.0.1:0".parse()?).await?;
    /// let client = conveyor_sdk::client::Client::new(server.url())?;
    /// # Ok(()) }
    /// ```
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The address it listens on.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use conveyor_sdk::testing::DevServer;
    /// let server = DevServer::start("nats://127.0.0.1:4222", "127.0.0.1:0".parse()?).await?;
    /// println!("port {}", server.addr().port());
    /// # Ok(()) }
    /// ```
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's side of the protocol: results and stored log lines as they come.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use conveyor_sdk::testing::DevServer;
    /// let server = DevServer::start("nats://127.0.0.1:4222", "127.0.0.1:0".parse()?).await?;
    /// let result = server.harness().result("the-run-id").await?;
    /// println!("{}", result.driverresult.message);
    /// # Ok(()) }
    /// ```
    pub fn harness(&self) -> &Harness {
        &self.state.harness
    }

    /// Serves until the task is dropped or [`shutdown`](Self::shutdown) is called elsewhere.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use conveyor_sdk::testing::DevServer;
    /// let server = DevServer::start("nats://127.0.0.1:4222", "127.0.0.1:0".parse()?).await?;
    /// server.serve_forever().await;
    /// # Ok(()) }
    /// ```
    pub async fn serve_forever(self) {
        let _ = self.task.await;
    }

    /// Stops listening; open log streams end.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use conveyor_sdk::testing::DevServer;
    /// let server = DevServer::start("nats://127.0.0.1:4222", "127.0.0.1:0".parse()?).await?;
    /// server.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// The plain listener: its connections send small writes at once (see [`no_delay`]).
fn plain(
    listener: tokio::net::TcpListener,
) -> TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    listener.tap_io(no_delay)
}

/// Sends what is written at once (`TCP_NODELAY`), as Go's servers do: a log stream
/// writes many small pieces, and Nagle's algorithm would hold one back until the
/// client's delayed acknowledgement of the one before, some 40 ms.
fn no_delay(stream: &mut tokio::net::TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "the dev server could not set TCP_NODELAY on a connection");
    }
}

/// Routes with and without a trailing slash, as the real server routes them.
fn route(
    router: Router<Arc<ServerState>>,
    path: &str,
    handler: MethodRouter<Arc<ServerState>>,
) -> Router<Arc<ServerState>> {
    router.route(path, handler.clone()).route(&format!("{path}/"), handler)
}

/// The routes of the real server, each area's handlers in its own file.
fn router(state: Arc<ServerState>) -> Router {
    let mut app = Router::new();
    app = route(app, "/health", get(health));
    app = route(app, "/resources", post(resources::create).get(resources::list));
    app = route(app, "/resources/{type}", get(resources::list_of));
    app = route(
        app,
        "/resources/{type}/{name}",
        get(resources::get).put(resources::update).delete(resources::delete),
    );
    app = route(app, "/resources/{type}/{name}/{version}", get(resources::get_version));
    app = route(app, "/resource-definitions", post(definitions::create));
    app = route(app, "/resource-definitions/apply", post(definitions::apply));
    app = route(
        app,
        "/resource-definitions/{name}",
        get(definitions::get).put(definitions::update).delete(definitions::delete),
    );
    app = route(app, "/pipelines", post(pipelines::create));
    app =
        route(app, "/pipelines/{name}", get(pipelines::get).put(pipelines::update).delete(pipelines::delete));
    app = route(app, "/logs", get(logs::stored).post(logs::create));
    app = route(app, "/logs/streams/{driver}/{runid}", get(logs::driver_stream));
    app = route(app, "/logs/pipeline/{runid}", get(logs::run_stream));
    app = route(app, "/drivers/broadcast-message", post(drivers::broadcast));
    app = route(app, "/drivers/{driver}/runs/{runid}/cancel", post(drivers::cancel));
    app.with_state(state)
}

/// `GET /health`: `healthy`, and the time in seconds since the epoch.
async fn health() -> Json<Value> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Json(json!({"status": "healthy", "time": now}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_small_writes_at_once() {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = tcp.local_addr().expect("its address");
        let mut listener = plain(tcp);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await;
        assert!(
            accepted.nodelay().expect("TCP_NODELAY readable"),
            "a log stream's small writes would wait for the client's delayed acknowledgement"
        );
    }
}
