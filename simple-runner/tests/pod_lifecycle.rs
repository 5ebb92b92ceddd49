//! A pod run's end on every path, on the real engine: cancelled, over its deadline
//! (during a step, or while a service is still not ready), superseded by an update,
//! cut short by its runner's shutdown, left by a runner killed with SIGKILL, or
//! outliving a service that died. Whatever the path, no container and no volume of the
//! run is left.
//!
//! Every pod here has steps in two images of their own and one service: three
//! containers sharing one network namespace, and a workspace volume.

mod common;

use std::time::Duration;

use conveyor_sdk::protocol::CancelState;
use conveyor_sdk::runtime::{cancel_run, Metrics};
use conveyor_sdk::testing::{Dispatched, Harness, NatsServer, Serving};
use conveyor_sdk::{CancellationToken, Event, Resource};
use serde_json::{json, Value};
use simple_runner::housekeeping::cleanup::{self, Verdict};
use simple_runner::{CommandRunner, Engine, DRIVER_NAME};
use tokio::time::Instant;

use common::*;

/// A step that says when it got SIGTERM, and when it is going.
const TRAPPING: &str = "trap 'echo got TERM; exit 143' TERM; echo started; sleep 600 & wait";

/// The containers of every pod here: one per step image, and the service's.
const POD_CONTAINERS: usize = 3;

/// How long the removal of a pod may take once its run has ended: its step
/// containers exit when their sessions go, its service's is removed at once, then
/// its volume.
const REMOVED_WITHIN: Duration = Duration::from_secs(5);

/// The run's timeout in the deadline tests, in seconds: long enough for a pod to come
/// up on a loaded machine (it takes about a second on either engine), short enough for
/// a quick test.
const DEADLINE_SECS: u64 = 5;

/// A pod run: step `write` in [`ALPHA_IMAGE`] leaves a file in the workspace, step
/// `long` in [`BETA_IMAGE`] reads it and then runs `long`; the service `web`
/// ([`HTTPD_IMAGE`]) is ready once port 8080 listens. `extra` adds to the spec.
fn pod(long: &str, extra: Value) -> Value {
    let mut spec = json!({
        "image": TEST_IMAGE,
        "steps": [
            {"name": "write", "image": ALPHA_IMAGE, "command": "echo built > out.txt"},
            {"name": "long", "image": BETA_IMAGE, "command": format!("cat out.txt; {long}")}
        ],
        "services": [{"name": "web", "image": HTTPD_IMAGE, "ready": {"tcp": 8080}}]
    });
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    spec
}

/// The `web` service of [`pod`] waited for on a port nothing ever listens on (it serves
/// on 8080), for far longer than any test lasts.
fn never_ready() -> Value {
    json!([{"name": "web", "image": HTTPD_IMAGE, "ready": {"tcp": 9}, "ready_timeout": "1m"}])
}

/// Asserts that the whole pod of `run_id` is on the engine: its containers and its
/// workspace volume.
async fn assert_pod_is_up(engine: &Engine, run_id: &str) {
    let (containers, volumes) =
        (containers_of_run(engine, run_id).await, volumes_of_run(engine, run_id).await);
    assert_eq!(
        (containers, volumes),
        (POD_CONTAINERS, 1),
        "the pod of run {run_id}: containers and workspace volumes"
    );
}

fn version(created: &Dispatched, number: u64, spec: Value) -> Resource {
    let mut next = created.resource.clone();
    next.spec = spec;
    next.metadata.insert("version".into(), number.to_string().into());
    next
}

