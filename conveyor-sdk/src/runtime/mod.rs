//! The event loop: consumes a driver's resource events from JetStream and runs them.
//!
//! Delivery is at least once: a message is acknowledged only after its result is
//! stored by JetStream, so a crash, a lost connection or a NATS restart leads to a
//! redelivery, never to a lost event. A redelivered run reconciles again; its result
//! carries a message id derived from run id and driver, so JetStream keeps a single
//! copy when the first one was already stored.

//! This file holds the entry points ([`Runtime`], [`Config`], [`Error`]); the loop is
//! in `runner.rs` (prepare, serve, drain), one message's way in `worker.rs` (decode →
//! validate → reconcile → logs and result out → ack), and how a message ends in
//! `ack.rs`.

mod ack;
mod backoff;
mod cancel;
mod config;
#[cfg(feature = "metrics")]
mod health;
mod log_sink;
#[cfg(feature = "metrics")]
mod metrics;
mod observe;
mod outcome;
mod pull;
mod reconcile;
mod records;
mod refuse;
#[cfg(feature = "client")]
mod register;
mod runner;
mod setup;
mod store_result;
mod supersede;
mod worker;

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use crate::liveness::Replicas;
pub use backoff::{Backoff, Delays};
pub use cancel::{cancel_run, CancelError, CANCEL_ANSWER_WAIT};
pub use config::Config;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use metrics::{Metrics, METRICS_CONTENT_TYPE};

use crate::driver::Driver;
use crate::validate::SchemaError;

