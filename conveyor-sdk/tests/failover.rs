//! The runtime when the NATS server it is connected to goes away: it pulls again as
//! soon as its client is connected again, not once its lost pull requests would have
//! expired.
//!
//! On a three-node cluster, the node the driver is connected to, which leads stream
//! `messages` and the driver's consumer, is killed while every run is pending: the
//! first result comes within seconds of the election of new leaders, and every run
//! has exactly one. On a single server that restarts, the driver has a pull request
//! waiting again within seconds, whether the runtime connected itself or was given
//! the client. Pull requests live 30 s here: waiting until the lost ones would have
//! expired (46 s) would show.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conveyor_sdk::runtime::Metrics;
use conveyor_sdk::testing::{create_replicated_server_streams, Harness, NatsCluster, NatsServer, Serving};
use conveyor_sdk::{
    CancellationToken, Config, Driver, DriverResult, PipelineEvent, ReconcileError, Resource, ResourceType,
    Run, Runtime,
};
use serde_json::json;
use tokio::sync::broadcast;
use tokio::time::Instant;

const DRIVER: &str = "noop-runner";
const TYPE: &str = "noop";
/// Runs dispatched to the cluster.
const RUNS: usize = 120;
/// How long a pull request lives.
const PULL_EXPIRY: Duration = Duration::from_secs(30);
/// How long after its first attempt a run asks to be tried again: the runs come due
/// while the cluster elects new leaders.
const RETRY_AFTER: Duration = Duration::from_secs(4);
/// How long a run's second attempt takes.
const RUN_TAKES: Duration = Duration::from_millis(25);
/// How long after the election of new leaders the first result may come.
const AFTER_ELECTION: Duration = Duration::from_secs(5);
/// How long after a restarted server is ready the driver may take to pull again.
const AFTER_RESTART: Duration = Duration::from_secs(5);
/// How long every run may take to have its result, the kill and election included.
const ALL_WITHIN: Duration = Duration::from_secs(90);
/// How long the harness waits for an answer of JetStream's API: what goes unanswered
/// while a stream has no leader is soon asked again, so the harness reads the results
/// as soon as they are stored.
const HARNESS_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the tests wait for anything else.
const WAIT: Duration = Duration::from_secs(30);

