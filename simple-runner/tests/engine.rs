//! The runner when the Docker engine goes away and comes back, and containers left by
//! a runner that died.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, ListContainersOptions, StartContainerOptions};
use common::*;
use serde_json::json;
use simple_runner::engine::image::{PullOptions, PullProgress, PullUpdate};
use simple_runner::housekeeping::cleanup;
use simple_runner::housekeeping::liveness::Liveness;
use simple_runner::{CommandRunner, Engine, EngineError, PullPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

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
async fn a_sweep_removes_only_served_containers_of_its_installation_whose_runners_have_no_liveness_record() {
    let engine = engine().await;
    let (nats, _harness) = setup().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let driver = unique_driver("cleanup-test");
    let alive =
        Liveness::start(client.clone(), &driver, "alive-runner", Duration::from_secs(30)).await.unwrap();
    let installation = installation_of(&nats.url()).await;
    let here = Some(installation.as_str());
    let ids = HashMap::from([
        ("me", labelled_container(&engine, here, &driver, "me", "serve").await),
        ("alive", labelled_container(&engine, here, &driver, "alive-runner", "serve").await),
        ("dead", labelled_container(&engine, here, &driver, "dead-runner", "serve").await),
        ("local", labelled_container(&engine, here, &driver, "dead-runner", "run").await),
        (
            "elsewhere",
            labelled_container(&engine, Some("another-installation"), &driver, "dead-runner", "serve").await,
        ),
        ("older", labelled_container(&engine, None, &driver, "dead-runner", "serve").await),
    ]);

    let swept = cleanup::sweep(&engine, alive.bucket(), &scope(&installation, &driver, "me")).await;
    let left = container_ids(&engine, &driver).await;
    remove_all_of(&engine, &driver).await;
    let swept = swept.unwrap_or_else(|e| panic!("{}", conveyor_sdk::error_text(&e)));
    assert_eq!(swept.removed, [ids["dead"].clone()]);
    assert!(!left.contains(&ids["dead"]), "the dead runner's container must be removed");
    assert!(left.contains(&ids["alive"]), "a live runner's container must be kept");
    assert!(left.contains(&ids["me"]), "this runner's own container must be kept");
    assert!(left.contains(&ids["local"]), "a local run's container must be kept, whoever made it");
    assert!(left.contains(&ids["elsewhere"]), "another installation's container must be kept");
    assert!(left.contains(&ids["older"]), "a container without an installation label must be kept");
    assert_eq!(
        (swept.count(cleanup::Verdict::OtherInstallation), swept.count(cleanup::Verdict::NoInstallation)),
        (1, 1)
    );
    alive.stop().await;
}

#[tokio::test]
async fn the_containers_of_a_driver_are_listed_while_they_exit_by_themselves() {
    let engine = engine().await;
    let driver = unique_driver("exiting");
    let _cleanup = RemovesOnDrop(driver.clone());
    // Containers of the driver that exit by themselves, one every 100 ms or so.
    let mut ids = Vec::new();
    for k in 1..=8 {
        let body = ContainerCreateBody {
            image: Some(TEST_IMAGE.to_owned()),
            cmd: Some(vec!["sleep".to_owned(), format!("0.{k}")]),
            labels: Some(HashMap::from([("conveyor.driver".to_owned(), driver.clone())])),
            host_config: Some(HostConfig { network_mode: Some("none".to_owned()), ..Default::default() }),
            ..Default::default()
        };
        let created = engine.docker().create_container(None::<CreateContainerOptions>, body).await;
        ids.push(created.unwrap_or_else(|e| panic!("creating a container: {e}")).id);
    }
    ids.sort();
    for id in &ids {
        let started = engine.docker().start_container(id, None::<StartContainerOptions>).await;
        started.unwrap_or_else(|e| panic!("starting {id}: {e}"));
    }
    // Podman lists a container that has just exited as `stopped`, which the Docker API
    // does not have, until it has cleaned up after it; then as `exited`. Until the engine
    // lists them all as exited, every list of the driver's has every one of them.
    let filters = HashMap::from([("label".to_owned(), vec![format!("conveyor.driver={driver}")])]);
    let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut listed = container_ids(&engine, &driver).await;
        listed.sort();
        assert_eq!(listed, ids);
        if let Ok(raw) = engine.docker().list_containers(Some(options.clone())).await {
            if raw.iter().all(|c| c.state == Some(ContainerSummaryStateEnum::EXITED)) {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "the containers never listed as exited");
    }
}

/// A TCP front of the engine's socket that, while `refusing`, drops every connection
/// on which a `DELETE` request begins: to the runner, a removal that fails.
async fn delete_refusing_front(refusing: Arc<AtomicBool>) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind the Docker front");
    let host = format!("tcp://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let socket = engine_socket();
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((client, _)) = listener.accept().await {
            let refusing = refusing.clone();
            let socket = socket.clone();
            connections.spawn(async move {
                let Ok(docker) = UnixStream::connect(&socket).await else { return };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_docker, mut to_docker) = docker.into_split();
                let requests = async {
                    let mut buffer = vec![0; 64 * 1024];
                    loop {
                        let n = from_client.read(&mut buffer).await.unwrap_or(0);
                        if n == 0 || (refusing.load(Ordering::SeqCst) && buffer[..n].starts_with(b"DELETE "))
                        {
                            return;
                        }
                        if to_docker.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                tokio::select! {
                    () = requests => {}
                    _ = tokio::io::copy(&mut from_docker, &mut to_client) => {}
                }
            });
        }
    });
    (host, task)
}

