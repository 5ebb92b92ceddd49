//! A run's pod: the container its steps run in, labelled, hardened and limited
//! (`container.rs`).

mod container;

#[cfg(test)]
pub(crate) use container::with_installation;
pub use container::{container_name, labels, RunContainer};
