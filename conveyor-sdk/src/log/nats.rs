//! The runtime's log destination: JetStream for the server to store, core NATS for live viewers.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{LogError, LogSink, RunClock};
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
}

/// The Log JSON of the protocol, borrowed.
#[derive(Serialize)]
struct LogRef<'a> {
    runid: &'a str,
    driver: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline: Option<&'a str>,
    timestamp: &'a str,
    message: &'a str,
}

struct InFlight {
    /// `None` when the first publish already failed.
    ack: Option<PublishAckFuture>,
    payload: Bytes,
    msg_id: String,
}

struct State {
    clock: RunClock,
    seq: u64,
    in_flight: VecDeque<InFlight>,
    error: Option<String>,
}

/// Publishes one run's lines: each to JetStream `logs.<run_id>` (pipelined, at most
/// `window` unacknowledged) and to core NATS `live.logs.<run_id>.<driver>`.
pub(crate) struct NatsLogSink {
    js: async_nats::jetstream::Context,
    client: async_nats::Client,
    run_id: String,
    driver: String,
    pipeline: Option<String>,
    stored_subject: String,
    live_subject: String,
    legacy_subject: Option<String>,
    /// Per attempt, so that a redelivered run's lines are not taken for duplicates.
    msg_id_prefix: String,
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
        attempt: u64,
        options: NatsLogOptions,
    ) -> Self {
        Self {
            js,
            client,
            stored_subject: subjects::logs(run_id),
            live_subject: subjects::live_logs(run_id, driver),
            legacy_subject: options.legacy_live.then(|| subjects::legacy_live_logs(run_id, driver)),
            msg_id_prefix: format!("log.{run_id}.{driver}.{attempt}."),
            run_id: run_id.to_owned(),
            driver: driver.to_owned(),
            pipeline: pipeline.map(str::to_owned),
            options,
            state: Mutex::new(State {
                clock: RunClock::default(),
                seq: 0,
                in_flight: VecDeque::new(),
                error: None,
            }),
        }
    }

    async fn publish(&self, payload: Bytes, msg_id: String) -> Result<PublishAckFuture, String> {
        let message = PublishMessage::build().payload(payload).message_id(msg_id);
        self.js.send_publish(self.stored_subject.clone(), message).await.map_err(|e| e.to_string())
    }

    /// Waits for one line's acknowledgement; on failure publishes it again (same
    /// message id, so JetStream stores it once) until `retry_for` has passed.
    async fn settle(&self, line: InFlight, state: &mut State) {
        let deadline = Instant::now() + self.options.retry_for;
        let mut ack = line.ack;
        let mut delay = Duration::from_millis(50);
        loop {
            let reason = match ack.take() {
                Some(pending) => match pending.await {
                    Ok(_) => return,
                    Err(error) => error.to_string(),
                },
                None => "publish failed".to_owned(),
            };
            if Instant::now() >= deadline {
                tracing::error!(run_id = %self.run_id, %reason, "a log line could not be stored");
                state.error.get_or_insert(reason);
                return;
            }
            tracing::warn!(run_id = %self.run_id, %reason, "storing a log line failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
            ack = loop {
                match self.publish(line.payload.clone(), line.msg_id.clone()).await {
                    Ok(pending) => break Some(pending),
                    Err(reason) if Instant::now() >= deadline => {
                        state.error.get_or_insert(reason);
                        return;
                    }
                    Err(_) => {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
            };
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
        state.seq += 1;
        let log = LogRef {
            runid: &self.run_id,
            driver: &self.driver,
            pipeline: self.pipeline.as_deref(),
            timestamp: &timestamp,
            message: line,
        };
        let payload = match serde_json::to_vec(&log) {
            Ok(bytes) => Bytes::from(bytes),
            Err(error) => {
                state.error.get_or_insert(error.to_string());
                return;
            }
        };
        let msg_id = format!("{}{}", self.msg_id_prefix, state.seq);
        let ack = match self.publish(payload.clone(), msg_id.clone()).await {
            Ok(ack) => Some(ack),
            Err(reason) => {
                tracing::warn!(run_id = %self.run_id, %reason, "publishing a log line failed");
                None
            }
        };
        let failed = ack.is_none();
        state.in_flight.push_back(InFlight { ack, payload: payload.clone(), msg_id });
        if failed {
            // Retry it now, in order, before more lines pile up behind it.
            while let Some(line) = state.in_flight.pop_front() {
                self.settle(line, state).await;
            }
        }
        // Live viewers are best effort: core NATS, no acknowledgement.
        if let Err(error) = self.client.publish(self.live_subject.clone(), payload).await {
            tracing::debug!(%error, "live log publish failed");
        }
        if let Some(subject) = &self.legacy_subject {
            if let Ok(frame) = serde_json::to_vec(&[timestamp.as_str(), line]) {
                let _ = self.client.publish(subject.clone(), frame.into()).await;
            }
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
            Some(reason) => Err(LogError::Delivery { reason: reason.clone() }),
            None => Ok(()),
        }
    }
}
