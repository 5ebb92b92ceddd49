//! Collecting what drivers send back: the harness reads the server's work queues and
//! keeps every result event and stored log line, for the waits and queries below.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::{self, Context};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};

use crate::protocol::{subjects, Log, PipelineEvent};
use crate::testing::server_side::Harness;
use crate::testing::TestingError;

/// How long [`Harness::result`] and the other waits wait by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// What the readers of the work queues have collected so far.
#[derive(Default)]
pub(super) struct Collected {
    pub(super) results: HashMap<String, Vec<PipelineEvent>>,
    pub(super) logs: HashMap<String, Vec<Log>>,
    /// The highest stream sequence of `logs-engine` read so far.
    logs_read_up_to: u64,
    /// The stream sequences read so far, per stream: a message delivered again (its
    /// acknowledgement lost when a NATS node went away) is collected once.
    read: HashSet<(&'static str, u64)>,
    undecodable: Vec<String>,
}

impl Harness {
    /// Waits (up to [`DEFAULT_WAIT`]) for the first result of `run_id`, and until every
    /// log line stored before it has been read: [`logs`](Self::logs) then holds the
    /// whole log the run wrote before its result.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// let run = harness.create(conveyor_sdk::Resource::new("hi", "greeting", serde_json::json!({"who": "you"}))).await?;
    /// let event = harness.result(&run.run_id).await?;
    /// assert!(event.driverresult.success, "{}", event.driverresult.message);
    /// # Ok(()) }
    /// ```
    pub async fn result(&self, run_id: &str) -> Result<PipelineEvent, TestingError> {
        self.result_within(run_id, DEFAULT_WAIT).await
    }

    /// Waits up to `timeout` for the first result of `run_id`, and until every log line
    /// stored before it has been read.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// let run = harness.create(conveyor_sdk::Resource::new("hi", "greeting", serde_json::json!({"who": "you"}))).await?;
    /// let event = harness.result_within(&run.run_id, std::time::Duration::from_secs(5)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn result_within(
        &self,
        run_id: &str,
        timeout: Duration,
    ) -> Result<PipelineEvent, TestingError> {
        let started = tokio::time::Instant::now();
        let result = self
            .wait_until(timeout, &format!("the result of run {run_id}"), |c| {
                c.results.get(run_id).and_then(|r| r.first().cloned())
            })
            .await?;
        self.logs_caught_up(timeout.saturating_sub(started.elapsed())).await?;
        Ok(result)
    }

    /// Waits up to `timeout` for the result of `run_id` published by `driver` (a
    /// pipeline's run has one per step), and until every log line stored before it has
    /// been read.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// let run = harness.create(conveyor_sdk::Resource::new("hi", "greeting", serde_json::json!({"who": "you"}))).await?;
    /// let event = harness.result_of_driver(&run.run_id, "greeter", std::time::Duration::from_secs(30)).await?;
    /// assert_eq!(event.driverresult.driver, "greeter");
    /// # Ok(()) }
    /// ```
    pub async fn result_of_driver(
        &self,
        run_id: &str,
        driver: &str,
        timeout: Duration,
    ) -> Result<PipelineEvent, TestingError> {
        let started = tokio::time::Instant::now();
        let result = self
            .wait_until(timeout, &format!("the result of driver {driver} in run {run_id}"), |c| {
                c.results
                    .get(run_id)
                    .and_then(|r| r.iter().find(|e| e.driverresult.driver == driver).cloned())
            })
            .await?;
        self.logs_caught_up(timeout.saturating_sub(started.elapsed())).await?;
        Ok(result)
    }

