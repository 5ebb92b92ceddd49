//! The runtime against a real nats-server, with the harness playing the Conveyor server.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use conveyor_sdk::{Event, Resource};
use futures_util::StreamExt;
use serde_json::json;

#[tokio::test]
async fn a_created_resource_gets_a_success_result_its_log_and_is_acked() {
    let (_nats, harness) = setup().await;
    let driver = TestDriver::new();
    let serving = serve(driver.clone(), config(&_nats), &harness).await;

    let run = harness.create(job("hello-1", json!({"mode": "ok"}))).await.unwrap();
    let event = harness.result(&run.run_id).await.unwrap();

    assert_eq!(event.event, "driver.result");
    assert_eq!(event.run_id, run.run_id);
    assert_eq!(event.resource, run.resource);
    assert!(event.driverresult.success, "{:?}", event.driverresult);
    assert_eq!(event.driverresult.driver, DRIVER);
    assert_eq!(event.driverresult.data["attempt"], 1);
    assert_eq!(event.driverresult.data["event"], "create");
    let logs = harness.logs(&run.run_id);
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].message, "hello from hello-1");
    assert_eq!(logs[0].driver, DRIVER);
    assert_eq!(logs[0].pipeline, None, "a resource outside any pipeline has no pipeline");
    let info = wait_until_settled(&harness).await;
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(driver.probe.calls.load(Ordering::SeqCst), 1);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_pipeline_step_reaches_the_driver_with_its_pipeline_and_earlier_results() {
    let (nats, harness) = setup().await;
    let serving = serve(TestDriver::new(), config(&nats), &harness).await;

    let mut resource = job("step-2", json!({"mode": "ok"}));
    resource.pipeline = Some("build-pipeline".into());
    resource.metadata.insert(
        "driverresults.git-cloner".into(),
        r#"{"success":true,"message":"cloned","data":{"commit":"9f2c1e7"},"driver":"git-cloner"}"#.into(),
    );
    let run = harness.step(DRIVER, Event::Process, resource, None).await.unwrap();
    let event = harness.result(&run.run_id).await.unwrap();

    assert!(event.driverresult.success);
    assert_eq!(event.driverresult.data["event"], "process");
    assert_eq!(event.resource.driver_result("git-cloner").unwrap().unwrap().data["commit"], "9f2c1e7");
    let logs = harness.logs(&run.run_id);
    assert_eq!(logs[0].pipeline.as_deref(), Some("build-pipeline"));
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_invalid_spec_fails_with_every_violation_and_is_not_redelivered() {
    let (nats, harness) = setup().await;
    let driver = TestDriver::new();
    let serving = serve(driver.clone(), config(&nats), &harness).await;

    let run = harness.create(job("bad", json!({"mode": 5, "lines": "many"}))).await.unwrap();
    let result = harness.result(&run.run_id).await.unwrap().driverresult;

    assert!(!result.success);
    assert!(result.message.contains("/spec/mode"), "{}", result.message);
    assert!(result.message.contains("/spec/lines"), "{}", result.message);
    assert!(messages(&harness, &run.run_id)[0].contains("/spec/lines"), "the user sees why in the log");
    let info = wait_until_settled(&harness).await;
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(driver.probe.calls.load(Ordering::SeqCst), 0, "reconcile must not see an invalid spec");
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_messages_are_terminated_and_the_loop_goes_on() {
    let (nats, harness) = setup().await;
    let driver = TestDriver::new();
    let serving = serve(driver.clone(), config(&nats), &harness).await;

    harness.publish_raw("resources.job", "not json at all".into()).await.unwrap();
    harness
        .publish_raw("resources.job", r#"{"event":"create","payload":"[1]","id":"x","run_id":"r-1"}"#.into())
        .await
        .unwrap();
    let run = harness.create(job("after", json!({"mode": "ok"}))).await.unwrap();

    assert!(harness.result(&run.run_id).await.unwrap().driverresult.success);
    let info = wait_until_settled(&harness).await;
    assert_eq!(info.delivered.stream_sequence, 3, "all three messages were delivered");
    assert_eq!(info.num_redelivered, 0, "the malformed ones were terminated, not redelivered");
    let refused = harness.result("r-1").await.unwrap().driverresult;
    assert!(!refused.success && refused.message.contains("is not a resource"), "{refused:?}");
    assert_eq!(harness.all_results().len(), 2, "a failure result for the run named, none for no run");
    assert_eq!(driver.probe.calls.load(Ordering::SeqCst), 1);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn reconcile_errors_and_panics_become_failure_results_and_serving_goes_on() {
    let (nats, harness) = setup().await;
    let serving = serve(TestDriver::new(), config(&nats), &harness).await;

    let failed = harness.create(job("fail", json!({"mode": "fail"}))).await.unwrap();
    let error = harness.create(job("error", json!({"mode": "error"}))).await.unwrap();
    let panic = harness.create(job("panic", json!({"mode": "panic"}))).await.unwrap();
    let after = harness.create(job("after", json!({"mode": "ok"}))).await.unwrap();

    let failed = harness.result(&failed.run_id).await.unwrap().driverresult;
    assert!(!failed.success);
    assert_eq!(failed.message, "it failed on purpose");
    let error_result = harness.result(&error.run_id).await.unwrap().driverresult;
    assert!(!error_result.success);
    assert_eq!(error_result.message, "reconcile failed: boom");
    assert_eq!(messages(&harness, &error.run_id), ["reconcile failed: boom"]);
    let panic_result = harness.result(&panic.run_id).await.unwrap().driverresult;
    assert!(!panic_result.success);
    assert_eq!(panic_result.message, "reconcile panicked: kaboom");
    assert!(harness.result(&after.run_id).await.unwrap().driverresult.success);
    let info = wait_until_settled(&harness).await;
    assert_eq!(info.num_redelivered, 0);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn runs_overlap_up_to_the_concurrency_limit_and_never_beyond() {
    let (nats, harness) = setup().await;
    let driver = TestDriver::with_barrier(3);
    let serving = serve(driver.clone(), config(&nats).concurrency(3), &harness).await;

    let mut runs = Vec::new();
    for i in 0..6 {
        runs.push(harness.create(job(&format!("slow-{i}"), json!({"mode": "barrier"}))).await.unwrap());
    }
    for run in &runs {
        let result = harness.result(&run.run_id).await.unwrap().driverresult;
        assert!(result.success, "{}: three runs must meet at the barrier", result.message);
    }
    assert_eq!(driver.probe.max_running.load(Ordering::SeqCst), 3);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn ten_thousand_log_lines_come_back_in_order_before_the_result() {
    let (nats, harness) = setup().await;
    let serving = serve(TestDriver::new(), config(&nats), &harness).await;

    let run = harness.create(job("chatty", json!({"mode": "lines", "lines": 10_000}))).await.unwrap();
    harness.result(&run.run_id).await.unwrap();

    // The result is published only after every line was stored, and the harness
    // reads the log queue as fast as the result queue: wait for the last line.
    harness.wait_for_log(&run.run_id, "line 9999", Duration::from_secs(30)).await.unwrap();
    let received = harness.logs(&run.run_id);
    assert_eq!(received.len(), 10_000);
    let expected: Vec<String> = (0..10_000).map(|i| format!("line {i}")).collect();
    assert_eq!(messages(&harness, &run.run_id), expected, "server order must be emission order");
    assert!(received.windows(2).all(|w| w[0].timestamp < w[1].timestamp), "timestamps strictly increase");
    assert!(received.iter().all(|l| l.timestamp.len() == 30 && l.timestamp.ends_with('Z')));
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_runtime_waits_for_the_server_to_create_its_stream() {
    let nats = conveyor_sdk::testing::NatsServer::start().await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(
        conveyor_sdk::Runtime::with_config(TestDriver::new(), config(&nats))
            .run_until(stop.clone().cancelled_owned()),
    );
    // The runtime is up before the server: it must wait, not fail or create the stream.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!task.is_finished(), "the runtime gave up instead of waiting");
    assert!(js.get_stream("messages").await.is_err(), "the runtime must not create the server's stream");

    let harness = conveyor_sdk::testing::Harness::start(&nats.url()).await.unwrap();
    wait_for_pull_requests(&harness, 1).await;
    let run = harness.create(job("late", json!({"mode": "ok"}))).await.unwrap();
    assert!(harness.result(&run.run_id).await.unwrap().driverresult.success);
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_message_delivered_too_often_is_given_up_with_a_failure_result() {
    let (nats, harness) = setup().await;
    // First a runtime that is shut down mid-run: the run is cancelled and nak'd.
    let serving = serve(
        TestDriver::new(),
        config(&nats).grace_period(Duration::ZERO).cancel_timeout(Duration::from_secs(5)),
        &harness,
    )
    .await;
    let run = harness.create(job("doomed", json!({"mode": "cancel-first"}))).await.unwrap();
    harness.wait_for_log(&run.run_id, "started", Duration::from_secs(30)).await.unwrap();
    serving.shutdown().await.unwrap();

    // Then one that allows a single delivery: the second must be given up.
    let serving = serve(TestDriver::new(), config(&nats).max_deliveries(1), &harness).await;
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(!result.success);
    assert!(result.message.contains("given up after 1 deliveries"), "{}", result.message);
    wait_until_settled(&harness).await;
    serving.shutdown().await.unwrap();
}

/// Registration of definitions with the API server (feature `client`).
#[cfg(feature = "client")]
mod registration {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_api_server_does_not_stop_the_driver() {
        let (nats, harness) = setup().await;
        let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = config(&nats).api_url(format!("http://127.0.0.1:{closed_port}"));
        let serving = serve(TestDriver::new(), config, &harness).await;
        let run = harness.create(job("still-serving", json!({"mode": "ok"}))).await.unwrap();
        assert!(harness.result(&run.run_id).await.unwrap().driverresult.success);
        serving.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn definitions_are_registered_once_the_consumer_exists() {
        let (nats, harness) = setup().await;
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}", api.local_addr().unwrap());
        let serving = serve(TestDriver::new(), config(&nats).api_url(api_url), &harness).await;

        let (path, body) = tokio::time::timeout(Duration::from_secs(30), accept_one_post(&api))
            .await
            .expect("the driver never registered its definition");
        // The consumer must exist by then: the server may accept resources right away.
        assert!(consumer_info(&harness).await.is_ok());
        assert_eq!(path, "/resource-definitions/apply");
        let definition: conveyor_sdk::ResourceDefinition = serde_json::from_slice(&body).unwrap();
        assert_eq!(definition.name, TYPE);
        assert_eq!(definition.schema["required"], json!(["mode"]));
        serving.shutdown().await.unwrap();
    }

    /// Accepts one HTTP request, answers 200, and returns its path and body.
    async fn accept_one_post(listener: &tokio::net::TcpListener) -> (String, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        let (head_end, length) = loop {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before the request was complete");
            data.extend_from_slice(&buf[..n]);
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                break (end + 4, length);
            }
        };
        while data.len() < head_end + length {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0);
            data.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&data[..head_end]).to_string();
        let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
        // As the real server: 201 with the definition.
        let body = &data[head_end..head_end + length];
        let answer = format!(
            "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        socket.write_all(answer.as_bytes()).await.unwrap();
        socket.write_all(body).await.unwrap();
        (path, data[head_end..head_end + length].to_vec())
    }
}

#[tokio::test]
async fn a_resource_of_another_owner_is_decoded_into_the_spec_type() {
    // A type the driver handles without owning its definition: no schema, but the
    // spec still has to decode into the driver's type.
    #[derive(Clone)]
    struct Foreign(TestDriver);
    #[conveyor_sdk::async_trait]
    impl conveyor_sdk::Driver for Foreign {
        type Spec = JobSpec;
        fn name(&self) -> &str {
            DRIVER
        }
        fn resources(&self) -> Vec<conveyor_sdk::ResourceType> {
            vec![conveyor_sdk::ResourceType::foreign(TYPE)]
        }
        async fn reconcile(
            &self,
            run: conveyor_sdk::Run<JobSpec>,
        ) -> Result<conveyor_sdk::DriverResult, conveyor_sdk::ReconcileError> {
            self.0.reconcile(run).await
        }
    }
    let (nats, harness) = setup().await;
    let serving = conveyor_sdk::testing::Serving::start(Foreign(TestDriver::new()), config(&nats), &harness)
        .await
        .unwrap();
    let good = harness.create(job("good", json!({"mode": "ok"}))).await.unwrap();
    let bad = harness.create(Resource::new("bad", TYPE, json!({"mode": "nonsense"}))).await.unwrap();
    assert!(harness.result(&good.run_id).await.unwrap().driverresult.success);
    let bad = harness.result(&bad.run_id).await.unwrap().driverresult;
    assert!(!bad.success);
    assert!(bad.message.contains("/spec/mode"), "{}", bad.message);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn each_line_is_also_relayed_live_on_both_live_subjects() {
    let (nats, harness) = setup().await;
    let mut live = harness.client().subscribe(format!("live.logs.*.{DRIVER}")).await.unwrap();
    // `driver:<driver>:logs:<run_id>` is a single token: no wildcard matches part of it.
    let legacy_prefix = format!("driver:{DRIVER}:logs:");
    let mut legacy = harness
        .client()
        .subscribe(">")
        .await
        .unwrap()
        .filter(move |m| std::future::ready(m.subject.as_str().starts_with(&legacy_prefix)));
    let serving = serve(TestDriver::new(), config(&nats), &harness).await;

    let run = harness.create(job("live", json!({"mode": "ok"}))).await.unwrap();
    let wait = Duration::from_secs(30);
    let live = tokio::time::timeout(wait, live.next()).await.unwrap().unwrap();
    assert_eq!(live.subject.as_str(), format!("live.logs.{}.{DRIVER}", run.run_id));
    let line: conveyor_sdk::Log = serde_json::from_slice(&live.payload).unwrap();
    assert_eq!(line.message, "hello from live");
    let legacy = tokio::time::timeout(wait, legacy.next()).await.unwrap().unwrap();
    assert_eq!(legacy.subject.as_str(), format!("driver:{DRIVER}:logs:{}", run.run_id));
    let frame: (String, String) = serde_json::from_slice(&legacy.payload).unwrap();
    assert_eq!(frame, (line.timestamp.clone(), "hello from live".to_owned()));
    assert!(harness.result(&run.run_id).await.unwrap().driverresult.success);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_older_live_subject_can_be_switched_off() {
    let (nats, harness) = setup().await;
    let legacy_prefix = format!("driver:{DRIVER}:logs:");
    let mut legacy = harness
        .client()
        .subscribe(">")
        .await
        .unwrap()
        .filter(move |m| std::future::ready(m.subject.as_str().starts_with(&legacy_prefix)));
    let serving = serve(TestDriver::new(), config(&nats).legacy_live_logs(false), &harness).await;
    let run = harness.create(job("quiet", json!({"mode": "ok"}))).await.unwrap();
    harness.result(&run.run_id).await.unwrap();
    serving.shutdown().await.unwrap();
    harness.client().flush().await.unwrap();
    let got = tokio::time::timeout(Duration::from_millis(200), legacy.next()).await;
    assert!(got.is_err(), "nothing may be published on the older subject");
}

#[tokio::test]
async fn a_run_longer_than_the_ack_wait_is_kept_alive_and_not_redelivered() {
    let (nats, harness) = setup().await;
    let driver = TestDriver::new();
    let serving = serve(driver.clone(), config(&nats).ack_wait(Duration::from_secs(1)), &harness).await;

    let run = harness.create(job("long", json!({"mode": "sleep", "sleep_ms": 3500}))).await.unwrap();
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(result.success);
    assert_eq!(result.data["attempt"], 1);
    let info = wait_until_settled(&harness).await;
    assert_eq!(info.num_redelivered, 0, "progress acks must keep the message from redelivery");
    assert_eq!(driver.probe.calls.load(Ordering::SeqCst), 1);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_result_that_cannot_be_stored_is_nakd_and_the_run_delivered_again() {
    let (nats, harness) = setup().await;
    // A result is published again for `log_retry` before the run is given back.
    let config = config(&nats).max_deliveries(100).log_retry(Duration::from_millis(500));
    let serving = serve(TestDriver::new(), config, &harness).await;
    // Without the stream, publishing a result fails (no stream takes the subject).
    harness.jetstream().delete_stream("pipeline-engine").await.unwrap();

    let run = harness.create(job("unlucky", json!({"mode": "ok"}))).await.unwrap();
    harness.wait_for_log(&run.run_id, "redelivered: attempt 2", Duration::from_secs(30)).await.unwrap();
    conveyor_sdk::testing::create_server_streams(harness.jetstream()).await.unwrap();

    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(result.success);
    assert!(result.data["attempt"].as_u64().unwrap() >= 2);
    wait_until_settled(&harness).await;
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn no_more_runs_than_the_bound_publish_while_results_are_not_stored_and_pulling_goes_on() {
    let (nats, harness) = setup().await;
    let concurrency = 2;
    let driver = TestDriver::new();
    let config = config(&nats).concurrency(concurrency).max_finishing(concurrency);
    let serving = serve(driver.clone(), config, &harness).await;
    // Results reach a subscriber that never answers: each publish waits for its
    // acknowledgement until it times out, and is tried again.
    harness.jetstream().delete_stream("pipeline-engine").await.unwrap();
    let mut silent =
        harness.client().subscribe(conveyor_sdk::protocol::subjects::DRIVER_RESULT).await.unwrap();
    harness.client().flush().await.unwrap();

    let mut runs = Vec::new();
    for i in 0..4 * concurrency {
        runs.push(harness.create(job(&format!("stuck-{i}"), json!({"mode": "ok"}))).await.unwrap().run_id);
    }
    // Until each publishing run has published twice (its first try timed out), the
    // runs publishing are counted; every other run has had time to start publishing.
    let mut tries: std::collections::HashMap<String, usize> = Default::default();
    while tries.len() < concurrency || tries.values().any(|&n| n < 2) {
        let message = tokio::time::timeout(Duration::from_secs(30), silent.next())
            .await
            .expect("results are published")
            .expect("subscription open");
        let id = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).expect("a message id");
        *tries.entry(id.to_string()).or_default() += 1;
        assert!(tries.len() <= concurrency, "more runs publish at once than the bound: {tries:?}");
    }
    // The reconcile slots were handed back: runs went on being pulled and reconciled
    // while the first ones published, up to the bound of those waiting to publish.
    assert_eq!(driver.probe.calls.load(Ordering::SeqCst), 2 * concurrency);

    conveyor_sdk::testing::create_server_streams(harness.jetstream()).await.unwrap();
    drop(silent);
    for run_id in &runs {
        let result = harness.result(run_id).await.unwrap().driverresult;
        assert!(result.success, "{run_id}: {}", result.message);
    }
    wait_until_settled(&harness).await;
    serving.shutdown().await.unwrap();
}
