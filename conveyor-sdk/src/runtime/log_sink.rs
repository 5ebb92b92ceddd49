//! The runtime's log destination: JetStream for the server to store, core NATS for live viewers.
//!
//! Each line is published on `logs.<run_id>` with a reply subject of the sink's own,
//! `<inbox>.<token>`, on which JetStream answers once it has stored the line. One
//! subscription per run reads those answers as they come, and a token is used again
//! once its answer has come, the most recently freed first: the server sees about as
//! many reply subjects as lines it has not answered yet, used again and again, not a
//! new one per line (each new subject costs it a lookup it cannot cache), and a line
//! costs the driver a publish, not a request with a channel, a permit and a timer of
//! its own. A token whose answer did not come in time is never used again: an answer
//! that comes late is not taken for another line's.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Message, StatusCode, Subject, Subscriber};
use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::observe::Observer;
use super::Backoff;
use crate::log::{LogError, LogSink, RunClock};
use crate::protocol::subjects;

/// How long JetStream's answer to a line is awaited before the line counts as not
/// stored and is tried again (what async-nats waits for a publish's acknowledgement).
const ANSWER_WAIT: Duration = Duration::from_secs(5);

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

/// Why a line was not stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum StoreError {
    /// The line could not be handed to the NATS connection.
    #[error("publishing the line failed")]
    Publish(#[source] async_nats::PublishError),
    /// The answers of JetStream could not be subscribed to.
    #[error("subscribing to JetStream's answers failed")]
    Subscribe(#[source] async_nats::SubscribeError),
    /// The line, published again, got no answer.
    #[error("publishing the line again failed")]
    Request(#[source] async_nats::RequestError),
    /// No stream stores the subject (the server has not created stream `logs-engine`).
    #[error("no stream stores {subject}")]
    NoStream {
        /// The subject of the run's lines.
        subject: String,
    },
    /// JetStream refused to store the line.
    #[error("JetStream refused the line: {description} (error code {code})")]
    Refused {
        /// JetStream's error code.
        code: u64,
        /// JetStream's explanation.
        description: String,
    },
    /// The server answered with a status in place of an acknowledgement.
    #[error("the server answered with status {0}")]
    Status(StatusCode),
    /// The answer was not JetStream's acknowledgement.
    #[error("JetStream's answer cannot be read")]
    Unreadable(#[source] serde_json::Error),
    /// No answer came within the wait.
    #[error("no acknowledgement within {0:?}")]
    TimedOut(Duration),
    /// The subscription to the answers ended (the connection was closed).
    #[error("the answers of JetStream stopped coming")]
    AnswersEnded,
}

/// What JetStream answers to a published line: `{"stream":…,"seq":…}`, or
/// `{"error":{…}}`.
#[derive(serde::Deserialize)]
struct Answer {
    error: Option<Refusal>,
    stream: Option<serde::de::IgnoredAny>,
}

/// JetStream's reason for not storing a line.
#[derive(serde::Deserialize)]
struct Refusal {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// Whether `answer`, JetStream's answer to a published line, says it is stored.
fn stored(answer: &Message, subject: &str) -> Result<(), StoreError> {
    match answer.status {
        Some(StatusCode::NO_RESPONDERS) => return Err(StoreError::NoStream { subject: subject.to_owned() }),
        Some(status) if !status.is_success() => return Err(StoreError::Status(status)),
        _ => {}
    }
    match serde_json::from_slice::<Answer>(&answer.payload).map_err(StoreError::Unreadable)? {
        Answer { error: Some(refusal), .. } => {
            Err(StoreError::Refused { code: refusal.err_code, description: refusal.description })
        }
        Answer { stream: Some(_), .. } => Ok(()),
        Answer { stream: None, .. } => Err(StoreError::Unreadable(serde::de::Error::missing_field("stream"))),
    }
}

/// Where a line published on JetStream stands.
enum Standing {
    /// Its answer is awaited on a token.
    Awaited {
        token: usize,
        since: Instant,
    },
    Stored,
    Failed(StoreError),
}

/// A line published on JetStream and not yet known to be stored, or not yet counted.
struct Pending {
    payload: Bytes,
    standing: Standing,
}

/// The answers of JetStream to a run's lines: one subscription to the reply subjects
/// of its tokens.
struct Answers {
    subscriber: Subscriber,
    tokens: Tokens,
}

impl Answers {
    async fn subscribe(client: &async_nats::Client) -> Result<Self, StoreError> {
        let inbox = client.new_inbox();
        let subscriber = client.subscribe(format!("{inbox}.*")).await.map_err(StoreError::Subscribe)?;
        Ok(Self { subscriber, tokens: Tokens::new(&inbox) })
    }
}

/// The reply subjects `<inbox>.<token>` of a run's lines, and which line each awaits
/// an answer for.
struct Tokens {
    /// `<inbox>.`, the start of every reply subject.
    prefix: String,
    /// The reply subject of each token.
    replies: Vec<Subject>,
    /// The number of the line whose answer each token awaits.
    awaiting: Vec<Option<u64>>,
    /// The tokens that await nothing, the one freed last on top.
    free: Vec<usize>,
}

impl Tokens {
    fn new(inbox: &str) -> Self {
        Self { prefix: format!("{inbox}."), replies: Vec::new(), awaiting: Vec::new(), free: Vec::new() }
    }

    /// A token for the answer to line `number`, and its reply subject.
    fn take(&mut self, number: u64) -> (usize, Subject) {
        let token = self.free.pop().unwrap_or_else(|| {
            self.replies.push(Subject::from(format!("{}{}", self.prefix, self.replies.len())));
            self.awaiting.push(None);
            self.replies.len() - 1
        });
        self.awaiting[token] = Some(number);
        (token, self.replies[token].clone())
    }

    /// The line `answer` is for, if one awaits it; its token is free again.
    fn line_of(&mut self, answer: &Message) -> Option<u64> {
        let token: usize = answer.subject.as_str().strip_prefix(self.prefix.as_str())?.parse().ok()?;
        let number = self.awaiting.get_mut(token)?.take()?;
        self.free.push(token);
        Some(number)
    }

    /// Gives up on the answer `token` awaits; the token is never used again, so that
    /// the answer, should it come late, is not taken for another line's.
    fn retire(&mut self, token: usize) {
        if let Some(slot) = self.awaiting.get_mut(token) {
            *slot = None;
        }
    }
}

struct State {
    clock: RunClock,
    /// Subscribed at the first line.
    answers: Option<Answers>,
    /// In the order written; at most the window plus one.
    pending: VecDeque<Pending>,
    /// The number of the first of `pending`; lines are numbered from 0 as written.
    first: u64,
    /// The first line given up: every flush from then on reports it.
    error: Option<Arc<StoreError>>,
}

impl State {
    /// Notes `answer` on the line it is for.
    fn note(&mut self, answer: &Message, subject: &str) {
        let Some(number) = self.answers.as_mut().and_then(|answers| answers.tokens.line_of(answer)) else {
            return; // late, for a line already settled
        };
        let Some(line) = number.checked_sub(self.first).and_then(|i| self.pending.get_mut(i as usize)) else {
            return;
        };
        line.standing = match stored(answer, subject) {
            Ok(()) => Standing::Stored,
            Err(reason) => Standing::Failed(reason),
        };
    }

    /// Notes every answer that has come already, without waiting.
    fn note_arrived(&mut self, subject: &str) {
        while let Some(next) = self.answers.as_mut().and_then(|a| a.subscriber.next().now_or_never()) {
            match next {
                Some(answer) => self.note(&answer, subject),
                None => return self.answers_lost(),
            }
        }
    }

    /// Every line still awaiting an answer fails: its answer will not come. The subscription is
    /// made again for the next line.
    fn answers_lost(&mut self) {
        self.answers = None;
        for line in &mut self.pending {
            if matches!(line.standing, Standing::Awaited { .. }) {
                line.standing = Standing::Failed(StoreError::AnswersEnded);
            }
        }
    }
}

/// Publishes one run's lines: each to JetStream `logs.<run_id>` (pipelined, at most
/// `window` unacknowledged) and to core NATS `live.logs.<run_id>.<driver>`.
pub(crate) struct NatsLogSink {
    client: async_nats::Client,
    run_id: String,
    encoder: LogEncoder,
    stored_subject: Subject,
    live_subject: Subject,
    legacy_subject: Option<Subject>,
    options: NatsLogOptions,
    /// How long an answer is awaited: [`ANSWER_WAIT`].
    answer_wait: Duration,
    state: Mutex<State>,
}

impl NatsLogSink {
    pub(crate) fn new(
        client: async_nats::Client,
        run_id: &str,
        driver: &str,
        pipeline: Option<&str>,
        options: NatsLogOptions,
    ) -> Self {
        Self {
            client,
            stored_subject: subjects::logs(run_id).into(),
            live_subject: subjects::live_logs(run_id, driver).into(),
            legacy_subject: options.legacy_live.then(|| subjects::legacy_live_logs(run_id, driver).into()),
            run_id: run_id.to_owned(),
            encoder: LogEncoder::new(run_id, driver, pipeline),
            options,
            answer_wait: ANSWER_WAIT,
            state: Mutex::new(State {
                clock: RunClock::default(),
                answers: None,
                pending: VecDeque::new(),
                first: 0,
                error: None,
            }),
        }
    }

    /// Publishes and relays one line; waits while the window is full.
    async fn write(&self, state: &mut State, line: &str) {
        if state.error.is_some() {
            return; // the run is already lost for the log; flush reports it
        }
        let timestamp = state.clock.next();
        let encoded = self.encoder.encode(timestamp.as_str(), line);
        let number = state.first + state.pending.len() as u64;
        let standing = match self.publish(state, number, encoded.payload.clone()).await {
            Ok(standing) => standing,
            Err(reason) => {
                tracing::warn!(run_id = %self.run_id, %reason, "publishing a log line failed");
                Standing::Failed(reason)
            }
        };
        let failed = matches!(standing, Standing::Failed(_));
        state.pending.push_back(Pending { payload: encoded.payload.clone(), standing });
        if failed {
            // Retry it now, in order, before more lines pile up behind it.
            while !state.pending.is_empty() {
                self.settle_first(state).await;
            }
        }
        // Live viewers are best effort: core NATS, no acknowledgement.
        let legacy = self
            .legacy_subject
            .as_ref()
            .map(|subject| (subject.clone(), LogEncoder::legacy_frame(timestamp.as_str(), &encoded)));
        if let Err(error) = self.client.publish(self.live_subject.clone(), encoded.payload).await {
            tracing::debug!(%error, "live log publish failed");
        }
        if let Some((subject, frame)) = legacy {
            let _ = self.client.publish(subject, frame).await;
        }
        // Answers that have come free their tokens now; their lines are counted as
        // the window moves on, or by flush.
        state.note_arrived(self.stored_subject.as_str());
        while state.pending.len() > self.options.window {
            self.settle_first(state).await;
        }
    }

    /// Publishes line `number` on JetStream with a reply subject of ours.
    async fn publish(&self, state: &mut State, number: u64, payload: Bytes) -> Result<Standing, StoreError> {
        let answers = match &mut state.answers {
            Some(answers) => answers,
            answers => answers.insert(Answers::subscribe(&self.client).await?),
        };
        let (token, reply) = answers.tokens.take(number);
        match self.client.publish_with_reply(self.stored_subject.clone(), reply, payload).await {
            Ok(()) => Ok(Standing::Awaited { token, since: Instant::now() }),
            Err(reason) => {
                answers.tokens.retire(token);
                Err(StoreError::Publish(reason))
            }
        }
    }

    /// Waits until the first pending line is stored, tried again as the options say,
    /// or given up; counts it and removes it.
    async fn settle_first(&self, state: &mut State) {
        self.await_first(state).await;
        let Some(line) = state.pending.pop_front() else { return };
        state.first += 1;
        let observer = &self.options.observer;
        let reason = match line.standing {
            Standing::Stored => return observer.log_line_published(),
            Standing::Failed(reason) => reason,
            // Not after await_first; were it so, the line is not known to be stored.
            Standing::Awaited { .. } => StoreError::TimedOut(self.answer_wait),
        };
        // A line whose acknowledgement alone was lost may thus be stored twice (a
        // per-line message id would prevent that, at a quarter of the throughput).
        let mut first = Some(reason);
        let retried = self
            .options
            .backoff
            .retry_within(
                self.options.retry_for,
                || {
                    let earlier = first.take();
                    let payload = line.payload.clone();
                    async move {
                        match earlier {
                            Some(reason) => Err(reason),
                            None => self.store_again(payload).await,
                        }
                    }
                },
                |reason| {
                    observer.log_publish_failed();
                    tracing::warn!(run_id = %self.run_id, %reason, "storing a log line failed; retrying");
                },
            )
            .await;
        match retried {
            Ok(()) => observer.log_line_published(),
            Err(reason) => {
                observer.log_publish_failed();
                tracing::error!(run_id = %self.run_id, %reason, "a log line could not be stored");
                state.error.get_or_insert(Arc::new(reason));
            }
        }
    }

    /// Reads JetStream's answers until the first pending line's has come, or its wait
    /// is over: its standing is then stored or failed.
    async fn await_first(&self, state: &mut State) {
        loop {
            let Some(Standing::Awaited { token, since }) = state.pending.front().map(|line| &line.standing)
            else {
                return;
            };
            let (token, since) = (*token, *since);
            let Some(answers) = state.answers.as_mut() else {
                state.answers_lost();
                continue;
            };
            // Answers that have come already are read without a timer.
            let next = match answers.subscriber.next().now_or_never() {
                Some(next) => Ok(next),
                None => tokio::time::timeout_at(since + self.answer_wait, answers.subscriber.next()).await,
            };
            match next {
                Ok(Some(answer)) => state.note(&answer, self.stored_subject.as_str()),
                Ok(None) => state.answers_lost(),
                Err(_) => {
                    answers.tokens.retire(token);
                    if let Some(line) = state.pending.front_mut() {
                        line.standing = Standing::Failed(StoreError::TimedOut(self.answer_wait));
                    }
                }
            }
        }
    }

    /// Publishes a line again, alone, and waits for JetStream's answer.
    async fn store_again(&self, payload: Bytes) -> Result<(), StoreError> {
        let request = async_nats::Request::new().payload(payload).timeout(Some(self.answer_wait));
        match self.client.send_request(self.stored_subject.clone(), request).await {
            Ok(answer) => stored(&answer, self.stored_subject.as_str()),
            Err(error) => Err(match error.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    StoreError::NoStream { subject: self.stored_subject.to_string() }
                }
                async_nats::RequestErrorKind::TimedOut => StoreError::TimedOut(self.answer_wait),
                _ => StoreError::Request(error),
            }),
        }
    }
}

#[async_trait]
impl LogSink for NatsLogSink {
    async fn write_line(&self, line: &str) {
        let mut state = self.state.lock().await;
        self.write(&mut state, line).await;
    }

    async fn write_lines(&self, lines: &[&str]) {
        let mut state = self.state.lock().await;
        for line in lines {
            self.write(&mut state, line).await;
        }
    }

    async fn flush(&self) -> Result<(), LogError> {
        let mut state = self.state.lock().await;
        while !state.pending.is_empty() {
            self.settle_first(&mut state).await;
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

    fn answer(subject: &str, status: Option<StatusCode>, payload: &'static str) -> Message {
        Message {
            subject: subject.into(),
            reply: None,
            payload: Bytes::from_static(payload.as_bytes()),
            headers: None,
            status,
            description: None,
            length: payload.len(),
        }
    }

    #[test]
    fn an_answer_says_stored_refused_or_that_no_stream_stores_the_subject() {
        let subject = "logs.run";
        assert!(stored(&answer("_INBOX.a.0", None, r#"{"stream":"logs-engine","seq":7}"#), subject).is_ok());
        let refusal = r#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"logs-engine","seq":0}"#;
        let refused = stored(&answer("_INBOX.a.0", None, refusal), subject).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "JetStream refused the line: maximum messages exceeded (error code 10077)"
        );
        let nobody = stored(&answer("_INBOX.a.0", Some(StatusCode::NO_RESPONDERS), ""), subject).unwrap_err();
        assert_eq!(nobody.to_string(), "no stream stores logs.run");
        assert!(matches!(stored(&answer("_INBOX.a.0", None, "{}"), subject), Err(StoreError::Unreadable(_))));
        assert!(matches!(
            stored(&answer("_INBOX.a.0", None, "+OK"), subject),
            Err(StoreError::Unreadable(_))
        ));
    }

    #[test]
    fn a_token_is_used_again_once_answered_and_never_once_given_up() {
        let mut tokens = Tokens::new("_INBOX.abc");
        let (first, reply) = tokens.take(0);
        assert_eq!(reply.as_str(), "_INBOX.abc.0");
        let (second, _) = tokens.take(1);
        assert_ne!(first, second, "a token awaiting an answer is not handed out again");
        assert_eq!(tokens.line_of(&answer("_INBOX.abc.1", None, "")), Some(1));
        assert_eq!(tokens.line_of(&answer("_INBOX.abc.1", None, "")), None, "one answer per publish");
        assert_eq!(tokens.take(2).0, second, "the token freed last is used first");
        tokens.retire(first);
        assert_eq!(tokens.line_of(&answer("_INBOX.abc.0", None, "")), None, "a late answer is for nobody");
        let (fresh, reply) = tokens.take(3);
        assert!(fresh != first && fresh != second, "a retired token is never used again");
        assert_eq!(reply.as_str(), "_INBOX.abc.2");
        for stranger in ["_INBOX.other.2", "_INBOX.abc.x", "_INBOX.abc.99", "logs.run"] {
            assert_eq!(tokens.line_of(&answer(stranger, None, "")), None, "{stranger}");
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

/// The sink against a real nats-server.
#[cfg(all(test, feature = "testing"))]
mod on_nats {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use futures_util::StreamExt;

    use super::*;
    use crate::protocol::Log;
    use crate::testing::{create_server_streams, NatsServer};

    const DRIVER: &str = "sink-test";

    async fn server() -> (NatsServer, async_nats::Client, async_nats::jetstream::Context) {
        let nats = NatsServer::start().await.expect("nats-server 2.10 or later (run scripts/services.sh)");
        let client = async_nats::connect(nats.url()).await.expect("connecting to the nats-server");
        let js = async_nats::jetstream::new(client.clone());
        create_server_streams(&js).await.expect("the server's streams");
        (nats, client, js)
    }

    fn options(window: usize, retry_for: Duration, observer: Observer) -> NatsLogOptions {
        NatsLogOptions {
            window,
            legacy_live: true,
            retry_for,
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(50)),
            observer,
        }
    }

    /// The lines stored for `run_id`, in the stream's order.
    async fn stored_lines(js: &async_nats::jetstream::Context, run_id: &str, expected: usize) -> Vec<Log> {
        let stream = js.get_stream(subjects::LOGS_STREAM).await.expect("the stream of logs");
        let config = pull::Config {
            filter_subject: subjects::logs(run_id),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        };
        let consumer = stream.create_consumer(config).await.expect("a consumer");
        let mut messages = consumer.messages().await.expect("messages");
        let mut lines = Vec::with_capacity(expected);
        while lines.len() < expected {
            let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
            let message = next.expect("every line stored").expect("a message").expect("a message");
            lines.push(serde_json::from_slice::<Log>(&message.payload).expect("Log JSON"));
            message.ack().await.expect("an acknowledgement");
        }
        let extra = tokio::time::timeout(Duration::from_millis(200), messages.next()).await;
        assert!(extra.is_err(), "a line stored more than once: {extra:?}");
        lines
    }

    #[tokio::test]
    async fn a_burst_through_a_small_window_is_stored_whole_in_order_and_relayed_live() {
        let (_nats, client, js) = server().await;
        let run_id = uuid::Uuid::new_v4().to_string();
        let mut live = client.subscribe(subjects::live_logs(&run_id, DRIVER)).await.unwrap();
        let mut legacy = client.subscribe(subjects::legacy_live_logs(&run_id, DRIVER)).await.unwrap();
        client.flush().await.unwrap();
        let sink = NatsLogSink::new(
            client.clone(),
            &run_id,
            DRIVER,
            None,
            options(16, Duration::from_secs(10), Observer::default()),
        );
        let texts: Vec<String> = (0..5_000).map(|i| format!("line {i}")).collect();
        for (i, batch) in texts.chunks(97).enumerate() {
            if i % 2 == 0 {
                let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
                sink.write_lines(&batch).await;
            } else {
                for line in batch {
                    sink.write_line(line).await;
                }
            }
        }
        sink.flush().await.expect("every line stored");

        let stored = stored_lines(&js, &run_id, texts.len()).await;
        let messages: Vec<&str> = stored.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, texts, "every line, once, in the order written");
        assert!(stored.windows(2).all(|w| w[0].timestamp < w[1].timestamp), "timestamps increase");
        assert!(stored.iter().all(|l| l.runid == run_id && l.driver == DRIVER));
        for (i, text) in texts.iter().enumerate() {
            let line = live.next().await.expect("a live line");
            let line: Log = serde_json::from_slice(&line.payload).expect("Log JSON");
            assert_eq!((&line.message, &line.timestamp), (text, &stored[i].timestamp));
            let frame = legacy.next().await.expect("a line on the older subject");
            let frame: (String, String) = serde_json::from_slice(&frame.payload).expect("a frame");
            assert_eq!(frame, (stored[i].timestamp.clone(), text.clone()));
        }
    }

    #[cfg(feature = "metrics")]
    #[tokio::test]
    async fn a_line_no_stream_takes_is_retried_stored_once_the_stream_is_back_and_counted() {
        let (_nats, client, js) = server().await;
        js.delete_stream(subjects::LOGS_STREAM).await.unwrap();
        let metrics = crate::runtime::Metrics::new();
        let observer = Observer::new(&crate::Config::default().metrics(metrics.clone()));
        let run_id = uuid::Uuid::new_v4().to_string();
        let sink = Arc::new(NatsLogSink::new(
            client.clone(),
            &run_id,
            DRIVER,
            None,
            options(4, Duration::from_secs(30), observer),
        ));
        sink.write_lines(&["written while no stream takes it", "and another"]).await;
        let flushing = tokio::spawn({
            let sink = sink.clone();
            async move { sink.flush().await }
        });
        let count = |name: &str| {
            let text = metrics.encode();
            let line = text.lines().find(|l| l.starts_with(name)).map(str::to_owned).unwrap_or_default();
            line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        };
        // The server's stream comes back once a try has failed.
        while count("conveyor_log_publish_failures_total") < 1.0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        create_server_streams(&js).await.unwrap();
        flushing.await.unwrap().expect("stored once the stream is back");
        let stored = stored_lines(&js, &run_id, 2).await;
        let messages: Vec<&str> = stored.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["written while no stream takes it", "and another"]);
        assert_eq!(count("conveyor_log_lines_published_total"), 2.0);
    }

    /// The next line the sink published on the subject of its lines.
    async fn published(subscriber: &mut async_nats::Subscriber) -> async_nats::Message {
        let next = tokio::time::timeout(Duration::from_secs(10), subscriber.next()).await;
        next.expect("a publish of the sink").expect("a message")
    }

    #[tokio::test]
    async fn a_line_whose_answer_does_not_come_is_published_again_and_its_late_answer_is_for_nobody() {
        let (_nats, client, js) = server().await;
        // No stream: the test answers for JetStream, or keeps silent.
        js.delete_stream(subjects::LOGS_STREAM).await.unwrap();
        let run_id = uuid::Uuid::new_v4().to_string();
        let mut server_side = client.subscribe(subjects::logs(&run_id)).await.unwrap();
        client.flush().await.unwrap();
        let mut sink = NatsLogSink::new(
            client.clone(),
            &run_id,
            DRIVER,
            None,
            options(4, Duration::from_secs(30), Observer::default()),
        );
        // A real server is on the way, so the wait is real time, kept short.
        sink.answer_wait = Duration::from_millis(300);
        let sink = Arc::new(sink);
        let stored = Bytes::from_static(br#"{"stream":"logs-engine","seq":1}"#);
        let message = |m: &async_nats::Message| serde_json::from_slice::<Log>(&m.payload).unwrap().message;

        sink.write_line("slow").await;
        let slow = published(&mut server_side).await;
        let flushing = tokio::spawn({
            let sink = sink.clone();
            async move { sink.flush().await }
        });
        // Unanswered, the line is published again.
        let again = published(&mut server_side).await;
        assert_eq!(message(&again), "slow");
        client.publish(again.reply.clone().unwrap(), stored.clone()).await.unwrap();
        flushing.await.unwrap().expect("stored on the second try");

        sink.write_line("next").await;
        let next = published(&mut server_side).await;
        assert_eq!(message(&next), "next");
        // The first try's answer, late: it must not pass for the next line's.
        client.publish(slow.reply.clone().unwrap(), stored.clone()).await.unwrap();
        let flushing = tokio::spawn({
            let sink = sink.clone();
            async move { sink.flush().await }
        });
        let again = published(&mut server_side).await;
        assert_eq!(message(&again), "next", "the next line still awaited its own answer");
        client.publish(again.reply.clone().unwrap(), stored).await.unwrap();
        flushing.await.unwrap().expect("stored on the second try");
    }

    #[tokio::test]
    async fn a_line_given_up_is_reported_by_every_flush_and_later_lines_are_dropped() {
        let (_nats, client, js) = server().await;
        js.delete_stream(subjects::LOGS_STREAM).await.unwrap();
        let run_id = uuid::Uuid::new_v4().to_string();
        let sink = NatsLogSink::new(
            client.clone(),
            &run_id,
            DRIVER,
            None,
            options(4, Duration::from_millis(200), Observer::default()),
        );
        sink.write_line("lost").await;
        let error = sink.flush().await.expect_err("no stream stores the line");
        let text = crate::error_text(&error);
        assert!(text.contains(&format!("no stream stores logs.{run_id}")), "{text}");
        create_server_streams(&js).await.unwrap();
        sink.write_line("after the loss").await;
        assert!(sink.flush().await.is_err(), "the run's log stays incomplete");
        let stream = js.get_stream(subjects::LOGS_STREAM).await.unwrap().info().await.unwrap().state.messages;
        assert_eq!(stream, 0, "a line after a lost one is not stored out of place");
    }
}