/// Errors that stop a [`Runtime`] from serving.
///
/// ```no_run
/// # async fn demo<D: conveyor_sdk::Driver>(driver: D) {
/// match conveyor_sdk::Runtime::new(driver).run().await {
///     Ok(()) => println!("stopped"),
///     Err(conveyor_sdk::runtime::Error::InvalidName(name)) => eprintln!("rename the driver {name:?}"),
///     Err(error) => eprintln!("{}", conveyor_sdk::error_text(&error)),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The driver's name is not a single NATS subject token.
    #[error("invalid driver name {0:?}: it must be a NATS subject token of 1 to 256 bytes (no '.', '*', '>', white space or control character)")]
    InvalidName(String),
    /// The driver declares no resource types.
    #[error("driver {0:?} declares no resource types")]
    NoResourceTypes(String),
    /// A resource definition's schema does not compile.
    #[error("a resource definition of the driver is unusable")]
    Schema(#[from] SchemaError),
    /// Creating or reading the durable consumer failed.
    #[error("cannot create the durable consumer of driver {driver:?} on stream `messages`")]
    Consumer {
        /// The driver.
        driver: String,
        /// What JetStream answered.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The NATS credentials file could not be read.
    #[error("cannot read the NATS credentials file {path:?}")]
    NatsCredentials {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The root CA file of the API server ([`Config::api_root_ca`]) could not be read.
    #[cfg(feature = "client")]
    #[error("cannot read the API server's root CA file {path:?}")]
    ApiRootCa {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The client of the API server could not be set up: an unusable URL or root CA.
    #[cfg(feature = "client")]
    #[error("cannot set up the client of the API server")]
    ApiClient(#[source] crate::client::ClientError),
    /// [`Config::nats_url`] names no NATS server.
    #[error("no NATS server address is configured")]
    NoNatsUrl,
    /// An address in [`Config::nats_url`] is not a NATS URL.
    #[error("invalid NATS server address {url:?} (expected e.g. nats://127.0.0.1:4222)")]
    InvalidNatsUrl {
        /// The address.
        url: String,
        /// Why it is not one.
        #[source]
        source: std::io::Error,
    },
    /// The NATS server ignored the consumer's filter subjects: it is older than 2.10.
    #[error(
        "the NATS server ignored the consumer's filter subjects (asked for {wanted:?}, it kept {kept:?}): \
         it is older than 2.10; use the Conveyor server's embedded NATS or nats-server 2.10 or newer"
    )]
    FilterSubjectsIgnored {
        /// The filter subjects asked for.
        wanted: Vec<String>,
        /// The filter subjects the server kept.
        kept: Vec<String>,
    },
    /// The address of [`Config::metrics_listen`] cannot be listened on.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    #[error("cannot serve health and metrics on {addr}")]
    MetricsListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Runs a [`Driver`]: the durable consumer, validation, concurrency, logs, results,
/// acknowledgements and graceful shutdown.
///
/// ```no_run
/// # use conveyor_sdk::{Driver, DriverResult, ReconcileError, ResourceType, Run};
/// # struct MyDriver;
/// # #[async_trait::async_trait]
/// # impl Driver for MyDriver {
/// #     type Spec = serde_json::Value;
/// #     fn name(&self) -> &str { "my-driver" }
/// #     fn resources(&self) -> Vec<ResourceType> { vec![ResourceType::foreign("pipeline")] }
/// #     async fn reconcile(&self, _: Run<serde_json::Value>) -> Result<DriverResult, ReconcileError> {
/// #         Ok(DriverResult::success("ok"))
/// #     }
/// # }
/// # async fn demo() -> Result<(), conveyor_sdk::runtime::Error> {
/// use conveyor_sdk::{Config, Runtime};
/// let config = Config::default().nats_url("nats://127.0.0.1:4222").concurrency(8);
/// Runtime::with_config(MyDriver, config).run().await
/// # }
/// ```
pub struct Runtime<D: Driver> {
    driver: D,
    config: Config,
}

impl<D: Driver> std::fmt::Debug for Runtime<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("driver", &self.driver.name()).field("config", &self.config).finish()
    }
}

impl<D: Driver> Runtime<D> {
    /// A runtime for `driver` with the default [`Config`].
    ///
    /// ```no_run
    /// # async fn demo<D: conveyor_sdk::Driver>(driver: D) -> Result<(), conveyor_sdk::runtime::Error> {
    /// conveyor_sdk::Runtime::new(driver).run().await
    /// # }
    /// ```
    pub fn new(driver: D) -> Self {
        Self::with_config(driver, Config::default())
    }

    /// A runtime for `driver` with `config`.
    ///
    /// ```no_run
    /// # async fn demo<D: conveyor_sdk::Driver>(driver: D) -> Result<(), conveyor_sdk::runtime::Error> {
    /// let config = conveyor_sdk::Config::default().nats_url("nats://127.0.0.1:4222").concurrency(4);
    /// conveyor_sdk::Runtime::with_config(driver, config).run().await
    /// # }
    /// ```
    pub fn with_config(driver: D, config: Config) -> Self {
        Self { driver, config }
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    ///
    /// ```no_run
    /// # async fn demo<D: conveyor_sdk::Driver>(driver: D) -> Result<(), conveyor_sdk::runtime::Error> {
    /// conveyor_sdk::Runtime::new(driver).run().await
    /// # }
    /// ```
    pub async fn run(self) -> Result<(), Error> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: stops pulling,
    /// lets runs in progress finish within the grace period, then cancels the rest,
    /// whose messages are delivered again later; then awaits the driver's
    /// [`shutdown`](Driver::shutdown) and deletes its liveness record (when kept).
    /// Returns once all of that is done, whether serving ended by `shutdown` or by an
    /// error: nothing is left to call before the process exits.
    ///
    /// ```no_run
    /// # async fn demo<D: conveyor_sdk::Driver>(driver: D) -> Result<(), conveyor_sdk::runtime::Error> {
    /// let stop = tokio_util::sync::CancellationToken::new();
    /// let runtime = conveyor_sdk::Runtime::new(driver);
    /// let serving = tokio::spawn(runtime.run_until(stop.clone().cancelled_owned()));
    /// // … later:
    /// stop.cancel();
    /// # Ok(()) }
    /// ```
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
        let stop = stop_token(shutdown);
        let Self { driver, config } = self;
        let (driver, observer) = (Arc::new(driver), observe::Observer::new(&config));
        // Health and metrics are answered while connecting too; they stop with this.
        #[cfg(feature = "metrics")]
        let _endpoint = match health::start(&config, &observer, &driver).await {
            Ok(endpoint) => endpoint,
            Err(error) => return end_unserved(&*driver, Err(error)).await,
        };
        let client = match setup::connect(&config, driver.name(), &stop).await {
            Ok(Some(client)) => client,
            Ok(None) => return end_unserved(&*driver, Ok(())).await,
            Err(error) => return end_unserved(&*driver, Err(error)).await,
        };
        runner::serve(driver, config, client, stop, observer).await
    }

    /// Serves on a NATS connection of your own (TLS, credentials, …) until `shutdown`
    /// completes. [`Config::nats_url`] is not used.
    ///
    /// ```no_run
    /// # async fn demo<D: conveyor_sdk::Driver>(driver: D) -> Result<(), Box<dyn std::error::Error>> {
    /// let client = async_nats::ConnectOptions::with_credentials_file("driver.creds")
    ///     .await?
    ///     .connect("nats://127.0.0.1:4222")
    ///     .await?;
    /// conveyor_sdk::Runtime::new(driver)
    ///     .run_with_client(client, conveyor_sdk::runtime::shutdown_signal())
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn run_with_client(
        self,
        client: async_nats::Client,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let stop = stop_token(shutdown);
        let Self { driver, config } = self;
        let (driver, observer) = (Arc::new(driver), observe::Observer::new(&config));
        #[cfg(feature = "metrics")]
        let _endpoint = match health::start(&config, &observer, &driver).await {
            Ok(endpoint) => endpoint,
            Err(error) => return end_unserved(&*driver, Err(error)).await,
        };
        runner::serve(driver, config, client, stop, observer).await
    }
}

/// Ends a serving that never began: the driver's shutdown is awaited all the same.
async fn end_unserved<D: Driver>(driver: &D, ended: Result<(), Error>) -> Result<(), Error> {
    driver.shutdown().await;
    ended
}

fn stop_token(shutdown: impl Future<Output = ()> + Send + 'static) -> CancellationToken {
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => trigger.cancel(),
            _ = trigger.cancelled() => {}
        }
    });
    stop
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
///
/// ```no_run
/// # async fn demo() {
/// conveyor_sdk::runtime::shutdown_signal().await;
/// println!("shutting down");
/// # }
/// ```
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received"),
        _ = terminate => tracing::info!("SIGTERM received"),
    }
}
