//! # simple-runner
//!
//! The reference [Conveyor CI](https://conveyor.open.ug) driver, built on
//! [`conveyor_sdk`]: it runs a `pipeline` resource's command steps one after the other
//! in a Docker container of the resource's image, streams every line of their output
//! to the run's log, and reports which step failed with which exit code.
//!
//! ## Where to start
//!
//! - [`CommandRunner`] (`runner.rs`): the driver, usable with [`conveyor_sdk::Runtime`]
//!   or on its own through [`CommandRunner::execute`]. A run goes:
//!   1. prepared (`pod/up.rs`): image present ([`engine::image`]), a warm container taken
//!      (`housekeeping/pool.rs`, see [`WarmSettings`]) or else one started ([`engine`]), its shell
//!      attached ([`steps::session`]);
//!   2. its steps run (`steps/mod.rs`), each through that shell;
//!   3. into a [`RunReport`] (`report.rs`), whose [`RunReport::into_result`] is the one
//!      place a run becomes the [`conveyor_sdk::DriverResult`] it publishes.
//!
//!   Containers are removed on every path (`pod/down.rs`), and those of serving
//!   runners that died by the periodic sweep of another ([`housekeeping::cleanup`]), which knows
//!   who is alive from their liveness records ([`housekeeping::liveness`]) and looks only at the
//!   containers of its own installation ([`housekeeping::installation`]).
//! - [`PipelineSpec`] ([`spec`]): the resource's spec (upstream's, plus optional `env`,
//!   `workdir`, `secrets`, `cpus`, `memory`, `pids`, `platform`, `timeout`, `pull`,
//!   and a step's `env`, `workdir`, `secrets`, `timeout`, `continue_on_error` and
//!   `when`).
//! - [`Settings`] ([`settings`]): what the operator decides for every run: limits and
//!   their maxima (`limits.rs`), [`settings::secrets`], [`settings::registry`] credentials, the log cap.
//! - [`Engine`] ([`engine`]): the Docker engine as the runner uses it;
//!   [`EngineError`] ([`engine::error`]): what can go wrong with it; what it counts,
//!   [`metrics::RunnerMetrics`], is served beside the runtime's metrics.
//!
//! The binary (`simple-runner serve | run FILE | schema`, `main.rs` and its terminal
//! spinner in `spinner.rs`) is documented in the README.
#![warn(missing_docs)]

pub mod engine;
pub mod housekeeping;
pub mod metrics;
pub mod pod;
pub mod report;
pub mod runner;
pub mod settings;
pub mod spec;
pub mod steps;

pub use engine::error::EngineError;
pub use engine::Engine;
pub use report::RunReport;
pub use runner::CommandRunner;
pub use settings::{
    ContainerSettings, Mode, Settings, WarmSettings, DEFAULT_LIVENESS_TTL, DEFAULT_RUN_TIMEOUT, DRIVER_NAME,
};
pub use spec::{PipelineSpec, PullPolicy, Step, Timeout, When, RESOURCE_TYPE};
