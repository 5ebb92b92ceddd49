//! Warm containers: a serving runner's next run of an image takes a container started
//! before it, made for no run, never used by another; the pool follows the image, the
//! settings and the runner's life.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::*;
use conveyor_sdk::validate::SpecValidator;
use conveyor_sdk::{Driver, LogHandle, Run};
use serde_json::{json, Value};
use simple_runner::engine::image::PullProgress;
use simple_runner::pod::labels;
use simple_runner::settings::secrets::Secrets;
use simple_runner::{CommandRunner, Engine, Mode, RunReport, Settings, WarmSettings};

/// A serving runner of a driver of its own with `per_image` warm containers.
fn warm_settings(per_image: usize) -> Settings {
    Settings {
        mode: Mode::Serve,
        warm: WarmSettings { per_image, ..WarmSettings::default() },
        ..own_settings()
    }
}

/// Runs `spec` with `runner` as the runtime would, leaving the warm containers be:
/// the report and the log.
async fn run(runner: &CommandRunner, spec: Value) -> (RunReport, Vec<String>) {
    let resource = pipeline("warm", spec);
    let validator = SpecValidator::new(&runner.resources()).expect("the definition compiles");
    let decoded = validator.decode(&resource).unwrap_or_else(|e| panic!("invalid spec: {e}"));
    let (log, memory) = LogHandle::memory();
    let run = Run::new(resource, decoded).with_log(log).with_run_id(uuid::Uuid::new_v4().to_string());
    let report = runner.execute(&run, PullProgress::Log(run.log())).await;
    (report, memory.lines())
}

/// Waits (30 s at most) until `runner` has `n` warm containers ready.
async fn ready(runner: &CommandRunner, n: usize) {
    let mut ready = runner.warm_containers();
    let waited = tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|ready| *ready == n)).await;
    let reached = waited.is_ok_and(|r| r.is_ok());
    assert!(reached, "never {n} warm container(s) ready, but {}", *ready.borrow());
}

/// The warm containers of `driver` on the engine: id and labels.
async fn warm_containers(engine: &Engine, driver: &str) -> Vec<(String, HashMap<String, String>)> {
    let containers = engine.containers_of(driver).await.unwrap_or_else(|e| panic!("{e}"));
    containers.into_iter().filter(|(_, l)| l.get(labels::WARM).map(String::as_str) == Some("true")).collect()
}

/// The one warm container of `driver`, once those a run used or the runner retired are
/// gone (20 s at most): they go in the background, maybe after their successor is
/// ready, as on Podman, which takes longer to remove a container.
async fn the_warm_container(engine: &Engine, driver: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let warm = warm_containers(engine, driver).await;
        if warm.len() == 1 || tokio::time::Instant::now() >= deadline {
            assert_eq!(warm.len(), 1, "{warm:?}");
            return warm[0].0.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The line after `marker` in `log`: what a step printed after it.
fn after<'a>(log: &'a [String], marker: &str) -> &'a str {
    let at = log.iter().position(|l| l == marker).unwrap_or_else(|| panic!("no {marker:?} in {log:#?}"));
    log.get(at + 1).map(String::as_str).unwrap_or_else(|| panic!("nothing after {marker:?} in {log:#?}"))
}

