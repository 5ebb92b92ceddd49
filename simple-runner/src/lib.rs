//! # simple-runner
//!
//! The reference [Conveyor CI](https://conveyor.open.ug) driver, built on
//! [`conveyor_sdk`]: it runs a `pipeline` resource's command steps one after the other
//! in a Docker container of the resource's image, streams every line of their output
//! to the run's log, and reports which step failed with which exit code.
//!
//! - [`PipelineSpec`]: the resource's spec (upstream's, plus optional `env`, `workdir`,
//!   `timeout`, `pull` and a step's `continue_on_error`);
//! - [`CommandRunner`]: the driver, usable with [`conveyor_sdk::Runtime`] or on its own
//!   through [`CommandRunner::execute`];
//! - [`Engine`]: the Docker engine as the runner uses it.
//!
//! The binary (`simple-runner serve | run FILE | schema`) is documented in the README.
#![warn(missing_docs)]

pub mod cleanup;
pub mod docker;
pub mod runner;
pub mod session;
pub mod spec;

pub use docker::{ContainerSettings, Engine};
pub use runner::{CommandRunner, Settings, DRIVER_NAME, RESOURCE_TYPE};
pub use spec::{PipelineSpec, PullPolicy, Step, Timeout};