    /// Waits until every log line stored so far has been read. A driver stores a run's
    /// lines before it publishes the run's result, so once a result is here, the lines
    /// before it are at most the last sequence of the stream of log lines now.
    async fn logs_caught_up(&self, timeout: Duration) -> Result<(), TestingError> {
        let started = tokio::time::Instant::now();
        // Asked again while it fails: a stream of a NATS cluster may be electing its leader.
        let last = loop {
            match self.last_log_sequence().await {
                Ok(last) => break last,
                Err(error) if started.elapsed() >= timeout => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let left = timeout.saturating_sub(started.elapsed());
        self.wait_until(left, &format!("the log lines stored up to sequence {last} to be read"), |c| {
            (c.logs_read_up_to >= last).then_some(())
        })
        .await
    }

    /// The sequence of the last line stored in the stream of log lines.
    async fn last_log_sequence(&self) -> Result<u64, TestingError> {
        let stream = subjects::LOGS_STREAM;
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| {
            TestingError::nats(format!("reading the state of stream {stream}"), e)
        };
        let mut logs = self.js.get_stream(stream).await.map_err(|e| failed(e.into()))?;
        Ok(logs.info().await.map_err(|e| failed(e.into()))?.state.last_sequence)
    }

    /// Every result received so far for `run_id` (more than one means a duplicate).
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// let run = harness.create(conveyor_sdk::Resource::new("hi", "greeting", serde_json::json!({"who": "you"}))).await?;
    /// harness.result(&run.run_id).await?;
    /// assert_eq!(harness.results(&run.run_id).len(), 1, "published exactly once");
    /// # Ok(()) }
    /// ```
    pub fn results(&self, run_id: &str) -> Vec<PipelineEvent> {
        self.with(|c| c.results.get(run_id).cloned().unwrap_or_default())
    }

    /// Every result received so far, of any run.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// assert!(harness.all_results().iter().all(|e| e.driverresult.success));
    /// # Ok(()) }
    /// ```
    pub fn all_results(&self) -> Vec<PipelineEvent> {
        self.with(|c| c.results.values().flatten().cloned().collect())
    }

    /// The log lines of `run_id` stored so far, in the order the server received them.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// let run = harness.create(conveyor_sdk::Resource::new("hi", "greeting", serde_json::json!({"who": "you"}))).await?;
    /// harness.result(&run.run_id).await?; // lines are stored before the result is published
    /// let lines: Vec<String> = harness.logs(&run.run_id).into_iter().map(|l| l.message).collect();
    /// assert_eq!(lines, ["hello, you"]);
    /// # Ok(()) }
    /// ```
    pub fn logs(&self, run_id: &str) -> Vec<Log> {
        self.with(|c| c.logs.get(run_id).cloned().unwrap_or_default())
    }

    /// The log lines of `run_id` in the order the server returns them: by timestamp.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// let run = harness.create(conveyor_sdk::Resource::new("hi", "greeting", serde_json::json!({"who": "you"}))).await?;
    /// harness.result(&run.run_id).await?;
    /// assert_eq!(harness.logs_in_server_order(&run.run_id), harness.logs(&run.run_id), "timestamps sort in emission order");
    /// # Ok(()) }
    /// ```
    pub fn logs_in_server_order(&self, run_id: &str) -> Vec<Log> {
        let mut logs = self.logs(run_id);
        logs.sort_by(|a, b| {
            (&a.pipeline, &a.driver, &a.timestamp).cmp(&(&b.pipeline, &b.driver, &b.timestamp))
        });
        logs
    }

    /// Waits up to `timeout` for a stored log line of `run_id` that contains `text`.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// let run = harness.create(conveyor_sdk::Resource::new("hi", "greeting", serde_json::json!({"who": "you"}))).await?;
    /// let line = harness.wait_for_log(&run.run_id, "hello", std::time::Duration::from_secs(10)).await?;
    /// assert_eq!(line.driver, "greeter");
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_log(
        &self,
        run_id: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<Log, TestingError> {
        self.wait_until(timeout, &format!("a log line of run {run_id} containing {text:?}"), |c| {
            c.logs.get(run_id).and_then(|logs| logs.iter().find(|l| l.message.contains(text)).cloned())
        })
        .await
    }

    /// Stores `log` as a line a driver sent is stored: published on JetStream
    /// `logs.<runid>`, then read back by the harness; returns once it has been (it is
    /// then among [`logs`](Self::logs) and was sent to the
    /// [`subscribe_logs`](Self::subscribe_logs) receivers).
    #[cfg(feature = "dev-server")]
    pub(crate) async fn store_log(&self, log: &Log) -> Result<(), TestingError> {
        let subject = subjects::logs(&log.runid);
        let payload = serde_json::to_vec(log).map_err(TestingError::Encode)?;
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| {
            TestingError::nats(format!("publishing on {subject}"), e)
        };
        let ack = self.js.publish(subject.clone(), payload.into()).await.map_err(|e| failed(e.into()))?;
        let sequence = ack.await.map_err(|e| failed(e.into()))?.sequence;
        self.wait_until(DEFAULT_WAIT, &format!("the log line stored on {subject} to be read back"), |c| {
            (c.logs_read_up_to >= sequence).then_some(())
        })
        .await
    }

    /// Every result event from now on, as it is read.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut results = harness.subscribe_results();
    /// let run = harness.create(conveyor_sdk::Resource::new("hi", "greeting", serde_json::json!({"who": "you"}))).await?;
    /// let event = results.recv().await?;
    /// # Ok(()) }
    /// ```
    pub fn subscribe_results(&self) -> broadcast::Receiver<PipelineEvent> {
        self.results_tx.subscribe()
    }

    /// Every stored log line from now on, as it is read. A receiver that falls behind
    /// loses the oldest lines ([`broadcast::error::RecvError::Lagged`]); they are still
    /// in [`logs`](Self::logs).
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut lines = harness.subscribe_logs();
    /// let run = harness.create(conveyor_sdk::Resource::new("hi", "greeting", serde_json::json!({"who": "you"}))).await?;
    /// while let Ok(line) = lines.recv().await {
    ///     if line.runid == run.run_id {
    ///         println!("{}", line.message);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn subscribe_logs(&self) -> broadcast::Receiver<Log> {
        self.logs_tx.subscribe()
    }

    /// Every stored log line of every run, in the server's order: by pipeline, driver,
    /// run and timestamp.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// for line in harness.all_logs() {
    ///     println!("{} {} {}", line.runid, line.timestamp, line.message);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn all_logs(&self) -> Vec<Log> {
        let mut logs: Vec<Log> = self.with(|c| c.logs.values().flatten().cloned().collect());
        logs.sort_by(|a, b| {
            (&a.pipeline, &a.driver, &a.runid, &a.timestamp).cmp(&(
                &b.pipeline,
                &b.driver,
                &b.runid,
                &b.timestamp,
            ))
        });
        logs
    }

    /// Messages on the server's work queues that were not a result or a log line.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// assert!(harness.undecodable().is_empty(), "the driver sent only results and log lines");
    /// # Ok(()) }
    /// ```
    pub fn undecodable(&self) -> Vec<String> {
        self.with(|c| c.undecodable.clone())
    }

    fn with<T>(&self, f: impl FnOnce(&Collected) -> T) -> T {
        match self.collected.lock() {
            Ok(c) => f(&c),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    async fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut probe: impl FnMut(&Collected) -> Option<T>,
    ) -> Result<T, TestingError> {
        let mut changed = self.changed.clone();
        let found = tokio::time::timeout(timeout, async {
            loop {
                if let Some(found) = self.with(&mut probe) {
                    return Some(found);
                }
                if changed.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match found {
            Ok(Some(found)) => Ok(found),
            _ => Err(TestingError::Timeout { what: what.to_owned(), after: timeout }),
        }
    }
}

/// One of the server's work queues, read by a durable consumer of the harness.
pub(super) struct Queue {
    pub(super) js: Context,
    pub(super) stream: &'static str,
    pub(super) durable: &'static str,
}

impl Queue {
    pub(super) async fn consumer(&self) -> Result<jetstream::consumer::PullConsumer, TestingError> {
        let (stream, durable) = (self.stream, self.durable);
        let stream = self
            .js
            .get_stream(stream)
            .await
            .map_err(|e| TestingError::nats(format!("reading stream {stream}"), e))?;
        let config = pull::Config {
            durable_name: Some(durable.to_owned()),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        };
        stream
            .get_or_create_consumer(durable, config)
            .await
            .map_err(|e| TestingError::nats(format!("creating consumer {durable}"), e))
    }

    /// Reads the queue for as long as the harness lives; when the stream or the
    /// consumer goes away (a test deleted the stream), reads it again once it is back.
    pub(super) async fn read_forever<T: DeserializeOwned>(
        self,
        mut consumer: jetstream::consumer::PullConsumer,
        collected: Arc<Mutex<Collected>>,
        notify: Arc<watch::Sender<u64>>,
        store: impl Fn(&mut Collected, T),
    ) {
        loop {
            // Short pull requests with frequent heartbeats: one lost with a NATS node
            // that went away is noticed, and made again, within about a second.
            let reading =
                consumer.stream().expires(Duration::from_secs(2)).heartbeat(Duration::from_millis(500));
            if let Ok(mut messages) = reading.messages().await {
                while let Some(next) = messages.next().await {
                    let Ok(message) = next else { break };
                    let decoded = serde_json::from_slice::<T>(&message.payload);
                    let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
                    let again = sequence != 0
                        && collected.lock().is_ok_and(|mut c| !c.read.insert((self.stream, sequence)));
                    if again {
                        let _ = message.ack().await;
                        continue;
                    }
                    if let Ok(mut c) = collected.lock() {
                        if self.stream == subjects::LOGS_STREAM {
                            c.logs_read_up_to = c.logs_read_up_to.max(sequence);
                        }
                        match decoded {
                            Ok(value) => store(&mut c, value),
                            Err(error) => c.undecodable.push(format!("{}: {error}", message.subject)),
                        }
                    }
                    notify.send_modify(|n| *n += 1);
                    let _ = message.ack().await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Ok(again) = self.consumer().await {
                // A consumer created anew means the stream was too (a test deleted it):
                // its sequence numbers start again at 1, so those read before say nothing.
                if again.cached_info().created != consumer.cached_info().created {
                    if let Ok(mut c) = collected.lock() {
                        c.read.retain(|(stream, _)| *stream != self.stream);
                        if self.stream == subjects::LOGS_STREAM {
                            c.logs_read_up_to = 0;
                        }
                    }
                }
                consumer = again;
            }
        }
    }
}
