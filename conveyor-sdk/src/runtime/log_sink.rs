//! The runtime's log destination: JetStream for the server to store, core NATS for live viewers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishError};
use async_nats::Subject;
use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Mutex;

use super::observe::Observer;
use super::Backoff;
use crate::log::{LogError, LogSink, RunClock};
use crate::protocol::subjects;

/// How a run's lines are published.
#[derive(Debug, Clone)]
pub(crate) struct NatsLogOptions {
    /// Lines published but not yet acknowledged by JetStream, at most.
    pub(crate) window: usize,
    /// Also publish on the live subject of servers before 2026-01-21.
    pub(crate) legacy_live: bool,
    /// How long a line whose publish failed is retried before it is given up.
    pub(crate) retry_for: Duration,
    /// The pauses between those tries.
    pub(crate) backoff: Backoff,
    /// Where stored and failed lines are counted.
    pub(crate) observer: Observer,
}

/// Writes the Log JSON of the protocol for one run's lines. The fields that are the
/// same for every line are encoded once.
pub(crate) struct LogEncoder {
    /// `{"runid":…,"driver":…[,"pipeline":…],"timestamp":"`
    prefix: Vec<u8>,
}

/// One encoded line.
pub(crate) struct EncodedLine {
    /// The Log JSON.
    pub(crate) payload: Bytes,
    /// The escaped message, a JSON string, within `payload`.
    message: std::ops::Range<usize>,
}

impl LogEncoder {
    pub(crate) fn new(run_id: &str, driver: &str, pipeline: Option<&str>) -> Self {
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
        let mut prefix = format!("{{\"runid\":{},\"driver\":{}", quote(run_id), quote(driver));
        if let Some(pipeline) = pipeline {
            prefix.push_str(&format!(",\"pipeline\":{}", quote(pipeline)));
        }
        prefix.push_str(",\"timestamp\":\"");
        Self { prefix: prefix.into_bytes() }
    }

    /// The Log JSON of one line; `timestamp` needs no escaping (see `RunClock`).
    pub(crate) fn encode(&self, timestamp: &str, line: &str) -> EncodedLine {
        let mut buf = BytesMut::with_capacity(self.prefix.len() + timestamp.len() + line.len() + 24);
        buf.extend_from_slice(&self.prefix);
        buf.extend_from_slice(timestamp.as_bytes());
        buf.extend_from_slice(b"\",\"message\":");
        let start = buf.len();
        // Writing a string into memory cannot fail.
        let _ = serde_json::to_writer((&mut buf).writer(), line);
        let end = buf.len();
        buf.extend_from_slice(b"}");
        EncodedLine { payload: buf.freeze(), message: start..end }
    }

    /// The frame of the older live subject, `["<timestamp>","<message>"]`.
    pub(crate) fn legacy_frame(timestamp: &str, line: &EncodedLine) -> Bytes {
        let message = &line.payload[line.message.clone()];
        let mut frame = BytesMut::with_capacity(timestamp.len() + message.len() + 6);
        frame.extend_from_slice(b"[\"");
        frame.extend_from_slice(timestamp.as_bytes());
        frame.extend_from_slice(b"\",");
        frame.extend_from_slice(message);
        frame.extend_from_slice(b"]");
        frame.freeze()
    }
}

struct InFlight {
    /// The pending acknowledgement, or why the first publish already failed.
    ack: Result<PublishAckFuture, PublishError>,
    payload: Bytes,
}

struct State {
    clock: RunClock,
    in_flight: VecDeque<InFlight>,
    /// The first line given up: every flush from then on reports it.
    error: Option<Arc<PublishError>>,
}

/// Publishes one run's lines: each to JetStream `logs.<run_id>` (pipelined, at most
/// `window` unacknowledged) and to core NATS `live.logs.<run_id>.<driver>`.
pub(crate) struct NatsLogSink {
    js: async_nats::jetstream::Context,
    client: async_nats::Client,
    run_id: String,
    encoder: LogEncoder,
    stored_subject: Subject,
    live_subject: Subject,
    legacy_subject: Option<Subject>,
    options: NatsLogOptions,
    state: Mutex<State>,
}

impl NatsLogSink {
    pub(crate) fn new(
        js: async_nats::jetstream::Context,
        client: async_nats::Client,
        run_id: &str,
        driver: &str,
        pipeline: Option<&str>,
        options: NatsLogOptions,
    ) -> Self {
        Self {
            js,
            client,
            stored_subject: subjects::logs(run_id).into(),
            live_subject: subjects::live_logs(run_id, driver).into(),
            legacy_subject: options.legacy_live.then(|| subjects::legacy_live_logs(run_id, driver).into()),
            run_id: run_id.to_owned(),
            encoder: LogEncoder::new(run_id, driver, pipeline),
            options,
            state: Mutex::new(State { clock: RunClock::default(), in_flight: VecDeque::new(), error: None }),
        }
    }

