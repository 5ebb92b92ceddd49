//! `/logs`: the stored lines (read, and written one by one), and the live streams of
//! a driver's run (WebSocket or Server-Sent Events) and of a whole pipeline run
//! (Server-Sent Events).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use super::error::{parse, ApiError};
use super::ServerState;
use crate::client::types::LogQuery;
use crate::protocol::{subjects, Log};

/// The query of `GET /logs`; an empty or missing filter lets everything through.
#[derive(serde::Deserialize)]
pub(super) struct LogParams {
    pipeline: Option<String>,
    driver: Option<String>,
    runid: Option<String>,
}

/// `GET /logs`: the stored lines, filtered by pipeline, driver and run.
pub(super) async fn stored(
    State(state): State<Arc<ServerState>>,
    Query(params): Query<LogParams>,
) -> Json<Vec<Log>> {
    let query = LogQuery { pipeline: params.pipeline, driver: params.driver, runid: params.runid };
    Json(state.harness.all_logs().into_iter().filter(|l| matches(&query, l)).collect())
}

/// `POST /logs`: stores one line as a line a driver sent is stored; `201 "Log created"`
/// once it is among the stored lines and on the live streams of its run.
pub(super) async fn create(State(state): State<Arc<ServerState>>, body: Bytes) -> Result<Response, ApiError> {
    let log: Log = parse(&body)?;
    if !log.runid.split('.').all(subjects::is_token) {
        return Err(ApiError::BadRequest(format!(
            "invalid runid {:?}: a log entry needs a run id without white space, '*' or '>'",
            log.runid
        )));
    }
    state.harness.store_log(&log).await.map_err(ApiError::Publish)?;
    Ok((StatusCode::CREATED, Json("Log created")).into_response())
}

/// Whether `log` passes every filter of `query`; an empty or missing filter passes all.
fn matches(query: &LogQuery, log: &Log) -> bool {
    let pipeline = log.pipeline.as_deref().unwrap_or("");
    query.pipeline.as_deref().is_none_or(|p| p.is_empty() || p == pipeline)
        && query.driver.as_deref().is_none_or(|d| d.is_empty() || d == log.driver)
        && query.runid.as_deref().is_none_or(|r| r.is_empty() || r == log.runid)
}

/// `/logs/streams/{driver}/{runid}`: WebSocket when the client asks for an upgrade,
/// Server-Sent Events when it accepts `text/event-stream`.
pub(super) async fn driver_stream(
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
    ApiError::BadRequest("ask for a WebSocket upgrade or accept text/event-stream".into()).into_response()
}

/// `/logs/pipeline/{runid}`: every driver of the run, as Server-Sent Events.
pub(super) async fn run_stream(
    State(state): State<Arc<ServerState>>,
    Path(run_id): Path<String>,
) -> Response {
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
                stored_of(&state, &query).into_iter().filter(|l| matches(&query, l)).collect();
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

/// The stored lines `query` may match: those of its run when it names one (a stream is
/// of one run, and every run's lines would be copied and sorted at each connection and
/// each catch-up), else all.
fn stored_of(state: &ServerState, query: &LogQuery) -> Vec<Log> {
    match query.runid.as_deref() {
        Some(run_id) if !run_id.is_empty() => state.harness.logs(run_id),
        _ => state.harness.all_logs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(driver: &str, pipeline: Option<&str>) -> Log {
        Log {
            runid: "run".into(),
            driver: driver.into(),
            pipeline: pipeline.map(Into::into),
            timestamp: "2025-01-01T00:00:00.000000000Z".into(),
            message: "hello".into(),
        }
    }

    #[test]
    fn an_empty_or_missing_filter_lets_every_line_through() {
        let everything = LogQuery { pipeline: Some(String::new()), driver: None, runid: Some(String::new()) };
        assert!(matches(&everything, &line("builder", None)));
        assert!(matches(&everything, &line("builder", Some("ci"))));
    }

    #[test]
    fn each_filter_given_must_match_and_no_pipeline_is_the_empty_one() {
        let query = LogQuery::run("run").driver("builder");
        assert!(matches(&query, &line("builder", Some("ci"))));
        assert!(!matches(&query, &line("reporter", Some("ci"))));
        assert!(!matches(&LogQuery::run("other"), &line("builder", None)));
        let in_ci = LogQuery { pipeline: Some("ci".into()), ..LogQuery::default() };
        assert!(matches(&in_ci, &line("builder", Some("ci"))));
        assert!(!matches(&in_ci, &line("builder", None)));
    }
}
