//! Logs: the stored lines (`GET /logs`, `POST /logs`), and the live streams over
//! Server-Sent Events (servers since 2026-01-21) and WebSocket (the seed tutorial's
//! server).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use reqwest::Method;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

use crate::client::error::{server_error, transport_error, ClientError};
use crate::client::tls::untrusted_because;
use crate::client::types::LogQuery;
use crate::client::{seg, Client};
use crate::protocol::Log;

/// How a live log stream is read.
///
/// ```
/// use conveyor_sdk::client::Transport;
/// assert_eq!(Transport::default(), Transport::Auto);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// Ask for Server-Sent Events; use WebSocket when the server does not offer them.
    #[default]
    Auto,
    /// Server-Sent Events: `data: <Log JSON>` per line.
    ServerSentEvents,
    /// WebSocket: one frame `["<timestamp>", "<message>"]` per line.
    WebSocket,
}

/// The lines of a live log stream, as [`Log`]s (over WebSocket, `runid` and `driver`
/// come from the request). Ends when the server closes the stream; a dropped
/// connection is an error.
///
/// ```no_run
/// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), conveyor_sdk::client::ClientError> {
/// use futures_util::StreamExt;
/// let stream: conveyor_sdk::client::LogStream = client.stream_logs("command-runner", "run-id").await?;
/// let mut first_three = stream.take(3);
/// while let Some(line) = first_three.next().await {
///     println!("{}", line?.message);
/// }
/// # Ok(()) }
/// ```
pub struct LogStream {
    inner: Pin<Box<dyn Stream<Item = Result<Log, ClientError>> + Send>>,
}

impl std::fmt::Debug for LogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStream").finish_non_exhaustive()
    }
}

impl Stream for LogStream {
    type Item = Result<Log, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Client {
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

    /// `POST /logs`: stores one log line, as a driver's lines are stored. The server
    /// answers `201`; the line is then among the stored lines and on the live streams
    /// of its run.
    ///
    /// ```no_run
    /// # async fn demo(client: conveyor_sdk::client::Client) -> Result<(), conveyor_sdk::client::ClientError> {
    /// let line = conveyor_sdk::Log {
    ///     runid: "fbdf5edf-66d4-46ce-859a-8ee44d6c9463".into(),
    ///     driver: "notifier".into(),
    ///     pipeline: None,
    ///     timestamp: "2026-11-23T21:30:46.123456789Z".into(),
    ///     message: "mail sent".into(),
    /// };
    /// client.create_log(&line).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_log(&self, log: &Log) -> Result<(), ClientError> {
        self.send(Method::POST, "/logs", Some(log), &[]).await?;
        Ok(())
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
        open(self, &path, driver, run_id, transport).await
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
        open(self, &path, "", run_id, Transport::ServerSentEvents).await
    }
}

