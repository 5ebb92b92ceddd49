//! The runner against a real Docker engine and a real nats-server.
#![allow(dead_code)]

use std::time::Duration;

use bollard::models::ContainerSummary;
use conveyor_sdk::testing::{Harness, NatsServer, Serving};
use conveyor_sdk::{Config, Log, Resource};
use serde_json::Value;
use simple_runner::{CommandRunner, ContainerSettings, Engine, Settings};

/// Built by `scripts/services.sh` from Debian's busybox-static: no registry needed.
pub const TEST_IMAGE: &str = "conveyor-test/busybox:latest";

/// Built as [`TEST_IMAGE`], with `ID=alpha` in its `/etc/os-release`.
pub const ALPHA_IMAGE: &str = "conveyor-test/alpha:latest";

/// Built as [`TEST_IMAGE`], with `ID=beta` in its `/etc/os-release`.
pub const BETA_IMAGE: &str = "conveyor-test/beta:latest";

/// Built as [`TEST_IMAGE`]; its command serves `/www` (an `index.html` saying
/// [`HTTPD_PAGE`]) with busybox `httpd` on port 8080.
pub const HTTPD_IMAGE: &str = "conveyor-test/httpd:latest";

/// [`HTTPD_IMAGE`] with a `HEALTHCHECK` that passes once the server answers.
pub const HTTPD_HEALTHCHECK_IMAGE: &str = "conveyor-test/httpd-healthcheck:latest";

/// What [`HTTPD_IMAGE`] serves at `/`.
pub const HTTPD_PAGE: &str = "conveyor-test httpd";

/// The engine the tests run against: `DOCKER_HOST`'s, the local Docker engine without
/// it. With `CONVEYOR_TEST_ENGINE=podman` (`scripts/podman-tests.sh`) it must be Podman,
/// so that a pass meant for Podman cannot pass on Docker.
pub async fn engine() -> Engine {
    let podman = std::env::var("CONVEYOR_TEST_ENGINE").is_ok_and(|e| e == "podman");
    let setup = if podman { "bash scripts/services.sh podman" } else { "bash scripts/services.sh" };
    let missing = |error: String| panic!("no engine answers at {} ({error}): run `{setup}`", engine_host());
    let engine = Engine::connect().await.unwrap_or_else(|e| missing(conveyor_sdk::error_text(&e)));
    if let Err(error) = engine.docker().version().await {
        missing(error.to_string());
    }
    if podman && !is_podman(&engine).await {
        panic!("CONVEYOR_TEST_ENGINE=podman, but {} is not Podman: run `{setup}`", engine_host());
    }
    for image in [TEST_IMAGE, ALPHA_IMAGE, BETA_IMAGE, HTTPD_IMAGE, HTTPD_HEALTHCHECK_IMAGE] {
        if let Err(error) = engine.docker().inspect_image(image).await {
            panic!("the test image {image} is missing ({error}): run `{setup}`");
        }
    }
    engine
}

/// Whether `engine` is Podman, through its Docker-compatible API.
pub async fn is_podman(engine: &Engine) -> bool {
    let version = engine.docker().version().await.unwrap_or_else(|e| panic!("the engine's version: {e}"));
    version.components.unwrap_or_default().iter().any(|c| c.name == "Podman Engine")
}

/// Where the tests' engine listens, as `DOCKER_HOST` says.
pub fn engine_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned())
}

/// The path of the engine's Unix socket, for the tests that put a front of their own
/// before it.
pub fn engine_socket() -> String {
    let host = engine_host();
    match host.strip_prefix("unix://") {
        Some(path) => path.to_owned(),
        None => panic!("DOCKER_HOST={host}: these tests need the engine's Unix socket (unix://…)"),
    }
}

