//! Serving is one library call: the liveness record is written before the first run
//! and deleted after the driver's shutdown, housekeeping runs beside the runs, and
//! the driver's shutdown is awaited before `run_until` returns, however serving ends.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conveyor_sdk::liveness::Replicas;
use conveyor_sdk::liveness::{record_key, BUCKET};
use conveyor_sdk::testing::{Harness, NatsServer};
use conveyor_sdk::{
    CancellationToken, Config, Driver, DriverResult, ReconcileError, Resource, ResourceType, Run, Runtime,
};
use serde_json::json;
use tokio::sync::watch;

const INSTANCE: &str = "replica-1";

/// What the driver saw, in order.
#[derive(Default)]
struct Seen {
    events: Mutex<Vec<String>>,
    housekeepings: AtomicUsize,
    shutdowns: AtomicUsize,
    /// Whether its own liveness record was there when a run came.
    record_at_run: AtomicBool,
    /// Whether its own liveness record was still there during its shutdown.
    record_at_shutdown: AtomicBool,
}

#[derive(Clone)]
struct Recorder {
    name: String,
    js: Option<async_nats::jetstream::Context>,
    seen: Arc<Seen>,
    housekept: watch::Sender<usize>,
}

impl Recorder {
    fn new(name: &str, js: Option<async_nats::jetstream::Context>) -> Self {
        Self { name: name.into(), js, seen: Arc::default(), housekept: watch::channel(0).0 }
    }

    fn events(&self) -> Vec<String> {
        self.seen.events.lock().unwrap().clone()
    }

    fn note(&self, event: &str) {
        self.seen.events.lock().unwrap().push(event.into());
    }

    async fn own_record_exists(&self) -> bool {
        let Some(js) = &self.js else { return false };
        let Ok(bucket) = js.get_key_value(BUCKET).await else { return false };
        matches!(bucket.get(record_key(&self.name, INSTANCE)).await, Ok(Some(_)))
    }
}

#[conveyor_sdk::async_trait]
impl Driver for Recorder {
    type Spec = serde_json::Value;

    fn name(&self) -> &str {
        &self.name
    }

    fn resources(&self) -> Vec<ResourceType> {
        vec![ResourceType::foreign("job")]
    }

    async fn reconcile(&self, _run: Run<serde_json::Value>) -> Result<DriverResult, ReconcileError> {
        self.seen.record_at_run.store(self.own_record_exists().await, Ordering::SeqCst);
        self.note("run");
        Ok(DriverResult::success("done"))
    }

    async fn housekeeping(&self, replicas: &Replicas) {
        let alive = replicas.alive().await.unwrap_or_default();
        if alive.contains(&record_key(replicas.driver(), replicas.instance())) {
            let n = self.seen.housekeepings.fetch_add(1, Ordering::SeqCst) + 1;
            self.housekept.send_replace(n);
        }
    }

    async fn shutdown(&self) {
        self.seen.record_at_shutdown.store(self.own_record_exists().await, Ordering::SeqCst);
        self.seen.shutdowns.fetch_add(1, Ordering::SeqCst);
        self.note("shutdown");
    }
}

async fn setup() -> (NatsServer, Harness) {
    let nats = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let harness = Harness::start(&nats.url()).await.unwrap_or_else(|e| panic!("{e}"));
    (nats, harness)
}

