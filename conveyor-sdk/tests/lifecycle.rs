//! Crashes, restarts, shutdown and scale-out, with real processes and a real nats-server.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use conveyor_sdk::Runtime;
use serde_json::json;
use tokio::process::{Child, Command};

const CHILD_NATS: &str = "CONVEYOR_TEST_CHILD_NATS";
const CHILD_CONCURRENCY: &str = "CONVEYOR_TEST_CHILD_CONCURRENCY";
const ACK_WAIT: Duration = Duration::from_secs(2);

/// Not a test: the entry point of the driver processes the tests below start (this
/// test binary run again with this one test selected).
#[tokio::test]
#[ignore = "entry point of the driver processes started by other tests"]
async fn child_driver_process() {
    let Ok(url) = std::env::var(CHILD_NATS) else { return };
    let concurrency = std::env::var(CHILD_CONCURRENCY).ok().and_then(|c| c.parse().ok()).unwrap_or(1);
    let config = conveyor_sdk::Config::default()
        .nats_url(url)
        .ack_wait(ACK_WAIT)
        .concurrency(concurrency)
        .pull_expiry(Duration::from_secs(1));
    Runtime::with_config(TestDriver::new(), config).run().await.unwrap();
}

fn spawn_driver_process(url: &str, concurrency: usize) -> Child {
    let exe = std::env::current_exe().unwrap();
    Command::new(exe)
        .args(["child_driver_process", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_NATS, url)
        .env(CHILD_CONCURRENCY, concurrency.to_string())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_run_of_a_killed_process_is_redelivered_and_says_which_attempt_it_is() {
    let (nats, harness) = setup().await;
    let mut child = spawn_driver_process(&nats.url(), 1);
    wait_for_pull_requests(&harness, 1).await;

    let run = harness.create(job("crashy", json!({"mode": "hold-first"}))).await.unwrap();
    harness.wait_for_log(&run.run_id, "started", Duration::from_secs(30)).await.unwrap();
    child.kill().await.unwrap();

    let serving = serve(TestDriver::new(), config(&nats).ack_wait(ACK_WAIT), &harness).await;
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(result.success, "{}", result.message);
    assert_eq!(result.data["attempt"], 2);
    let lines = messages(&harness, &run.run_id);
    assert!(lines.iter().any(|l| l.starts_with("redelivered: attempt 2")), "{lines:?}");
    wait_until_settled(&harness).await;
    assert_eq!(harness.results(&run.run_id).len(), 1);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_processes_share_the_durable_consumer_and_divide_a_backlog() {
    let (nats, harness) = setup().await;
    let mut first = spawn_driver_process(&nats.url(), 2);
    let mut second = spawn_driver_process(&nats.url(), 2);
    // Both are pulling: each keeps a pull request waiting on the shared consumer.
    wait_for_pull_requests(&harness, 2).await;

    let mut runs = Vec::new();
    for i in 0..40 {
        runs.push(
            harness
                .create(job(&format!("backlog-{i}"), json!({"mode": "sleep", "sleep_ms": 20})))
                .await
                .unwrap(),
        );
    }
    let mut per_process: HashMap<u64, usize> = HashMap::new();
    for run in &runs {
        let result = harness.result(&run.run_id).await.unwrap().driverresult;
        assert!(result.success);
        *per_process.entry(result.data["pid"].as_u64().unwrap()).or_default() += 1;
    }
    let info = wait_until_settled(&harness).await;
    assert_eq!(info.num_redelivered, 0);
    for run in &runs {
        assert_eq!(harness.results(&run.run_id).len(), 1, "run {} processed more than once", run.run_id);
    }
    assert_eq!(per_process.len(), 2, "both processes must take part: {per_process:?}");
    assert_eq!(per_process.values().sum::<usize>(), 40);
    first.kill().await.unwrap();
    second.kill().await.unwrap();
}

#[tokio::test]
async fn a_nats_restart_mid_run_loses_nothing_and_consuming_goes_on() {
    let (mut nats, harness) = setup().await;
    let driver = TestDriver::new();
    let serving = serve(driver.clone(), config(&nats), &harness).await;

    let run = harness.create(job("survivor", json!({"mode": "gate"}))).await.unwrap();
    harness.wait_for_log(&run.run_id, "started", Duration::from_secs(30)).await.unwrap();
    nats.restart().await.unwrap();
    driver.probe.open_gate();

    let result = harness.result_within(&run.run_id, Duration::from_secs(60)).await.unwrap().driverresult;
    assert!(result.success, "{}", result.message);
    // Results and lines come through two queues: the line may be read after the result.
    harness.wait_for_log(&run.run_id, "gate passed", Duration::from_secs(30)).await.unwrap();
    assert_eq!(messages(&harness, &run.run_id), ["started", "gate passed"]);

    let after = harness.create(job("after-restart", json!({"mode": "ok"}))).await.unwrap();
    assert!(
        harness.result_within(&after.run_id, Duration::from_secs(60)).await.unwrap().driverresult.success
    );
    wait_until_settled(&harness).await;
    assert_eq!(harness.results(&run.run_id).len(), 1);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_a_run_finish_within_the_grace_period_and_pulls_nothing_new() {
    let (nats, harness) = setup().await;
    let driver = TestDriver::new();
    let config_a = config(&nats).ack_wait(ACK_WAIT).grace_period(Duration::from_secs(30));
    let serving = serve(driver.clone(), config_a, &harness).await;

    let run = harness.create(job("finishing", json!({"mode": "gate"}))).await.unwrap();
    harness.wait_for_log(&run.run_id, "started", Duration::from_secs(30)).await.unwrap();
    serving.stop();
    let queued = harness.create(job("queued", json!({"mode": "ok"}))).await.unwrap();
    driver.probe.open_gate();
    serving.finished().await.unwrap();

    assert!(harness.result(&run.run_id).await.unwrap().driverresult.success);
    assert_eq!(driver.probe.calls.load(Ordering::SeqCst), 1, "a stopping runtime must not start new runs");
    assert!(harness.results(&queued.run_id).is_empty());

    // The queued event waits for the next process.
    let serving = serve(TestDriver::new(), config(&nats).ack_wait(ACK_WAIT), &harness).await;
    assert!(harness.result(&queued.run_id).await.unwrap().driverresult.success);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_run_outliving_the_grace_period_is_cancelled_publishes_nothing_and_is_redelivered() {
    let (nats, harness) = setup().await;
    let driver = TestDriver::new();
    let config_a =
        config(&nats).grace_period(Duration::from_millis(100)).cancel_timeout(Duration::from_secs(10));
    let serving = serve(driver.clone(), config_a, &harness).await;

    let run = harness.create(job("long", json!({"mode": "cancel-first"}))).await.unwrap();
    harness.wait_for_log(&run.run_id, "started", Duration::from_secs(30)).await.unwrap();
    serving.shutdown().await.unwrap();

    assert_eq!(driver.probe.cancelled.load(Ordering::SeqCst), 1, "reconcile must see the cancellation");
    assert!(harness.results(&run.run_id).is_empty(), "a cancelled run publishes no result");

    let serving = serve(TestDriver::new(), config(&nats), &harness).await;
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(result.success);
    assert_eq!(result.message, "second attempt");
    assert_eq!(harness.results(&run.run_id).len(), 1);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn sigterm_lets_the_run_finish_then_the_process_exits() {
    let (nats, harness) = setup().await;
    let mut child = spawn_driver_process(&nats.url(), 1);
    wait_for_pull_requests(&harness, 1).await;

    let run = harness.create(job("terminated", json!({"mode": "sleep", "sleep_ms": 1000}))).await.unwrap();
    harness.wait_for_log(&run.run_id, "sleeping", Duration::from_secs(30)).await.unwrap();
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(killed.success());

    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the driver must exit cleanly on SIGTERM: {status}");
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(result.success, "the run in progress must finish within the grace period");
    wait_until_settled(&harness).await;
}