#[tokio::test]
async fn a_cancelled_pod_run_stops_its_step_fails_once_saying_cancelled_and_leaves_no_container_or_volume() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let serving = serve(CommandRunner::new(engine.clone(), settings()), config(&nats), &harness).await;

    let run = harness.create(pipeline("pod-cancel", pod(TRAPPING, json!({})))).await.unwrap();
    harness.wait_for_log(&run.run_id, "started", Duration::from_secs(30)).await.unwrap();
    assert_pod_is_up(&engine, &run.run_id).await;
    let reply = cancel_run(harness.client(), DRIVER_NAME, &run.run_id).await.unwrap();
    assert_eq!(reply.state, CancelState::Cancelling);

    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(!result.success);
    assert_eq!(result.message, "cancelled");
    assert_eq!(result.data["steps"][0]["exit_code"], 0, "{}", result.data);
    assert_eq!(result.data["steps"][1]["name"], "long", "{}", result.data);
    assert_eq!(result.data["steps"][1]["exit_code"], 143, "{}", result.data);
    let lines = lines(&harness, &run.run_id);
    assert!(has(&lines, "built"), "the step read what the other image's step wrote: {lines:?}");
    assert!(has(&lines, "got TERM"), "the step got SIGTERM: {lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("the run was cancelled on request"), "{lines:?}");
    let ended = Instant::now();
    assert_nothing_left_within(&engine, &run.run_id, REMOVED_WITHIN).await;
    eprintln!("the cancelled run's pod was removed {:?} after its result", ended.elapsed());
    assert_eq!(harness.results(&run.run_id).len(), 1, "one result");
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_pod_run_whose_deadline_passes_during_a_step_times_out_and_leaves_no_container_or_volume() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let serving = serve(CommandRunner::new(engine.clone(), settings()), config(&nats), &harness).await;

    let timeout = json!({"timeout": format!("{DEADLINE_SECS}s")});
    let run = harness.create(pipeline("pod-deadline", pod(TRAPPING, timeout))).await.unwrap();
    let began = harness.wait_for_log(&run.run_id, "started", Duration::from_secs(DEADLINE_SECS)).await;
    began.unwrap_or_else(|e| panic!("the step did not begin within the run's timeout: {e}"));
    assert_pod_is_up(&engine, &run.run_id).await;

    let result = harness.result_within(&run.run_id, Duration::from_secs(30)).await.unwrap().driverresult;
    assert!(!result.success);
    assert_eq!(result.message, format!("timed out after {DEADLINE_SECS}s during step long"));
    assert_eq!(result.data["steps"][1]["exit_code"], 143, "{}", result.data);
    let lines = lines(&harness, &run.run_id);
    assert!(has(&lines, "got TERM"), "the step got SIGTERM: {lines:?}");
    assert_nothing_left_within(&engine, &run.run_id, REMOVED_WITHIN).await;
    assert_eq!(harness.results(&run.run_id).len(), 1, "one result");
    serving.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_pod_run_whose_deadline_passes_while_a_service_is_not_ready_ends_at_its_deadline_and_leaves_nothing(
) {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let serving = serve(CommandRunner::new(engine.clone(), settings()), config(&nats), &harness).await;

    let spec = pod(TRAPPING, json!({"timeout": format!("{DEADLINE_SECS}s"), "services": never_ready()}));
    let created = Instant::now();
    let run = harness.create(pipeline("pod-not-ready", spec)).await.unwrap();
    harness.wait_for_log(&run.run_id, "--> service web", Duration::from_secs(30)).await.unwrap();
    assert_pod_is_up(&engine, &run.run_id).await;

    let result = harness.result_within(&run.run_id, Duration::from_secs(30)).await.unwrap().driverresult;
    let took = created.elapsed();
    assert!(!result.success);
    assert_eq!(result.message, format!("timed out after {DEADLINE_SECS}s before the steps began"));
    let deadline = Duration::from_secs(DEADLINE_SECS);
    assert!(
        took >= deadline && took < deadline + Duration::from_secs(5),
        "the run ended {took:?} after it was created, not at its deadline of {deadline:?}"
    );
    let lines = lines(&harness, &run.run_id);
    assert!(!lines.iter().any(|l| l.starts_with("==> step")), "no step began: {lines:?}");
    assert!(!lines.iter().any(|l| l.contains("is ready")), "the service was never ready: {lines:?}");
    let said = format!("the run {}", result.message);
    assert_eq!(lines.last(), Some(&said), "the log says why the run ended, once: {lines:?}");
    assert_nothing_left_within(&engine, &run.run_id, REMOVED_WITHIN).await;
    assert_eq!(harness.results(&run.run_id).len(), 1, "one result");
    serving.shutdown().await.unwrap();
}

/// A pod run held by a runner that runs one at a time, its step running, then a
/// second runner: the next event can only go to the second.
async fn pod_held_by_the_first_of_two_runners(
    nats: &NatsServer,
    harness: &Harness,
    engine: &Engine,
) -> (Dispatched, [Serving; 2]) {
    let first = CommandRunner::new(engine.clone(), settings());
    let first = serve(first, config(nats).concurrency(1), harness).await;
    let created = harness.create(pipeline("pod-app", pod(TRAPPING, json!({})))).await.unwrap();
    harness.wait_for_log(&created.run_id, "started", Duration::from_secs(30)).await.unwrap();
    assert_pod_is_up(engine, &created.run_id).await;
    let second = serve(CommandRunner::new(engine.clone(), settings()), config(nats), harness).await;
    (created, [first, second])
}

#[tokio::test]
async fn an_update_during_a_pod_run_stops_the_older_pod_and_runs_the_newer() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let (created, runners) = pod_held_by_the_first_of_two_runners(&nats, &harness, &engine).await;

    let newer = json!({
        "image": TEST_IMAGE,
        "steps": [
            {"name": "write", "image": ALPHA_IMAGE, "command": "echo version two > out.txt"},
            {"name": "read", "image": BETA_IMAGE, "command": "cat out.txt"},
            {"name": "fetch", "command": "wget -q -O - http://localhost:8080/"}
        ],
        "services": [{"name": "web", "image": HTTPD_IMAGE, "ready": {"tcp": 8080}}]
    });
    let updated = harness.update(version(&created, 2, newer)).await.unwrap();
    let older = harness.result(&created.run_id).await.unwrap().driverresult;
    assert!(!older.success);
    assert_eq!(older.message, format!("superseded by run {} (version 2)", updated.run_id));
    let older_lines = lines(&harness, &created.run_id);
    assert!(has(&older_lines, "got TERM"), "the older run's step got SIGTERM: {older_lines:?}");
    assert_nothing_left_within(&engine, &created.run_id, REMOVED_WITHIN).await;

    let newer = harness.result(&updated.run_id).await.unwrap().driverresult;
    assert!(newer.success, "{}", newer.message);
    let newer_lines = lines(&harness, &updated.run_id);
    assert!(has(&newer_lines, "version two"), "{newer_lines:?}");
    assert!(has(&newer_lines, HTTPD_PAGE), "the newer run's own service answered: {newer_lines:?}");
    assert_nothing_left_within(&engine, &updated.run_id, REMOVED_WITHIN).await;
    for runner in runners {
        runner.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_shutdown_mid_pod_run_has_removed_every_container_and_the_volume_when_it_returns() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let short_grace = config(&nats).grace_period(Duration::from_millis(200));
    let serving = serve(CommandRunner::new(engine.clone(), settings()), short_grace, &harness).await;

    let run = harness.create(pipeline("pod-shutdown", pod(TRAPPING, json!({})))).await.unwrap();
    harness.wait_for_log(&run.run_id, "started", Duration::from_secs(30)).await.unwrap();
    assert_pod_is_up(&engine, &run.run_id).await;
    serving.shutdown().await.unwrap();

    assert_nothing_left_within(&engine, &run.run_id, Duration::ZERO).await;
    assert!(harness.results(&run.run_id).is_empty(), "a run cut short by a shutdown publishes no result");
}

#[tokio::test]
async fn a_shutdown_while_a_service_is_not_ready_has_removed_the_pod_when_it_returns() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let short_grace = config(&nats).grace_period(Duration::from_millis(200));
    let serving = serve(CommandRunner::new(engine.clone(), settings()), short_grace, &harness).await;

    let spec = pod(TRAPPING, json!({"services": never_ready()}));
    let run = harness.create(pipeline("pod-shutdown-not-ready", spec)).await.unwrap();
    harness.wait_for_log(&run.run_id, "--> service web", Duration::from_secs(30)).await.unwrap();
    assert_pod_is_up(&engine, &run.run_id).await;
    serving.shutdown().await.unwrap();

    assert_nothing_left_within(&engine, &run.run_id, Duration::ZERO).await;
    assert!(harness.results(&run.run_id).is_empty(), "a run cut short by a shutdown publishes no result");
    let lines = lines(&harness, &run.run_id);
    assert!(!lines.iter().any(|l| l.starts_with("==> step")), "no step began: {lines:?}");
}

