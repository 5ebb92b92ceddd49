//! A driver whose behaviour each resource chooses, and helpers to run it against a
//! real nats-server.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use conveyor_sdk::testing::{Harness, NatsServer, Serving};
use conveyor_sdk::{Config, Driver, DriverResult, ReconcileError, Resource, ResourceType, Run};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{watch, Barrier};

pub const DRIVER: &str = "test-runner";
pub const TYPE: &str = "job";

/// What a run of the test driver does.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Logs one line and succeeds.
    Ok,
    /// Returns a failed result.
    Fail,
    /// Returns an error.
    Error,
    /// Panics.
    Panic,
    /// Logs `lines` lines `line <i>` and succeeds.
    Lines,
    /// Waits at the shared barrier with the other runs, then succeeds.
    Barrier,
    /// Logs `started`, waits until the gate opens, logs `gate passed` and succeeds.
    Gate,
    /// On attempt 1 logs `started` and never returns; later attempts succeed.
    HoldFirst,
    /// On attempt 1 waits for cancellation, then returns success (to be discarded);
    /// later attempts succeed.
    CancelFirst,
    /// Logs `sleeping`, sleeps `sleep_ms` and succeeds, saying which process ran it.
    Sleep,
    /// Logs `started`, waits until cancelled, logs `cleaning up: <reason>` and returns a
    /// failure `stopped` with data `{"cleaned": true}`.
    AwaitCancel,
    /// Logs `started` and never returns, whatever happens.
    Hang,
    /// Asks to be tried again after `sleep_ms` while fewer than `retries` retries were
    /// made; then succeeds with data `{"retries": n}`.
    Retry,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct JobSpec {
    pub mode: Mode,
    #[serde(default)]
    pub lines: u32,
    #[serde(default)]
    pub sleep_ms: u64,
    /// The run's own deadline ([`Driver::deadline`]).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    #[serde(default)]
    pub retries: u32,
}

/// What the test driver saw.
pub struct Probe {
    pub calls: AtomicUsize,
    pub running: AtomicUsize,
    pub max_running: AtomicUsize,
    pub cancelled: AtomicUsize,
    pub barrier: Barrier,
    gate: watch::Sender<bool>,
}

impl Probe {
    pub fn new(barrier: usize) -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
            barrier: Barrier::new(barrier.max(1)),
            gate: watch::channel(false).0,
        })
    }

    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }
}

#[derive(Clone)]
pub struct TestDriver {
    pub probe: Arc<Probe>,
}

impl TestDriver {
    pub fn new() -> Self {
        Self { probe: Probe::new(1) }
    }

    pub fn with_barrier(n: usize) -> Self {
        Self { probe: Probe::new(n) }
    }
}

struct Running<'a>(&'a Probe);

