//! The runner's own metrics, scraped from a serving runner beside the runtime's.

mod common;

use std::net::SocketAddr;

use common::*;
use conveyor_sdk::runtime::Metrics;
use serde_json::json;
use simple_runner::housekeeping::cleanup;
use simple_runner::CommandRunner;

#[tokio::test]
async fn a_scrape_counts_pulls_container_starts_removals_and_reaped_orphans() {
    let engine = engine().await;
    let (nats, harness) = setup().await;
    let metrics = Metrics::new();
    engine.metrics().register(&metrics);
    let config = config(&nats).metrics(metrics.clone()).metrics_listen(SocketAddr::from(([127, 0, 0, 1], 0)));
    let serving = serve(CommandRunner::new(engine.clone(), settings()), config, &harness).await;
    let addr = metrics_endpoint(&metrics).await;
    assert_eq!(until_status(addr, "/readyz", 200).await, "ready\n");

    let good = harness
        .create(pipeline(
            "counted",
            json!({"image": TEST_IMAGE, "steps": [{"name": "a", "command": "echo hi"}]}),
        ))
        .await
        .unwrap();
    let unpullable = harness
        .create(pipeline(
            "unpullable",
            json!({"image": "127.0.0.1:1/conveyor-test/missing:0", "steps": [{"name": "a", "command": "true"}]}),
        ))
        .await
        .unwrap();
    assert!(harness.result(&good.run_id).await.unwrap().driverresult.success);
    assert!(!harness.result(&unpullable.run_id).await.unwrap().driverresult.success);
    assert_no_container_left(&engine, &good.run_id).await;

    // A container of a runner that is gone (of a driver of this test's own).
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let (bucket, _) =
        simple_runner::housekeeping::liveness::open_bucket(&js, std::time::Duration::from_secs(30))
            .await
            .unwrap();
    let driver = unique_driver("metrics-test");
    let installation = simple_runner::housekeeping::installation::identify(&js).await.unwrap();
    labelled_container(&engine, Some(&installation), &driver, "dead-runner", "serve").await;
    let swept = cleanup::sweep(&engine, &bucket, &scope(&installation, &driver, "me")).await;
    remove_all_of(&engine, &driver).await;
    assert_eq!(swept.map(|s| s.removed.len()).unwrap_or_else(|e| panic!("{e}")), 1);

    scrape_when(
        addr,
        &[
            ("simple_runner_image_pulls_total{outcome=\"failure\"}", 1.0),
            ("simple_runner_image_pulls_total{outcome=\"success\"}", 0.0),
            // The good run's container and the orphan.
            ("simple_runner_container_start_seconds_count", 2.0),
            ("simple_runner_containers_removed_total", 2.0),
            ("simple_runner_orphans_reaped_total", 1.0),
            ("conveyor_runs_finished_total{outcome=\"success\"}", 1.0),
            ("conveyor_runs_finished_total{outcome=\"failure\"}", 1.0),
        ],
    )
    .await;
    serving.shutdown().await.unwrap();
}
