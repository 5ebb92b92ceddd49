//! The runtime's HTTP endpoint (feature `metrics`): `/healthz`, `/readyz` and
//! `/metrics`, served on a task of its own so that a slow scraper never holds up a run.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::metrics::{Metrics, METRICS_CONTENT_TYPE};
use super::observe::Observer;
use super::{Config, Error};
use crate::driver::{Driver, ReconcileError};
use crate::report::error_text;

/// How long the driver's readiness check may take before `/readyz` says no.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// The driver's own readiness check.
type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), ReconcileError>> + Send + Sync>;

/// The serving endpoint; it stops when this is dropped.
pub(crate) struct Endpoint {
    task: JoinHandle<()>,
    metrics: Metrics,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
        self.metrics.set_local_addr(None);
    }
}

/// Starts the endpoint of [`Config::metrics_listen`], if set.
pub(crate) async fn start<D: Driver>(
    config: &Config,
    observer: &Observer,
    driver: &Arc<D>,
) -> Result<Option<Endpoint>, Error> {
    let (Some(addr), Some(metrics)) = (config.metrics_listen, observer.metrics()) else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::MetricsListen { addr, source })?;
    let local = listener.local_addr().map_err(|source| Error::MetricsListen { addr, source })?;
    metrics.set_local_addr(Some(local));
    tracing::info!(addr = %local, "serving /healthz, /readyz and /metrics");
    let driver = driver.clone();
    let ready: ReadyCheck = Arc::new(move || {
        let driver = driver.clone();
        Box::pin(async move { driver.ready().await })
    });
    let state = Arc::new(Answers { metrics: metrics.clone(), ready });
    let task = tokio::spawn(accept(listener, state));
    Ok(Some(Endpoint { task, metrics: metrics.clone() }))
}

struct Answers {
    metrics: Metrics,
    ready: ReadyCheck,
}

/// Accepts connections until aborted; each is served on a task of its own, ended
/// with this one.
async fn accept(listener: TcpListener, answers: Arc<Answers>) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection to the metrics endpoint failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let answers = answers.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let answers = answers.clone();
                async move { Ok::<_, Infallible>(answer(&answers, &request).await) }
            });
            if let Err(error) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%error, "a connection to the metrics endpoint failed");
            }
        });
    }
}

async fn answer(answers: &Answers, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is answered\n".into());
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match not_ready(answers).await {
            None => text(StatusCode::OK, "ready\n".into()),
            Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
        },
        "/metrics" => {
            let mut response = text(StatusCode::OK, answers.metrics.encode());
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found: /healthz, /readyz and /metrics are served\n".into()),
    }
}

/// Why the runtime is not ready: its own state first, then the driver's check.
async fn not_ready(answers: &Answers) -> Option<String> {
    if let Some(reason) = answers.metrics.not_ready() {
        return Some(reason.to_owned());
    }
    match tokio::time::timeout(READY_TIMEOUT, (answers.ready)()).await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(format!("the driver is not ready: {}", error_text(error.error()))),
        Err(_) => Some(format!("the driver's readiness check took longer than {READY_TIMEOUT:?}")),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
