//! The runner when the Docker engine goes away and comes back, and containers left by
//! a runner that died.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::json;
use simple_runner::docker::labels;
use simple_runner::image::{PullOptions, PullProgress, PullUpdate};
use simple_runner::{cleanup, CommandRunner, ContainerSettings, Engine, EngineError, PullPolicy};
use tokio::net::{TcpListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

/// A TCP front of the local Docker socket that can be taken down and brought back:
/// to the runner, an engine that stops and starts again.
struct DockerFront {
    port: u16,
    task: Option<JoinHandle<()>>,
}

impl DockerFront {
    async fn start(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind the Docker front");
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it closes every connection too.
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut docker) = UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut docker).await;
                    }
                });
            }
        });
        Self { port, task: Some(task) }
    }

    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}

#[tokio::test]
async fn an_unreachable_engine_fails_runs_clearly_and_the_runner_recovers_when_it_is_back() {
    let local = engine().await; // checks the test image
    let (nats, harness) = setup().await;
    let mut front = DockerFront::start(0).await;
    let engine = Engine::connect_to(&front.host()).await.unwrap();
    let serving = serve(CommandRunner::new(engine, settings()), config(&nats), &harness).await;
    let spec = json!({"image": TEST_IMAGE, "steps": [{"name": "hello", "command": "echo hello"}]});

    front.stop().await;
    let down = harness.create(pipeline("engine-down", spec.clone())).await.unwrap();
    let result = harness.result(&down.run_id).await.unwrap().driverresult;
    assert!(!result.success);
    assert!(
        result.message.contains(TEST_IMAGE),
        "the failure should say what it was doing: {}",
        result.message
    );

    let front = DockerFront::start(front.port).await;
    let back = harness.create(pipeline("engine-back", spec)).await.unwrap();
    let result = harness.result(&back.run_id).await.unwrap().driverresult;
    assert!(result.success, "{}", result.message);
    assert!(lines(&harness, &back.run_id).contains(&"hello".to_owned()));
    assert_no_container_left(&local, &back.run_id).await;
    serving.shutdown().await.unwrap();
    drop(front);
}

#[tokio::test]
async fn readyz_is_503_while_the_docker_engine_does_not_answer() {
    engine().await; // checks the test image
    let (nats, harness) = setup().await;
    let mut front = DockerFront::start(0).await;
    let engine = Engine::connect_to(&front.host()).await.unwrap();
    let metrics = conveyor_sdk::runtime::Metrics::new();
    let config = config(&nats)
        .metrics(metrics.clone())
        .metrics_listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let serving = serve(CommandRunner::new(engine, settings()), config, &harness).await;
    let addr = metrics_endpoint(&metrics).await;
    assert_eq!(until_status(addr, "/readyz", 200).await, "ready\n");

    front.stop().await;
    let reason = until_status(addr, "/readyz", 503).await;
    assert!(reason.contains("the Docker engine does not answer"), "{reason}");
    assert_eq!(get(addr, "/healthz").await.0, 200, "alive while the engine is away");

    let front = DockerFront::start(front.port).await;
    until_status(addr, "/readyz", 200).await;
    serving.shutdown().await.unwrap();
    drop(front);
}

#[tokio::test]
async fn containers_of_a_dead_runner_are_removed_and_those_of_a_live_one_kept() {
    let engine = engine().await;
    let (nats, _harness) = setup().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let driver = format!("cleanup-test-{}", uuid::Uuid::new_v4().simple());
    let (me, alive, dead) = ("me".to_owned(), "alive-runner".to_owned(), "dead-runner".to_owned());
    let answering = tokio::spawn(cleanup::answer_liveness(client.clone(), driver.clone(), alive.clone()));
    // The answer must be in place before the question: wait for it to answer once.
    let subject = format!("conveyor.runners.{driver}.{alive}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.request(subject.clone(), "".into()).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "liveness answers never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let settings = ContainerSettings { network: "none".into(), ..ContainerSettings::default() };
    let mut ids = HashMap::new();
    for owner in [&me, &alive, &dead] {
        let labels = HashMap::from([
            (labels::RUN_ID.to_owned(), format!("run-of-{owner}")),
            (labels::DRIVER.to_owned(), driver.clone()),
            (labels::RESOURCE.to_owned(), "leftover".to_owned()),
            (labels::INSTANCE.to_owned(), owner.clone()),
        ]);
        let name = simple_runner::docker::container_name("leftover", owner);
        let container = engine.start_run_container(TEST_IMAGE, &name, None, vec![], labels, &settings).await;
        ids.insert(owner.clone(), container.unwrap().id);
    }

    let removed = cleanup::remove_orphans(&engine, &client, &driver, &me).await;
    assert_eq!(removed, 1);
    let left: Vec<String> =
        engine.containers_of(&driver).await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert!(!left.contains(&ids[&dead]), "the dead runner's container must be removed");
    assert!(left.contains(&ids[&alive]), "a live runner's container must be kept");
    assert!(left.contains(&ids[&me]), "this runner's own container must be kept");

    answering.abort();
    for id in ids.values() {
        engine.remove(id).await;
    }
    assert!(engine.containers_of(&driver).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_pull_watcher_hears_the_end_whether_or_not_an_image_was_pulled() {
    let engine = engine().await;
    let heard = std::sync::Mutex::new(Vec::new());
    let watch = |update: PullUpdate| heard.lock().unwrap().push(update);

    let present = engine
        .ensure_image(
            TEST_IMAGE,
            PullPolicy::IfNotPresent,
            &PullOptions::default(),
            PullProgress::Callback(&watch),
        )
        .await;
    assert!(present.is_ok(), "{present:?}");
    assert_eq!(*heard.lock().unwrap(), [PullUpdate::Finished], "a present image needs no pull");

    heard.lock().unwrap().clear();
    let missing = "conveyor-test/never-built:0";
    let refused = engine
        .ensure_image(missing, PullPolicy::Never, &PullOptions::default(), PullProgress::Callback(&watch))
        .await;
    assert!(matches!(refused, Err(EngineError::ImageMissing(ref image)) if image == missing), "{refused:?}");
    assert_eq!(*heard.lock().unwrap(), [PullUpdate::Finished]);
}