    async fn publish(&self, payload: Bytes) -> Result<PublishAckFuture, PublishError> {
        self.js.publish(self.stored_subject.clone(), payload).await
    }

    /// Waits for one line's acknowledgement; on failure publishes it again, pausing
    /// as the options' back-off says, until `retry_for` has passed. A line whose
    /// acknowledgement alone was lost may thus be stored twice (a per-line message id
    /// would prevent that, at a quarter of the throughput).
    async fn settle(&self, line: InFlight, state: &mut State) {
        let observer = &self.options.observer;
        let mut first = Some(line.ack);
        let payload = &line.payload;
        let stored = self
            .options
            .backoff
            .retry_within(
                self.options.retry_for,
                || {
                    let sent = first.take();
                    async move {
                        let pending = match sent {
                            Some(sent) => sent?,
                            None => self.publish(payload.clone()).await?,
                        };
                        pending.await.map(drop)
                    }
                },
                |reason| {
                    observer.log_publish_failed();
                    tracing::warn!(run_id = %self.run_id, %reason, "storing a log line failed; retrying");
                },
            )
            .await;
        match stored {
            Ok(()) => observer.log_line_published(),
            Err(reason) => {
                observer.log_publish_failed();
                tracing::error!(run_id = %self.run_id, %reason, "a log line could not be stored");
                state.error.get_or_insert(Arc::new(reason));
            }
        }
    }
}

#[async_trait]
impl LogSink for NatsLogSink {
    async fn write_line(&self, line: &str) {
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        if state.error.is_some() {
            return; // the run is already lost for the log; flush reports it
        }
        let timestamp = state.clock.next();
        let encoded = self.encoder.encode(&timestamp, line);
        let payload = encoded.payload.clone();
        let ack = self.publish(payload.clone()).await;
        if let Err(reason) = &ack {
            tracing::warn!(run_id = %self.run_id, %reason, "publishing a log line failed");
        }
        let failed = ack.is_err();
        state.in_flight.push_back(InFlight { ack, payload: payload.clone() });
        if failed {
            // Retry it now, in order, before more lines pile up behind it.
            while let Some(line) = state.in_flight.pop_front() {
                self.settle(line, state).await;
            }
        }
        // Live viewers are best effort: core NATS, no acknowledgement.
        if let Err(error) = self.client.publish(self.live_subject.clone(), encoded.payload.clone()).await {
            tracing::debug!(%error, "live log publish failed");
        }
        if let Some(subject) = &self.legacy_subject {
            let frame = LogEncoder::legacy_frame(&timestamp, &encoded);
            let _ = self.client.publish(subject.clone(), frame).await;
        }
        while state.in_flight.len() > self.options.window {
            if let Some(oldest) = state.in_flight.pop_front() {
                self.settle(oldest, state).await;
            }
        }
    }

    async fn flush(&self) -> Result<(), LogError> {
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        while let Some(line) = state.in_flight.pop_front() {
            self.settle(line, state).await;
        }
        match &state.error {
            Some(reason) => Err(LogError::Delivery { source: Box::new(reason.clone()) }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Log;

    #[test]
    fn encoded_lines_are_the_log_json_of_the_protocol() {
        let ts = "2026-11-23T21:30:46.123456789Z";
        for pipeline in [None, Some("node-pipeline")] {
            let encoder = LogEncoder::new("fbdf5edf-66d4-46ce-859a-8ee44d6c9463", "command-runner", pipeline);
            for line in ["plain", "", "quotes \" and \\ backslash", "tab\tand \u{1}", "ünïcödé ☃"] {
                let encoded = encoder.encode(ts, line);
                let log: Log = serde_json::from_slice(&encoded.payload).unwrap();
                assert_eq!(log.message, line);
                assert_eq!(log.pipeline.as_deref(), pipeline);
                assert_eq!(log.timestamp, ts);
                assert_eq!(log.driver, "command-runner");
                let frame: (String, String) =
                    serde_json::from_slice(&LogEncoder::legacy_frame(ts, &encoded)).unwrap();
                assert_eq!(frame, (ts.to_owned(), line.to_owned()));
            }
        }
    }

    #[test]
    fn a_line_without_pipeline_matches_the_fixture_byte_for_byte() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/log.json")).unwrap();
        let encoder = LogEncoder::new("fbdf5edf-66d4-46ce-859a-8ee44d6c9463", "command-runner", None);
        let encoded = encoder.encode("2026-11-23T21:30:46.123456789Z", "total 4");
        let ours: serde_json::Value = serde_json::from_slice(&encoded.payload).unwrap();
        assert_eq!(ours, fixture);
    }
}
