//! Which serving runners are alive: the SDK's liveness records
//! ([`conveyor_sdk::liveness`]), which the runtime keeps for a runner served
//! with [`CommandRunner::serve`](crate::CommandRunner::serve), and which the sweep
//! ([`crate::housekeeping::cleanup`]) reads.

pub use conveyor_sdk::liveness::*;
