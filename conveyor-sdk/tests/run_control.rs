//! Deadlines, cancel requests, retries and finished runs, against a real nats-server.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use conveyor_sdk::protocol::CancelState;
use conveyor_sdk::runtime::cancel_run;
use futures_util::StreamExt;
use serde_json::json;

use common::*;

#[tokio::test]
async fn a_run_past_its_deadline_is_cancelled_cleans_up_and_fails_saying_it_timed_out() {
    let (nats, harness) = setup().await;
    let driver = TestDriver::new();
    let probe = driver.probe.clone();
    let config =
        config(&nats).run_deadline(Duration::from_millis(300)).cancel_timeout(Duration::from_secs(5));
    let serving = serve(driver, config, &harness).await;

    let run = harness.create(job("slow", json!({"mode": "await-cancel"}))).await.unwrap();
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(!result.success);
    assert_eq!(result.message, "timed out after 300ms: stopped");
    assert_eq!(result.data["cleaned"], true, "the driver's data is kept: {}", result.data);
    let lines = messages(&harness, &run.run_id);
    assert_eq!(
        lines,
        ["started", "cleaning up: Some(Deadline(300ms))", "the run timed out after 300ms: stopped"]
    );
    wait_until_settled(&harness).await;
    assert_eq!(probe.calls.load(Ordering::SeqCst), 1, "acknowledged, not delivered again");
    assert_eq!(harness.results(&run.run_id).len(), 1);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reconcile_that_ignores_its_deadline_is_abandoned_after_the_grace_period() {
    let (nats, harness) = setup().await;
    let config = config(&nats).cancel_timeout(Duration::from_millis(200));
    let serving = serve(TestDriver::new(), config, &harness).await;

    // The run's own deadline, from its spec, beats the runtime's default of one hour.
    let run = harness.create(job("stuck", json!({"mode": "hang", "deadline_ms": 250}))).await.unwrap();
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(!result.success);
    assert_eq!(result.message, "timed out after 250ms");
    assert_eq!(messages(&harness, &run.run_id), ["started", "the run timed out after 250ms"]);
    wait_until_settled(&harness).await;
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_cancel_request_reaches_the_replica_holding_the_run_which_ends_it_with_one_cancelled_result() {
    let (nats, harness) = setup().await;
    let (first, second) = (TestDriver::new(), TestDriver::new());
    let probes = [first.probe.clone(), second.probe.clone()];
    let first = serve(first, config(&nats), &harness).await;
    let second = serve(second, config(&nats), &harness).await;

    let run = harness.create(job("long", json!({"mode": "await-cancel"}))).await.unwrap();
    harness.wait_for_log(&run.run_id, "started", Duration::from_secs(30)).await.unwrap();
    let reply = cancel_run(harness.client(), DRIVER, &run.run_id).await.unwrap();
    assert_eq!(reply.state, CancelState::Cancelling);
    assert_eq!((reply.run_id.as_str(), reply.driver.as_str()), (run.run_id.as_str(), DRIVER));

    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(!result.success);
    assert_eq!(result.message, "cancelled");
    let lines = messages(&harness, &run.run_id);
    assert_eq!(lines, ["started", "cleaning up: Some(Requested)", "the run was cancelled on request"]);
    wait_until_settled(&harness).await;
    let calls: usize = probes.iter().map(|p| p.calls.load(Ordering::SeqCst)).sum();
    let cancelled: usize = probes.iter().map(|p| p.cancelled.load(Ordering::SeqCst)).sum();
    assert_eq!((calls, cancelled), (1, 1), "one replica ran it, once; it was not delivered again");
    assert_eq!(harness.results(&run.run_id).len(), 1);
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
}

#[tokio::test]
async fn cancelling_an_unknown_or_a_finished_run_is_answered_and_changes_nothing() {
    let (nats, harness) = setup().await;
    let serving = serve(TestDriver::new(), config(&nats), &harness).await;

    let unknown = cancel_run(harness.client(), DRIVER, "no-such-run").await.unwrap();
    assert_eq!(unknown.state, CancelState::NotRunning);

    let run = harness.create(job("quick", json!({"mode": "ok"}))).await.unwrap();
    assert!(harness.result(&run.run_id).await.unwrap().driverresult.success);
    wait_until_settled(&harness).await;
    for _ in 0..3 {
        let finished = cancel_run(harness.client(), DRIVER, &run.run_id).await.unwrap();
        assert_eq!(finished.state, CancelState::Finished);
    }
    assert_eq!(harness.results(&run.run_id).len(), 1);

    let invalid = cancel_run(harness.client(), DRIVER, "a.b").await;
    assert!(invalid.is_err(), "a run id with a dot is not a subject token");
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_retry_request_is_delivered_again_after_its_delay_and_says_which_retry_it_is() {
    let (nats, harness) = setup().await;
    let serving = serve(TestDriver::new(), config(&nats), &harness).await;

    let run =
        harness.create(job("flaky", json!({"mode": "retry", "retries": 2, "sleep_ms": 100}))).await.unwrap();
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(result.success, "{}", result.message);
    assert_eq!(result.data["retries"], 2);
    let lines = messages(&harness, &run.run_id);
    assert_eq!(
        lines,
        [
            "trying again in 100ms (retry 1 of at most 5): busy",
            "redelivered: attempt 2, retry 1 of at most 5: the last attempt asked to try again: busy",
            "trying again in 100ms (retry 2 of at most 5): busy",
            "redelivered: attempt 3, retry 2 of at most 5: the last attempt asked to try again: busy",
        ]
    );
    wait_until_settled(&harness).await;
    assert_eq!(harness.results(&run.run_id).len(), 1);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn past_the_retry_limit_the_run_fails_saying_why() {
    let (nats, harness) = setup().await;
    let serving = serve(TestDriver::new(), config(&nats).max_retries(1), &harness).await;

    let run = harness
        .create(job("hopeless", json!({"mode": "retry", "retries": 9, "sleep_ms": 50})))
        .await
        .unwrap();
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(!result.success);
    assert_eq!(result.message, "given up after 1 retries (the limit is 1): busy");
    wait_until_settled(&harness).await;
    assert_eq!(harness.results(&run.run_id).len(), 1);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_run_lives_through_five_rolling_restarts_of_its_driver_and_completes() {
    let (nats, harness) = setup().await;
    let mut lines = harness.subscribe_logs();
    // Each replica is shut down with no grace while the run waits at its gate: the
    // run is cancelled and given back. The retry limit is the tightest there is.
    let restart = || {
        config(&nats).grace_period(Duration::ZERO).cancel_timeout(Duration::from_millis(100)).max_retries(0)
    };
    let mut serving = serve(TestDriver::new(), restart(), &harness).await;
    let run = harness.create(job("patient", json!({"mode": "gate"}))).await.unwrap();
    for restarts in 1..=5 {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.recv())
                .await
                .unwrap_or_else(|_| panic!("the run did not start again after {} restarts", restarts - 1))
                .unwrap();
            if line.runid == run.run_id && line.message == "started" {
                break;
            }
        }
        serving.shutdown().await.unwrap();
        let next = TestDriver::new();
        if restarts == 5 {
            next.probe.open_gate();
        }
        serving = serve(next, restart(), &harness).await;
    }
    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(result.success, "{}", result.message);
    assert_eq!(result.data["attempt"], 6, "five deliveries were given back by shutdowns");
    wait_until_settled(&harness).await;
    assert_eq!(harness.results(&run.run_id).len(), 1);
    serving.shutdown().await.unwrap();
}

/// The driver's consumer, to take a message the way a driver that then dies would.
async fn driver_consumer(harness: &conveyor_sdk::testing::Harness) -> PullConsumer {
    let stream = harness.jetstream().get_stream("messages").await.unwrap();
    stream.get_consumer(DRIVER).await.unwrap()
}

#[tokio::test]
async fn an_event_delivered_again_after_its_run_finished_is_acknowledged_without_running_again() {
    let (nats, harness) = setup().await;
    let config = config(&nats).ack_wait(Duration::from_secs(1));
    let driver = TestDriver::new();
    let serving = serve(driver, config.clone(), &harness).await;
    let run = harness.create(job("once", json!({"mode": "ok"}))).await.unwrap();
    assert!(harness.result(&run.run_id).await.unwrap().driverresult.success);
    wait_until_settled(&harness).await;
    serving.shutdown().await.unwrap();
    // The stopped driver's pull requests expire first, or one of them would take the
    // event below for a driver that is gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while consumer_info(&harness).await.unwrap().num_waiting > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the stopped driver's pull requests never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The same run's event again, taken by a driver that stored the result and died
    // before its acknowledgement: JetStream delivers it again after the ack wait.
    harness.create_with_run_id(job("once", json!({"mode": "ok"})), &run.run_id).await.unwrap();
    let mut taken = driver_consumer(&harness).await.fetch().max_messages(1).messages().await.unwrap();
    let first = taken.next().await.expect("the event is delivered").unwrap();
    assert_eq!(first.info().unwrap().delivered, 1);

    let driver = TestDriver::new();
    let probe = driver.probe.clone();
    let serving = serve(driver, config, &harness).await;
    harness.wait_for_log(&run.run_id, "this run already finished at", Duration::from_secs(30)).await.unwrap();
    wait_until_settled(&harness).await;
    assert_eq!(probe.calls.load(Ordering::SeqCst), 0, "not run again");
    assert_eq!(harness.results(&run.run_id).len(), 1, "no second result");
    let line = messages(&harness, &run.run_id).pop().unwrap();
    assert!(line.contains("(succeeded: done); delivered again (attempt 2)"), "{line}");
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_result_comes_with_every_log_line_stored_before_it() {
    let (nats, harness) = setup().await;
    let serving = serve(TestDriver::new(), config(&nats), &harness).await;
    let run = harness.create(job("chatty", json!({"mode": "lines", "lines": 3000}))).await.unwrap();
    harness.result(&run.run_id).await.unwrap();
    // No waiting: the result's wait covered the lines before it.
    assert_eq!(harness.logs(&run.run_id).len(), 3000);
    serving.shutdown().await.unwrap();
}
