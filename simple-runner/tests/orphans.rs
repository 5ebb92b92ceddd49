//! Orphan reaping between replicas: a container is removed only when the serving
//! runner that owns it is gone, within the TTL of its liveness record and a sweep
//! interval.
//!
//! Every test has a driver name of its own, and sweeps and removes only containers of
//! that driver.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use conveyor_sdk::runtime::Metrics;
use conveyor_sdk::{CancellationToken, Config, Event};
use serde_json::json;
use simple_runner::housekeeping::cleanup::{self, Verdict};
use simple_runner::housekeeping::liveness::{self, Liveness};
use simple_runner::{CommandRunner, ContainerSettings, Mode, Settings};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// A TCP proxy to a NATS server whose connections the test can cut: while cut, every
/// connection is closed and every new one closed at once.
struct CutProxy {
    port: u16,
    cut: Arc<watch::Sender<bool>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port for the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let cut = Arc::new(watch::channel(false).0);
        let cuts = cut.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = cuts.subscribe();
                if *cut.borrow() {
                    continue; // dropped: closed at once
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { port, cut, accepting }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// The settings of a serving runner of `driver` in `installation`, as `serve` has them.
fn serving_settings(driver: &str, installation: &str) -> Settings {
    let base = settings();
    let container =
        ContainerSettings { installation: Some(installation.to_owned()), ..base.container.clone() };
    Settings { name: driver.to_owned(), mode: Mode::Serve, container, ..base }
}

fn sleeping_run(name: &str, seconds: u32) -> conveyor_sdk::Resource {
    pipeline(
        name,
        json!({
            "image": TEST_IMAGE,
            "steps": [{"name": "sleep", "command": format!("echo started; sleep {seconds}; echo done")}]
        }),
    )
}

fn upstream(nats: &conveyor_sdk::testing::NatsServer) -> String {
    nats.url().trim_start_matches("nats://").to_owned()
}

fn sdk_config(url: String) -> Config {
    Config::default()
        .nats_url(url)
        .retry_interval(Duration::from_millis(200))
        .pull_expiry(Duration::from_secs(1))
        .nak_delay(Duration::from_millis(200))
}

/// The bucket as another replica opens it, on a connection of its own.
async fn bucket_of_another_replica(url: String, ttl: Duration) -> async_nats::jetstream::kv::Store {
    let client = async_nats::connect(url).await.unwrap_or_else(|e| panic!("{e}"));
    let js = async_nats::jetstream::new(client);
    let (bucket, _) = liveness::open_bucket(&js, ttl).await.unwrap_or_else(|e| panic!("{e}"));
    bucket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_cut_off_from_nats_for_a_few_seconds_keeps_its_running_container() {
    const TTL: Duration = Duration::from_secs(10);
    const CUT: Duration = Duration::from_secs(3);
    let engine = engine().await;
    let (nats, harness) = setup().await;
    let driver = unique_driver("cut-off");
    let _cleanup = RemovesOnDrop(driver.clone());
    let proxy = CutProxy::start(upstream(&nats)).await;

    // Runner A: the runtime and its liveness both reach NATS through the proxy.
    let client = async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .reconnect_delay_callback(|_| Duration::from_millis(200))
        .connect(proxy.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let instance = uuid::Uuid::new_v4().to_string();
    let alive = Liveness::start(client.clone(), &driver, &instance, TTL).await.unwrap();
    let installation = installation_of(&nats.url()).await;
    let settings = Settings { instance, ..serving_settings(&driver, &installation) };
    let replica_b = scope(&installation, &driver, "replica-b");
    let serving =
        serve(CommandRunner::new(engine.clone(), settings), sdk_config(proxy.url()), &harness).await;
    // Replica B sweeps directly.
    let bucket = bucket_of_another_replica(nats.url(), TTL).await;

    let run = harness.step(&driver, Event::Create, sleeping_run("long", 8), None).await.unwrap();
    harness.wait_for_log(&run.run_id, "started", Duration::from_secs(30)).await.unwrap();

    proxy.cut();
    let cut_at = Instant::now();
    while client.connection_state() == async_nats::connection::State::Connected {
        assert!(cut_at.elapsed() < CUT, "runner A's connection was never cut");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut sweeps = 0;
    while cut_at.elapsed() < CUT {
        let swept = cleanup::sweep(&engine, &bucket, &replica_b).await;
        let swept = swept.unwrap_or_else(|e| panic!("{}", conveyor_sdk::error_text(&e)));
        assert_eq!(swept.count(Verdict::OwnerAlive), 1, "runner A's container, its owner alive: {swept:?}");
        assert!(swept.removed.is_empty(), "{swept:?}");
        sweeps += 1;
        // The sweep interval of replica B.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(sweeps >= 2, "replica B swept {sweeps} time(s) while runner A was cut off");
    assert_ne!(client.connection_state(), async_nats::connection::State::Connected, "still cut off");
    proxy.restore();

    let result = harness.result_within(&run.run_id, Duration::from_secs(60)).await.unwrap();
    assert!(result.driverresult.success, "{}", result.driverresult.message);
    assert!(lines(&harness, &run.run_id).contains(&"done".to_owned()), "the step ran to its end");
    serving.shutdown().await.unwrap();
    alive.stop().await;
    assert_no_container_left(&engine, &run.run_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_run_beside_a_serving_runner_of_the_same_driver_completes() {
    let engine = engine().await;
    let (nats, harness) = setup().await;
    let driver = unique_driver("local-run");
    let _cleanup = RemovesOnDrop(driver.clone());
    let metrics = Metrics::new();
    engine.metrics().register(&metrics);

    // A serving runner with a fast sweep.
    let instance = uuid::Uuid::new_v4().to_string();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let alive = Liveness::start(client, &driver, &instance, Duration::from_secs(10)).await.unwrap();
    let installation = installation_of(&nats.url()).await;
    let settings = Settings { instance: instance.clone(), ..serving_settings(&driver, &installation) };
    let serving = serve(CommandRunner::new(engine.clone(), settings), config(&nats), &harness).await;
    let own = scope(&installation, &driver, &instance);
    let stop = CancellationToken::new();
    let sweeping = tokio::spawn(cleanup::sweep_every(
        engine.clone(),
        alive.bucket().clone(),
        own.clone(),
        Duration::from_millis(200),
        stop.clone(),
    ));

    let file = tempfile::NamedTempFile::new().unwrap();
    let resource = json!({"name": "local", "resource": "pipeline", "spec": {
        "image": TEST_IMAGE,
        "steps": [{"name": "wait", "command": "echo begin; sleep 3; echo end"}]
    }});
    std::fs::write(file.path(), resource.to_string()).unwrap();
    let local = tokio::process::Command::new(env!("CARGO_BIN_EXE_simple-runner"))
        .args(["run", "--network", "none", "--name", &driver])
        .arg(file.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // While the local run's container is there, the serving runner's sweep sees it
    // and leaves it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let swept = loop {
        let swept = cleanup::sweep(&engine, alive.bucket(), &own).await.unwrap();
        if swept.count(Verdict::NotServed) == 1 {
            break swept;
        }
        assert!(Instant::now() < deadline, "the local run's container never appeared: {swept:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(swept.removed.is_empty(), "{swept:?}");

    let output = tokio::time::timeout(Duration::from_secs(60), local.wait_with_output())
        .await
        .expect("the local run ends within a minute")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.lines().any(|l| l == "end"), "{stdout}");
    assert!(stdout.contains("result: success"), "{stdout}");
    assert_eq!(
        series_value(&metrics.encode(), "simple_runner_orphans_reaped_total"),
        Some(0.0),
        "the serving runner reaped nothing"
    );

    stop.cancel();
    sweeping.await.unwrap();
    serving.shutdown().await.unwrap();
    alive.stop().await;
    assert!(container_ids(&engine, &driver).await.is_empty(), "the local run removed its container");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_containers_of_a_runner_killed_with_sigkill_run_and_warm_are_removed_by_another_replica_within_ttl_and_interval(
) {
    const TTL: Duration = Duration::from_secs(3);
    const INTERVAL: Duration = Duration::from_secs(1);
    /// Time for the NATS server to expire the record and for Docker to remove a
    /// running container.
    const SLACK: Duration = Duration::from_secs(2);
    let engine = engine().await;
    let (nats, harness) = setup().await;
    let driver = unique_driver("sigkill");
    let _cleanup = RemovesOnDrop(driver.clone());
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
    let run = harness.step(&driver, Event::Create, sleeping_run("killed", 120), None).await.unwrap();
    harness.wait_for_log(&run.run_id, "started", Duration::from_secs(30)).await.unwrap();
    // The run's container, and the warm container made to take its place.
    let deadline = Instant::now() + Duration::from_secs(30);
    while container_ids(&engine, &driver).await.len() < 2 {
        assert!(Instant::now() < deadline, "no warm container beside the run's");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Another replica (its own engine connection, so its own counts).
    let replica = simple_runner::Engine::connect().await.unwrap();
    let metrics = Metrics::new();
    replica.metrics().register(&metrics);
    let bucket = bucket_of_another_replica(nats.url(), TTL).await;
    let replica_b = scope(&installation_of(&nats.url()).await, &driver, "replica-b");
    let before = cleanup::sweep(&replica, &bucket, &replica_b).await.unwrap();
    assert_eq!(before.count(Verdict::OwnerAlive), 2, "while the runner lives: {before:?}");
    let stop = CancellationToken::new();
    let sweeping =
        tokio::spawn(cleanup::sweep_every(replica.clone(), bucket, replica_b, INTERVAL, stop.clone()));

    killed.start_kill().unwrap();
    killed.wait().await.unwrap();
    let killed_at = Instant::now();
    let bound = TTL + INTERVAL + SLACK;
    while !container_ids(&engine, &driver).await.is_empty() {
        assert!(
            killed_at.elapsed() < bound,
            "the killed runner's containers are still there after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = killed_at.elapsed();
    eprintln!(
        "the killed runner's run and warm containers were removed {took:?} after SIGKILL (bound {bound:?})"
    );
    assert_eq!(containers_of_run(&engine, &run.run_id).await, 0);
    stop.cancel();
    sweeping.await.unwrap();
    assert_eq!(series_value(&metrics.encode(), "simple_runner_orphans_reaped_total"), Some(2.0));
}

#[tokio::test]
async fn the_ttl_of_an_existing_bucket_wins_and_records_are_refreshed_within_it() {
    let nats = conveyor_sdk::testing::NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let bucket = bucket_of_another_replica(nats.url(), Duration::from_secs(2)).await;
    let driver = unique_driver("ttl");
    let client = async_nats::connect(nats.url()).await.unwrap();
    let alive = Liveness::start(client, &driver, "asks-for-a-minute", Duration::from_secs(60)).await.unwrap();
    assert_eq!(alive.ttl(), Duration::from_secs(2), "the bucket's TTL");

    // Longer than the TTL: only refreshes keep the record.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let key = liveness::record_key(&driver, "asks-for-a-minute");
    let live = liveness::live_records(&bucket).await.unwrap();
    assert!(live.contains(&key), "the record was refreshed: {live:?}");
    let record: liveness::LivenessRecord =
        serde_json::from_slice(&bucket.get(&key).await.unwrap().expect("the record")).unwrap();
    assert_eq!((record.pid, record.ttl_seconds), (std::process::id(), 2));

    alive.stop().await;
    assert!(!liveness::live_records(&bucket).await.unwrap().contains(&key), "deleted on stop");
}

#[tokio::test]
async fn a_serving_runner_has_a_record_before_it_takes_runs_and_deletes_it_on_sigterm() {
    let (nats, harness) = setup().await;
    let driver = unique_driver("record");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_simple-runner"))
        .args(["serve", "--network", "none", "--name", &driver])
        .env("CONVEYOR_NATS_URL", nats.url())
        .env("CONVEYOR_API_URL", format!("http://127.0.0.1:{closed}"))
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    harness.wait_for_pull_requests(&driver, 1, Duration::from_secs(30)).await.unwrap();
    let bucket = bucket_of_another_replica(nats.url(), Duration::from_secs(30)).await;
    let records_of_driver = || async {
        let live = liveness::live_records(&bucket).await.unwrap();
        live.into_iter().filter(|key| key.starts_with(&format!("{driver}."))).collect::<Vec<_>>()
    };
    let records = records_of_driver().await;
    assert_eq!(records.len(), 1, "one record while it pulls: {records:?}");
    let record: liveness::LivenessRecord =
        serde_json::from_slice(&bucket.get(&records[0]).await.unwrap().expect("the record")).unwrap();
    assert_eq!(Some(record.pid), serve.id());
    assert_eq!(record.ttl_seconds, 30);

    let pid = serve.id().unwrap().to_string();
    assert!(tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(30), serve.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    assert!(records_of_driver().await.is_empty(), "the record is deleted on a graceful stop");
}
