//! The server's side of the protocol: its streams, dispatching resources, and reading
//! what drivers send back.

mod collect;
mod dispatch;
mod streams;

use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, Context};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

pub use collect::DEFAULT_WAIT;
pub use dispatch::Dispatched;
pub use streams::{create_replicated_server_streams, create_server_streams};

use crate::protocol::{subjects, Log, PipelineEvent};
use crate::testing::server_side::collect::{Collected, Queue};
use crate::testing::TestingError;

/// Plays the Conveyor server's part on a real NATS server, for tests of drivers: it
/// creates the server's streams, dispatches resources exactly as the server does, and
/// is the one reader of the `pipelines.>` and `logs.>` work queues, collecting every
/// result event and stored log line.
///
/// ```no_run
/// # async fn demo() -> Result<(), conveyor_sdk::testing::TestingError> {
/// use conveyor_sdk::testing::{Harness, NatsServer};
/// use conveyor_sdk::Resource;
///
/// let nats = NatsServer::start().await?;
/// let harness = Harness::start(&nats.url()).await?;
/// // … start the driver's runtime against nats.url() …
/// let run = harness.create(Resource::new("hello", "greeting", serde_json::json!({"who": "you"}))).await?;
/// let result = harness.result(&run.run_id).await?;
/// assert!(result.driverresult.success);
/// let lines: Vec<String> = harness.logs(&run.run_id).into_iter().map(|l| l.message).collect();
/// # Ok(()) }
/// ```
pub struct Harness {
    client: async_nats::Client,
    js: Context,
    collected: Arc<Mutex<Collected>>,
    changed: watch::Receiver<u64>,
    results_tx: broadcast::Sender<PipelineEvent>,
    logs_tx: broadcast::Sender<Log>,
    _readers: JoinSet<()>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").finish_non_exhaustive()
    }
}

impl Harness {
    /// Connects to `nats_url` (one URL, or a NATS cluster's as a comma-separated list),
    /// creates the server's streams (unless they exist) and starts reading results and
    /// logs.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let nats = conveyor_sdk::testing::NatsServer::start().await?;
    /// let harness = conveyor_sdk::testing::Harness::start(&nats.url()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(nats_url: &str) -> Result<Self, TestingError> {
        Self::start_with(nats_url, async_nats::ConnectOptions::new()).await
    }

    /// [`start`](Self::start) with connection options of the caller's (TLS, credentials).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let options = async_nats::ConnectOptions::new()
    ///     .add_root_certificates("ca.pem".into())
    ///     .add_client_certificate("client.pem".into(), "client.key".into());
    /// let harness = conveyor_sdk::testing::Harness::start_with("tls://127.0.0.1:4222", options).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_with(
        nats_url: &str,
        options: async_nats::ConnectOptions,
    ) -> Result<Self, TestingError> {
        let client = options
            .name("conveyor-test-harness")
            .max_reconnects(None)
            .connect(nats_url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect::<Vec<_>>())
            .await
            .map_err(|e| TestingError::nats(format!("connecting to {nats_url}"), e))?;
        let js = jetstream::new(client.clone());
        create_server_streams(&js).await?;
        let collected = Arc::new(Mutex::new(Collected::default()));
        let (notify, changed) = watch::channel(0u64);
        let notify = Arc::new(notify);
        let mut readers = JoinSet::new();
        let results =
            Queue { js: js.clone(), stream: subjects::PIPELINE_STREAM, durable: "conveyor-server-pipelines" };
        let logs = Queue { js: js.clone(), stream: subjects::LOGS_STREAM, durable: "conveyor-server-logs" };
        let (first_results, first_logs) = (results.consumer().await?, logs.consumer().await?);
        let (results_tx, _) = broadcast::channel(4096);
        let (logs_tx, _) = broadcast::channel(65_536);
        {
            let (collected, notify, tx) = (collected.clone(), notify.clone(), results_tx.clone());
            readers.spawn(results.read_forever(
                first_results,
                collected,
                notify,
                move |c, event: PipelineEvent| {
                    let _ = tx.send(event.clone());
                    c.results.entry(event.run_id.clone()).or_default().push(event)
                },
            ));
        }
        {
            let (collected, notify, tx) = (collected.clone(), notify.clone(), logs_tx.clone());
            readers.spawn(logs.read_forever(first_logs, collected, notify, move |c, log: Log| {
                let _ = tx.send(log.clone());
                c.logs.entry(log.runid.clone()).or_default().push(log)
            }));
        }
        Ok(Self { client, js, collected, changed, results_tx, logs_tx, _readers: readers })
    }

    /// The harness's NATS connection.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// // Watch what the driver relays to live viewers.
    /// let mut live = harness.client().subscribe("live.logs.>").await?;
    /// # Ok(()) }
    /// ```
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The harness's JetStream context.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut messages = harness.jetstream().get_stream("messages").await?;
    /// println!("{} events stored", messages.info().await?.state.messages);
    /// # Ok(()) }
    /// ```
    pub fn jetstream(&self) -> &Context {
        &self.js
    }
}
