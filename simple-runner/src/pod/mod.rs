//! A run's pod: the container its steps run in, up and down.
//!
//! Brought up for the run (`up.rs`: its image present, a warm container taken or one
//! started, its shell attached), made as every run's container is (`container.rs`:
//! labelled, named, hardened, limited), and taken down on every path (`down.rs`).

mod container;
pub(crate) mod down;
pub(crate) mod up;

#[cfg(test)]
pub(crate) use container::with_installation;
pub use container::{container_name, labels, RunContainer};
