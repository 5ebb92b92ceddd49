//! A run whose container is removed or killed from outside while a step runs (an
//! operator's `docker rm -f` or `docker kill`) fails within seconds, saying so, and
//! leaves no container behind.

mod common;

use std::time::Duration;

use common::*;
use conveyor_sdk::testing::{Dispatched, Harness, Serving};
use conveyor_sdk::Event;
use serde_json::json;
use simple_runner::pod::labels;
use simple_runner::{CommandRunner, Engine, Mode, Settings, WarmSettings};
use tokio::time::Instant;

/// The most a run may take to fail once its container is gone.
const FAILS_WITHIN: Duration = Duration::from_secs(5);

fn endless(name: &str) -> conveyor_sdk::Resource {
    pipeline(
        name,
        json!({"image": TEST_IMAGE, "steps": [{"name": "sleep", "command": "echo started; sleep 600"}]}),
    )
}

/// Serves a runner of its own driver with `settings`, and dispatches an endless run to
/// it; returns once the run's step has printed its first line.
async fn endless_run(
    engine: &Engine,
    settings: Settings,
) -> (conveyor_sdk::testing::NatsServer, Harness, Serving, Dispatched) {
    let (nats, harness) = setup().await;
    let driver = settings.name.clone();
    let serving = serve(CommandRunner::new(engine.clone(), settings), config(&nats), &harness).await;
    let run = harness.step(&driver, Event::Create, endless("endless"), None).await.unwrap();
    harness.wait_for_log(&run.run_id, "started", Duration::from_secs(30)).await.unwrap();
    (nats, harness, serving, run)
}

/// The id of the one container labelled with run `run_id`.
async fn container_of_run(engine: &Engine, run_id: &str) -> String {
    let listed = containers_labelled(engine, &format!("conveyor.run_id={run_id}"), false).await;
    assert_eq!(listed.len(), 1, "one container of run {run_id}: {listed:?}");
    listed.into_iter().next().and_then(|c| c.id).expect("a container id")
}

/// Waits for the result of `run`, at most [`FAILS_WITHIN`] after `gone`; asserts it is
/// the failure `message`, also the last line of the step's log before `run failed`.
async fn assert_fails_soon_with(harness: &Harness, run: &Dispatched, gone: Instant, message: &str) {
    let failure = fails_soon(harness, run, gone).await;
    assert_eq!(failure, message);
}

/// The message of the failure of `run`, which comes at most [`FAILS_WITHIN`] after
/// `gone` and is also the last line of the step's log before `run failed`.
async fn fails_soon(harness: &Harness, run: &Dispatched, gone: Instant) -> String {
    let result = harness.result_within(&run.run_id, FAILS_WITHIN).await.unwrap_or_else(|e| {
        panic!("no result {FAILS_WITHIN:?} after the container went: {e}\n{:#?}", lines(harness, &run.run_id))
    });
    let took = gone.elapsed();
    let message = result.driverresult.message;
    assert!(!result.driverresult.success, "{message}");
    let log = lines(harness, &run.run_id);
    assert!(log.ends_with(&[message.clone(), "run failed".to_owned()]), "{log:#?}");
    eprintln!("the run failed {took:?} after its container went: {message}");
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_container_is_removed_from_outside_fails_within_seconds_saying_so() {
    let engine = engine().await;
    let settings = own_settings();
    let _cleanup = RemovesOnDrop(settings.name.clone());
    let (_nats, harness, serving, run) = endless_run(&engine, settings).await;

    // `docker rm -f`
    let container = container_of_run(&engine, &run.run_id).await;
    let force = bollard::query_parameters::RemoveContainerOptions { force: true, ..Default::default() };
    engine.docker().remove_container(&container, Some(force)).await.expect("docker rm -f");
    let gone = Instant::now();

    assert_fails_soon_with(
        &harness,
        &run,
        gone,
        "the run's container was removed from outside during step sleep",
    )
    .await;
    serving.shutdown().await.unwrap();
    assert_no_container_left(&engine, &run.run_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_container_is_killed_from_outside_fails_within_seconds_saying_so() {
    let engine = engine().await;
    let settings = own_settings();
    let _cleanup = RemovesOnDrop(settings.name.clone());
    let (_nats, harness, serving, run) = endless_run(&engine, settings).await;

    // `docker kill`
    let container = container_of_run(&engine, &run.run_id).await;
    engine.docker().kill_container(&container, None).await.expect("docker kill");
    let gone = Instant::now();

    assert_fails_soon_with(
        &harness,
        &run,
        gone,
        "the run's container was killed (exit code 137) during step sleep",
    )
    .await;
    serving.shutdown().await.unwrap();
    assert_no_container_left(&engine, &run.run_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_warm_container_is_killed_from_outside_fails_within_seconds_saying_so() {
    let engine = engine().await;
    let warm = WarmSettings { per_image: 1, ..WarmSettings::default() };
    let settings = Settings { mode: Mode::Serve, warm, ..own_settings() };
    let driver = settings.name.clone();
    let _cleanup = RemovesOnDrop(driver.clone());
    let runner = CommandRunner::new(engine.clone(), settings);
    let (nats, harness) = setup().await;
    let serving = serve(runner.clone(), config(&nats), &harness).await;
    // A first run makes a warm container for the next, which takes it.
    let quick = json!({"image": TEST_IMAGE, "steps": [{"name": "a", "command": "true"}]});
    let first = harness.step(&driver, Event::Create, pipeline("first", quick), None).await.unwrap();
    assert!(harness.result(&first.run_id).await.unwrap().driverresult.success);
    let mut ready = runner.warm_containers();
    tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|ready| *ready == 1))
        .await
        .unwrap()
        .unwrap();
    let warm: Vec<String> = engine
        .containers_of(&driver)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, l)| l.get(labels::WARM).map(String::as_str) == Some("true"))
        .map(|(id, _)| id)
        .collect();
    let [container] = warm.as_slice() else { panic!("one warm container ready: {warm:?}") };
    let run = harness.step(&driver, Event::Create, endless("endless"), None).await.unwrap();
    harness.wait_for_log(&run.run_id, "started", Duration::from_secs(30)).await.unwrap();

    // `docker kill` of the container the run took.
    engine.docker().kill_container(container, None).await.expect("docker kill");
    let gone = Instant::now();

    assert_fails_soon_with(
        &harness,
        &run,
        gone,
        "the run's container was killed (exit code 137) during step sleep",
    )
    .await;
    serving.shutdown().await.unwrap();
    runner.finish_removals().await;
    assert!(container_ids(&engine, &driver).await.is_empty(), "every container is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_docker_engine_stops_answering_mid_step_fails_within_seconds_saying_so() {
    let local = engine().await;
    let settings = own_settings();
    let _cleanup = RemovesOnDrop(settings.name.clone());
    // The runner reaches the engine through a front the test takes down: to the
    // runner, an engine that stops.
    let mut front = DockerFront::start(0).await;
    let through_front = Engine::connect_to(&front.host()).await.unwrap();
    let (_nats, harness, serving, run) = endless_run(&through_front, settings).await;
    let container = container_of_run(&local, &run.run_id).await;

    front.stop().await;
    let gone = Instant::now();

    let failure = fails_soon(&harness, &run, gone).await;
    let (head, tail) =
        ("the run's container was lost: the Docker engine stopped answering (", ") during step sleep");
    assert!(failure.starts_with(head) && failure.ends_with(tail), "{failure}");
    serving.shutdown().await.unwrap();
    // The engine itself never stopped here, so the container still runs, and the
    // runner could not remove it while the engine did not answer.
    local.remove(&container).await;
}