#[tokio::test]
async fn a_run_takes_a_warm_container_made_for_no_run_and_a_new_one_takes_its_place() {
    let engine = engine().await;
    let mut settings = warm_settings(1);
    settings.container.memory_bytes = Some(64 << 20);
    settings.secrets = Secrets::default().with("TOKEN", "s3cret-value").unwrap();
    let driver = settings.name.clone();
    let instance = settings.instance.clone();
    let _cleanup = RemovesOnDrop(driver.clone());
    let runner = CommandRunner::new(engine.clone(), settings);
    let metrics = conveyor_sdk::runtime::Metrics::new();
    engine.metrics().register(&metrics);

    let hostname = json!({"name": "which", "command": "echo container; hostname"});
    let (first, log) = run(&runner, json!({"image": TEST_IMAGE, "steps": [hostname]})).await;
    assert!(first.succeeded(), "{}", first.message());
    let cold = after(&log, "container").to_owned();
    ready(&runner, 1).await;

    // Made as a run's container, with its limits and owner, and nothing of a run.
    let warm = the_warm_container(&engine, &driver).await;
    assert!(!warm.starts_with(&cold), "the first run's container is not given back");
    let inspected = engine.docker().inspect_container(&warm, None).await.unwrap();
    let host = inspected.host_config.unwrap();
    assert_eq!((host.memory, host.network_mode.as_deref()), (Some(64 << 20), Some("none")));
    let config = inspected.config.unwrap();
    let container_labels = config.labels.unwrap();
    assert_eq!(container_labels[labels::MODE], "serve", "reaped by the sweep when its owner is gone");
    assert_eq!(container_labels[labels::INSTANCE], instance);
    assert!(!container_labels.contains_key(labels::RUN_ID));
    let env = config.env.unwrap_or_default();
    assert!(env.iter().all(|v| !v.starts_with("CONVEYOR_") && !v.contains("s3cret")), "{env:?}");

    // The second run takes it; its environment and secrets come through its steps. It
    // fails: its container is removed like any other.
    let (second, log) = run(
        &runner,
        json!({
            "image": TEST_IMAGE,
            "env": {"GREETING": "hello"},
            "secrets": ["TOKEN"],
            "steps": [{"name": "env", "command": "echo container; hostname; echo \"$GREETING $CI $CONVEYOR_RESOURCE\"; [ \"$TOKEN\" = s3cret-value ] && echo the-secret-arrived; exit 3"}]
        }),
    )
    .await;
    assert!(!second.succeeded(), "{}", second.message());
    assert!(warm.starts_with(after(&log, "container")), "the run took {warm}: {log:#?}");
    assert!(has(&log, "hello true warm"), "{log:#?}");
    assert!(has(&log, "the-secret-arrived"), "{log:#?}");
    assert!(log.iter().all(|l| !l.contains("s3cret-value")), "{log:#?}");

    ready(&runner, 1).await;
    let next = the_warm_container(&engine, &driver).await;
    assert_ne!(next, warm, "a used container is never warm again");
    let (third, log) = run(&runner, json!({"image": TEST_IMAGE, "steps": [hostname]})).await;
    assert!(third.succeeded(), "{}", third.message());
    assert!(next.starts_with(after(&log, "container")), "{log:#?}");

    let scraped = metrics.encode();
    assert!(scraped.contains("simple_runner_run_starts_total{start=\"warm\"} 2"), "{scraped}");
    assert!(scraped.contains("simple_runner_run_starts_total{start=\"cold\"} 1"), "{scraped}");
    runner.finish_removals().await;
    let left = engine.containers_of(&driver).await.unwrap();
    assert!(left.is_empty(), "the warm container goes with the runner: {left:?}");
    assert_eq!(*runner.warm_containers().borrow(), 0);
}

#[tokio::test]
async fn a_warm_container_that_died_is_removed_and_the_run_starts_cold() {
    let engine = engine().await;
    let settings = warm_settings(1);
    let driver = settings.name.clone();
    let _cleanup = RemovesOnDrop(driver.clone());
    let runner = CommandRunner::new(engine.clone(), settings);
    let step = json!({"name": "which", "command": "echo container; hostname"});

    let (first, _) = run(&runner, json!({"image": TEST_IMAGE, "steps": [step]})).await;
    assert!(first.succeeded(), "{}", first.message());
    ready(&runner, 1).await;
    let dead = the_warm_container(&engine, &driver).await;
    let killed = Command::new("docker").args(["kill", &dead]).output().expect("docker CLI");
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));

    let (second, log) = run(&runner, json!({"image": TEST_IMAGE, "steps": [step]})).await;
    assert!(second.succeeded(), "{}", second.message());
    assert!(!dead.starts_with(after(&log, "container")), "the dead container was not used");
    runner.finish_removals().await;
    assert!(engine.docker().inspect_container(&dead, None).await.is_err(), "the dead one was removed");
}

