//! Two installations on one Docker engine: serving runners of the same driver name,
//! each installation with its own NATS server. A sweep removes only the orphans of its
//! own installation, never a live run of the other's.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use conveyor_sdk::testing::{create_replicated_server_streams, NatsCluster};
use conveyor_sdk::Event;
use serde_json::json;
use simple_runner::housekeeping::installation;
use simple_runner::pod::labels;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// A `simple-runner serve` of `driver` on the NATS server at `nats_url`, with `flags`;
/// what it writes to stderr is kept in the second value.
fn serve_binary(nats_url: &str, driver: &str, flags: &[&str]) -> (Child, Arc<Mutex<String>>) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_simple-runner"))
        .args(["serve", "--network", "none", "--concurrency", "1", "--name", driver])
        .args(flags)
        .env("CONVEYOR_NATS_URL", nats_url)
        .env("CONVEYOR_API_URL", format!("http://127.0.0.1:{closed}"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let written = Arc::new(Mutex::new(String::new()));
    if let Some(mut stderr) = child.stderr.take() {
        let written = written.clone();
        tokio::spawn(async move {
            let mut chunk = vec![0; 8192];
            while let Ok(n @ 1..) = stderr.read(&mut chunk).await {
                written.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
    }
    (child, written)
}

/// Stops a serving runner with SIGTERM and waits for it to exit.
async fn terminate(child: &mut Child) {
    let pid = child.id().expect("still running").to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}

/// The containers of `driver` labelled with `installation`, with their labels.
async fn containers_of_installation(
    engine: &simple_runner::Engine,
    driver: &str,
    installation: &str,
) -> Vec<(String, std::collections::HashMap<String, String>)> {
    let all = engine.containers_of(driver).await.unwrap_or_else(|e| panic!("{e}"));
    all.into_iter()
        .filter(|(_, l)| l.get(labels::INSTALLATION).map(String::as_str) == Some(installation))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_of_another_installation_on_the_same_engine_leaves_a_live_run_alone_and_reaps_its_own_orphans(
) {
    const TTL: &str = "2s";
    /// Time for the NATS server to expire a record, the sweep to come and Docker to
    /// remove a running container.
    const REAPED_WITHIN: Duration = Duration::from_secs(10);
    let engine = engine().await;
    let (nats_a, harness_a) = setup().await;
    let (nats_b, harness_b) = setup().await;
    let driver = unique_driver("installations");
    let _cleanup = RemovesOnDrop(driver.clone());
    let (installation_a, installation_b) =
        (installation_of(&nats_a.url()).await, installation_of(&nats_b.url()).await);
    assert_ne!(installation_a, installation_b, "two NATS servers, two installations");

    // Installation A: one runner.
    let (mut runner_a, _) = serve_binary(&nats_a.url(), &driver, &["--liveness-ttl", TTL]);
    harness_a.wait_for_pull_requests(&driver, 1, Duration::from_secs(30)).await.unwrap();

    // Installation B: a runner killed in the middle of a run leaves its run container
    // and the warm container made to take its place.
    let (mut killed_b, _) = serve_binary(&nats_b.url(), &driver, &["--liveness-ttl", TTL]);
    harness_b.wait_for_pull_requests(&driver, 1, Duration::from_secs(30)).await.unwrap();
    let spec =
        json!({"image": TEST_IMAGE, "steps": [{"name": "sleep", "command": "echo started; sleep 600"}]});
    let killed_run = harness_b.step(&driver, Event::Create, pipeline("killed", spec), None).await.unwrap();
    harness_b.wait_for_log(&killed_run.run_id, "started", Duration::from_secs(30)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let orphans = loop {
        let orphans = containers_of_installation(&engine, &driver, &installation_b).await;
        if orphans.len() == 2 {
            break orphans;
        }
        assert!(Instant::now() < deadline, "no warm container beside the killed runner's run: {orphans:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    killed_b.start_kill().unwrap();
    killed_b.wait().await.unwrap();

    // Installation B's surviving runner sweeps five times a second.
    let (mut sweeper_b, written_b) = serve_binary(
        &nats_b.url(),
        &driver,
        &["--liveness-ttl", TTL, "--sweep-interval", "200ms", "--grace-period", "1s"],
    );
    harness_b.wait_for_pull_requests(&driver, 1, Duration::from_secs(30)).await.unwrap();

    // A slow step of installation A runs while B sweeps.
    let spec = json!({"image": TEST_IMAGE, "steps": [{"name": "slow", "command": "echo started; sleep 6; echo done"}]});
    let run_a = harness_a.step(&driver, Event::Create, pipeline("slow", spec), None).await.unwrap();
    harness_a.wait_for_log(&run_a.run_id, "started", Duration::from_secs(30)).await.unwrap();
    let step_started = Instant::now();
    let mine = containers_of_installation(&engine, &driver, &installation_a).await;
    assert!(
        mine.iter().any(|(_, l)| l.get(labels::RUN_ID) == Some(&run_a.run_id)),
        "A's run container carries A's installation: {mine:?}"
    );

    // B's sweep reaps B's orphans...
    while !containers_of_installation(&engine, &driver, &installation_b).await.is_empty() {
        assert!(
            step_started.elapsed() < REAPED_WITHIN,
            "B's orphans are still there after {REAPED_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reaped_at = step_started.elapsed();
    // ...while A's step still runs in its container, and goes on after a few more sweeps.
    let early = harness_a.results(&run_a.run_id);
    assert!(early.is_empty(), "A's run ended before B's orphans were reaped: {early:?}");
    assert_eq!(containers_of_run(&engine, &run_a.run_id).await, 1, "A's run container is there");
    let result = harness_a.result_within(&run_a.run_id, Duration::from_secs(60)).await.unwrap();
    assert!(result.driverresult.success, "{}", result.driverresult.message);
    assert!(has(&lines(&harness_a, &run_a.run_id), "done"), "the step ran to its end");
    eprintln!("B reaped its orphans {reaped_at:?} into A's step, which then succeeded");

    // A's warm container, made after its run took a container, is there too.
    let left_a = containers_of_installation(&engine, &driver, &installation_a).await;
    assert!(
        left_a.iter().any(|(_, l)| l.get(labels::WARM).map(String::as_str) == Some("true")),
        "{left_a:?}"
    );

    terminate(&mut sweeper_b).await;
    terminate(&mut runner_a).await;
    let written_b = written_b.lock().unwrap().clone();
    for (id, _) in &orphans {
        assert!(
            written_b
                .lines()
                .any(|l| l.contains("removed a container of a runner that is gone") && l.contains(id)),
            "B's runner removed {id}:\n{written_b}"
        );
    }
    assert!(container_ids(&engine, &driver).await.is_empty(), "every container is gone after both stopped");
}

/// The identity read through a connection of its own to `url`.
async fn identify_at(url: String) -> String {
    let client = async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(10)))
        .connect(url.as_str())
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    let js = async_nats::jetstream::new(client);
    installation::identify(&js).await.unwrap_or_else(|e| panic!("{}", conveyor_sdk::error_text(&e)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_starting_at_once_get_one_identity_made_once_and_kept_across_a_nats_restart() {
    let mut nats = conveyor_sdk::testing::NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let all = futures_util::future::join_all((0..8).map(|_| identify_at(nats.url()))).await;
    assert!(all.iter().all(|id| *id == all[0]), "one identity: {all:?}");

    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let bucket = js.get_key_value(installation::BUCKET).await.unwrap();
    let entry = bucket.entry(installation::KEY).await.unwrap().expect("the identity is stored");
    assert_eq!((entry.revision, entry.value.as_ref()), (1, all[0].as_bytes()), "written once");
    let status = bucket.status().await.unwrap();
    assert_eq!((status.max_age(), status.history()), (Duration::ZERO, 1), "no TTL, one value");

    nats.restart().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(identify_at(nats.url()).await, all[0], "the same after a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_of_a_nats_cluster_gives_the_same_identity_even_after_losing_the_one_leading_it() {
    let mut cluster = NatsCluster::start().await.unwrap_or_else(|e| panic!("{e}"));
    create_replicated_server_streams(cluster.jetstream(), 3).await.unwrap_or_else(|e| panic!("{e}"));
    let all =
        futures_util::future::join_all(cluster.urls().into_iter().cycle().take(6).map(identify_at)).await;
    assert!(all.iter().all(|id| *id == all[0]), "one identity through every server: {all:?}");

    let stream = format!("KV_{}", installation::BUCKET);
    let mut info = cluster.jetstream().get_stream(&stream).await.unwrap();
    assert_eq!(info.info().await.unwrap().config.num_replicas, 3, "as many replicas as stream messages");
    let leader = cluster.stream_leader(&stream).await.unwrap_or_else(|e| panic!("{e}"));
    cluster.kill(leader).await;
    for (i, url) in cluster.urls().into_iter().enumerate().filter(|(i, _)| *i != leader) {
        assert_eq!(identify_at(url).await, all[0], "server {i} after the leader's loss");
    }
}
