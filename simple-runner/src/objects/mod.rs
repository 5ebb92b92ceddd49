//! What a run keeps in the JetStream object store: its caches, between runs, and its
//! artifacts, after it.

pub(crate) mod artifacts;
pub(crate) mod caches;
pub(crate) mod store;
