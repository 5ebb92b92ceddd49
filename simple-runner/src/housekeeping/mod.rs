//! What keeps a runner's containers in order around its runs.
//!
//! Warm containers kept ready for the next run (`pool.rs`), and the periodic sweep for
//! the containers of serving runners that are gone ([`cleanup`]), which knows who is
//! alive from their liveness records ([`liveness`]) and looks only at the containers of
//! its own installation ([`installation`]).

pub mod cleanup;
pub mod installation;
pub mod liveness;
pub(crate) mod pool;
