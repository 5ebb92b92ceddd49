//! The newest version of a resource wins, across replicas, against a real nats-server:
//! an update or a delete cancels the run of an older version in flight, an older event
//! delivered late does not run, and every deletion gets one result.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use conveyor_sdk::testing::{Dispatched, Harness};
use conveyor_sdk::Resource;
use serde_json::json;

use common::*;

/// The next version of `created`'s resource, with `spec`.
fn version(created: &Dispatched, number: u64, spec: serde_json::Value) -> Resource {
    let mut next = created.resource.clone();
    next.spec = spec;
    next.metadata.insert("version".into(), number.to_string().into());
    next
}

/// Two replicas of the test driver sharing one probe; the first runs one run at a time,
/// so that while it holds a run, the next event goes to the second.
async fn two_replicas(
    nats: &conveyor_sdk::testing::NatsServer,
    harness: &Harness,
) -> (TestDriver, [conveyor_sdk::testing::Serving; 2]) {
    let driver = TestDriver::new();
    let first = serve(driver.clone(), config(nats).concurrency(1), harness).await;
    let second = serve(driver.clone(), config(nats), harness).await;
    (driver, [first, second])
}

/// A run of `spec` held by a replica that runs one at a time, then a second replica:
/// the next event can only go to the second.
async fn held_by_the_first_of_two_replicas(
    nats: &conveyor_sdk::testing::NatsServer,
    harness: &Harness,
    spec: serde_json::Value,
) -> (TestDriver, Dispatched, [conveyor_sdk::testing::Serving; 2]) {
    let driver = TestDriver::new();
    let first = serve(driver.clone(), config(nats).concurrency(1), harness).await;
    let created = harness.create(job("app", spec)).await.unwrap();
    harness.wait_for_log(&created.run_id, "started", Duration::from_secs(30)).await.unwrap();
    let second = serve(driver.clone(), config(nats), harness).await;
    (driver, created, [first, second])
}