/// An image of the test image's with `/marker` holding `text`, tagged `tag`.
fn build_marked(tag: &str, text: &str) {
    let context = tempfile::tempdir().unwrap();
    let dockerfile = format!("FROM {TEST_IMAGE}\nRUN echo {text} > /marker\n");
    std::fs::write(context.path().join("Dockerfile"), dockerfile).unwrap();
    let built = Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(context.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker CLI: run `bash scripts/services.sh`");
    assert!(built.status.success(), "docker build: {}", String::from_utf8_lossy(&built.stderr));
}

#[tokio::test]
async fn warm_containers_of_an_image_whose_tag_moved_are_removed() {
    let engine = engine().await;
    let settings = warm_settings(1);
    let driver = settings.name.clone();
    let _cleanup = RemovesOnDrop(driver.clone());
    let runner = CommandRunner::new(engine.clone(), settings);
    let tag = format!("conveyor-test/marked:{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    build_marked(&tag, "one");
    let step = json!({"name": "marker", "command": "echo marker; cat /marker"});

    let (first, log) = run(&runner, json!({"image": tag, "steps": [step]})).await;
    assert!(first.succeeded(), "{}", first.message());
    assert_eq!(after(&log, "marker"), "one");
    ready(&runner, 1).await;
    let of_the_old_image = the_warm_container(&engine, &driver).await;

    build_marked(&tag, "two");
    let (second, log) = run(&runner, json!({"image": tag, "steps": [step]})).await;
    assert!(second.succeeded(), "{}", second.message());
    assert_eq!(after(&log, "marker"), "two", "the run gets the image its tag names now");
    ready(&runner, 1).await;
    let warm = the_warm_container(&engine, &driver).await;
    assert_ne!(warm, of_the_old_image);
    let inspected = engine.docker().inspect_container(&warm, None).await.unwrap();
    let image = engine.docker().inspect_image(&tag).await.unwrap();
    assert_eq!(inspected.image, image.id, "the new warm container is of the new image");

    runner.finish_removals().await;
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
}

#[tokio::test]
async fn other_settings_and_idle_images_retire_their_warm_containers() {
    let engine = engine().await;
    let mut settings = warm_settings(1);
    settings.warm = WarmSettings { per_image: 1, max_images: 1, idle: Duration::from_secs(2) };
    let driver = settings.name.clone();
    let _cleanup = RemovesOnDrop(driver.clone());
    let runner = CommandRunner::new(engine.clone(), settings);
    let step = json!({"name": "noop", "command": "true"});

    let (first, _) = run(&runner, json!({"image": TEST_IMAGE, "steps": [step]})).await;
    assert!(first.succeeded(), "{}", first.message());
    ready(&runner, 1).await;
    let default_limits = the_warm_container(&engine, &driver).await;

    // Other limits: another pool; with one image at most, the first one's goes.
    let (second, _) = run(&runner, json!({"image": TEST_IMAGE, "memory": "32m", "steps": [step]})).await;
    assert!(second.succeeded(), "{}", second.message());
    ready(&runner, 1).await;
    let limited = the_warm_container(&engine, &driver).await;
    assert_ne!(limited, default_limits);
    let host = engine.docker().inspect_container(&limited, None).await.unwrap().host_config.unwrap();
    assert_eq!(host.memory, Some(32 << 20), "made with the run's limits");

    // Not run for the idle time: removed.
    ready(&runner, 0).await;
    runner.finish_removals().await;
    assert!(engine.containers_of(&driver).await.unwrap().is_empty());
}
