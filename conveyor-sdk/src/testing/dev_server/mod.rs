//! A local Conveyor API server, for developing drivers and clients without the Go
//! server: the REST contract over HTTP, and the server's part of the protocol through
//! the [`Harness`] (one reader of the work queues).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Harness, TestingError};
use crate::auth::TokenVerifier;
use crate::client::{LogQuery, Pipeline};
use crate::driver::ResourceType;
use crate::protocol::{Event, Log, PipelineEvent, Resource, ResourceDefinition};
use crate::validate::{SpecError, SpecValidator};

/// A local Conveyor API server on a real NATS server.
///
/// ```no_run
/// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
/// let server = conveyor_sdk::testing::DevServer::start(
///     "nats://127.0.0.1:4222",
///     "127.0.0.1:8080".parse().unwrap(),
/// )
/// .await?;
/// println!("listening on {}", server.url());
/// server.serve_forever().await;
/// # Ok(()) }
/// ```
pub struct DevServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for DevServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

struct Definition {
    definition: ResourceDefinition,
    validator: SpecValidator,
}

/// A pipeline run in progress: which step it is at.
struct PipelineRun {
    pipeline: String,
    step: usize,
    resource_type: String,
    name: String,
}

struct ServerState {
    harness: Harness,
    definitions: RwLock<BTreeMap<String, Definition>>,
    /// Every version of every resource, by type and name.
    resources: RwLock<BTreeMap<(String, String), Vec<Resource>>>,
    pipelines: RwLock<BTreeMap<String, Pipeline>>,
    runs: RwLock<HashMap<String, PipelineRun>>,
}

impl DevServer {
    /// Connects to NATS at `nats_url`, creates the server's streams and listens on
    /// `listen` (port 0 picks a free port).
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
        let addr = listener.local_addr().map_err(TestingError::Spawn)?;
        let state = Arc::new(ServerState {
            harness,
            definitions: RwLock::default(),
            resources: RwLock::default(),
            pipelines: RwLock::default(),
            runs: RwLock::default(),
        });
        let stop = CancellationToken::new();
        let engine =
            tokio::spawn(pipeline_engine(state.clone(), state.harness.subscribe_results(), stop.clone()));
        let mut app = router(state.clone());
        if let Some(verifier) = verifier {
            app = app.layer(axum::middleware::from_fn_with_state(Arc::new(verifier), authenticate));
        }
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
            if let Err(error) = served {
                tracing::error!(%error, "the dev server stopped");
            }
            engine.abort();
        });
        Ok(Self { addr, state, stop, task })
    }

    /// `http://<address>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's side of the protocol: results and stored log lines as they come.
    pub fn harness(&self) -> &Harness {
        &self.state.harness
    }

    /// Serves until the task is dropped or [`shutdown`](Self::shutdown) is called elsewhere.
    pub async fn serve_forever(self) {
        let _ = self.task.await;
    }

    /// Stops listening; open log streams end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
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

fn router(state: Arc<ServerState>) -> Router {
    let mut app = Router::new();
    app = route(app, "/health", get(health));
    app = route(app, "/resources", post(create_resource).get(list_resources));
    app = route(app, "/resources/{type}", get(list_resources_of));
    app = route(
        app,
        "/resources/{type}/{name}",
        get(get_resource).put(update_resource).delete(delete_resource),
    );
    app = route(app, "/resources/{type}/{name}/{version}", get(get_resource_version));
    app = route(app, "/resource-definitions", post(create_definition));
    app = route(app, "/resource-definitions/apply", post(apply_definition));
    app = route(
        app,
        "/resource-definitions/{name}",
        get(get_definition).put(update_definition).delete(delete_definition),
    );
    app = route(app, "/pipelines", post(create_pipeline));
    app = route(app, "/pipelines/{name}", get(get_pipeline).put(update_pipeline).delete(delete_pipeline));
    app = route(app, "/logs", get(stored_logs));
    app = route(app, "/logs/streams/{driver}/{runid}", get(driver_log_stream));
    app = route(app, "/logs/pipeline/{runid}", get(run_log_stream));
    app.with_state(state)
}