/// The containers on the engine with label `label` (`key=value`), running or not.
/// Podman lists a container that has just exited as `stopped`, a state bollard does not
/// decode, for a moment (see `Engine::containers_of`): asked again until it decodes.
pub async fn containers_labelled(engine: &Engine, label: &str, all: bool) -> Vec<ContainerSummary> {
    let filters = std::collections::HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
    let options = bollard::query_parameters::ListContainersOptions {
        all,
        filters: Some(filters),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match engine.docker().list_containers(Some(options.clone())).await {
            Ok(listed) => return listed,
            Err(error @ bollard::errors::Error::JsonDataError { .. }) => {
                assert!(tokio::time::Instant::now() < deadline, "list containers: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("list containers: {error}"),
        }
    }
}

pub fn settings() -> Settings {
    Settings {
        container: ContainerSettings { network: "none".into(), ..ContainerSettings::default() },
        ..Settings::default()
    }
}

pub fn pipeline(name: &str, spec: Value) -> Resource {
    Resource::new(name, "pipeline", spec)
}

pub async fn setup() -> (NatsServer, Harness) {
    let nats = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let harness = Harness::start(&nats.url()).await.unwrap_or_else(|e| panic!("{e}"));
    (nats, harness)
}

pub fn config(nats: &NatsServer) -> Config {
    Config::default()
        .nats_url(nats.url())
        .retry_interval(Duration::from_millis(200))
        .pull_expiry(Duration::from_secs(1))
        .nak_delay(Duration::from_millis(200))
}

/// Serves `runner`; returns once its consumer is pulling.
pub async fn serve(runner: CommandRunner, config: Config, harness: &Harness) -> Serving {
    Serving::start(runner, config, harness).await.unwrap_or_else(|e| panic!("{e}"))
}

pub fn lines(harness: &Harness, run_id: &str) -> Vec<String> {
    harness.logs_in_server_order(run_id).into_iter().map(|l: Log| l.message).collect()
}

/// The containers of a run still on the engine.
pub async fn containers_of_run(engine: &Engine, run_id: &str) -> usize {
    containers_labelled(engine, &format!("conveyor.run_id={run_id}"), true).await.len()
}

/// Waits until no container of the run is left (removal may finish just after the
/// result), failing after 20 s.
pub async fn assert_no_container_left(engine: &Engine, run_id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = containers_of_run(engine, run_id).await;
        if left == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{left} container(s) of run {run_id} left behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The volumes of a run still on the engine.
pub async fn volumes_of_run(engine: &Engine, run_id: &str) -> usize {
    let filters =
        std::collections::HashMap::from([("label".to_owned(), vec![format!("conveyor.run_id={run_id}")])]);
    let options = bollard::query_parameters::ListVolumesOptions { filters: Some(filters) };
    let listed =
        engine.docker().list_volumes(Some(options)).await.unwrap_or_else(|e| panic!("list volumes: {e}"));
    listed.volumes.unwrap_or_default().len()
}

/// Waits until no container and no volume of the run is left (removal may finish just
/// after the result), failing after `within`.
pub async fn assert_nothing_left_within(engine: &Engine, run_id: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (containers, volumes) =
            (containers_of_run(engine, run_id).await, volumes_of_run(engine, run_id).await);
        if containers + volumes == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{containers} container(s) and {volumes} volume(s) of run {run_id} left behind after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The address of the runtime's metrics endpoint, once it listens.
pub async fn metrics_endpoint(metrics: &conveyor_sdk::runtime::Metrics) -> std::net::SocketAddr {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(addr) = metrics.local_addr() {
            return addr;
        }
        assert!(tokio::time::Instant::now() < deadline, "the runtime never served its metrics endpoint");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET http://<addr><path>`: status and body.
pub async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    // This process's reqwest has no crypto provider of its own (see the SDK README).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response =
        reqwest::get(format!("http://{addr}{path}")).await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Asks `path` until it answers `status` (30 s at most); returns the body.
pub async fn until_status(addr: std::net::SocketAddr, path: &str, status: u16) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (got, body) = get(addr, path).await;
        if got == status {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path} kept answering {got} ({body}), not {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one series (`name{labels}`) in a scrape.
pub fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Scrapes `/metrics` until every series has its value (30 s at most), failing with
/// those that do not.
pub async fn scrape_when(addr: std::net::SocketAddr, expected: &[(&str, f64)]) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        let wrong: Vec<_> = expected
            .iter()
            .filter(|(series, want)| series_value(&text, series) != Some(*want))
            .map(|(series, want)| format!("{series} is {:?}, not {want}", series_value(&text, series)))
            .collect();
        if wrong.is_empty() {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}\nin:\n{text}", wrong.join("\n"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A driver name no other test uses: sweeps and listings of a test see only its own
/// containers.
pub fn unique_driver(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Starts a container labelled as runner `owner` of `driver` in `mode` (`serve` or
/// `run`) of `installation` would have (`None`: as a version without the label would
/// have); returns its id.
pub async fn labelled_container(
    engine: &Engine,
    installation: Option<&str>,
    driver: &str,
    owner: &str,
    mode: &str,
) -> String {
    use simple_runner::pod::labels;
    let labels = std::collections::HashMap::from([
        (labels::RUN_ID.to_owned(), format!("run-of-{owner}-{mode}")),
        (labels::DRIVER.to_owned(), driver.to_owned()),
        (labels::RESOURCE.to_owned(), "leftover".to_owned()),
        (labels::INSTANCE.to_owned(), owner.to_owned()),
        (labels::MODE.to_owned(), mode.to_owned()),
    ]);
    let name = simple_runner::pod::container_name("leftover", owner);
    let container =
        ContainerSettings { installation: installation.map(str::to_owned), ..settings().container };
    engine
        .start_run_container(TEST_IMAGE, &name, None, vec![], labels, &container)
        .await
        .unwrap_or_else(|e| panic!("starting a container of {owner}: {e}"))
        .id
}

/// The ids of the containers of `driver` on the engine.
pub async fn container_ids(engine: &Engine, driver: &str) -> Vec<String> {
    let containers = engine.containers_of(driver).await.unwrap_or_else(|e| panic!("{e}"));
    containers.into_iter().map(|(id, _)| id).collect()
}

/// Removes every container of `driver` (a test's own), so that a failed test leaves
/// none behind.
pub async fn remove_all_of(engine: &Engine, driver: &str) {
    for id in container_ids(engine, driver).await {
        engine.remove(&id).await;
    }
}

/// Removes every container of its driver (a test's own) when dropped, even when the
/// test fails half-way.
pub struct RemovesOnDrop(pub String);

impl Drop for RemovesOnDrop {
    fn drop(&mut self) {
        let driver = self.0.clone();
        // A runtime of its own: the test's may be the one unwinding.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async {
                if let Ok(engine) = Engine::connect().await {
                    for (id, _) in engine.containers_of(&driver).await.unwrap_or_default() {
                        engine.remove(&id).await;
                    }
                }
            });
        })
        .join();
    }
}

/// The identity of the installation whose NATS is at `url`, as its runners read it.
pub async fn installation_of(url: &str) -> String {
    let client = async_nats::connect(url).await.unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    let js = async_nats::jetstream::new(client);
    simple_runner::housekeeping::installation::identify(&js)
        .await
        .unwrap_or_else(|e| panic!("{}", conveyor_sdk::error_text(&e)))
}

/// The sweep of runner `instance` of `driver` in `installation`.
pub fn scope(
    installation: &str,
    driver: &str,
    instance: &str,
) -> simple_runner::housekeeping::cleanup::Scope {
    simple_runner::housekeeping::cleanup::Scope {
        installation: installation.to_owned(),
        driver: driver.to_owned(),
        instance: instance.to_owned(),
    }
}

/// Settings of a driver of its own (a unique name), with no network.
pub fn own_settings() -> Settings {
    Settings { name: format!("test-{}", uuid::Uuid::new_v4().simple()), ..settings() }
}

/// Validates `spec` as the runtime does and runs it with `runner`, outside any server:
/// its report, its log lines and its run id, once its containers and volume are gone.
pub async fn run_here(
    runner: &CommandRunner,
    spec: Value,
) -> (simple_runner::RunReport, Vec<String>, String) {
    run_named(runner, "here", spec).await
}

/// Runs `spec` as pipeline resource `name`, as [`run_here`] does.
pub async fn run_named(
    runner: &CommandRunner,
    name: &str,
    spec: Value,
) -> (simple_runner::RunReport, Vec<String>, String) {
    use conveyor_sdk::validate::SpecValidator;
    use conveyor_sdk::Driver;
    let resource = pipeline(name, spec);
    let validator = SpecValidator::new(&runner.resources()).expect("the definition compiles");
    let decoded = validator.decode(&resource).unwrap_or_else(|e| panic!("invalid spec: {e}"));
    let run_id = uuid::Uuid::new_v4().to_string();
    let (log, memory) = conveyor_sdk::LogHandle::memory();
    let run = conveyor_sdk::Run::new(resource, decoded).with_log(log).with_run_id(run_id.clone());
    let report = runner.execute(&run, simple_runner::engine::image::PullProgress::Log(run.log())).await;
    runner.finish_removals().await;
    assert_nothing_left_within(runner.engine(), &run_id, Duration::from_secs(20)).await;
    (report, memory.lines(), run_id)
}

/// Whether `lines` has exactly `text`.
pub fn has(lines: &[String], text: &str) -> bool {
    lines.iter().any(|l| l == text)
}

/// A TCP front of the engine's socket that can be taken down and brought back: to the
/// runner, an engine that stops and starts again.
pub struct DockerFront {
    pub port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DockerFront {
    pub async fn start(port: u16) -> Self {
        let listener =
            tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the Docker front");
        let port = listener.local_addr().unwrap().port();
        let socket = engine_socket();
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it closes every connection too.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let socket = socket.clone();
                connections.spawn(async move {
                    if let Ok(mut docker) = tokio::net::UnixStream::connect(&socket).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut docker).await;
                    }
                });
            }
        });
        Self { port, task: Some(task) }
    }

    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub fn host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}