/// Does nothing. A run's first attempt asks to be tried again after [`RETRY_AFTER`];
/// the second takes [`RUN_TAKES`] and succeeds, noting when it began.
#[derive(Clone, Default)]
struct Noop {
    second_attempts: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Noop {
    fn second_attempts(&self) -> HashMap<String, Instant> {
        self.second_attempts.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

#[conveyor_sdk::async_trait]
impl Driver for Noop {
    type Spec = serde_json::Value;

    fn name(&self) -> &str {
        DRIVER
    }

    fn resources(&self) -> Vec<ResourceType> {
        vec![ResourceType::foreign(TYPE)]
    }

    async fn reconcile(&self, run: Run<serde_json::Value>) -> Result<DriverResult, ReconcileError> {
        if run.retries() == 0 {
            return Err(ReconcileError::retry_after(RETRY_AFTER, "not yet"));
        }
        if let Ok(mut second) = self.second_attempts.lock() {
            second.entry(run.run_id().to_owned()).or_insert_with(Instant::now);
        }
        tokio::time::sleep(RUN_TAKES).await;
        Ok(DriverResult::success("nothing done"))
    }
}

fn noop_run(k: usize) -> Resource {
    Resource::new(format!("noop-{k}"), TYPE, json!({}))
}

/// A harness on `url` that asks JetStream again soon when it goes unanswered.
async fn quick_harness(url: &str) -> Harness {
    let quick = async_nats::ConnectOptions::new().request_timeout(Some(HARNESS_REQUEST_TIMEOUT));
    Harness::start_with(url, quick).await.unwrap_or_else(|e| panic!("{e}"))
}

/// The next result the harness reads, and when.
async fn next_result(results: &mut broadcast::Receiver<PipelineEvent>) -> (String, Instant) {
    match results.recv().await {
        Ok(event) => (event.run_id, Instant::now()),
        Err(error) => panic!("reading the results: {error}"),
    }
}

/// Waits until the runtime has counted `n` runs that asked to be tried again: their
/// messages are given back to the consumer.
async fn wait_for_retried(metrics: &Metrics, n: usize) {
    let series = r#"conveyor_runs_finished_total{outcome="retried"} "#;
    let deadline = Instant::now() + WAIT;
    loop {
        let text = metrics.encode();
        let counted = text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok());
        if counted.is_some_and(|c| c >= n as f64) {
            return;
        }
        assert!(Instant::now() < deadline, "{n} runs did not ask to be tried again within {WAIT:?}:\n{text}");
        // The runtime announces no event for this: read the counter until it is so.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_drivers_node_while_runs_are_pending_delays_the_first_result_only_until_the_election() {
    let mut cluster = NatsCluster::start().await.unwrap_or_else(|e| panic!("{e}"));
    create_replicated_server_streams(cluster.jetstream(), 3).await.unwrap_or_else(|e| panic!("{e}"));
    let victim = cluster.stream_leader("messages").await.unwrap_or_else(|e| panic!("{e}"));
    let urls = cluster.urls();
    // The harness stays connected through the kill. The driver is given only the
    // victim's address, so that is the node it is connected to (it learns the others
    // from it).
    let harness = quick_harness(&urls[(victim + 1) % urls.len()]).await;
    let mut results = harness.subscribe_results();
    let (driver, metrics) = (Noop::default(), Metrics::new());
    let config = Config::default().nats_url(&urls[victim]).pull_expiry(PULL_EXPIRY).metrics(metrics.clone());
    let serving = Serving::start(driver.clone(), config, &harness).await.unwrap_or_else(|e| panic!("{e}"));
    // The victim leads the driver's consumer too: the pull requests waiting on it are
    // lost with it, and none is answered before the consumer has a new leader.
    cluster.lead_consumer("messages", DRIVER, victim).await.unwrap_or_else(|e| panic!("{e}"));
    harness
        .wait_for_pull_requests(DRIVER, 1, WAIT)
        .await
        .unwrap_or_else(|e| panic!("the driver pulls from the consumer's leader: {e}"));

    let first_published = Instant::now();
    let mut runs = Vec::with_capacity(RUNS);
    for k in 0..RUNS {
        let run = harness.create(noop_run(k)).await.unwrap_or_else(|e| panic!("dispatching run {k}: {e}"));
        runs.push(run.run_id);
    }
    let last_published = Instant::now();
    // Every run has been tried once and is pending, to be tried again: the driver
    // has all its slots offered in pull requests waiting on the victim.
    wait_for_retried(&metrics, RUNS).await;
    assert!(driver.second_attempts().is_empty(), "no run came due before the kill");

    let killed = Instant::now();
    cluster.kill(victim).await;
    let elect = async {
        let next = cluster.stream_leader("messages").await.unwrap_or_else(|e| panic!("a new leader: {e}"));
        (next, Instant::now())
    };
    let recover = async {
        cluster.wait_for_leaders().await.unwrap_or_else(|e| panic!("{e}"));
        Instant::now()
    };
    let mut arrived: HashMap<String, Instant> = HashMap::new();
    let drain = tokio::time::timeout(ALL_WITHIN, async {
        while arrived.len() < RUNS {
            let (run_id, at) = next_result(&mut results).await;
            arrived.entry(run_id).or_insert(at);
        }
    });
    let ((next, elected), recovered, drained) = tokio::join!(elect, recover, drain);
    assert_ne!(next, victim);
    assert!(drained.is_ok(), "{} of {RUNS} runs have a result {ALL_WITHIN:?} after the kill", arrived.len());

    let first_taken_up = driver.second_attempts().values().min().copied().unwrap_or(killed);
    let first = arrived.values().min().copied().unwrap_or(killed);
    let last = arrived.values().max().copied().unwrap_or(killed);
    eprintln!(
        "{RUNS} runs: stream messages had a new leader {:?} after the kill, every stream and consumer \
         {:?} after; the first run was taken up again {:?} after the kill, its result came {:?} after, \
         {:?} after every leader was elected; all results {:?} after the first publish, {:?} after the \
         last",
        elected - killed,
        recovered - killed,
        first_taken_up.saturating_duration_since(killed),
        first - killed,
        first.saturating_duration_since(recovered),
        last - first_published,
        last - last_published,
    );
    assert!(
        first.saturating_duration_since(recovered) <= AFTER_ELECTION,
        "the first result came {:?} after the election of new leaders",
        first.saturating_duration_since(recovered)
    );
    serving.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    for (k, run_id) in runs.iter().enumerate() {
        assert_eq!(harness.results(run_id).len(), 1, "run {k} has exactly one result");
    }
}

/// Restarts `nats` under a driver that pulls, and returns how long after the server
/// was ready again the driver had a pull request waiting again. Then a run's result
/// shows the driver serving.
async fn pull_again_after_restart(nats: &mut NatsServer, harness: &Harness) -> Duration {
    harness.wait_for_pull_requests(DRIVER, 1, WAIT).await.unwrap_or_else(|e| panic!("{e}"));
    nats.restart().await.unwrap_or_else(|e| panic!("restarting nats-server: {e}"));
    let ready = Instant::now();
    harness
        .wait_for_pull_requests(DRIVER, 1, WAIT)
        .await
        .unwrap_or_else(|e| panic!("the driver pulls from the restarted server: {e}"));
    let pulling = ready.elapsed();
    eprintln!("the driver pulled again {pulling:?} after the restarted server was ready");
    let run = harness.create(noop_run(0)).await.unwrap_or_else(|e| panic!("{e}"));
    let result = harness.result_within(&run.run_id, WAIT).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(result.driverresult.success, "{}", result.driverresult.message);
    pulling
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_connected_itself_pulls_again_as_soon_as_its_restarted_server_is_back() {
    let mut nats = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let harness = quick_harness(&nats.url()).await;
    let config = Config::default().nats_url(nats.url()).pull_expiry(PULL_EXPIRY);
    let serving = Serving::start(Noop::default(), config, &harness).await.unwrap_or_else(|e| panic!("{e}"));
    let pulling = pull_again_after_restart(&mut nats, &harness).await;
    assert!(pulling <= AFTER_RESTART, "the driver pulled again {pulling:?} after the server was back");
    serving.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_on_the_callers_client_pulls_again_as_soon_as_its_restarted_server_is_back() {
    let mut nats = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let harness = quick_harness(&nats.url()).await;
    let client = async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .connect(nats.url())
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", nats.url()));
    let stop = CancellationToken::new();
    let runtime = Runtime::with_config(Noop::default(), Config::default().pull_expiry(PULL_EXPIRY));
    let serving = tokio::spawn(runtime.run_with_client(client, stop.clone().cancelled_owned()));
    let pulling = pull_again_after_restart(&mut nats, &harness).await;
    assert!(pulling <= AFTER_RESTART, "the driver pulled again {pulling:?} after the server was back");
    stop.cancel();
    let stopped = tokio::time::timeout(WAIT, serving).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "the runtime stops cleanly: {stopped:?}");
}
