//! # conveyor-sdk
//!
//! Write [Conveyor CI](https://conveyor.open.ug) drivers in Rust.
//!
//! A driver is a program that receives resource events from the Conveyor server over
//! NATS JetStream, does the work, streams log lines and reports a result. With this
//! crate you write only the work:
//!
//! 1. implement [`Driver`]: a name, the [`ResourceType`]s it handles (with a JSON
//!    Schema, written by hand or derived from your spec type), and
//!    [`reconcile`](Driver::reconcile), which receives a [`Run`] with the typed spec
//!    and a [`LogHandle`];
//! 2. hand it to a [`Runtime`] and call [`Runtime::run`].
//!
//! The runtime does the rest: a durable consumer that outlives restarts, validation
//! of every spec, several runs at once, log lines stored in order and relayed live,
//! the result published before the message is acknowledged, redelivery on failure,
//! a deadline for every run, cancel requests, retries that the driver asks for
//! ([`ReconcileError::retry_after`]), finished runs that are never run twice, and a
//! graceful shutdown on SIGINT/SIGTERM.
//!
//! ```no_run
//! use conveyor_sdk::{Driver, DriverResult, ReconcileError, ResourceType, Run, Runtime};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Greeting {
//!     who: String,
//! }
//!
//! struct Greeter;
//!
//! #[async_trait::async_trait]
//! impl Driver for Greeter {
//!     type Spec = Greeting;
//!
//!     fn name(&self) -> &str {
//!         "greeter"
//!     }
//!
//!     fn resources(&self) -> Vec<ResourceType> {
//!         vec![ResourceType::owned_from::<Greeting>("greeting")]
//!     }
//!
//!     async fn reconcile(&self, run: Run<Greeting>) -> Result<DriverResult, ReconcileError> {
//!         run.log().log(format!("hello, {}!", run.spec().who)).await;
//!         Ok(DriverResult::success("greeted"))
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), conveyor_sdk::runtime::Error> {
//!     Runtime::new(Greeter).run().await
//! }
//! ```
//!
//! Where to look next:
//! - [`driver`]: the [`Driver`] trait, [`Run`] and [`ResourceType`], and why a run is
//!   cancelled ([`driver::CancelReason`]);
//! - [`runtime`]: [`Config`] and the lower-level entry points; its loop reads
//!   top to bottom in `runtime/runner.rs`, one message's way in `runtime/worker.rs`;
//! - [`protocol`]: the wire types ([`Resource`], [`DriverMessage`], [`Log`], results);
//! - [`liveness`]: which replicas of a driver are serving, for a driver's
//!   [`housekeeping`](Driver::housekeeping) ([`Config::liveness_ttl`]);
//! - [`log`]: log destinations and the [`AsyncWrite`](tokio::io::AsyncWrite) adapter;
//! - [`validate`]: spec validation on its own, e.g. for a local run;
//! - [`artifacts`]: what a run keeps after it, in a JetStream object store bucket,
//!   and how anyone with the run's id fetches it;
//! - `client` (feature `client`): a client of the API server (resources, definitions,
//!   pipelines, logs, live log streams); with it the runtime also registers the
//!   driver's resource definitions ([`Config::api_url`](runtime::Config));
//! - `auth` (feature `auth`): certificate-bound tokens for a server with authentication;
//! - `testing` (feature `testing`): a real nats-server and the server's side of the
//!   protocol, for your driver's tests; `testing::DevServer` (feature `dev-server`)
//!   a local API server;
//! - `runtime::Metrics` (feature `metrics`): Prometheus metrics of the runtime, and
//!   `/healthz`, `/readyz` and `/metrics` over HTTP (`Config::metrics_listen`).
//!
//! With no feature, the runtime and the log handle compile no HTTP, WebSocket, JWT
//! or X.509 stack.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod artifacts;
#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
pub mod auth;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
pub mod driver;
pub mod liveness;
pub mod log;
pub mod protocol;
mod report;
pub mod runtime;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod validate;

pub use driver::{Driver, ReconcileError, ResourceType, Run};
pub use log::LogHandle;
pub use protocol::{
    DecodeError, DriverMessage, DriverResult, DriverResultEvent, Event, Log, PipelineEvent, Resource,
    ResourceDefinition,
};
pub use report::error_text;
pub use runtime::{Config, Runtime};

/// Re-exported so that a driver can use `#[async_trait]` without another dependency line.
pub use async_trait::async_trait;
/// Re-exported for a driver's own metrics beside the runtime's (`runtime::Metrics`).
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use prometheus_client;
/// Re-exported for `#[derive(JsonSchema)]` on spec types.
pub use schemars;
/// Re-exported for [`Run::cancellation_token`].
pub use tokio_util::sync::CancellationToken;

/// The crate README's examples, compiled as doc tests; they use the `client` feature
/// (`Config::api_url`).
#[cfg(all(doctest, feature = "client"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