#[tokio::test]
async fn a_replica_is_alive_from_before_its_first_run_until_after_its_shutdown_and_housekeeps_meanwhile() {
    let (nats, harness) = setup().await;
    let driver = Recorder::new("recorder", Some(harness.jetstream().clone()));
    let config = Config::default()
        .nats_url(nats.url())
        .instance(INSTANCE)
        .liveness_ttl(Duration::from_secs(10))
        .housekeeping_interval(Duration::from_millis(100));
    let stop = CancellationToken::new();
    let serving =
        tokio::spawn(Runtime::with_config(driver.clone(), config).run_until(stop.clone().cancelled_owned()));
    harness.wait_for_pull_requests("recorder", 1, Duration::from_secs(30)).await.unwrap();

    let run = harness.create(Resource::new("one", "job", json!({}))).await.unwrap();
    assert!(harness.result(&run.run_id).await.unwrap().driverresult.success);
    assert!(driver.seen.record_at_run.load(Ordering::SeqCst), "the liveness record exists when a run comes");
    // Housekeeping goes on beside the runs, seeing this replica alive.
    let mut housekept = driver.housekept.subscribe();
    tokio::time::timeout(Duration::from_secs(10), housekept.wait_for(|n| *n >= 3))
        .await
        .expect("housekeeping every 100 ms")
        .unwrap();

    stop.cancel();
    serving.await.unwrap().unwrap();
    assert_eq!(driver.events(), ["run", "shutdown"], "shutdown is awaited before run_until returns");
    assert_eq!(driver.seen.shutdowns.load(Ordering::SeqCst), 1);
    assert!(driver.seen.record_at_shutdown.load(Ordering::SeqCst), "the record outlives the shutdown hook");
    assert!(!driver.own_record_exists().await, "the record is deleted once serving ended");
}

#[tokio::test]
async fn without_a_liveness_ttl_no_record_is_kept_and_housekeeping_hears_so() {
    let (nats, harness) = setup().await;
    struct NoRecords {
        said: watch::Sender<Option<String>>,
    }
    #[conveyor_sdk::async_trait]
    impl Driver for NoRecords {
        type Spec = serde_json::Value;
        fn name(&self) -> &str {
            "no-records"
        }
        fn resources(&self) -> Vec<ResourceType> {
            vec![ResourceType::foreign("job")]
        }
        async fn reconcile(&self, _run: Run<serde_json::Value>) -> Result<DriverResult, ReconcileError> {
            Ok(DriverResult::success("done"))
        }
        async fn housekeeping(&self, replicas: &Replicas) {
            let said = replicas.alive().await.err().map(|e| e.to_string());
            self.said.send_replace(said.or(Some("alive() succeeded".into())));
        }
    }
    let driver = NoRecords { said: watch::channel(None).0 };
    let mut said = driver.said.subscribe();
    let config = Config::default().nats_url(nats.url()).housekeeping_interval(Duration::from_millis(100));
    let stop = CancellationToken::new();
    let serving =
        tokio::spawn(Runtime::with_config(driver, config).run_until(stop.clone().cancelled_owned()));
    let said = tokio::time::timeout(Duration::from_secs(30), said.wait_for(Option::is_some))
        .await
        .expect("housekeeping when serving begins")
        .unwrap()
        .clone();
    assert_eq!(said.as_deref(), Some("no liveness records are kept: set Config::liveness_ttl"));
    assert!(harness.jetstream().get_key_value(BUCKET).await.is_err(), "no liveness bucket is made");
    stop.cancel();
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_is_awaited_also_when_serving_fails_before_it_began() {
    let (nats, _harness) = setup().await;
    let driver = Recorder::new("not.a.token", None);
    let served = Runtime::with_config(driver.clone(), Config::default().nats_url(nats.url()))
        .run_until(std::future::pending())
        .await;
    assert!(matches!(served, Err(conveyor_sdk::runtime::Error::InvalidName(_))), "{served:?}");
    assert_eq!(driver.events(), ["shutdown"]);
}

#[tokio::test]
async fn shutdown_is_awaited_when_stopped_before_connecting() {
    // Nothing listens on this port: the runtime is still connecting when stopped.
    let driver = Recorder::new("recorder", None);
    let config = Config::default().nats_url("nats://127.0.0.1:1").retry_interval(Duration::from_millis(50));
    let served = Runtime::with_config(driver.clone(), config).run_until(async {}).await;
    assert!(served.is_ok(), "{served:?}");
    assert_eq!(driver.events(), ["shutdown"]);
}