pub(super) async fn open(
    client: &Client,
    path: &str,
    driver: &str,
    run_id: &str,
    transport: Transport,
) -> Result<LogStream, ClientError> {
    let url = client.url(path);
    let authorization = client.authorization()?;
    if transport == Transport::WebSocket {
        return websocket(&url, authorization, driver, run_id, &client.tls).await;
    }
    let mut request = client.http.get(&url).header(reqwest::header::ACCEPT, "text/event-stream");
    if let Some(value) = &authorization {
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    let response = request.send().await.map_err(|source| transport_error(url.clone(), source))?;
    let is_sse = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if response.status().is_success() && is_sse {
        return Ok(server_sent_events(url, response));
    }
    if transport == Transport::Auto && !is_sse && response.status() != reqwest::StatusCode::UNAUTHORIZED {
        return websocket(&url, authorization, driver, run_id, &client.tls).await;
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    Err(if status.is_success() { ClientError::NotEventStream { url } } else { server_error(status, &body) })
}

fn server_sent_events(url: String, response: reqwest::Response) -> LogStream {
    struct State {
        body: Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
        buffer: Vec<u8>,
        /// Where the unread part of `buffer` starts: a chunk of many events is read
        /// through once, not moved up after each of its lines.
        read: usize,
        data: String,
        url: String,
        done: bool,
    }
    let state = State {
        body: Box::pin(response.bytes_stream()),
        buffer: Vec::new(),
        read: 0,
        data: String::new(),
        url,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if state.done {
                return None;
            }
            // Events are separated by a blank line; `data:` lines make up an event.
            while let Some(length) = state.buffer[state.read..].iter().position(|&b| b == b'\n') {
                let raw = &state.buffer[state.read..state.read + length];
                state.read += length + 1;
                let line = String::from_utf8_lossy(raw);
                let line = line.trim_end_matches('\r');
                if line.is_empty() {
                    if state.data.is_empty() {
                        continue;
                    }
                    let data = std::mem::take(&mut state.data);
                    let item = serde_json::from_str::<Log>(&data)
                        .map_err(|source| ClientError::Decode { url: state.url.clone(), source });
                    return Some((item, state));
                }
                if let Some(value) = line.strip_prefix("data:") {
                    if !state.data.is_empty() {
                        state.data.push('\n');
                    }
                    state.data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
                // `:` comments (heartbeats), `event:`, `id:` and `retry:` carry nothing here.
            }
            state.buffer.drain(..state.read);
            state.read = 0;
            match state.body.next().await {
                Some(Ok(chunk)) => state.buffer.extend_from_slice(&chunk),
                Some(Err(source)) => {
                    state.done = true;
                    let error = ClientError::Stream { url: state.url.clone(), source: source.into() };
                    return Some((Err(error), state));
                }
                None => return None,
            }
        }
    });
    LogStream { inner: Box::pin(stream) }
}

async fn websocket(
    url: &str,
    authorization: Option<String>,
    driver: &str,
    run_id: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<LogStream, ClientError> {
    let ws_url = if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        return Err(ClientError::InvalidUrl(url.to_owned()));
    };
    let stream_error = |source: Box<dyn std::error::Error + Send + Sync>| ClientError::Stream {
        url: ws_url.clone(),
        source,
    };
    let mut request = ws_url.as_str().into_client_request().map_err(|e| stream_error(e.into()))?;
    if let Some(value) = authorization {
        let value = reqwest::header::HeaderValue::from_str(&value).map_err(|e| stream_error(e.into()))?;
        request.headers_mut().insert(reqwest::header::AUTHORIZATION, value);
    }
    // `wss://` trusts what HTTPS trusts; `ws://` ignores the connector.
    let connector = Some(Connector::Rustls(tls.clone()));
    let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector)
        .await
        .map_err(|e| match untrusted_because(&e) {
            Some(reason) => {
                ClientError::UntrustedCertificate { url: ws_url.clone(), reason, source: e.into() }
            }
            None => stream_error(e.into()),
        })?;
    let (driver, run_id) = (driver.to_owned(), run_id.to_owned());
    let stream = socket.filter_map(move |frame| {
        let item = match frame {
            Ok(Message::Text(text)) => Some(frame_to_log(text.as_str(), &driver, &run_id, &ws_url)),
            Ok(Message::Binary(bytes)) => {
                Some(frame_to_log(&String::from_utf8_lossy(&bytes), &driver, &run_id, &ws_url))
            }
            Ok(Message::Close(_)) | Ok(Message::Ping(_)) | Ok(Message::Pong(_)) | Ok(Message::Frame(_)) => {
                None
            }
            Err(e) => Some(Err(ClientError::Stream { url: ws_url.clone(), source: e.into() })),
        };
        std::future::ready(item)
    });
    Ok(LogStream { inner: Box::pin(stream) })
}

/// A frame `["<timestamp>", "<message>"]` (the seed tutorial's server), or a Log JSON.
fn frame_to_log(text: &str, driver: &str, run_id: &str, url: &str) -> Result<Log, ClientError> {
    if let Ok((timestamp, message)) = serde_json::from_str::<(String, String)>(text) {
        return Ok(Log {
            runid: run_id.to_owned(),
            driver: driver.to_owned(),
            pipeline: None,
            timestamp,
            message,
        });
    }
    serde_json::from_str::<Log>(text).map_err(|source| ClientError::Decode { url: url.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_servers_websocket_frames_decode() {
        let frames = include_str!("../../tests/fixtures/log-stream.websocket.frames");
        let logs: Vec<Log> =
            frames.lines().map(|f| frame_to_log(f, "command-runner", "run-1", "ws://x").unwrap()).collect();
        assert_eq!(logs.len(), 3);
        assert_eq!(logs[0].timestamp, "1764324646");
        assert_eq!(logs[1].message, "total 8");
        assert_eq!(logs[2].driver, "command-runner");
    }
}
