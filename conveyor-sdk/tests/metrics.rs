//! Health, readiness and metrics, scraped over HTTP from a serving runtime.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use conveyor_sdk::protocol::subjects;
use conveyor_sdk::runtime::Metrics;
use conveyor_sdk::testing::{create_server_streams, Harness, NatsServer};
use serde_json::json;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(30);

fn with_metrics(config: conveyor_sdk::Config, metrics: &Metrics) -> conveyor_sdk::Config {
    config.metrics(metrics.clone()).metrics_listen(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// The endpoint's address, once the runtime listens.
async fn endpoint(metrics: &Metrics) -> SocketAddr {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(addr) = metrics.local_addr() {
            return addr;
        }
        assert!(Instant::now() < deadline, "the runtime never served its metrics endpoint");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    // This process's reqwest has no crypto provider of its own (see the SDK README).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response =
        reqwest::get(format!("http://{addr}{path}")).await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The value of one series (`name{labels}`) in a scrape.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Scrapes until `series` satisfies `ok`; returns that scrape.
async fn scrape_until(addr: SocketAddr, series: &str, ok: impl Fn(f64) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, text) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        if value(&text, series).is_some_and(&ok) {
            return text;
        }
        assert!(Instant::now() < deadline, "{series} never reached the expected value:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks `path` until it answers `status`; returns the body.
async fn until_status(addr: SocketAddr, path: &str, status: u16) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (got, body) = get(addr, path).await;
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} kept answering {got} ({body}), not {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Scrapes until every series has its value (they only grow until the runs settle);
/// fails saying which did not.
async fn scrape_when(addr: SocketAddr, expected: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, text) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        let wrong: Vec<_> = expected
            .iter()
            .filter(|(series, want)| value(&text, series) != Some(*want))
            .map(|(series, want)| format!("{series} is {:?}, not {want}", value(&text, series)))
            .collect();
        if wrong.is_empty() {
            return text;
        }
        assert!(Instant::now() < deadline, "{}\nin:\n{text}", wrong.join("\n"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_scrape_counts_runs_of_every_outcome() {
    let (nats, harness) = setup().await;
    let metrics = Metrics::new();
    let first = with_metrics(config(&nats), &metrics)
        .grace_period(Duration::ZERO)
        .cancel_timeout(Duration::from_secs(5));
    let serving = serve(TestDriver::new(), first, &harness).await;
    let addr = endpoint(&metrics).await;

    let ok = harness.create(job("ok", json!({"mode": "ok"}))).await.unwrap();
    let failed = harness.create(job("fail", json!({"mode": "fail"}))).await.unwrap();
    let invalid = harness.create(job("bad", json!({"mode": 5}))).await.unwrap();
    harness.publish_raw(&subjects::resource(TYPE), "not a message".into()).await.unwrap();
    assert!(harness.result(&ok.run_id).await.unwrap().driverresult.success);
    assert!(!harness.result(&failed.run_id).await.unwrap().driverresult.success);
    assert!(!harness.result(&invalid.run_id).await.unwrap().driverresult.success);
    scrape_when(
        addr,
        &[
            ("conveyor_runs_started_total", 3.0),
            ("conveyor_runs_in_flight", 0.0),
            ("conveyor_runs_finished_total{outcome=\"success\"}", 1.0),
            ("conveyor_runs_finished_total{outcome=\"failure\"}", 1.0),
            ("conveyor_runs_finished_total{outcome=\"invalid_spec\"}", 1.0),
            ("conveyor_runs_finished_total{outcome=\"given_up\"}", 0.0),
            ("conveyor_messages_undecodable_total", 1.0),
            ("conveyor_run_duration_seconds_count", 3.0),
            // `hello from ok` and the invalid spec's reasons.
            ("conveyor_log_lines_published_total", 2.0),
            ("conveyor_log_publish_failures_total", 0.0),
            ("conveyor_result_publish_failures_total", 0.0),
            ("conveyor_redeliveries_total", 0.0),
            ("conveyor_nats_connected", 1.0),
        ],
    )
    .await;

    // Cancelled by shutdown, then given up by a runtime that allows one delivery.
    let doomed = harness.create(job("doomed", json!({"mode": "cancel-first"}))).await.unwrap();
    harness.wait_for_log(&doomed.run_id, "started", WAIT).await.unwrap();
    serving.shutdown().await.unwrap();
    assert!(metrics.local_addr().is_none(), "the endpoint stops with the runtime");
    let serving =
        serve(TestDriver::new(), with_metrics(config(&nats), &metrics).max_deliveries(1), &harness).await;
    let addr = endpoint(&metrics).await;
    assert!(!harness.result(&doomed.run_id).await.unwrap().driverresult.success);
    scrape_when(
        addr,
        &[
            ("conveyor_runs_finished_total{outcome=\"given_up\"}", 1.0),
            ("conveyor_runs_started_total", 5.0),
            ("conveyor_runs_finished_total{outcome=\"cancelled\"}", 1.0),
            ("conveyor_runs_finished_total{outcome=\"success\"}", 1.0),
            ("conveyor_runs_finished_total{outcome=\"not_stored\"}", 0.0),
            ("conveyor_redeliveries_total", 1.0),
            ("conveyor_runs_in_flight", 0.0),
            ("conveyor_run_duration_seconds_count", 5.0),
            // The given-up run's reason; a cancelled run's lines are not awaited.
            ("conveyor_log_lines_published_total", 3.0),
        ],
    )
    .await;
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn lost_log_lines_and_results_are_counted_and_the_runs_delivered_again() {
    let (nats, harness) = setup().await;
    let metrics = Metrics::new();
    let config =
        with_metrics(config(&nats), &metrics).max_deliveries(100).log_retry(Duration::from_millis(200));
    let serving = serve(TestDriver::new(), config, &harness).await;
    let addr = endpoint(&metrics).await;

    // Without the stream of logs, no line is stored: the run is given back.
    harness.jetstream().delete_stream(subjects::LOGS_STREAM).await.unwrap();
    let run = harness.create(job("unlogged", json!({"mode": "ok"}))).await.unwrap();
    let text = scrape_until(addr, "conveyor_redeliveries_total", |v| v >= 1.0).await;
    assert!(value(&text, "conveyor_log_publish_failures_total").unwrap() >= 1.0, "{text}");
    assert!(value(&text, "conveyor_runs_finished_total{outcome=\"not_stored\"}").unwrap() >= 1.0, "{text}");
    create_server_streams(harness.jetstream()).await.unwrap();
    assert!(harness.result(&run.run_id).await.unwrap().driverresult.success);

    // Without the stream of results, the result is not stored: the run is given back.
    harness.jetstream().delete_stream(subjects::PIPELINE_STREAM).await.unwrap();
    let run = harness.create(job("unreported", json!({"mode": "ok"}))).await.unwrap();
    scrape_until(addr, "conveyor_result_publish_failures_total", |v| v >= 1.0).await;
    create_server_streams(harness.jetstream()).await.unwrap();
    assert!(harness.result(&run.run_id).await.unwrap().driverresult.success);
    let text = scrape_until(addr, "conveyor_runs_finished_total{outcome=\"success\"}", |v| v == 2.0).await;
    assert!(value(&text, "conveyor_log_lines_published_total").unwrap() >= 2.0, "{text}");
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn readyz_follows_the_consumer_and_the_nats_connection() {
    let mut nats = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let metrics = Metrics::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let runtime =
        conveyor_sdk::Runtime::with_config(TestDriver::new(), with_metrics(config(&nats), &metrics));
    let task = tokio::spawn(runtime.run_until(stop.clone().cancelled_owned()));
    let addr = endpoint(&metrics).await;

    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".to_owned()));
    // Connected, but the server has not created stream `messages` yet.
    let reason = until_status(addr, "/readyz", 503).await;
    assert!(reason.contains("consumer is not bound"), "{reason}");
    let harness = Harness::start(&nats.url()).await.unwrap();
    assert_eq!(until_status(addr, "/readyz", 200).await, "ready\n");
    let run = harness.create(job("ready", json!({"mode": "ok"}))).await.unwrap();
    assert!(harness.result(&run.run_id).await.unwrap().driverresult.success);

    nats.stop().await;
    let reason = until_status(addr, "/readyz", 503).await;
    assert!(reason.contains("not connected to NATS"), "{reason}");
    scrape_until(addr, "conveyor_nats_connected", |v| v == 0.0).await;
    assert_eq!(get(addr, "/healthz").await.0, 200, "alive while NATS is away");
    assert_eq!(get(addr, "/nothing").await.0, 404);
    nats.restart().await.unwrap();
    until_status(addr, "/readyz", 200).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    drop(harness);
}

/// The test driver, not ready while `down` is set.
#[derive(Clone)]
struct Flaky {
    inner: TestDriver,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[conveyor_sdk::async_trait]
impl conveyor_sdk::Driver for Flaky {
    type Spec = JobSpec;
    fn name(&self) -> &str {
        DRIVER
    }
    fn resources(&self) -> Vec<conveyor_sdk::ResourceType> {
        self.inner.resources()
    }
    async fn reconcile(
        &self,
        run: conveyor_sdk::Run<JobSpec>,
    ) -> Result<conveyor_sdk::DriverResult, conveyor_sdk::ReconcileError> {
        self.inner.reconcile(run).await
    }
    async fn ready(&self) -> Result<(), conveyor_sdk::ReconcileError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("the build cache is not mounted".into());
        }
        Ok(())
    }
}

#[tokio::test]
async fn readyz_says_why_the_driver_is_not_ready() {
    let (nats, harness) = setup().await;
    let metrics = Metrics::new();
    let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let driver = Flaky { inner: TestDriver::new(), down: down.clone() };
    let serving =
        conveyor_sdk::testing::Serving::start(driver, with_metrics(config(&nats), &metrics), &harness)
            .await
            .unwrap();
    let addr = endpoint(&metrics).await;

    let (status, reason) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(reason, "not ready: the driver is not ready: the build cache is not mounted\n");
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".to_owned()));
    serving.shutdown().await.unwrap();
}
