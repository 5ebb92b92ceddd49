//! A runtime serving in the background of a test.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Harness, TestingError};
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
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits (up to 60 s) until the runtime has returned.
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
    pub async fn shutdown(self) -> Result<(), TestingError> {
        self.stop();
        self.finished().await
    }
}
