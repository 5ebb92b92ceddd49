//! # simple-runner
//!
//! The reference [Conveyor CI](https://conveyor.open.ug) driver, built on
//! [`conveyor_sdk`]: it runs a `pipeline` resource's command steps one after the other
//! in Docker containers of the resource's images, beside the services they talk to,
//! streams every line of their output to the run's log, and reports which step failed
//! with which exit code.
//!
//! ## The path of a run
//!
//! [`CommandRunner`] (`runner.rs`) is the driver, usable with [`conveyor_sdk::Runtime`]
//! or on its own through [`CommandRunner::execute`]. A run goes:
//!
//! 1. **spec** ([`spec`]): the resource's spec, decoded into a [`PipelineSpec`], within
//!    what the operator's [`Settings`] ([`settings`]) allow;
//! 2. **pod up** (`pod/up.rs`): its images present ([`engine::image`]); a run of one
//!    image without services takes a warm container (`housekeeping/pool.rs`, see
//!    [`WarmSettings`]) or else starts one (`pod/container.rs`); any other run starts
//!    its pod: a container per step image sharing one network namespace and a
//!    workspace volume, and its services, waited for until ready (`pod/service.rs`,
//!    `pod/ready.rs`); every step container's shell attached ([`steps::session`]);
//! 3. **steps** (`steps/mod.rs`): one after the other, each through the shell of its
//!    image's container; the services stop after the last. A run with a workspace
//!    has, around them (`runner.rs`): before, its [`source`] checked out and its
//!    caches restored (`objects/caches.rs`); after, its artifacts kept
//!    (`objects/artifacts.rs`) and, when it succeeded, its new caches saved, all
//!    moved through the engine ([`workspace`]);
//! 4. **pod down** (`pod/down.rs`): its containers and volume removed, on every path: at
//!    once when the run is cancelled, else in the background while its result goes out;
//! 5. **report** (`report.rs`): what the run came to, a [`RunReport`], whose
//!    [`RunReport::into_result`] is the one place a run becomes the
//!    [`conveyor_sdk::DriverResult`] it publishes. A run that cannot come up ends at
//!    pod up with its report.
//!
//! ## The areas
//!
//! - [`spec`]: the resource format, [`PipelineSpec`] (upstream's, plus optional `env`,
//!   `workdir`, `secrets`, `cpus`, `memory`, `pids`, `platform`, `timeout`, `pull`,
//!   `services`, `source`, `caches`, `artifacts`, and a step's `image`, `env`,
//!   `workdir`, `secrets`, `timeout`,
//!   `continue_on_error` and `when`), with its sizes and durations, and the rules its
//!   schema cannot say ([`PipelineSpec::violations`]).
//! - [`settings`]: what the operator decides for every run ([`Settings`]): limits and
//!   their maxima, [`settings::secrets`], [`settings::registry`] credentials, the log
//!   cap, [`settings::files`] (git credentials, cache and artifact limits).
//! - [`engine`]: the Docker engine as the runner uses it ([`Engine`]): containers,
//!   image pulls, and what can go wrong with it ([`EngineError`]).
//! - [`pod`]: a run's containers, its workspace and its services, up and down.
//! - [`steps`]: a run's steps, through its containers' shells.
//! - [`workspace`]: a run's workspace as the runner reaches it through the engine, at
//!   paths checked to stay inside it; [`source`]: the checkout of its repository into
//!   it; `objects/`: its caches and artifacts in the JetStream object store (fetched
//!   with [`conveyor_sdk::artifacts`]).
//! - [`housekeeping`]: what keeps a runner's containers in order around its runs: its
//!   warm containers, and the periodic sweep for the containers and volumes of serving
//!   runners that died ([`housekeeping::cleanup`]), which knows who is alive from their
//!   liveness records ([`housekeeping::liveness`]) and looks only at the containers of
//!   its own installation ([`housekeeping::installation`]).
//! - [`metrics`]: what the runner counts ([`metrics::RunnerMetrics`]), served beside
//!   the runtime's metrics.
//!
//! The binary (`simple-runner serve | run FILE | schema`: `main.rs`, with its command
//! line and terminal spinner in `cli/`) is documented in the README.
#![warn(missing_docs)]

pub mod engine;
pub mod housekeeping;
pub mod metrics;
mod objects;
pub mod pod;
pub mod report;
pub mod runner;
pub mod settings;
pub mod source;
pub mod spec;
pub mod steps;
pub mod workspace;

pub use engine::error::EngineError;
pub use engine::Engine;
pub use report::RunReport;
pub use runner::CommandRunner;
pub use settings::{
    ContainerSettings, Mode, Settings, WarmSettings, DEFAULT_LIVENESS_TTL, DEFAULT_RUN_TIMEOUT, DRIVER_NAME,
};
pub use spec::{PipelineSpec, PullPolicy, Step, Timeout, When, RESOURCE_TYPE};
