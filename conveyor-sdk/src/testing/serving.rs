//! A runtime serving in the background of a test.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::server_side::Harness;
use super::TestingError;
use crate::driver::Driver;
use crate::runtime::{self, Config, Runtime};

/// A driver's runtime serving in the background until it is stopped.
///
/// ```no_run
/// # async fn demo<D: conveyor_sdk::Driver>(driver: D, harness: conveyor_sdk::testing::Harness)
/// # -> Result<(), conveyor_sdk::testing::TestingError> {
/// use conveyor_sdk::testing::Serving;
/// let config = conveyor_sdk::Config::default().nats_url("nats://127.0.0.1:4222");
/// let serving = Serving::start(driver, config, &harness).await?;
/// // … dispatch resources with the harness …
/// serving.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Serving {
    stop: CancellationToken,
    task: JoinHandle<Result<(), runtime::Error>>,
}

impl Serving {
    /// Starts a runtime for `driver` and waits (up to 30 s) until its consumer is
    /// pulling, so that what the harness dispatches from then on reaches it.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// # use conveyor_sdk::{Driver, DriverResult, ReconcileError, ResourceType, Run};
    /// # struct Greeter;
    /// # #[async_trait::async_trait]
    /// # impl Driver for Greeter {
    /// #     type Spec = serde_json::Value;
    /// #     fn name(&self) -> &str { "greeter" }
    /// #     fn resources(&self) -> Vec<ResourceType> { vec![ResourceType::foreign("greeting")] }
    /// #     async fn reconcile(&self, _: Run<serde_json::Value>) -> Result<DriverResult, ReconcileError> { Ok(DriverResult::success("ok")) }
    /// # }
    /// use conveyor_sdk::testing::{Harness, NatsServer, Serving};
    /// let nats = NatsServer::start().await?;
    /// let harness = Harness::start(&nats.url()).await?;
    /// let config = conveyor_sdk::Config::default().nats_url(nats.url());
    /// let serving = Serving::start(Greeter, config, &harness).await?;
    /// let run = harness.create(conveyor_sdk::Resource::new("hi", "greeting", serde_json::json!({}))).await?;
    /// assert!(harness.result(&run.run_id).await?.driverresult.success);
    /// serving.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn start<D: Driver>(
        driver: D,
        config: Config,
        harness: &Harness,
    ) -> Result<Self, TestingError> {
        let name = driver.name().to_owned();
        let stop = CancellationToken::new();
        let task =
            tokio::spawn(Runtime::with_config(driver, config).run_until(stop.clone().cancelled_owned()));
        let serving = Self { stop, task };
        if let Err(error) = harness.wait_for_pull_requests(&name, 1, Duration::from_secs(30)).await {
            if serving.task.is_finished() {
                return Err(serving.finished().await.err().unwrap_or(error));
            }
            serving.stop();
            return Err(error);
        }
        Ok(serving)
    }

    /// Asks the runtime to shut down gracefully, without waiting.
    ///
    /// ```no_run
    /// # async fn demo(harness: conveyor_sdk::testing::Harness, serving: conveyor_sdk::testing::Serving)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// serving.stop(); // e.g. while a run is in progress, to test the graceful shutdown
    /// let run = harness.create(conveyor_sdk::Resource::new("late", "greeting", serde_json::json!({}))).await?;
    /// serving.finished().await?;
    /// # Ok(()) }
    /// ```
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits (up to 60 s) until the runtime has returned.
    ///
    /// ```no_run
    /// # async fn demo(serving: conveyor_sdk::testing::Serving) -> Result<(), Box<dyn std::error::Error>> {
    /// serving.stop();
    /// serving.finished().await?; // an error when the runtime failed, or its task panicked
    /// # Ok(()) }
    /// ```
    pub async fn finished(self) -> Result<(), TestingError> {
        match tokio::time::timeout(Duration::from_secs(60), self.task).await {
            Err(_) => Err(TestingError::Timeout {
                what: "the runtime to stop".into(),
                after: Duration::from_secs(60),
            }),
            Ok(Err(join)) => Err(TestingError::RuntimeTask(join)),
            Ok(Ok(Err(error))) => Err(TestingError::Runtime(error)),
            Ok(Ok(Ok(()))) => Ok(()),
        }
    }

    /// Shuts the runtime down gracefully and waits until it has returned.
    ///
    /// ```no_run
    /// # async fn demo(serving: conveyor_sdk::testing::Serving) -> Result<(), Box<dyn std::error::Error>> {
    /// serving.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(self) -> Result<(), TestingError> {
        self.stop();
        self.finished().await
    }
}