/// Refuses a request without a valid token (`/health` excepted).
async fn authenticate(
    State(verifier): State<Arc<TokenVerifier>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().trim_end_matches('/');
    if path == "/health" {
        return next.run(request).await;
    }
    let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    match verifier.verify_header(header) {
        Ok(_) => next.run(request).await,
        Err(error) => ApiError(StatusCode::UNAUTHORIZED, format!("unauthorized: {error}")).into_response(),
    }
}

/// An error as the real server answers it: `{"error": "…"}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

fn bad_request(text: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, text.into())
}

fn not_found(text: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, text.into())
}

fn internal(text: impl Into<String>) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, text.into())
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid payload: {e}")))
}

async fn health() -> Json<Value> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Json(json!({"status": "healthy", "time": now}))
}

async fn create_resource(State(state): State<Arc<ServerState>>, body: Bytes) -> Result<Response, ApiError> {
    let mut resource: Resource = parse(&body)?;
    if resource.name.is_empty() || resource.resource.is_empty() {
        return Err(bad_request("a resource needs a name and a resource type"));
    }
    {
        let definitions = state.definitions.read().map_err(|_| internal("state poisoned"))?;
        let definition = definitions
            .get(&resource.resource)
            .ok_or_else(|| not_found(format!("resource definition {:?} not found", resource.resource)))?;
        match definition.validator.validate(&resource) {
            Ok(()) => {}
            Err(SpecError::Invalid(violations)) => {
                let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
                return Err(bad_request(format!("spec validation failed: {}", list.join("; "))));
            }
            Err(other) => return Err(bad_request(other.to_string())),
        }
    }
    let pipeline = match resource.pipeline() {
        Some(name) => Some(
            state
                .pipelines
                .read()
                .map_err(|_| internal("state poisoned"))?
                .get(name)
                .cloned()
                .ok_or_else(|| not_found(format!("pipeline {name:?} not found")))?,
        ),
        None => None,
    };
    resource.id = uuid::Uuid::new_v4().to_string();
    resource.metadata.insert("version".into(), "1".into());
    let key = (resource.resource.clone(), resource.name.clone());
    state
        .resources
        .write()
        .map_err(|_| internal("state poisoned"))?
        .insert(key.clone(), vec![resource.clone()]);

    let run_id = uuid::Uuid::new_v4().to_string();
    let dispatched = match &pipeline {
        Some(pipeline) => {
            let Some(first) = pipeline.steps.first() else {
                return Err(bad_request(format!("pipeline {:?} has no steps", pipeline.name)));
            };
            state.runs.write().map_err(|_| internal("state poisoned"))?.insert(
                run_id.clone(),
                PipelineRun {
                    pipeline: pipeline.name.clone(),
                    step: 0,
                    resource_type: key.0.clone(),
                    name: key.1.clone(),
                },
            );
            state.harness.step(&first.driver, Event::Create, resource.clone(), Some(&run_id)).await
        }
        None => state.harness.create_with_run_id(resource.clone(), &run_id).await,
    };
    dispatched.map_err(|e| internal(e.to_string()))?;
    let body = json!({"name": resource.name, "runid": run_id, "message": "Resource created successfully", "version": "1"});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn latest(state: &ServerState, resource_type: &str, name: &str) -> Result<Resource, ApiError> {
    state
        .resources
        .read()
        .map_err(|_| internal("state poisoned"))?
        .get(&(resource_type.to_owned(), name.to_owned()))
        .and_then(|versions| versions.last().cloned())
        .ok_or_else(|| not_found(format!("resource {resource_type}/{name} not found")))
}

async fn list_resources(State(state): State<Arc<ServerState>>) -> Result<Json<Vec<Resource>>, ApiError> {
    let resources = state.resources.read().map_err(|_| internal("state poisoned"))?;
    Ok(Json(resources.values().filter_map(|v| v.last().cloned()).collect()))
}

async fn list_resources_of(
    State(state): State<Arc<ServerState>>,
    Path(resource_type): Path<String>,
) -> Result<Json<Vec<Resource>>, ApiError> {
    let resources = state.resources.read().map_err(|_| internal("state poisoned"))?;
    Ok(Json(
        resources
            .iter()
            .filter(|((t, _), _)| *t == resource_type)
            .filter_map(|(_, v)| v.last().cloned())
            .collect(),
    ))
}

async fn get_resource(
    State(state): State<Arc<ServerState>>,
    Path((resource_type, name)): Path<(String, String)>,
) -> Result<Json<Resource>, ApiError> {
    latest(&state, &resource_type, &name).map(Json)
}

async fn get_resource_version(
    State(state): State<Arc<ServerState>>,
    Path((resource_type, name, version)): Path<(String, String, String)>,
) -> Result<Json<Resource>, ApiError> {
    let resources = state.resources.read().map_err(|_| internal("state poisoned"))?;
    resources
        .get(&(resource_type.clone(), name.clone()))
        .and_then(|versions| versions.iter().find(|r| r.metadata.get("version") == Some(&version)).cloned())
        .map(Json)
        .ok_or_else(|| not_found(format!("resource {resource_type}/{name} version {version} not found")))
}

async fn update_resource(
    State(state): State<Arc<ServerState>>,
    Path((resource_type, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Resource>, ApiError> {
    let mut update: Resource = parse(&body)?;
    let current = latest(&state, &resource_type, &name)?;
    {
        let definitions = state.definitions.read().map_err(|_| internal("state poisoned"))?;
        if let Some(definition) = definitions.get(&resource_type) {
            update.resource = resource_type.clone();
            definition.validator.validate(&update).map_err(|e| bad_request(e.to_string()))?;
        }
    }
    let version = current.metadata.get("version").and_then(|v| v.parse::<u64>().ok()).unwrap_or(1) + 1;
    update.id = current.id.clone();
    update.name = name.clone();
    update.resource = resource_type.clone();
    update.metadata.insert("version".into(), version.to_string());
    let mut resources = state.resources.write().map_err(|_| internal("state poisoned"))?;
    resources.entry((resource_type, name)).or_default().push(update.clone());
    Ok(Json(update))
}

async fn delete_resource(
    State(state): State<Arc<ServerState>>,
    Path((resource_type, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut resources = state.resources.write().map_err(|_| internal("state poisoned"))?;
    resources
        .remove(&(resource_type.clone(), name.clone()))
        .map(|_| StatusCode::NO_CONTENT)
        .ok_or_else(|| not_found(format!("resource {resource_type}/{name} not found")))
}

fn store_definition(
    state: &ServerState,
    definition: ResourceDefinition,
    replace: bool,
) -> Result<ResourceDefinition, ApiError> {
    if definition.name.is_empty() {
        return Err(bad_request("a resource definition needs a name"));
    }
    let validator = SpecValidator::new(&[ResourceType::owned(definition.clone())])
        .map_err(|e| bad_request(e.to_string()))?;
    let mut definitions = state.definitions.write().map_err(|_| internal("state poisoned"))?;
    if !replace && definitions.contains_key(&definition.name) {
        return Err(bad_request(format!("resource definition {:?} already exists", definition.name)));
    }
    let mut definition = definition;
    if definition.id.is_empty() {
        definition.id = definitions
            .get(&definition.name)
            .map(|d| d.definition.id.clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    }
    definitions.insert(definition.name.clone(), Definition { definition: definition.clone(), validator });
    Ok(definition)
}

async fn create_definition(State(state): State<Arc<ServerState>>, body: Bytes) -> Result<Response, ApiError> {
    let definition = store_definition(&state, parse(&body)?, false)?;
    Ok((StatusCode::CREATED, Json(definition)).into_response())
}

async fn apply_definition(State(state): State<Arc<ServerState>>, body: Bytes) -> Result<Response, ApiError> {
    let definition = store_definition(&state, parse(&body)?, true)?;
    Ok((StatusCode::CREATED, Json(definition)).into_response())
}

async fn get_definition(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<Json<ResourceDefinition>, ApiError> {
    let definitions = state.definitions.read().map_err(|_| internal("state poisoned"))?;
    definitions
        .get(&name)
        .map(|d| Json(d.definition.clone()))
        .ok_or_else(|| not_found(format!("resource definition {name:?} not found")))
}

async fn update_definition(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<ResourceDefinition>, ApiError> {
    let mut definition: ResourceDefinition = parse(&body)?;
    definition.name = name.clone();
    if !state.definitions.read().map_err(|_| internal("state poisoned"))?.contains_key(&name) {
        return Err(not_found(format!("resource definition {name:?} not found")));
    }
    store_definition(&state, definition, true).map(Json)
}

async fn delete_definition(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut definitions = state.definitions.write().map_err(|_| internal("state poisoned"))?;
    definitions
        .remove(&name)
        .map(|_| StatusCode::NO_CONTENT)
        .ok_or_else(|| not_found(format!("resource definition {name:?} not found")))
}

async fn create_pipeline(State(state): State<Arc<ServerState>>, body: Bytes) -> Result<Response, ApiError> {
    let pipeline: Pipeline = parse(&body)?;
    if pipeline.name.is_empty() {
        return Err(bad_request("a pipeline needs a name"));
    }
    let mut pipelines = state.pipelines.write().map_err(|_| internal("state poisoned"))?;
    if pipelines.contains_key(&pipeline.name) {
        return Err(bad_request(format!("pipeline {:?} already exists", pipeline.name)));
    }
    pipelines.insert(pipeline.name.clone(), pipeline.clone());
    Ok((StatusCode::CREATED, Json(pipeline)).into_response())
}

async fn get_pipeline(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<Json<Pipeline>, ApiError> {
    let pipelines = state.pipelines.read().map_err(|_| internal("state poisoned"))?;
    pipelines.get(&name).cloned().map(Json).ok_or_else(|| not_found(format!("pipeline {name:?} not found")))
}

async fn update_pipeline(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Pipeline>, ApiError> {
    let mut pipeline: Pipeline = parse(&body)?;
    pipeline.name = name.clone();
    let mut pipelines = state.pipelines.write().map_err(|_| internal("state poisoned"))?;
    match pipelines.get_mut(&name) {
        Some(slot) => {
            *slot = pipeline.clone();
            Ok(Json(pipeline))
        }
        None => Err(not_found(format!("pipeline {name:?} not found"))),
    }
}

async fn delete_pipeline(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut pipelines = state.pipelines.write().map_err(|_| internal("state poisoned"))?;
    pipelines
        .remove(&name)
        .map(|_| StatusCode::NO_CONTENT)
        .ok_or_else(|| not_found(format!("pipeline {name:?} not found")))
}

#[derive(serde::Deserialize)]
struct LogParams {
    pipeline: Option<String>,
    driver: Option<String>,
    runid: Option<String>,
}

async fn stored_logs(
    State(state): State<Arc<ServerState>>,
    Query(params): Query<LogParams>,
) -> Json<Vec<Log>> {
    let query = LogQuery { pipeline: params.pipeline, driver: params.driver, runid: params.runid };
    Json(state.harness.all_logs().into_iter().filter(|l| matches(&query, l)).collect())
}

fn matches(query: &LogQuery, log: &Log) -> bool {
    let pipeline = log.pipeline.as_deref().unwrap_or("");
    query.pipeline.as_deref().is_none_or(|p| p.is_empty() || p == pipeline)
        && query.driver.as_deref().is_none_or(|d| d.is_empty() || d == log.driver)
        && query.runid.as_deref().is_none_or(|r| r.is_empty() || r == log.runid)
}

/// `/logs/streams/{driver}/{runid}`: WebSocket when the client asks for an upgrade,
/// Server-Sent Events when it accepts `text/event-stream`.
async fn driver_log_stream(
    State(state): State<Arc<ServerState>>,
    Path((driver, run_id)): Path<(String, String)>,
    request: Request,
) -> Response {
    let query = LogQuery::run(run_id).driver(driver);
    let (mut parts, _) = request.into_parts();
    let wants_upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if wants_upgrade {
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade.on_upgrade(move |socket| websocket(socket, state, query)).into_response(),
            Err(rejection) => rejection.into_response(),
        };
    }
    let accepts_events = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if accepts_events {
        return server_sent_events(state, query);
    }
    bad_request("ask for a WebSocket upgrade or accept text/event-stream").into_response()
}

/// `/logs/pipeline/{runid}`: every driver of the run, as Server-Sent Events.
async fn run_log_stream(State(state): State<Arc<ServerState>>, Path(run_id): Path<String>) -> Response {
    server_sent_events(state, LogQuery::run(run_id))
}

fn server_sent_events(state: Arc<ServerState>, query: LogQuery) -> Response {
    let lines = follow(state, query);
    let events = futures_util::stream::unfold(lines, |mut lines| async move {
        let log = lines.recv().await?;
        let event = SseEvent::default()
            .json_data(&log)
            .unwrap_or_else(|_| SseEvent::default().comment("unencodable line"));
        Some((Ok::<_, std::convert::Infallible>(event), lines))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)).text("heartbeat"))
        .into_response()
}

async fn websocket(mut socket: WebSocket, state: Arc<ServerState>, query: LogQuery) {
    let mut lines = follow(state, query);
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(log) = line else { break };
                let frame = json!([log.timestamp, log.message]).to_string();
                if socket.send(WsMessage::Text(frame.into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The stored lines that match `query` in timestamp order, then new ones as they are
/// stored, until the receiver is dropped.
fn follow(state: Arc<ServerState>, query: LogQuery) -> mpsc::Receiver<Log> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        // Subscribe before reading what is stored, so that nothing falls in between.
        let mut live = state.harness.subscribe_logs();
        let mut sent: HashSet<(String, String)> = HashSet::new();
        loop {
            let mut stored: Vec<Log> =
                state.harness.all_logs().into_iter().filter(|l| matches(&query, l)).collect();
            stored.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
            for log in stored {
                if sent.insert((log.driver.clone(), log.timestamp.clone())) && tx.send(log).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(log) => {
                        if matches(&query, &log)
                            && sent.insert((log.driver.clone(), log.timestamp.clone()))
                            && tx.send(log).await.is_err()
                        {
                            return;
                        }
                    }
                    // Fell behind: catch up from what is stored.
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    });
    rx
}

/// Sends each pipeline run on to its next step when a step succeeds, and keeps each
/// step's result in the resource's metadata.
async fn pipeline_engine(
    state: Arc<ServerState>,
    mut results: broadcast::Receiver<PipelineEvent>,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = results.recv() => match event {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "the dev server's pipeline engine fell behind");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if let Err(error) = advance(&state, event).await {
            tracing::warn!(error = %error.1, "a pipeline could not go on");
        }
    }
}

async fn advance(state: &ServerState, event: PipelineEvent) -> Result<(), ApiError> {
    let next = {
        let mut runs = state.runs.write().map_err(|_| internal("state poisoned"))?;
        let Some(run) = runs.get_mut(&event.run_id) else {
            return Ok(()); // a resource outside any pipeline: read and dropped
        };
        let result = &event.driverresult;
        let text = serde_json::to_string(result).map_err(|e| internal(e.to_string()))?;
        let key = (run.resource_type.clone(), run.name.clone());
        let resource = {
            let mut resources = state.resources.write().map_err(|_| internal("state poisoned"))?;
            let latest = resources
                .get_mut(&key)
                .and_then(|v| v.last_mut())
                .ok_or_else(|| not_found("resource gone"))?;
            latest
                .metadata
                .insert(format!("{}{}", crate::protocol::DRIVER_RESULTS_PREFIX, result.driver), text);
            latest.clone()
        };
        let pipeline =
            state.pipelines.read().map_err(|_| internal("state poisoned"))?.get(&run.pipeline).cloned();
        run.step += 1;
        let next_step = pipeline.and_then(|p| p.steps.get(run.step).cloned());
        match next_step {
            Some(step) if result.success => Some((step.driver, resource)),
            _ => {
                runs.remove(&event.run_id);
                None
            }
        }
    };
    if let Some((driver, resource)) = next {
        state
            .harness
            .step(&driver, Event::Process, resource, Some(&event.run_id))
            .await
            .map_err(|e| internal(e.to_string()))?;
    }
    Ok(())
}
