//! Today's server's events on the real Docker engine: a delete stops the resource's run
//! wherever it runs and starts no container; an update runs the new spec and ends the
//! older run as superseded.

mod common;

use std::time::Duration;

use conveyor_sdk::testing::{Dispatched, Harness, NatsServer, Serving};
use conveyor_sdk::{Event, Resource};
use serde_json::json;
use simple_runner::CommandRunner;

use common::*;

/// A step that says when it got SIGTERM.
const TRAPPING: &str = "trap 'echo got TERM; exit 143' TERM; echo started; sleep 600 & wait";

/// A run of a trapping step held by a runner that runs one at a time, then a second
/// runner: the next event can only go to the second.
async fn held_by_the_first_of_two_runners(
    nats: &NatsServer,
    harness: &Harness,
    engine: &simple_runner::Engine,
) -> (Dispatched, [Serving; 2]) {
    let first = CommandRunner::new(engine.clone(), settings());
    let first = serve(first, config(nats).concurrency(1), harness).await;
    let spec = json!({"image": TEST_IMAGE, "steps": [{"name": "long", "command": TRAPPING}]});
    let created = harness.create(pipeline("app", spec)).await.unwrap();
    harness.wait_for_log(&created.run_id, "started", Duration::from_secs(30)).await.unwrap();
    let second = serve(CommandRunner::new(engine.clone(), settings()), config(nats), harness).await;
    (created, [first, second])
}

fn version(created: &Dispatched, number: u64, spec: serde_json::Value) -> Resource {
    let mut next = created.resource.clone();
    next.spec = spec;
    next.metadata.insert("version".into(), number.to_string().into());
    next
}

#[tokio::test]
async fn a_delete_stops_the_run_on_another_runner_and_answers_within_seconds_without_a_container() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let (created, runners) = held_by_the_first_of_two_runners(&nats, &harness, &engine).await;

    let deleted = harness.delete(created.resource.clone()).await.unwrap();
    let deletion = harness.result_within(&deleted.run_id, Duration::from_secs(5)).await.unwrap().driverresult;
    assert!(deletion.success, "{}", deletion.message);
    assert_eq!(deletion.message, format!("deleted; cancelled run {}", created.run_id));

    let older = harness.result(&created.run_id).await.unwrap().driverresult;
    assert!(!older.success);
    assert_eq!(older.message, "the resource was deleted");
    let older_lines = lines(&harness, &created.run_id);
    assert!(older_lines.contains(&"got TERM".to_owned()), "the step got SIGTERM: {older_lines:?}");
    assert_no_container_left(&engine, &created.run_id).await;
    assert_no_container_left(&engine, &deleted.run_id).await;
    assert!(lines(&harness, &deleted.run_id).iter().all(|l| !l.contains("==> step")), "no step ran");
    for runner in runners {
        runner.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_delete_with_nothing_running_says_so_and_starts_no_container() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let serving = serve(CommandRunner::new(engine.clone(), settings()), config(&nats), &harness).await;

    let spec = json!({"image": TEST_IMAGE, "steps": [{"name": "hi", "command": "echo hi"}]});
    let created = harness.create(pipeline("quick", spec)).await.unwrap();
    assert!(harness.result(&created.run_id).await.unwrap().driverresult.success);
    let deleted = harness.delete(created.resource.clone()).await.unwrap();
    let deletion = harness.result(&deleted.run_id).await.unwrap().driverresult;
    assert!(deletion.success, "{}", deletion.message);
    assert_eq!(deletion.message, "deleted; nothing was running");
    assert_eq!(containers_of_run(&engine, &deleted.run_id).await, 0);
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_update_during_a_run_ends_it_as_superseded_and_runs_the_new_spec() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let (created, runners) = held_by_the_first_of_two_runners(&nats, &harness, &engine).await;

    let spec = json!({"image": TEST_IMAGE, "steps": [{"name": "new", "command": "echo version two"}]});
    let updated = harness.update(version(&created, 2, spec)).await.unwrap();
    let older = harness.result(&created.run_id).await.unwrap().driverresult;
    assert!(!older.success);
    assert_eq!(older.message, format!("superseded by run {} (version 2)", updated.run_id));
    let newer = harness.result(&updated.run_id).await.unwrap().driverresult;
    assert!(newer.success, "{}", newer.message);
    assert!(lines(&harness, &updated.run_id).contains(&"version two".to_owned()));
    assert_no_container_left(&engine, &created.run_id).await;
    assert_no_container_left(&engine, &updated.run_id).await;
    for runner in runners {
        runner.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_late_older_update_and_a_pipeline_deletion_start_no_container() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let serving = serve(CommandRunner::new(engine.clone(), settings()), config(&nats), &harness).await;

    let spec = |text: &str| json!({"image": TEST_IMAGE, "steps": [{"name": "say", "command": format!("echo {text}")}]});
    let created = harness.create(pipeline("app", spec("one"))).await.unwrap();
    assert!(harness.result(&created.run_id).await.unwrap().driverresult.success);
    let third = harness.update(version(&created, 3, spec("three"))).await.unwrap();
    assert!(harness.result(&third.run_id).await.unwrap().driverresult.success);
    let late = harness.update(version(&created, 2, spec("two"))).await.unwrap();
    let refused = harness.result(&late.run_id).await.unwrap().driverresult;
    assert_eq!(refused.message, format!("superseded by run {} (version 3)", third.run_id));
    assert_eq!(containers_of_run(&engine, &late.run_id).await, 0);

    // A resource in a pipeline, deleted as today's engine does: every step's driver
    // gets `delete` with the deletion's run id, and the metadata says so.
    let mut deleted = version(&third, 3, spec("three"));
    deleted.pipeline = Some("node-pipeline".into());
    let deletion_run = uuid::Uuid::new_v4().to_string();
    for (key, value) in [
        ("deleting", json!(true)),
        ("deletion_runid", json!(deletion_run)),
        ("current_pipeline_event", json!("delete")),
        ("current_pipeline_step", json!("build")),
        (
            "driverresults",
            json!({"git-cloner": {"success": true, "message": "cloned", "driver": "git-cloner"}}),
        ),
    ] {
        deleted.metadata.insert(key.into(), value);
    }
    let step = harness.step(simple_runner::DRIVER_NAME, Event::Delete, deleted.clone(), Some(&deletion_run));
    let step = step.await.unwrap();
    let answer = harness.result(&step.run_id).await.unwrap();
    assert!(answer.driverresult.success, "{}", answer.driverresult.message);
    assert_eq!(answer.driverresult.message, "deleted; nothing was running");
    assert_eq!(answer.resource, deleted, "the result echoes the resource as delivered");
    assert_eq!(containers_of_run(&engine, &deletion_run).await, 0);
    serving.shutdown().await.unwrap();
}