/// Removes every container, then every volume, of its driver (a test's own) when
/// dropped, even when the test fails half-way.
struct RemovesPodsOnDrop(String);

impl Drop for RemovesPodsOnDrop {
    fn drop(&mut self) {
        let driver = self.0.clone();
        // A runtime of its own: the test's may be the one unwinding.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async {
                let Ok(engine) = Engine::connect().await else { return };
                for (id, _) in engine.containers_of(&driver).await.unwrap_or_default() {
                    engine.remove(&id).await;
                }
                for (name, _) in engine.volumes_of(&driver).await.unwrap_or_default() {
                    engine.remove_volume(&name).await;
                }
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_of_a_runner_killed_with_sigkill_is_removed_with_its_volume_by_another_replica_within_ttl_and_interval(
) {
    const TTL: Duration = Duration::from_secs(3);
    const INTERVAL: Duration = Duration::from_secs(1);
    /// Time for the NATS server to expire the record and for the engine to remove
    /// running containers and the volume.
    const SLACK: Duration = Duration::from_secs(2);
    let engine = engine().await;
    let (nats, harness) = setup().await;
    let driver = unique_driver("pod-sigkill");
    let _cleanup = RemovesPodsOnDrop(driver.clone());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut killed = tokio::process::Command::new(env!("CARGO_BIN_EXE_simple-runner"))
        .args(["serve", "--network", "none", "--concurrency", "1", "--name", &driver])
        .args(["--liveness-ttl", "3s", "--sweep-interval", "1s"])
        .env("CONVEYOR_NATS_URL", nats.url())
        .env("CONVEYOR_API_URL", format!("http://127.0.0.1:{closed}"))
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    harness.wait_for_pull_requests(&driver, 1, Duration::from_secs(30)).await.unwrap();
    let resource = pipeline("pod-killed", pod(TRAPPING, json!({})));
    let run = harness.step(&driver, Event::Create, resource, None).await.unwrap();
    harness.wait_for_log(&run.run_id, "started", Duration::from_secs(30)).await.unwrap();
    assert_pod_is_up(&engine, &run.run_id).await;

    // Another replica (its own engine connection, so its own counts).
    let replica = Engine::connect().await.unwrap();
    let metrics = Metrics::new();
    replica.metrics().register(&metrics);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let (bucket, _) =
        simple_runner::housekeeping::liveness::open_bucket(&async_nats::jetstream::new(client), TTL)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let replica_b = scope(&installation_of(&nats.url()).await, &driver, "replica-b");
    let before = cleanup::sweep(&replica, &bucket, &replica_b).await.unwrap();
    assert_eq!(before.count(Verdict::OwnerAlive), POD_CONTAINERS, "while the runner lives: {before:?}");
    let volumes_alive = before.volume_verdicts.iter().filter(|(_, v)| *v == Verdict::OwnerAlive).count();
    assert_eq!(volumes_alive, 1, "the workspace, while the runner lives: {before:?}");
    assert!(before.removed.is_empty() && before.removed_volumes.is_empty(), "{before:?}");
    let stop = CancellationToken::new();
    let sweeping =
        tokio::spawn(cleanup::sweep_every(replica.clone(), bucket, replica_b, INTERVAL, stop.clone()));

    killed.start_kill().unwrap();
    killed.wait().await.unwrap();
    let killed_at = Instant::now();
    let bound = TTL + INTERVAL + SLACK;
    assert_nothing_left_within(&engine, &run.run_id, bound).await;
    eprintln!(
        "the killed runner's pod and volume were removed {:?} after SIGKILL (bound {bound:?})",
        killed_at.elapsed()
    );
    stop.cancel();
    sweeping.await.unwrap();
    assert_eq!(
        series_value(&metrics.encode(), "simple_runner_orphans_reaped_total"),
        Some(POD_CONTAINERS as f64)
    );
}

#[tokio::test]
async fn a_service_that_dies_while_steps_run_is_said_in_the_log_and_its_pod_is_removed_after_the_run() {
    let (nats, harness) = setup().await;
    let engine = engine().await;
    let serving = serve(CommandRunner::new(engine.clone(), settings()), config(&nats), &harness).await;

    // The service waits on a fifo in the workspace, ready once it is there; step `stop`
    // writes to it, and the service exits with code 3. Step `wait` then waits on a fifo
    // of its own, which the test writes to once the log has said how the service ended.
    let spec = json!({
        "image": TEST_IMAGE,
        "steps": [
            {"name": "stop", "image": ALPHA_IMAGE, "command": "echo stop > stop"},
            {"name": "wait", "image": BETA_IMAGE, "command": "mkfifo go; echo waiting; read word < go; echo got $word"}
        ],
        "services": [{
            "name": "db",
            "image": TEST_IMAGE,
            "command": "mkfifo /workspace/stop; read word < /workspace/stop; echo asked to $word; exit 3",
            "ready": {"command": "test -p /workspace/stop"}
        }]
    });
    let run = harness.create(pipeline("pod-service-dies", spec)).await.unwrap();
    harness.wait_for_log(&run.run_id, "waiting", Duration::from_secs(30)).await.unwrap();
    assert_pod_is_up(&engine, &run.run_id).await;
    harness
        .wait_for_log(&run.run_id, "service db exited with code 3", Duration::from_secs(10))
        .await
        .unwrap();

    // Any container of the pod mounts the workspace; the service's still runs its shell.
    let running = containers_labelled(&engine, &format!("conveyor.run_id={}", run.run_id), false).await;
    let container = running.first().and_then(|c| c.id.clone()).expect("a running container of the pod");
    write_to_fifo(&engine, &container, "/workspace/go", "go").await;

    let result = harness.result(&run.run_id).await.unwrap().driverresult;
    assert!(result.success, "{}", result.message);
    let lines = lines(&harness, &run.run_id);
    assert!(has(&lines, "[db] asked to stop"), "{lines:?}");
    assert!(has(&lines, "got go"), "{lines:?}");
    let said = lines.iter().position(|l| l == "service db exited with code 3");
    let ended = lines.iter().position(|l| l.starts_with("<== step 2/2 wait exited with code 0"));
    assert!(said.is_some() && said < ended, "said while the steps ran: {lines:?}");
    assert_nothing_left_within(&engine, &run.run_id, REMOVED_WITHIN).await;
    serving.shutdown().await.unwrap();
}

/// Writes `word` to the fifo at `path` in `container`, through an exec that ends once
/// a reader has taken it. What it says is the proof that it wrote: the run, its reader
/// gone, may remove the container before the exec could be inspected.
async fn write_to_fifo(engine: &Engine, container: &str, path: &str, word: &str) {
    use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
    use futures_util::StreamExt;
    let command = format!("echo {word} > {path} && echo written");
    let options = CreateExecOptions {
        cmd: Some(vec!["/bin/sh", "-c", command.as_str()]),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec = engine.docker().create_exec(container, options).await.unwrap_or_else(|e| panic!("exec: {e}"));
    let started = engine.docker().start_exec(&exec.id, None::<StartExecOptions>).await;
    let mut said = String::new();
    if let StartExecResults::Attached { mut output, .. } = started.unwrap_or_else(|e| panic!("exec: {e}")) {
        while let Some(Ok(chunk)) = output.next().await {
            said.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
    }
    assert_eq!(said.trim(), "written", "`{command}` in the pod");
}
