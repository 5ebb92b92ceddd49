//! The runner on a three-node NATS cluster: the node leading stream `messages` is
//! killed while runs are in flight, and no run is lost, done twice or short of a line.
//!
//! Two replicas of the runner, each a runtime of its own in this process, share the
//! durable consumer; each has its own NATS connection to the cluster.

mod common;

use std::time::Duration;

use common::*;
use conveyor_sdk::testing::{create_replicated_server_streams, Dispatched, Harness, NatsCluster};
use conveyor_sdk::Config;
use serde_json::json;
use simple_runner::CommandRunner;

/// Runs dispatched at once: two waves of the four slots of the two replicas.
const RUNS: usize = 8;
/// Lines each run prints, one every 0.3 s.
const LINES: usize = 10;

fn replica_config(cluster: &NatsCluster) -> Config {
    Config::default()
        .nats_urls(cluster.urls())
        .concurrency(2)
        .retry_interval(Duration::from_millis(200))
        .pull_expiry(Duration::from_secs(1))
        .nak_delay(Duration::from_millis(200))
}

fn counting_run(k: usize) -> conveyor_sdk::Resource {
    pipeline(
        &format!("counting-{k}"),
        json!({
            "image": TEST_IMAGE,
            "steps": [{
                "name": "count",
                "command": format!("for i in $(seq 1 {LINES}); do echo run-{k} line $i; sleep 0.3; done")
            }]
        }),
    )
}

/// Every line the run's log must have, in order, each once: the step's header, what
/// the command printed, and the step's end.
fn assert_complete_log(harness: &Harness, k: usize, run: &Dispatched) {
    let log = lines(harness, &run.run_id);
    let printed: Vec<&str> = log.iter().map(String::as_str).filter(|l| l.starts_with("run-")).collect();
    let expected: Vec<String> = (1..=LINES).map(|i| format!("run-{k} line {i}")).collect();
    assert_eq!(printed, expected, "the printed lines of run {k}, in order, each once: {log:#?}");
    let headers = log.iter().filter(|l| l.starts_with("==> step 1/1 count")).count();
    let ends = log.iter().filter(|l| l.starts_with("<== step 1/1 count exited with code 0")).count();
    assert_eq!((headers, ends), (1, 1), "run {k} ran its step once: {log:#?}");
    assert!(!log.iter().any(|l| l.starts_with("redelivered")), "run {k} was delivered again: {log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_of_stream_messages_mid_run_loses_and_repeats_nothing() {
    let mut cluster = NatsCluster::start().await.unwrap_or_else(|e| panic!("{e}"));
    create_replicated_server_streams(cluster.jetstream(), 3).await.unwrap_or_else(|e| panic!("{e}"));
    let harness = Harness::start(&cluster.url_list()).await.unwrap_or_else(|e| panic!("{e}"));
    let engine = engine().await;
    let first =
        serve(CommandRunner::new(engine.clone(), settings()), replica_config(&cluster), &harness).await;
    let second =
        serve(CommandRunner::new(engine.clone(), settings()), replica_config(&cluster), &harness).await;
    harness
        .wait_for_pull_requests(simple_runner::DRIVER_NAME, 2, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("both replicas pull: {e}"));

    let mut runs = Vec::with_capacity(RUNS);
    for k in 0..RUNS {
        runs.push(
            harness.create(counting_run(k)).await.unwrap_or_else(|e| panic!("dispatching run {k}: {e}")),
        );
    }
    // The first wave is under way: its steps print.
    harness
        .wait_for_log(&runs[0].run_id, "line 2", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("run 0 under way: {e}"));
    let leader = cluster.stream_leader("messages").await.unwrap_or_else(|e| panic!("{e}"));
    cluster.kill(leader).await;
    let next = cluster.stream_leader("messages").await.unwrap_or_else(|e| panic!("a new leader: {e}"));
    assert_ne!(next, leader);
    cluster.restart(leader).await.unwrap_or_else(|e| panic!("restarting {}: {e}", cluster.name(leader)));

    for (k, run) in runs.iter().enumerate() {
        let event = harness
            .result_within(&run.run_id, Duration::from_secs(45))
            .await
            .unwrap_or_else(|e| panic!("run {k}: {e}"));
        assert!(event.driverresult.success, "run {k}: {}", event.driverresult.message);
    }
    for (k, run) in runs.iter().enumerate() {
        // The harness reads the log queue apart from the result queue: its lines of a
        // run are all read once it has read the run's last line.
        harness
            .wait_for_log(&run.run_id, "<== step 1/1 count exited", Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("run {k}: {e}"));
        assert_complete_log(&harness, k, run);
        assert_no_container_left(&engine, &run.run_id).await;
    }
    first.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    second.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    // Read once more after both replicas stopped: a second result would be here now.
    for (k, run) in runs.iter().enumerate() {
        assert_eq!(harness.results(&run.run_id).len(), 1, "run {k} has exactly one result");
    }
    assert_eq!(harness.all_results().len(), RUNS);
    assert!(harness.undecodable().is_empty(), "{:?}", harness.undecodable());
}