impl<'a> Running<'a> {
    fn enter(probe: &'a Probe) -> Self {
        let now = probe.running.fetch_add(1, Ordering::SeqCst) + 1;
        probe.max_running.fetch_max(now, Ordering::SeqCst);
        Self(probe)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[conveyor_sdk::async_trait]
impl Driver for TestDriver {
    type Spec = JobSpec;

    fn name(&self) -> &str {
        DRIVER
    }

    fn resources(&self) -> Vec<ResourceType> {
        vec![ResourceType::owned_from::<JobSpec>(TYPE)]
    }

    async fn reconcile(&self, run: Run<JobSpec>) -> Result<DriverResult, ReconcileError> {
        let probe = &self.probe;
        probe.calls.fetch_add(1, Ordering::SeqCst);
        let _running = Running::enter(probe);
        let log = run.log();
        let data =
            json!({"attempt": run.attempt(), "pid": std::process::id(), "event": run.event().as_str()});
        match run.spec().mode {
            Mode::Ok => {
                log.log(format!("hello from {}", run.resource().name)).await;
                Ok(DriverResult::success("done").with_data(data))
            }
            Mode::Fail => Ok(DriverResult::failure("it failed on purpose")),
            Mode::Error => Err("boom".into()),
            Mode::Panic => panic!("kaboom"),
            Mode::Lines => {
                for i in 0..run.spec().lines {
                    log.log(format!("line {i}")).await;
                }
                Ok(DriverResult::success("logged"))
            }
            Mode::Barrier => {
                match tokio::time::timeout(Duration::from_secs(20), probe.barrier.wait()).await {
                    Ok(_) => Ok(DriverResult::success("overlapped")),
                    Err(_) => Ok(DriverResult::failure("runs did not overlap")),
                }
            }
            Mode::Gate => {
                log.log("started").await;
                let mut gate = probe.gate.subscribe();
                let _ = gate.wait_for(|open| *open).await;
                log.log("gate passed").await;
                Ok(DriverResult::success("passed").with_data(data))
            }
            Mode::HoldFirst if run.attempt() == 1 => {
                log.log("started").await;
                std::future::pending().await
            }
            Mode::CancelFirst if run.attempt() == 1 => {
                log.log("started").await;
                run.cancelled().await;
                probe.cancelled.fetch_add(1, Ordering::SeqCst);
                log.log("cleaned up").await;
                Ok(DriverResult::success("must be discarded"))
            }
            Mode::HoldFirst | Mode::CancelFirst => {
                Ok(DriverResult::success("second attempt").with_data(data))
            }
            Mode::Sleep => {
                log.log("sleeping").await;
                tokio::time::sleep(Duration::from_millis(run.spec().sleep_ms)).await;
                Ok(DriverResult::success("slept").with_data(data))
            }
            Mode::AwaitCancel => {
                log.log("started").await;
                run.cancelled().await;
                probe.cancelled.fetch_add(1, Ordering::SeqCst);
                log.log(format!("cleaning up: {:?}", run.cancel_reason())).await;
                Ok(DriverResult::failure("stopped").with_data(json!({"cleaned": true})))
            }
            Mode::Hang => {
                log.log("started").await;
                std::future::pending().await
            }
            Mode::Retry if run.retries() < run.spec().retries => {
                Err(ReconcileError::retry_after(Duration::from_millis(run.spec().sleep_ms), "busy"))
            }
            Mode::Retry => Ok(DriverResult::success("retried").with_data(json!({"retries": run.retries()}))),
        }
    }

    fn deadline(&self, run: &Run<JobSpec>) -> Option<Duration> {
        run.spec().deadline_ms.map(Duration::from_millis)
    }
}

pub fn job(name: &str, spec: serde_json::Value) -> Resource {
    Resource::new(name, TYPE, spec)
}

/// A nats-server and the server's side of the protocol.
pub async fn setup() -> (NatsServer, Harness) {
    let nats = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let harness = Harness::start(&nats.url()).await.unwrap_or_else(|e| panic!("{e}"));
    (nats, harness)
}

pub fn config(nats: &NatsServer) -> Config {
    Config::default()
        .nats_url(nats.url())
        .retry_interval(Duration::from_millis(200))
        .pull_expiry(Duration::from_secs(1))
        .nak_delay(Duration::from_millis(200))
}

/// Serves `driver` in the background; returns once its consumer is pulling.
pub async fn serve(driver: TestDriver, config: Config, harness: &Harness) -> Serving {
    Serving::start(driver, config, harness).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until the driver's consumer has at least `n` pull requests waiting.
pub async fn wait_for_pull_requests(harness: &Harness, n: usize) {
    harness
        .wait_for_pull_requests(DRIVER, n, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

pub async fn consumer_info(harness: &Harness) -> Result<async_nats::jetstream::consumer::Info, String> {
    let stream = harness.jetstream().get_stream("messages").await.map_err(|e| e.to_string())?;
    stream.consumer_info(DRIVER).await.map_err(|e| e.to_string())
}

/// Waits until the consumer has no message delivered and unacknowledged and none
/// left to deliver, and returns its state.
pub async fn wait_until_settled(harness: &Harness) -> async_nats::jetstream::consumer::Info {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let info = consumer_info(harness).await.expect("consumer info");
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            return info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "messages still pending: {} unacknowledged, {} undelivered",
            info.num_ack_pending,
            info.num_pending
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn messages(harness: &Harness, run_id: &str) -> Vec<String> {
    harness.logs_in_server_order(run_id).into_iter().map(|l| l.message).collect()
}
