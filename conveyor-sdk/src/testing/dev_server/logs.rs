//! `/logs`: the stored lines (read, and written one by one), and the live streams of
//! a driver's run (WebSocket or Server-Sent Events) and of a whole pipeline run
//! (Server-Sent Events).
//!
//! A stream sends the run's stored lines, then each new line as soon as it comes,
//! from whichever of two ways brings it first: the driver's live subject
//! (`live.logs.<run_id>.<driver>`, core NATS, where a driver relays each line as it
//! stores it) or the stored path (JetStream `logs-engine`, read by the harness), which
//! also brings lines no driver relays (`POST /logs`) and any a viewer missed live. A
//! line that comes both ways is sent once. Lines are written to the viewer in batches
//! of what has come: one write, not one per line, when many come at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
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

/// The most lines written to a viewer at once.
const BATCH: usize = 1024;

/// How long a Server-Sent Events stream may be silent before it sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Server-Sent Events, `data: <Log JSON>` per line and a `:heartbeat` comment after
/// [`HEARTBEAT`] of silence; each batch of lines is one chunk of the body.
fn server_sent_events(state: Arc<ServerState>, query: LogQuery) -> Response {
    let lines = follow(state, query);
    let chunks = futures_util::stream::unfold(
        (lines, Vec::with_capacity(BATCH)),
        |(mut lines, mut batch)| async move {
            let chunk = match tokio::time::timeout(HEARTBEAT, lines.recv_many(&mut batch, BATCH)).await {
                Ok(0) => return None,
                Ok(_) => {
                    let mut chunk = Vec::with_capacity(batch.len() * 160);
                    for log in batch.drain(..) {
                        chunk.extend_from_slice(b"data: ");
                        if serde_json::to_writer(&mut chunk, &log).is_err() {
                            chunk.extend_from_slice(b": unencodable line");
                        }
                        chunk.extend_from_slice(b"\n\n");
                    }
                    chunk
                }
                Err(_) => b":heartbeat\n\n".to_vec(),
            };
            Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), (lines, batch)))
        },
    );
    (
        [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// WebSocket, one frame `["<timestamp>","<message>"]` per line; each batch of lines is
/// sent with one flush.
async fn websocket(mut socket: WebSocket, state: Arc<ServerState>, query: LogQuery) {
    let mut lines = follow(state, query);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            received = lines.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    break;
                }
                let mut frames = futures_util::stream::iter(batch.drain(..).map(|log| {
                    let frame = serde_json::to_string(&(&log.timestamp, &log.message)).unwrap_or_default();
                    Ok(WsMessage::Text(frame.into()))
                }));
                if socket.send_all(&mut frames).await.is_err() {
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

/// The stored lines that match `query` in timestamp order, then new ones as they come
/// (see the module's documentation), until the receiver is dropped.
fn follow(state: Arc<ServerState>, query: LogQuery) -> mpsc::Receiver<Log> {
    let (tx, rx) = mpsc::channel(4 * BATCH);
    tokio::spawn(async move {
        // Subscribe before reading what is stored, so that nothing falls in between.
        let mut stored_lines = state.harness.subscribe_logs();
        let mut live = match live_subject(&query) {
            Some(subject) => state.harness.client().subscribe(subject).await.ok(),
            None => None,
        };
        let mut sent = Sent::default();
        loop {
            let mut stored: Vec<Log> =
                stored_of(&state, &query).into_iter().filter(|l| matches(&query, l)).collect();
            stored.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
            for log in stored {
                if sent.first_time(&log) && tx.send(log).await.is_err() {
                    return;
                }
            }
            loop {
                let log = tokio::select! {
                    message = next_live(&mut live) => match message {
                        Some(message) => match serde_json::from_slice::<Log>(&message.payload) {
                            Ok(log) => log,
                            Err(_) => continue, // not a line; its stored copy, if any, comes
                        },
                        None => {
                            live = None; // the stored path brings the rest
                            continue;
                        }
                    },
                    stored = stored_lines.recv() => match stored {
                        Ok(log) => log,
                        // Fell behind: catch up from what is stored.
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                };
                if matches(&query, &log) && sent.first_time(&log) && tx.send(log).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// The live subject of the run (and driver) `query` names, if it names one.
fn live_subject(query: &LogQuery) -> Option<String> {
    let run_id = query.runid.as_deref().filter(|r| subjects::is_token(r))?;
    match query.driver.as_deref().filter(|d| !d.is_empty()) {
        Some(driver) => subjects::is_token(driver).then(|| subjects::live_logs(run_id, driver)),
        None => Some(subjects::live_logs(run_id, "*")),
    }
}

/// The next line on the live subject; never, without one.
async fn next_live(live: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match live {
        Some(subscriber) => subscriber.next().await,
        None => std::future::pending().await,
    }
}

/// The lines a stream has sent, by driver and timestamp, so that a line that comes
/// both ways, or again after a catch-up, is sent once.
#[derive(Default)]
struct Sent {
    /// By driver, the timestamps of the lines sent, as [`stamp_key`] numbers, ascending
    /// (a driver's timestamps increase, so nearly every line is added at the end).
    stamps: HashMap<String, Vec<u128>>,
    /// The lines sent whose timestamp is not of the form drivers write.
    other: HashSet<(String, String)>,
}

impl Sent {
    /// Whether `log` is sent for the first time; it counts as sent from now on.
    fn first_time(&mut self, log: &Log) -> bool {
        let Some(key) = stamp_key(&log.timestamp) else {
            return self.other.insert((log.driver.clone(), log.timestamp.clone()));
        };
        let stamps = match self.stamps.get_mut(log.driver.as_str()) {
            Some(stamps) => stamps,
            None => self.stamps.entry(log.driver.clone()).or_default(),
        };
        match stamps.last() {
            Some(&last) if key <= last => match stamps.binary_search(&key) {
                Ok(_) => false,
                Err(at) => {
                    stamps.insert(at, key);
                    true
                }
            },
            _ => {
                stamps.push(key);
                true
            }
        }
    }
}

/// The digits of a timestamp of the form drivers write (`2026-11-23T21:30:46.123456789Z`,
/// always that long) as one number, which orders as the text does; `None` for any
/// other form.
fn stamp_key(timestamp: &str) -> Option<u128> {
    let bytes = timestamp.as_bytes();
    if bytes.len() != 30 {
        return None;
    }
    let mut key: u128 = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let separator = match i {
            4 | 7 => b'-',
            10 => b'T',
            13 | 16 => b':',
            19 => b'.',
            29 => b'Z',
            _ if byte.is_ascii_digit() => {
                key = key * 10 + u128::from(byte - b'0');
                continue;
            }
            _ => return None,
        };
        if byte != separator {
            return None;
        }
    }
    Some(key)
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

    fn at(driver: &str, timestamp: &str) -> Log {
        Log { timestamp: timestamp.into(), ..line(driver, None) }
    }

    #[test]
    fn a_line_is_sent_once_whichever_way_and_order_it_comes() {
        let mut sent = Sent::default();
        let (a, b, c) = (
            "2026-11-23T21:30:46.000000001Z",
            "2026-11-23T21:30:46.000000002Z",
            "2026-11-23T21:30:46.000000003Z",
        );
        assert!(sent.first_time(&at("builder", a)));
        assert!(sent.first_time(&at("builder", c)));
        assert!(!sent.first_time(&at("builder", a)), "the same line again");
        assert!(sent.first_time(&at("builder", b)), "a line older than the last sent, new");
        assert!(!sent.first_time(&at("builder", b)));
        assert!(!sent.first_time(&at("builder", c)));
        assert!(sent.first_time(&at("reporter", a)), "another driver's line at the same time");
        assert!(sent.first_time(&at("builder", "1764324646")), "a timestamp of another form");
        assert!(!sent.first_time(&at("builder", "1764324646")));
    }

    #[test]
    fn timestamp_keys_order_as_the_timestamps_and_refuse_other_forms() {
        let stamps = [
            "1970-01-01T00:00:00.000000000Z",
            "2026-11-23T21:30:46.123456789Z",
            "9999-12-31T23:59:59.999999999Z",
        ];
        let keys: Vec<u128> = stamps.iter().map(|s| stamp_key(s).unwrap()).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for other in
            ["2026-11-23T21:30:46Z", "2026-11-23 21:30:46.123456789Z", "2026-11-23T21:30:46.12345678xZ", ""]
        {
            assert_eq!(stamp_key(other), None, "{other}");
        }
    }

    #[test]
    fn a_stream_follows_the_live_subject_of_its_run() {
        let query = LogQuery::run("fbdf5edf").driver("command-runner");
        assert_eq!(live_subject(&query).as_deref(), Some("live.logs.fbdf5edf.command-runner"));
        assert_eq!(live_subject(&LogQuery::run("fbdf5edf")).as_deref(), Some("live.logs.fbdf5edf.*"));
        assert_eq!(live_subject(&LogQuery::run("a.b")), None, "not a token: the stored path only");
        assert_eq!(live_subject(&LogQuery::run("fbdf5edf").driver("x y")), None);
        assert_eq!(live_subject(&LogQuery::default()), None);
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

/// The streams against a real nats-server.
#[cfg(test)]
mod on_nats {
    use futures_util::StreamExt;

    use crate::client::{Client, LogStream, Transport};
    use crate::protocol::{subjects, Log};
    use crate::testing::{DevServer, NatsServer};

    fn line(run_id: &str, nanos: u32, message: &str) -> Log {
        Log {
            runid: run_id.into(),
            driver: "builder".into(),
            pipeline: None,
            timestamp: format!("2026-11-23T21:30:46.{nanos:09}Z"),
            message: message.into(),
        }
    }

    /// The next line that is not a probe.
    async fn next(stream: &mut LogStream) -> Log {
        loop {
            let next = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next()).await;
            let log = next.expect("a line within 10 s").expect("the stream goes on").expect("a line");
            if log.message != "probe" {
                return log;
            }
        }
    }

    #[tokio::test]
    async fn a_relayed_line_is_streamed_before_it_is_stored_and_not_again_once_it_is() {
        let nats = NatsServer::start().await.expect("nats-server 2.10 or later (run scripts/services.sh)");
        let server = DevServer::start(&nats.url(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let client = Client::new(server.url()).unwrap();
        let nats_client = server.harness().client().clone();
        for (i, transport) in [Transport::ServerSentEvents, Transport::WebSocket].into_iter().enumerate() {
            let run_id = format!("relayed-{i}");
            let subject = subjects::live_logs(&run_id, "builder");
            let mut stream = client.stream_logs_with("builder", &run_id, transport).await.unwrap();
            // Relay lines until one comes through: the stream's subscription is then in place.
            let mut probe = 0;
            let first = loop {
                probe += 1;
                let payload = serde_json::to_vec(&line(&run_id, probe, "probe")).unwrap();
                nats_client.publish(subject.clone(), payload.into()).await.unwrap();
                let next = tokio::time::timeout(std::time::Duration::from_millis(100), stream.next()).await;
                if let Ok(Some(first)) = next {
                    break first.unwrap();
                }
            };
            assert_eq!(first.message, "probe");

            let relayed = line(&run_id, 1_000, "relayed, not stored yet");
            nats_client.publish(subject.clone(), serde_json::to_vec(&relayed).unwrap().into()).await.unwrap();
            let streamed = next(&mut stream).await;
            assert_eq!(
                (streamed.message.as_str(), streamed.timestamp.as_str()),
                ("relayed, not stored yet", relayed.timestamp.as_str())
            );
            assert!(server.harness().logs(&run_id).is_empty(), "the line came live, before any was stored");

            // Its stored copy, then a line only stored: the copy is not sent again.
            client.create_log(&relayed).await.unwrap();
            let stored_only = line(&run_id, 2_000, "stored only");
            client.create_log(&stored_only).await.unwrap();
            let streamed = next(&mut stream).await;
            assert_eq!(streamed.message, "stored only", "the relayed line once, then the stored one");
        }
    }
}
