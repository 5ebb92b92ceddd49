//! A run's pod: the containers its steps and services run in, up and down.
//!
//! Which containers a run needs (`plan.rs`: one per image its steps run in, a
//! workspace volume when those are not all the run's image); brought up for the run
//! (`up.rs`: the images present, a warm container taken or the containers started,
//! their shells attached, the services started and ready); made as every run's
//! container is (`container.rs`: labelled, named, hardened, limited, placed in the
//! pod's network namespace); its services (`service.rs`) and when they are ready
//! (`ready.rs`); and taken down on every path (`down.rs`).
//!
//! The containers of a pod share one network namespace, as a Kubernetes pod's do: the
//! first step image's container owns it (the operator's network, `none` by default,
//! and a host name `NAME → 127.0.0.1` for every service), every other container joins
//! it. A service is reachable from every step at `localhost:PORT` and `NAME:PORT`, and
//! no traffic leaves the run's loopback unless the operator gives it a network.

mod container;
pub(crate) mod down;
mod plan;
mod ready;
mod service;
pub(crate) mod up;

use crate::steps::session::Session;

#[cfg(test)]
pub(crate) use container::with_installation;
pub(crate) use container::Placement;
pub use container::{container_name, labels, RunContainer};
pub use plan::DEFAULT_WORKSPACE;
pub(crate) use service::RunningService;

/// A container of the pod that steps run in: one per image.
pub(crate) struct Member {
    /// Its image.
    pub(crate) image: String,
    /// Its id.
    pub(crate) container_id: String,
    /// Its shell.
    pub(crate) session: Session,
}
