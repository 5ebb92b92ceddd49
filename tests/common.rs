//! What the end-to-end tests share: simple-runner serving against a dev server, and
//! the seed tutorial's resource on the local test image.

use std::time::Duration;

use conveyor_sdk::client::Client;
use conveyor_sdk::{CancellationToken, Config};
use serde_json::{json, Value};
use simple_runner::{CommandRunner, ContainerSettings, Engine, Settings};
use tokio::task::JoinHandle;

/// The local image `scripts/services.sh` builds.
pub const TEST_IMAGE: &str = "conveyor-test/busybox:latest";

/// simple-runner serving with `config` until `stop`, its containers without network;
/// returns once its definition can be read from the server through `client`. Once
/// stopped, the task ends when the containers of its runs are removed: await it.
pub async fn serve_simple_runner(
    config: Config,
    client: &Client,
    stop: &CancellationToken,
) -> JoinHandle<Result<(), conveyor_sdk::runtime::Error>> {
    let engine = Engine::connect().await.unwrap();
    if engine.docker().inspect_image(TEST_IMAGE).await.is_err() {
        panic!("the test image {TEST_IMAGE} is missing: run `bash scripts/services.sh`");
    }
    let settings = Settings {
        container: ContainerSettings { network: "none".into(), ..Default::default() },
        ..Default::default()
    };
    let runner = CommandRunner::new(engine, settings);
    let serving = tokio::spawn(runner.serve(config, stop.clone().cancelled_owned()));
    // simple-runner registers its definition once its consumer exists.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while client.get_definition("pipeline").await.is_err() {
        assert!(!serving.is_finished(), "simple-runner stopped: {:?}", serving.await);
        assert!(tokio::time::Instant::now() < deadline, "simple-runner never registered its definition");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serving
}

/// The seed tutorial's resource, on the local test image.
pub fn tutorial_resource() -> Value {
    let mut seed: Value =
        serde_json::from_str(include_str!("../conveyor-sdk/tests/fixtures/resource.seed.json")).unwrap();
    seed["spec"]["image"] = json!(TEST_IMAGE);
    seed
}