#[tokio::test]
async fn a_removal_that_fails_is_tried_again_by_the_next_sweep() {
    let local = engine().await;
    let (nats, _harness) = setup().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let (bucket, _) =
        simple_runner::housekeeping::liveness::open_bucket(&js, Duration::from_secs(30)).await.unwrap();
    let driver = unique_driver("retry-test");
    let _cleanup = RemovesOnDrop(driver.clone());
    let installation = installation_of(&nats.url()).await;
    let orphan = labelled_container(&local, Some(&installation), &driver, "dead-runner", "serve").await;
    let refusing = Arc::new(AtomicBool::new(true));
    let (host, front) = delete_refusing_front(refusing.clone()).await;
    let engine = Engine::connect_to(&host).await.unwrap();

    let first = cleanup::sweep(&engine, &bucket, &scope(&installation, &driver, "me")).await.unwrap();
    assert_eq!((first.removed.len(), first.failed.clone()), (0, vec![orphan.clone()]), "{first:?}");
    assert_eq!(
        container_ids(&local, &driver).await,
        vec![orphan.clone()],
        "still there after a failed removal"
    );

    refusing.store(false, Ordering::SeqCst);
    let second = cleanup::sweep(&engine, &bucket, &scope(&installation, &driver, "me")).await.unwrap();
    assert_eq!((second.removed.clone(), second.failed.len()), (vec![orphan], 0), "{second:?}");
    assert!(container_ids(&local, &driver).await.is_empty());
    front.abort();
}

#[tokio::test]
async fn a_sweep_that_cannot_read_the_liveness_bucket_removes_nothing() {
    let engine = engine().await;
    let mut nats = conveyor_sdk::testing::NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let client = async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(1)))
        .connect(nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let (bucket, _) =
        simple_runner::housekeeping::liveness::open_bucket(&js, Duration::from_secs(30)).await.unwrap();
    let installation = simple_runner::housekeeping::installation::identify(&js).await.unwrap();
    let driver = unique_driver("unreadable-test");
    let orphan = labelled_container(&engine, Some(&installation), &driver, "dead-runner", "serve").await;

    nats.stop().await;
    let swept = cleanup::sweep(&engine, &bucket, &scope(&installation, &driver, "me")).await;
    let left = container_ids(&engine, &driver).await;
    remove_all_of(&engine, &driver).await;
    let error = swept.expect_err("a sweep without liveness records must fail");
    assert!(matches!(error, cleanup::SweepError::Liveness(_)), "{error:?}");
    assert!(
        conveyor_sdk::error_text(&error).contains("no container removed this round"),
        "{}",
        conveyor_sdk::error_text(&error)
    );
    assert_eq!(left, [orphan], "the container of a runner that may be alive must be kept");
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
    let id = present.expect("the test image is present");
    let inspected = engine.docker().inspect_image(TEST_IMAGE).await.expect("inspect");
    assert_eq!(Some(id), inspected.id, "the id of the image present");
    assert_eq!(*heard.lock().unwrap(), [PullUpdate::Finished], "a present image needs no pull");

    heard.lock().unwrap().clear();
    let missing = "conveyor-test/never-built:0";
    let refused = engine
        .ensure_image(missing, PullPolicy::Never, &PullOptions::default(), PullProgress::Callback(&watch))
        .await;
    assert!(matches!(refused, Err(EngineError::ImageMissing(ref image)) if image == missing), "{refused:?}");
    assert_eq!(*heard.lock().unwrap(), [PullUpdate::Finished]);
}