#[tokio::test]
async fn an_update_during_a_run_on_another_replica_cancels_it_as_superseded_then_runs_the_new_version() {
    let (nats, harness) = setup().await;
    let (driver, created, replicas) =
        held_by_the_first_of_two_replicas(&nats, &harness, json!({"mode": "await-cancel"})).await;
    let updated = harness.update(version(&created, 2, json!({"mode": "ok"}))).await.unwrap();

    let older = harness.result(&created.run_id).await.unwrap().driverresult;
    assert!(!older.success);
    assert_eq!(older.message, format!("superseded by run {} (version 2)", updated.run_id));
    assert_eq!(older.data["cleaned"], true, "the driver cleaned up: {}", older.data);
    let newer = harness.result(&updated.run_id).await.unwrap().driverresult;
    assert!(newer.success, "{}", newer.message);
    assert_eq!(newer.data["event"], "update");

    let lines = messages(&harness, &created.run_id);
    assert_eq!(lines[0], "started");
    assert!(lines[1].starts_with("cleaning up: Some(Superseded"), "{lines:?}");
    assert_eq!(lines[2], format!("the run was cancelled: superseded by run {} (version 2)", updated.run_id));
    wait_until_settled(&harness).await;
    assert_eq!(driver.probe.max_running.load(Ordering::SeqCst), 1, "the two versions never ran at once");
    assert_eq!((harness.results(&created.run_id).len(), harness.results(&updated.run_id).len()), (1, 1));
    for replica in replicas {
        replica.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_delete_during_a_run_cancels_it_and_is_answered_at_once_by_cleanup() {
    let (nats, harness) = setup().await;
    let (driver, created, replicas) =
        held_by_the_first_of_two_replicas(&nats, &harness, json!({"mode": "await-cancel"})).await;
    let deleted = harness.delete(created.resource.clone()).await.unwrap();

    let deletion = harness.result_within(&deleted.run_id, Duration::from_secs(5)).await.unwrap();
    assert!(deletion.driverresult.success, "{}", deletion.driverresult.message);
    assert_eq!(deletion.driverresult.message, conveyor_sdk::driver::NOTHING_TO_CLEAN_UP);
    assert_eq!(deletion.resource, created.resource, "the result echoes the resource as delivered");
    let older = harness.result(&created.run_id).await.unwrap().driverresult;
    assert!(!older.success);
    assert_eq!(older.message, "the resource was deleted");
    wait_until_settled(&harness).await;
    assert_eq!(driver.probe.calls.load(Ordering::SeqCst), 1, "the deletion did not reconcile");
    for replica in replicas {
        replica.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn an_older_update_delivered_late_does_not_run_and_says_which_run_superseded_it() {
    let (nats, harness) = setup().await;
    let (driver, replicas) = two_replicas(&nats, &harness).await;

    let created = harness.create(job("app", json!({"mode": "ok"}))).await.unwrap();
    assert!(harness.result(&created.run_id).await.unwrap().driverresult.success);
    let third = harness.update(version(&created, 3, json!({"mode": "ok"}))).await.unwrap();
    assert!(harness.result(&third.run_id).await.unwrap().driverresult.success);
    let late = harness.update(version(&created, 2, json!({"mode": "ok"}))).await.unwrap();

    let refused = harness.result(&late.run_id).await.unwrap().driverresult;
    assert!(!refused.success);
    assert_eq!(refused.message, format!("superseded by run {} (version 3)", third.run_id));
    assert_eq!(messages(&harness, &late.run_id), [format!("not run: {}", refused.message)]);
    wait_until_settled(&harness).await;
    assert_eq!(driver.probe.calls.load(Ordering::SeqCst), 2, "the late update was not run");
    assert_eq!(harness.results(&late.run_id).len(), 1);
    for replica in replicas {
        replica.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_deleted_resource_created_again_starts_a_new_history_at_version_one() {
    let (nats, harness) = setup().await;
    let (driver, replicas) = two_replicas(&nats, &harness).await;

    let first = harness.create(job("app", json!({"mode": "ok"}))).await.unwrap();
    assert!(harness.result(&first.run_id).await.unwrap().driverresult.success);
    let second = harness.update(version(&first, 2, json!({"mode": "ok"}))).await.unwrap();
    assert!(harness.result(&second.run_id).await.unwrap().driverresult.success);
    let deleted = harness.delete(second.resource.clone()).await.unwrap();
    assert!(harness.result(&deleted.run_id).await.unwrap().driverresult.success);
    // Created again: the server gives it a new id, and version 1 again, which is not
    // older than version 2 of the resource that was deleted.
    let mut again = job("app", json!({"mode": "ok"}));
    again.metadata.insert("version".into(), "1".into());
    let again = harness.create(again).await.unwrap();
    assert_ne!(again.resource.id, first.resource.id);
    let result = harness.result(&again.run_id).await.unwrap().driverresult;
    assert!(result.success, "{}", result.message);
    wait_until_settled(&harness).await;
    assert_eq!(driver.probe.calls.load(Ordering::SeqCst), 3);
    for replica in replicas {
        replica.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_delete_whose_spec_no_longer_validates_gets_one_successful_result() {
    let (nats, harness) = setup().await;
    let serving = serve(TestDriver::new(), config(&nats), &harness).await;

    let old = harness.create(job("legacy", json!({"mode": "a mode of an older schema"}))).await.unwrap();
    assert!(!harness.result(&old.run_id).await.unwrap().driverresult.success, "refused as invalid");
    let deleted = harness.delete(old.resource.clone()).await.unwrap();
    let result = harness.result(&deleted.run_id).await.unwrap().driverresult;
    assert!(result.success, "{}", result.message);
    wait_until_settled(&harness).await;
    assert_eq!(harness.results(&deleted.run_id).len(), 1);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_superseding_turned_off_an_update_runs_beside_the_older_version() {
    let (nats, harness) = setup().await;
    let driver = TestDriver::with_barrier(2);
    let serving = serve(driver.clone(), config(&nats).supersede(false), &harness).await;

    let created = harness.create(job("app", json!({"mode": "barrier"}))).await.unwrap();
    let updated = harness.update(version(&created, 2, json!({"mode": "barrier"}))).await.unwrap();
    for run in [&created, &updated] {
        let result = harness.result(&run.run_id).await.unwrap().driverresult;
        assert!(result.success, "{}: both versions must meet at the barrier", result.message);
    }
    assert_eq!(driver.probe.max_running.load(Ordering::SeqCst), 2);
    serving.shutdown().await.unwrap();
}

/// The resource of a fixture message of today's engine, as a job of the test driver.
fn engine_step(fixture: &str, mode: &str) -> (conveyor_sdk::DriverMessage, Resource) {
    let message = conveyor_sdk::DriverMessage::decode(fixture.as_bytes()).unwrap();
    let mut resource = message.payload.clone();
    resource.resource = TYPE.into();
    resource.spec = json!({"mode": mode});
    (message, resource)
}

#[tokio::test]
async fn a_pipeline_deletion_cancels_the_step_in_flight_and_echoes_the_deletion_metadata_as_delivered() {
    let (nats, harness) = setup().await;
    let (driver, replicas) = two_replicas(&nats, &harness).await;

    let (step, running) =
        engine_step(include_str!("fixtures/driver-message.pipeline-step.rich-metadata.json"), "await-cancel");
    let run = harness.step(DRIVER, step.event, running, Some(&step.run_id)).await.unwrap();
    harness.wait_for_log(&run.run_id, "started", Duration::from_secs(30)).await.unwrap();
    let (deletion, deleted) =
        engine_step(include_str!("fixtures/driver-message.pipeline-step.delete.json"), "ok");
    assert_eq!(deleted.metadata["deleting"], true);
    let sent = harness.step(DRIVER, deletion.event, deleted.clone(), Some(&deletion.run_id)).await.unwrap();
    assert_eq!(sent.run_id, deleted.metadata_str("deletion_runid").unwrap());

    let answer = harness.result_within(&sent.run_id, Duration::from_secs(5)).await.unwrap();
    assert!(answer.driverresult.success, "{}", answer.driverresult.message);
    assert_eq!(
        serde_json::to_value(&answer.resource).unwrap(),
        serde_json::to_value(&deleted).unwrap(),
        "the engine accepts only a result that echoes the resource it sent"
    );
    let older = harness.result(&run.run_id).await.unwrap().driverresult;
    assert_eq!(older.message, "the resource was deleted");
    wait_until_settled(&harness).await;
    assert_eq!(driver.probe.calls.load(Ordering::SeqCst), 1);
    for replica in replicas {
        replica.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_replica_started_later_takes_over_the_resources_of_one_that_stopped() {
    let (nats, harness) = setup().await;
    let first = serve(TestDriver::new(), config(&nats), &harness).await;
    let created = harness.create(job("app", json!({"mode": "ok"}))).await.unwrap();
    assert!(harness.result(&created.run_id).await.unwrap().driverresult.success);
    wait_until_settled(&harness).await;
    first.shutdown().await.unwrap();

    let second = serve(TestDriver::new(), config(&nats), &harness).await;
    let again = harness.create(job("app", json!({"mode": "ok"}))).await.unwrap();
    let result = harness.result_within(&again.run_id, Duration::from_secs(5)).await.unwrap().driverresult;
    assert!(result.success, "{}", result.message);
    let updated = harness.update(version(&again, 2, json!({"mode": "ok"}))).await.unwrap();
    let result = harness.result_within(&updated.run_id, Duration::from_secs(5)).await.unwrap().driverresult;
    assert!(result.success, "{}", result.message);
    second.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_update_after_its_older_run_s_replica_is_gone_runs_at_once_even_without_the_run_s_record() {
    let (nats, harness) = setup().await;
    let first = serve(TestDriver::new(), config(&nats), &harness).await;
    let created = harness.create(job("app", json!({"mode": "ok"}))).await.unwrap();
    assert!(harness.result(&created.run_id).await.unwrap().driverresult.success);
    wait_until_settled(&harness).await;
    first.shutdown().await.unwrap();
    // The records of finished runs are gone (purged, expired): only the replica that
    // took the older event on could say whether it still runs, and it is gone.
    let records = format!("KV_{}", conveyor_sdk::protocol::subjects::RUNS_BUCKET);
    harness.jetstream().get_stream(records).await.unwrap().purge().await.unwrap();

    let second = serve(TestDriver::new(), config(&nats), &harness).await;
    let updated = harness.update(version(&created, 2, json!({"mode": "ok"}))).await.unwrap();
    let result = harness.result_within(&updated.run_id, Duration::from_secs(5)).await.unwrap().driverresult;
    assert!(result.success, "{}", result.message);
    second.shutdown().await.unwrap();
}
